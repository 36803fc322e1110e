"""The picture of a run: how much variance each PCA component keeps, and the images on the
first two components coloured by label (PNG next to the run report).

Reads the PCA job's outputs of a local lake; matplotlib's Agg backend, no display needed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fruits_pipeline.lake import Lake

MAX_BARS = 50  # beyond that the bars are a grey smear; the cumulative line tells the rest


def _local(uri: str) -> Path:
    if not uri.startswith("file://"):
        raise ValueError(f"{uri} is not on a local lake: the run picture reads file:// lakes only")
    return Path(uri.removeprefix("file://"))


def load_pca_points(pca_uri: str) -> tuple[np.ndarray, list[str]]:
    """The first two PCA coordinates of every image and its label (Parquet folder of the PCA job)."""
    import pyarrow.parquet as pq

    table = pq.read_table(_local(pca_uri), columns=["label", "pca_features"])  # skips _model/, _pca_report.json
    labels = [str(v) for v in table.column("label").to_pylist()]
    rows = table.column("pca_features").to_pylist()
    points = np.zeros((len(rows), 2), dtype=np.float64)
    for i, row in enumerate(rows):
        values = list(row or [])[:2]
        points[i, : len(values)] = values
    return points, labels


def render_run_picture(pca_report: dict, points: np.ndarray, labels: list[str], output: Path,
                       title: str = "") -> Path:
    """Two panels: explained variance by component (bars + cumulative line), PC1 vs PC2 by label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    ratios = np.asarray(pca_report.get("explained_variance_ratio") or [], dtype=float)
    fig, (variance_ax, scatter_ax) = plt.subplots(1, 2, figsize=(13, 5.5), constrained_layout=True)

    shown = ratios[:MAX_BARS]
    components = np.arange(1, len(shown) + 1)
    variance_ax.bar(components, shown * 100, color="#4C72B0", label="this component")
    variance_ax.set_xlabel("principal component")
    variance_ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    variance_ax.set_ylabel("variance explained (%)")
    cumulative_ax = variance_ax.twinx()
    cumulative_ax.plot(components, np.cumsum(ratios)[: len(shown)] * 100, color="#DD8452", marker=".",
                       label="cumulative")
    cumulative_ax.set_ylim(0, 100)
    cumulative_ax.set_ylabel("cumulative variance kept (%)")
    k = int(pca_report.get("k", len(ratios)))
    kept = float(pca_report.get("cumulative", ratios.sum()))
    more = f", first {MAX_BARS} shown" if len(ratios) > MAX_BARS else ""
    variance_ax.set_title(f"k = {k} components keep {kept:.1%} of the variance{more}")
    handles = variance_ax.get_legend_handles_labels()[0] + cumulative_ax.get_legend_handles_labels()[0]
    variance_ax.legend(handles, ["this component", "cumulative"], loc="center right")

    unique_labels = sorted(set(labels))
    colours = plt.get_cmap("tab20" if len(unique_labels) > 10 else "tab10")
    for i, label in enumerate(unique_labels):
        mask = np.array([l == label for l in labels])
        scatter_ax.scatter(points[mask, 0], points[mask, 1], s=12, alpha=0.75,
                           color=colours(i % colours.N), label=f"{label} ({int(mask.sum())})")
    scatter_ax.set_xlabel("PC 1")
    scatter_ax.set_ylabel("PC 2" if k >= 2 else "PC 2 (not computed: k = 1)")
    scatter_ax.set_title(f"{len(labels)} images on the first two components")
    if unique_labels:
        scatter_ax.legend(fontsize="small", markerscale=1.5, loc="best",
                          ncol=2 if len(unique_labels) > 12 else 1)
    if title:
        fig.suptitle(title)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)
    return output


def write_run_picture(lake: Lake, run_key: str) -> Path:
    """Render the picture of ``run_key`` from its PCA outputs, next to its report."""
    report = json.loads(_local(lake.pca_report(run_key)).read_text())
    points, labels = load_pca_points(lake.pca(run_key))
    return render_run_picture(report, points, labels, _local(lake.report_picture(run_key)),
                              title=f"Fruits pipeline run {run_key}")
