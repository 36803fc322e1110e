"""The picture of a run (``reports/<run_key>.png``): how much variance each PCA component keeps,
the images on the first two components coloured by label and, when the run trained a classifier,
its held-out accuracy by number of components (what a person choosing ``pca_k`` needs; a
confusion matrix stops being readable beyond a few dozen labels, this panel does not); when a
classifier answered the day's app photos, how many it gave each label and how many it was unsure of.

Drawn on the Airflow worker from what the PCA job writes for it (docs/design.md, "The jobs"):
``pca/<run_key>/_pca_report.json`` and the small preview ``pca/<run_key>/_preview/`` (Parquet:
label, pc1, pc2; at most PCA_PREVIEW_MAX_ROWS rows, a deterministic sample). The full PCA output is
never read here. Lake I/O goes through Airflow's object storage, so ``s3://`` and ``file://`` lakes
are one code path; matplotlib's Agg backend needs no display.
"""
from __future__ import annotations

import io

import numpy as np

from fruits_contract.lake import PCA_PREVIEW_COLUMNS, PCA_PREVIEW_MAX_ROWS, Lake

MAX_BARS = 50  # beyond that the bars are a grey smear; the cumulative line tells the rest


class PictureError(RuntimeError):
    """The picture cannot be drawn; the message says which input is missing or wrong."""


# How the app's photos (features with no label) are named in the picture's legend.
UNLABELLED = "app photos (no label)"


def load_preview(uri: str, conn_id: str | None = None) -> tuple[np.ndarray, list[str]]:
    """(points [n, 2], labels) from the preview Parquet folder at ``uri``, at most PCA_PREVIEW_MAX_ROWS rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fruits_pipeline import storage

    files = storage.parquet_data_files(uri, conn_id)
    if not files:
        raise PictureError(f"no preview at {uri}: the PCA job writes it (Parquet label, pc1, pc2)")
    tables, rows = [], 0
    for file in files:
        with storage.lake_path(file, conn_id).open("rb") as handle:
            table = pq.read_table(handle)
        missing = [c for c in PCA_PREVIEW_COLUMNS if c not in table.column_names]
        if missing:
            raise PictureError(f"preview {file} has no column(s) {missing} (found {table.column_names})")
        tables.append(table.select(list(PCA_PREVIEW_COLUMNS)))
        rows += table.num_rows
        if rows >= PCA_PREVIEW_MAX_ROWS:
            break
    table = pa.concat_tables(tables, promote_options="permissive").slice(0, PCA_PREVIEW_MAX_ROWS)
    labels = [UNLABELLED if v is None else str(v) for v in table.column("label").to_pylist()]
    points = np.array([[0.0 if x is None else float(x) for x in pair]
                       for pair in zip(table.column("pc1").to_pylist(), table.column("pc2").to_pylist())],
                      dtype=np.float64).reshape(-1, 2)
    return points, labels


def shown_text(value) -> str:
    """A user's string (a label) as matplotlib shows it literally: ``$`` would start mathtext (and a
    lone ``^`` inside it fail the whole drawing), a leading ``_`` would hide a legend entry."""
    text = str(value).replace("$", r"\$")
    return " " + text if text.startswith("_") else text


def has_predictions_panel(predictions: dict | None) -> bool:
    """The day's predictions get a panel only when a classifier answered at least one upload."""
    return bool(predictions and predictions.get("model") and (predictions.get("predicted") or 0) > 0)


def build_run_figure(pca_report: dict, points: np.ndarray, labels: list[str], title: str = "",
                     n_images: int | None = None, classifier_figures: dict | None = None,
                     predictions: dict | None = None):
    """The run's picture as a matplotlib Figure (not yet saved): explained variance by component
    (bars + cumulative line), PC1 vs PC2 by label; held-out accuracy by number of components with
    ``classifier_figures``; the day's predictions with ``predictions`` (when a classifier answered)."""
    import matplotlib
    import matplotlib.ticker
    from matplotlib.figure import Figure  # no pyplot: no global state, no display, Agg canvas

    ratios = np.asarray(pca_report.get("explained_variance_ratio") or [], dtype=float)
    by_k = (classifier_figures or {}).get("accuracy_by_k") or {}
    answered = has_predictions_panel(predictions)
    panels = 2 + bool(by_k) + answered
    fig = Figure(figsize=(13 + 6 * (panels - 2), 5.5), layout="constrained")
    variance_ax, scatter_ax, *more_axes = fig.subplots(1, panels)

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
    colours = matplotlib.colormaps["tab20" if len(unique_labels) > 10 else "tab10"]
    for i, label in enumerate(unique_labels):
        mask = np.array([l == label for l in labels])
        scatter_ax.scatter(points[mask, 0], points[mask, 1], s=12, alpha=0.75,
                           color=colours(i % colours.N), label=f"{shown_text(label)} ({int(mask.sum())})")
    scatter_ax.set_xlabel("PC 1")
    scatter_ax.set_ylabel("PC 2" if k >= 2 else "PC 2 (not computed: k = 1)")
    total = n_images if n_images is not None else len(labels)
    sample = f" (a sample of {len(labels)} of {total})" if total > len(labels) else ""
    scatter_ax.set_title(f"{total} images on the first two components{sample}")
    if unique_labels:
        scatter_ax.legend(fontsize="small", markerscale=1.5, loc="best",
                          ncol=2 if len(unique_labels) > 12 else 1)
    if by_k:
        draw_accuracy_by_k(more_axes.pop(0), by_k, classifier_figures)
    if answered:
        draw_predictions(more_axes.pop(0), predictions)
    if title:
        fig.suptitle(title)
    return fig


def render_run_picture(pca_report: dict, points: np.ndarray, labels: list[str], title: str = "",
                       n_images: int | None = None, classifier_figures: dict | None = None,
                       predictions: dict | None = None) -> bytes:
    """The run's picture (``build_run_figure``) as PNG bytes."""
    fig = build_run_figure(pca_report, points, labels, title=title, n_images=n_images,
                           classifier_figures=classifier_figures, predictions=predictions)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png")
    return buffer.getvalue()


MAX_PREDICTION_BARS = 20  # labels beyond that are summed in one "other labels" bar
UNSURE_BAR = "unsure"


def prediction_bars(predictions: dict) -> list[tuple[str, int, float | None, bool]]:
    """(name, count, mean probability or None, is the unsure bar) per bar of the predictions panel,
    top to bottom: the labels by count of sure answers (the most frequent first, at most
    MAX_PREDICTION_BARS, the rest summed in one bar), then the unsure answers."""
    by_label = predictions.get("by_label") or {}
    means = predictions.get("mean_probability_by_label") or {}
    ordered = sorted(by_label.items(), key=lambda item: (-int(item[1]), str(item[0])))
    bars = [(str(label), int(n), means.get(label), False) for label, n in ordered[:MAX_PREDICTION_BARS]]
    rest = ordered[MAX_PREDICTION_BARS:]
    if rest:
        n_rest = sum(int(n) for _, n in rest)
        weighted = [(int(n), means[label]) for label, n in rest if isinstance(means.get(label), (int, float))]
        mean_rest = (sum(n * m for n, m in weighted) / sum(n for n, _ in weighted)
                     if weighted and sum(n for n, _ in weighted) else None)
        bars.append((f"{len(rest)} other labels", n_rest, mean_rest, False))
    bars.append((UNSURE_BAR, int(predictions.get("unsure") or 0), None, True))
    return bars


def draw_predictions(ax, predictions: dict) -> None:
    """The day's predictions: one horizontal bar per label (its sure answers), the unsure answers in
    grey, each annotated with its count and the label's mean probability."""
    import matplotlib.ticker

    bars = prediction_bars(predictions)
    names = [name for name, *_ in bars]
    counts = [n for _, n, _, _ in bars]
    positions = np.arange(len(bars))
    ax.barh(positions, counts, color=["#9E9E9E" if unsure else "#8172B3" for *_, unsure in bars])
    ax.set_yticks(positions, [shown_text(name) for name in names], **({"fontsize": "small"} if len(bars) > 12 else {}))
    ax.invert_yaxis()  # the most frequent label on top
    ax.set_xlabel("uploads")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlim(0, max(max(counts), 1) * 1.3)  # room for the annotations
    for position, (name, n, mean, unsure) in zip(positions, bars):
        note = f"{n}" if unsure or mean is None else f"{n}, mean p {float(mean):.2f}"
        ax.annotate(note, (n, position), textcoords="offset points", xytext=(4, 0), va="center",
                    fontsize="small")
    # The model's run key is long: on a line of its own, so that the counts are not cut off.
    ax.set_title(f"the day's predictions: {predictions.get('predicted')} uploads, "
                 f"{predictions.get('unsure') or 0} unsure\nby classifier {shown_text(predictions.get('model'))}",
                 fontsize="medium")


def draw_accuracy_by_k(ax, by_k: dict, classifier_figures: dict) -> None:
    """Held-out accuracy (%) against the number of components, the run's k marked."""
    ks = sorted(int(k) for k in by_k)
    accuracies = [100 * float(by_k[str(k)]) for k in ks]
    ax.plot(ks, accuracies, marker="o", color="#55A868")
    for k, value in zip(ks, accuracies):
        ax.annotate(f"{value:.1f}", (k, value), textcoords="offset points", xytext=(0, 6), ha="center",
                    fontsize="small")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("principal components used")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_ylim(max(0.0, min(accuracies) - 5), 100.5)
    ax.set_title(f"classifier: accuracy {classifier_figures['accuracy']:.1%}, macro F1 "
                 f"{classifier_figures['macro_f1']:.3f} on {classifier_figures['n_test']} held-out images")


def write_run_picture(lake: Lake, run_key: str, conn_id: str | None = None, *,
                      pca_report: dict | None = None, classifier_figures: dict | None = None,
                      predictions: dict | None = None) -> str:
    """Draw the picture of ``run_key`` from its PCA report and preview; write it next to the run
    report and return its URI."""
    from fruits_pipeline import storage

    if pca_report is None:
        pca_report = storage.read_json(lake.pca_report(run_key), conn_id)
        if pca_report is None:
            raise PictureError(f"no PCA report at {lake.pca_report(run_key)}")
    if not pca_report.get("explained_variance_ratio"):
        raise PictureError(f"PCA report of run {run_key} has no explained_variance_ratio")
    points, labels = load_preview(lake.pca_preview(run_key), conn_id)
    png = render_run_picture(pca_report, points, labels, title=f"Fruits pipeline run {run_key}",
                             n_images=pca_report.get("n_images"), classifier_figures=classifier_figures,
                             predictions=predictions)
    uri = lake.report_picture(run_key)
    storage.write_bytes(uri, png, conn_id)
    return uri
