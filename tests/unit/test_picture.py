"""The run picture, drawn from the PCA job's small preview and report as the contract lays them out
(docs/design.md, "The jobs": <pca output>/_preview/ Parquet label, pc1, pc2; _pca_report.json)."""
from __future__ import annotations

import io
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fruits_contract.lake import Lake
from fruits_contract.lake import PCA_PREVIEW_MAX_ROWS as PREVIEW_MAX_ROWS
from fruits_pipeline.picture import (MAX_PREDICTION_BARS, UNLABELLED, PictureError, build_run_figure,
                                     load_preview, prediction_bars, render_run_picture, write_run_picture)


def _write_pca_output(lake: Lake, run_key: str, labels: list[str], k: int, n_images: int | None = None) -> np.ndarray:
    folder = lake.local_root + f"/pca/{run_key}"
    rng = np.random.default_rng(0)
    points = rng.normal(size=(len(labels), 2)).astype(np.float32)
    os.makedirs(folder + "/_preview", exist_ok=True)
    os.makedirs(folder + "/_model/metadata", exist_ok=True)  # Spark's model folder sits beside the Parquet
    open(folder + "/_model/metadata/part-00000", "w").write("{}")
    # The full output is not read: a file the picture must never open.
    open(folder + "/part-00000.parquet", "wb").write(b"not parquet: the full PCA output is never read")
    preview = pa.table({"label": labels, "pc1": points[:, 0], "pc2": points[:, 1]})
    half = len(labels) // 2
    pq.write_table(preview.slice(0, half), folder + "/_preview/part-00000.parquet")
    pq.write_table(preview.slice(half), folder + "/_preview/part-00001.parquet")
    open(folder + "/_preview/_SUCCESS", "w").close()
    ratios = sorted(rng.uniform(0.01, 0.2, size=k), reverse=True)
    report = {"k": k, "explained_variance_ratio": ratios, "cumulative": float(sum(ratios)),
              "n_images": n_images or len(labels), "input_dim": 1280}
    open(folder + "/_pca_report.json", "w").write(json.dumps(report))
    return points


def test_the_preview_gives_each_images_two_coordinates_and_label(tmp_path):
    lake = Lake(f"file://{tmp_path}")
    labels = ["Apple Pink Lady"] * 5 + ["banana"] * 5
    points = _write_pca_output(lake, "run-1", labels, k=4)
    read_points, read_labels = load_preview(lake.pca_preview("run-1"))
    assert read_labels == labels
    _write_pca_output(lake, "with-uploads", ["kiwi", None, "kiwi", None], k=2)
    assert load_preview(lake.pca_preview("with-uploads"))[1] == ["kiwi", UNLABELLED, "kiwi", UNLABELLED]
    np.testing.assert_allclose(read_points, points, rtol=1e-6)


def test_a_preview_larger_than_promised_is_cut_to_the_limit(tmp_path):
    lake = Lake(f"file://{tmp_path}")
    _write_pca_output(lake, "big", ["kiwi"] * 1500 + ["lemon"] * 1500, k=3)
    points, labels = load_preview(lake.pca_preview("big"))
    assert len(points) == len(labels) == PREVIEW_MAX_ROWS


def test_picture_is_a_png_next_to_the_report(tmp_path):
    lake = Lake(f"file://{tmp_path}")
    _write_pca_output(lake, "manual__2026-01-01", ["kiwi"] * 6 + ["lemon"] * 6 + ["Tomato Heart"] * 6, k=8,
                      n_images=50_000)
    uri = write_run_picture(lake, "manual__2026-01-01")
    assert uri == lake.report_picture("manual__2026-01-01")
    with Image.open(uri.removeprefix("file://")) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width > 1000 and height > 500
        # Not a blank canvas: the bars and points put many colours on it.
        assert len(image.convert("RGB").getcolors(maxcolors=1_000_000)) > 50


def test_missing_or_malformed_preview_is_a_picture_error_naming_it(tmp_path):
    lake = Lake(f"file://{tmp_path}")
    report = {"k": 2, "explained_variance_ratio": [0.5, 0.2], "cumulative": 0.7, "n_images": 4}
    with pytest.raises(PictureError, match=f"no preview at {lake.pca_preview('r')}"):
        write_run_picture(lake, "r", pca_report=report)
    folder = tmp_path / "pca" / "r" / "_preview"
    folder.mkdir(parents=True)
    pq.write_table(pa.table({"label": ["a"], "x": [1.0]}), folder / "part-0.parquet")
    with pytest.raises(PictureError, match=r"no column\(s\) \['pc1', 'pc2'\]"):
        write_run_picture(lake, "r", pca_report=report)
    assert not (tmp_path / "reports").exists()


def test_a_single_component_still_renders():
    png = render_run_picture({"k": 1, "explained_variance_ratio": [0.4], "cumulative": 0.4},
                             np.array([[1.0, 0.0], [-1.0, 0.0]]), ["a", "b"])
    assert Image.open(io.BytesIO(png)).format == "PNG"


def test_a_run_with_a_classifier_gets_a_third_panel_of_accuracy_by_number_of_components():
    pca_report = {"k": 12, "explained_variance_ratio": [0.3, 0.2], "cumulative": 0.5}
    points, labels = np.array([[1.0, 0.0], [-1.0, 0.0]]), ["a", "b"]
    figures = {"accuracy": 0.9, "macro_f1": 0.88, "n_test": 10, "accuracy_by_k": {"8": 0.8, "12": 0.9}}
    without = Image.open(io.BytesIO(render_run_picture(pca_report, points, labels)))
    with_classifier = Image.open(io.BytesIO(render_run_picture(pca_report, points, labels,
                                                               classifier_figures=figures)))
    assert with_classifier.size[0] > 1.4 * without.size[0] and with_classifier.size[1] == without.size[1]


def test_the_picture_goes_to_an_s3_lake_through_object_storage(tmp_path, monkeypatch):
    """Same code path for s3://: the reads and the write go through storage (stubbed here)."""
    from fruits_pipeline import picture, storage

    local = Lake(f"file://{tmp_path}")
    _write_pca_output(local, "r", ["a", "b", "a", "b"], k=2)
    written = {}

    def to_local(uri):
        return uri.replace("s3://bucket", f"file://{tmp_path}")

    real_list, real_path = storage.list_files, storage.lake_path
    monkeypatch.setattr(storage, "list_files", lambda uri, conn: {
        k.replace(f"file://{tmp_path}", "s3://bucket"): v for k, v in real_list(to_local(uri), None).items()})
    monkeypatch.setattr(storage, "lake_path", lambda uri, conn: real_path(to_local(uri), None))
    monkeypatch.setattr(storage, "write_bytes", lambda uri, data, conn: written.setdefault(uri, (data, conn)))
    uri = picture.write_run_picture(Lake("s3://bucket"), "r", "aws_default")
    assert uri == "s3://bucket/reports/r.png"
    data, conn = written[uri]
    assert data.startswith(b"\x89PNG") and conn == "aws_default"


PREDICTIONS = {"uri": "s3://b/predictions/r1", "model": "manual__2026-12-01T05-37-39-00-00", "predicted": 9,
               "unsure": 2, "by_label": {"Kiwi": 4, "Lime": 2, "$x^": 1},
               "mean_probability_by_label": {"Kiwi": 0.97, "Lime": 0.8, "$x^": 0.7}, "reason": None}


def _predictions_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.get_title().startswith("the day's predictions")]


def test_the_days_predictions_get_a_panel_of_their_own():
    pca_report = {"k": 12, "explained_variance_ratio": [0.3, 0.2], "cumulative": 0.5}
    points, labels = np.array([[1.0, 0.0], [-1.0, 0.0]]), ["a", "b"]
    without = build_run_figure(pca_report, points, labels)
    fig = build_run_figure(pca_report, points, labels, predictions=PREDICTIONS)
    assert _predictions_axes(without) == [] and len(fig.axes) == len(without.axes) + 1
    (ax,) = _predictions_axes(fig)
    assert ax.get_title() == ("the day's predictions: 9 uploads, 2 unsure\n"
                              "by classifier manual__2026-12-01T05-37-39-00-00")
    # one bar per label, the most frequent on top, then the unsure answers in grey
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Kiwi", "Lime", r"\$x^", "unsure"]
    widths = [bar.get_width() for bar in ax.patches]
    assert widths == [4, 2, 1, 2]
    colours = [bar.get_facecolor() for bar in ax.patches]
    assert colours[-1] != colours[0] and colours[-1][0] == colours[-1][1] == colours[-1][2]  # grey
    notes = [text.get_text() for text in ax.texts]
    assert notes == ["4, mean p 0.97", "2, mean p 0.80", "1, mean p 0.70", "2"]
    # the figure grows by a panel's width, the height stays
    assert fig.get_figwidth() == without.get_figwidth() + 6 and fig.get_figheight() == without.get_figheight()
    figures = {"accuracy": 0.9, "macro_f1": 0.88, "n_test": 10, "accuracy_by_k": {"8": 0.8, "12": 0.9}}
    four = build_run_figure(pca_report, points, labels, classifier_figures=figures, predictions=PREDICTIONS)
    assert len(four.axes) == len(without.axes) + 2 and len(_predictions_axes(four)) == 1
    # a user's label with mathtext characters is drawn literally, it does not break the PNG
    png = render_run_picture(pca_report, points, ["$a^", "_b"], classifier_figures=figures, predictions=PREDICTIONS)
    assert Image.open(io.BytesIO(png)).size[0] > Image.open(io.BytesIO(render_run_picture(pca_report, points, labels))).size[0] * 1.8


@pytest.mark.parametrize("predictions", [
    None, {},
    {"model": None, "predicted": 0, "unsure": 0, "by_label": {}, "mean_probability_by_label": {},
     "reason": "no classifier published yet"},
    {"model": "r0", "predicted": 0, "unsure": 0, "by_label": {}, "mean_probability_by_label": {}, "reason": None},
])
def test_no_predictions_panel_without_an_answer(predictions):
    pca_report = {"k": 2, "explained_variance_ratio": [0.3, 0.2], "cumulative": 0.5}
    points, labels = np.array([[1.0, 0.0], [-1.0, 0.0]]), ["a", "b"]
    fig = build_run_figure(pca_report, points, labels, predictions=predictions)
    assert _predictions_axes(fig) == [] and fig.get_figwidth() == build_run_figure(pca_report, points, labels).get_figwidth()


def test_a_day_of_all_unsure_answers_is_one_grey_bar():
    fig = build_run_figure({"k": 2, "explained_variance_ratio": [0.3, 0.2], "cumulative": 0.5},
                           np.array([[1.0, 0.0]]), ["a"],
                           predictions={"model": "r0", "predicted": 3, "unsure": 3, "by_label": {},
                                        "mean_probability_by_label": {}})
    (ax,) = _predictions_axes(fig)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["unsure"] and [t.get_text() for t in ax.texts] == ["3"]


def test_many_labels_keep_the_most_frequent_and_sum_the_rest():
    by_label = {f"label {i:02d}": 100 - i for i in range(MAX_PREDICTION_BARS + 5)}
    means = {label: 0.5 for label in by_label} | {"label 24": 1.0}
    bars = prediction_bars({"model": "r", "predicted": 1, "unsure": 7, "by_label": by_label,
                            "mean_probability_by_label": means})
    assert [name for name, *_ in bars[:MAX_PREDICTION_BARS]] == [f"label {i:02d}" for i in range(MAX_PREDICTION_BARS)]
    other_name, other_n, other_mean, _ = bars[MAX_PREDICTION_BARS]
    assert (other_name, other_n) == ("5 other labels", sum(100 - i for i in range(MAX_PREDICTION_BARS, MAX_PREDICTION_BARS + 5)))
    assert 0.5 < other_mean < 0.6  # weighted by count
    assert bars[-1] == ("unsure", 7, None, True) and len(bars) == MAX_PREDICTION_BARS + 2


def test_write_run_picture_draws_the_predictions_it_is_given(tmp_path):
    lake = Lake(f"file://{tmp_path}")
    _write_pca_output(lake, "r", ["kiwi"] * 4 + ["lemon"] * 4, k=3)
    width = {}
    for name, predictions in (("without", None), ("with", PREDICTIONS)):
        uri = write_run_picture(lake, "r", predictions=predictions)
        with Image.open(uri.removeprefix("file://")) as image:
            width[name] = image.size[0]
    assert width["with"] > 1.3 * width["without"]
