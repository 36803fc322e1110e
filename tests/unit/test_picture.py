"""The run picture, rendered from a PCA output laid out as the PCA job writes it."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fruits_pipeline.lake import Lake
from fruits_pipeline.picture import load_pca_points, render_run_picture, write_run_picture


def _write_pca_output(lake: Lake, run_key: str, labels: list[str], k: int) -> np.ndarray:
    folder = lake.local_root + f"/pca/{run_key}"
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(len(labels), k)).astype(np.float32)
    table = pa.table({
        "path": [f"file:///raw/{label}/{i}.jpg" for i, label in enumerate(labels)],
        "label": labels,
        "pca_features": pa.array([list(map(float, row)) for row in coords], type=pa.list_(pa.float32())),
    })
    import os

    os.makedirs(folder + "/_model/metadata", exist_ok=True)  # Spark's model folder sits beside the Parquet
    open(folder + "/_model/metadata/part-00000", "w").write("{}")
    open(folder + "/_SUCCESS", "w").close()
    pq.write_table(table.slice(0, len(labels) // 2), folder + "/part-00000.parquet")
    pq.write_table(table.slice(len(labels) // 2), folder + "/part-00001.parquet")
    ratios = sorted(rng.uniform(0.01, 0.2, size=k), reverse=True)
    report = {"k": k, "explained_variance_ratio": ratios, "cumulative": float(sum(ratios)),
              "n_images": len(labels), "input_dim": 1280}
    open(folder + "/_pca_report.json", "w").write(json.dumps(report))
    return coords


def test_points_are_the_first_two_components_with_their_labels(tmp_path):
    lake = Lake(f"file://{tmp_path}")
    labels = ["apple red"] * 5 + ["banana"] * 5
    coords = _write_pca_output(lake, "run-1", labels, k=4)
    points, read_labels = load_pca_points(lake.pca("run-1"))
    assert read_labels == labels
    np.testing.assert_allclose(points, coords[:, :2], rtol=1e-6)


def test_picture_is_a_png_next_to_the_report(tmp_path):
    lake = Lake(f"file://{tmp_path}")
    _write_pca_output(lake, "manual__2026-01-01", ["kiwi"] * 6 + ["lemon"] * 6 + ["apple red"] * 6, k=8)
    path = write_run_picture(lake, "manual__2026-01-01")
    assert str(path) == lake.report_picture("manual__2026-01-01").removeprefix("file://")
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 1000 and height > 500
        # Not a blank canvas: the bars and points put many colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 50


def test_a_single_component_still_renders(tmp_path):
    out = render_run_picture({"k": 1, "explained_variance_ratio": [0.4], "cumulative": 0.4},
                             np.array([[1.0, 0.0], [-1.0, 0.0]]), ["a", "b"], tmp_path / "one.png")
    assert out.is_file() and out.stat().st_size > 0


def test_s3_lake_is_refused_with_a_clear_message():
    with pytest.raises(ValueError, match="local lake"):
        write_run_picture(Lake("s3://bucket"), "run-1")
