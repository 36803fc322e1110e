"""The whole DAG in local mode (dag.test, real Spark, real images when on hand) on one lake,
run in order: a first run with corrupt uploads mixed in, a run with nothing new, an incremental
run with three new images, a rerun of that same run key, a run asking for another PCA target
with no new image (the PCA-only route: reduce_pca and train_classifier), that target again (nothing to do),
and a day on which only confirmed labels arrive (the app's photos came with the incremental run).

Each run that has work spawns its spark-submits, so the sequence is kept short.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fruits_contract.lake import Lake, run_key_for

pytestmark = pytest.mark.e2e

FIRST, NOTHING_NEW, INCREMENTAL = "2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "2026-01-03T00:00:00+00:00"
NEW_TARGET, SAME_TARGET = "2026-01-04T00:00:00+00:00", "2026-01-05T00:00:00+00:00"
LABELS_ONLY = "2026-01-06T00:00:00+00:00"
PCA_K = 3
PER_LABEL_FIRST = 4
CORRUPT = {"empty", "truncated", "text"}


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _rows(uri: str) -> list[dict]:
    return pq.read_table(_local(uri)).to_pylist()  # pyarrow skips _rejects/, _model/, _SUCCESS


def _raw_uri(lake_root: Path, label: str, name: str) -> str:
    return f"file://{lake_root}/raw/{label}/{name}"  # canonical spelling: unencoded, spaces kept


@pytest.fixture(scope="module")
def lake_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("e2e_lake")


@pytest.fixture(scope="module")
def uploads(images_dir, lake_root) -> dict:
    """First batch: PER_LABEL_FIRST images of each label + three corrupt uploads; later: one new image
    for each of three labels, and two app photos under uploads/ (sample images re-encoded) + a broken one."""
    labels = sorted(p for p in images_dir.iterdir() if p.is_dir())
    first, later = [], []
    for index, label_dir in enumerate(labels):
        images = sorted(label_dir.glob("*.jpg"))
        first += images[:PER_LABEL_FIRST]
        if index < 3:
            later.append(images[PER_LABEL_FIRST])
    raw = lake_root / "raw"
    for image in first:
        (raw / image.parent.name).mkdir(parents=True, exist_ok=True)
        shutil.copy(image, raw / image.parent.name / image.name)
    label = labels[0].name
    corrupt = {
        "empty": raw / label / "zero_bytes.jpg",
        "truncated": raw / label / "truncated.jpg",
        "text": raw / label / "notes.jpg",
    }
    corrupt["empty"].write_bytes(b"")
    corrupt["truncated"].write_bytes(first[0].read_bytes()[: first[0].stat().st_size // 3])
    corrupt["text"].write_text("this is a shopping list, not a photo\n")
    app = {"uploads/2026-01-03/u1/IMG_1.jpg": labels[0] / sorted(p.name for p in labels[0].glob("*.jpg"))[-1],
           "uploads/2026-01-03/u2/IMG_2.jpg": labels[1] / sorted(p.name for p in labels[1].glob("*.jpg"))[-1]}
    return {
        "app_files": app, "app_label": labels[0].name,
        "app": sorted(f"file://{lake_root}/{key}" for key in app),
        "app_broken": f"file://{lake_root}/uploads/2026-01-03/u2/IMG_3.jpg",
        "first": [_raw_uri(lake_root, p.parent.name, p.name) for p in first],
        "later_files": later,
        "later": [_raw_uri(lake_root, p.parent.name, p.name) for p in later],
        "corrupt": {kind: _raw_uri(lake_root, label, p.name) for kind, p in corrupt.items()},
    }


@pytest.fixture(scope="module")
def first_run(run_pipeline, lake_root, uploads):
    result = run_pipeline(lake_root, FIRST)
    return result, run_key_for("manual", result.run_id, None)


@pytest.fixture(scope="module")
def nothing_new_run(run_pipeline, lake_root, first_run):
    result = run_pipeline(lake_root, NOTHING_NEW)
    return result, run_key_for("manual", result.run_id, None)


@pytest.fixture(scope="module")
def incremental_run(run_pipeline, lake_root, uploads, nothing_new_run):
    from PIL import Image

    for image in uploads["later_files"]:
        shutil.copy(image, lake_root / "raw" / image.parent.name / image.name)
    for key, source in uploads["app_files"].items():
        (lake_root / key).parent.mkdir(parents=True, exist_ok=True)
        Image.open(source).convert("RGB").save(lake_root / key, quality=80)  # other bytes: not a duplicate
    _local(uploads["app_broken"]).write_bytes(b"\xff\xd8\xff" + b"\0" * 64)  # a JPEG's start, then nothing
    result = run_pipeline(lake_root, INCREMENTAL)
    return result, run_key_for("manual", result.run_id, None)


@pytest.fixture(scope="module")
def rerun(run_pipeline, lake_root, incremental_run):
    """The incremental run again, same logical date and run_after, so same run id and run key."""
    lake = Lake(f"file://{lake_root}")
    run_key = incremental_run[1]
    before = {"features": sorted(p.name for p in _local(lake.features(run_key)).glob("*.parquet")),
              "pca": sorted(p.name for p in _local(lake.pca(run_key)).glob("*.parquet"))}
    result = run_pipeline(lake_root, INCREMENTAL)
    return result, run_key_for("manual", result.run_id, None), before


@pytest.fixture(scope="module")
def pca_only_run(run_pipeline, lake_root, rerun):
    lake = Lake(f"file://{lake_root}")
    features_before = sorted(str(p.relative_to(lake_root)) for p in _local(lake.features_root()).rglob("*"))
    result = run_pipeline(lake_root, NEW_TARGET, {"pca_k": PCA_K})
    return result, run_key_for("manual", result.run_id, None), features_before


@pytest.fixture(scope="module")
def same_target_run(run_pipeline, lake_root, pca_only_run):
    result = run_pipeline(lake_root, SAME_TARGET, {"pca_k": PCA_K})
    return result, run_key_for("manual", result.run_id, None)


def _labels_without_later_image(uploads) -> set[str]:
    return {p.split("/")[-2] for p in uploads["first"]} - {p.split("/")[-2] for p in uploads["later"]}


def _trained_on(uploads) -> int:
    """The labelled images the classifier trains on or holds out: a label with no later image has too few."""
    return len(uploads["first"] + uploads["later"]) - PER_LABEL_FIRST * len(_labels_without_later_image(uploads))


def _report(lake: Lake, run_key: str) -> dict:
    return json.loads(_local(lake.report(run_key)).read_text())


def test_first_run_writes_every_output_of_the_design(first_run, lake_root, uploads):
    result, run_key = first_run
    assert result.state == "success", result.output[-6000:]
    assert result.tasks["run_local_steps"] == "success"
    lake = Lake(f"file://{lake_root}")
    n = len(uploads["first"])

    valid = _rows(lake.manifest_valid(run_key))
    # Validation reads headers only: a JPEG cut after its header passes, and the feature job rejects it.
    assert sorted(r["path"] for r in valid) == sorted([*uploads["first"], uploads["corrupt"]["truncated"]])
    assert {"path", "label", "size", "format", "width", "height"} <= set(valid[0])

    features = _rows(lake.features(run_key))
    assert sorted(r["path"] for r in features) == sorted(uploads["first"])
    assert all(len(r["features"]) == 1280 and r["label"] == r["path"].split("/")[-2] for r in features)

    pca_rows = _rows(lake.pca(run_key))
    pca_report = json.loads(_local(lake.pca_report(run_key)).read_text())
    assert len(pca_rows) == n == pca_report["n_images"]
    assert pca_report["input_dim"] == 1280
    assert all(len(r["pca_features"]) == pca_report["k"] for r in pca_rows)
    assert 0 < pca_report["cumulative"] <= 1.0
    assert _local(lake.pca_model(run_key)).is_dir()


def test_corrupt_uploads_are_rejected_with_a_reason_and_left_in_place(first_run, lake_root, uploads):
    _, run_key = first_run
    lake = Lake(f"file://{lake_root}")
    rejected = {r["path"]: r for r in _rows(lake.manifest_rejected(run_key))}
    job_rejects_dir = _local(lake.feature_rejects(run_key))
    job_rejected = {r["path"]: r for r in _rows(lake.feature_rejects(run_key))} if job_rejects_dir.is_dir() and \
        list(job_rejects_dir.glob("*.parquet")) else {}
    corrupt = uploads["corrupt"]
    assert rejected[corrupt["empty"]]["reason"] == "empty"
    assert corrupt["text"] in rejected, "a text file named .jpg never reaches Spark"
    # A truncated JPEG is caught by validation, or at the latest by the feature job: never featurized.
    assert corrupt["truncated"] in rejected or corrupt["truncated"] in job_rejected
    assert all(r["detail"] for r in rejected.values())
    features = {r["path"] for r in _rows(lake.features(run_key))}
    assert not features & set(corrupt.values())
    for uri in corrupt.values():
        assert _local(uri).exists(), f"{uri} was moved or deleted"


def test_first_report_counts_reconcile(first_run, lake_root, uploads):
    _, run_key = first_run
    lake = Lake(f"file://{lake_root}")
    report = _report(lake, run_key)
    counts = report["counts"]
    assert report["status"] == "success" and report["compute"] == "local"
    assert report["reconciliation"] == []
    assert counts["listed"] == len(uploads["first"]) + len(uploads["corrupt"])
    assert counts["listed"] == counts["valid"] + counts["rejected"]
    assert counts["valid"] == counts["featurized"] + (counts["rejected_by_job"] or 0) + (counts["duplicates"] or 0)
    assert counts["featurized"] == len(uploads["first"]) == counts["reduced"]
    assert sum(counts["rejected_by_reason"].values()) == counts["rejected"]
    pca_report = json.loads(_local(lake.pca_report(run_key)).read_text())
    assert report["pca"]["k"] == pca_report["k"]
    assert report["pca"]["variance_kept"] == pytest.approx(pca_report["cumulative"])
    assert [s["name"] for s in report["steps"]] == ["extract_features", "reduce_pca", "train_classifier", "predict_uploads"]
    # PER_LABEL_FIRST images a label: fewer than a classifier needs; the run goes on and says why
    assert report["classifier"] is None and report["uris"]["classifier"] is None
    assert "label(s) with at least 5 images" in report["classifier_not_trained"]
    assert report["uris"]["features"] == lake.features(run_key)
    assert report["uris"]["pca"] == lake.pca(run_key)


def test_a_run_with_no_new_uploads_does_nothing_and_says_so(nothing_new_run, lake_root, uploads):
    result, run_key = nothing_new_run
    assert result.state == "success", result.output[-6000:]
    assert result.tasks.get("run_local_steps") == "skipped"
    lake = Lake(f"file://{lake_root}")
    report = _report(lake, run_key)
    assert report["counts"]["featurized"] is None
    assert report["counts"]["already_featurized"] == len(uploads["first"])
    assert "nothing to do" in report["message"]
    assert not _local(lake.features(run_key)).exists()
    assert not _local(lake.pca(run_key)).exists()


def test_an_incremental_run_featurizes_only_new_images_and_refits_pca_on_all(incremental_run, lake_root, uploads):
    result, run_key = incremental_run
    assert result.state == "success", result.output[-6000:]
    lake = Lake(f"file://{lake_root}")
    new = sorted(uploads["later"] + uploads["app"])
    assert sorted(r["path"] for r in _rows(lake.manifest_valid(run_key))) == new
    features = _rows(lake.features(run_key))
    assert sorted(r["path"] for r in features) == new
    assert {r["path"]: r["label"] for r in features if r["path"] in uploads["app"]} == dict.fromkeys(uploads["app"])
    everything = sorted(uploads["first"] + uploads["later"] + uploads["app"])
    assert sorted(r["path"] for r in _rows(lake.pca(run_key))) == everything
    report = _report(lake, run_key)
    assert report["counts"]["featurized"] == len(new)
    assert report["counts"]["reduced"] == len(everything)
    assert report["reconciliation"] == []
    # The app's photos are answered, the broken one is set aside; none is trained on (no label)
    assert sorted(r["path"] for r in _rows(lake.predictions(run_key))) == uploads["app"]
    assert report["predictions"]["predicted"] == 2 and report["predictions"]["model"] == run_key
    assert uploads["app_broken"] in {r["path"] for r in _rows(lake.manifest_rejected(run_key))}
    assert report["classifier"]["n_train"] + report["classifier"]["n_test"] == _trained_on(uploads)


def test_a_rerun_of_the_same_run_key_replaces_its_outputs(rerun, incremental_run, lake_root, uploads):
    result, run_key, before = rerun
    assert result.state == "success", result.output[-6000:]
    assert run_key == incremental_run[1]
    lake = Lake(f"file://{lake_root}")
    features = [r["path"] for r in _rows(lake.features(run_key))]
    assert sorted(features) == sorted(uploads["later"] + uploads["app"]), "the rerun duplicated or lost feature rows"
    pca_paths = [r["path"] for r in _rows(lake.pca(run_key))]
    assert sorted(pca_paths) == sorted(uploads["first"] + uploads["later"] + uploads["app"])
    all_batches = [r["path"] for r in pq.read_table(_local(lake.features_root()), columns=["path"]).to_pylist()]
    assert len(all_batches) == len(set(all_batches)), "an image is featurized in two batches"
    assert len(list(_local(lake.features(run_key)).glob("*.parquet"))) == len(before["features"])


def test_a_new_pca_target_without_new_images_refits_the_pca_alone(pca_only_run, rerun, lake_root, uploads):
    result, run_key, features_before = pca_only_run
    assert result.state == "success", result.output[-6000:]
    assert result.tasks["run_local_steps"] == "success"
    lake = Lake(f"file://{lake_root}")
    report = _report(lake, run_key)
    assert report["route"] == "pca_only" and report["status"] == "success"
    assert f"k={PCA_K} differs from the latest PCA output's (variance 0.95, run {rerun[1]})" in report["route_reason"]
    assert [s["name"] for s in report["steps"]] == ["reduce_pca", "train_classifier"], "no feature extraction"
    assert "extract_features" not in result.output.split("route pca_only")[-1].split("step reduce_pca")[0]
    assert sorted(str(p.relative_to(lake_root)) for p in _local(lake.features_root()).rglob("*")) == features_before
    assert not _local(lake.features(run_key)).exists()
    labelled = sorted(uploads["first"] + uploads["later"])
    everything = sorted(labelled + uploads["app"])
    pca_rows = _rows(lake.pca(run_key))
    assert sorted(r["path"] for r in pca_rows) == everything
    assert all(len(r["pca_features"]) == PCA_K for r in pca_rows)
    assert report["pca"]["k"] == PCA_K and report["pca_target"] == {"k": PCA_K}
    assert report["counts"]["featurized"] is None and report["counts"]["reduced"] == len(everything)
    assert report["uris"]["features"] is None and report["uris"]["pca"] == lake.pca(run_key)
    # The classifier is retrained on this PCA; the label without a later image still has too few
    classifier = report["classifier"]
    no_later_image = _labels_without_later_image(uploads)
    assert classifier["uri"] == lake.classifier(run_key) and list(classifier["accuracy_by_k"]) == [str(PCA_K)]
    assert classifier["excluded_labels"] == {label: PER_LABEL_FIRST for label in no_later_image}
    assert classifier["n_train"] + classifier["n_test"] == _trained_on(uploads)
    assert _local(lake.classifier(run_key) + "/export/classifier.npz").is_file()


def test_every_run_with_a_pca_has_its_picture_next_to_its_report(pca_only_run, first_run, lake_root):
    from PIL import Image

    lake = Lake(f"file://{lake_root}")
    for run_key in (first_run[1], pca_only_run[1]):
        report = _report(lake, run_key)
        assert report["uris"]["picture"] == lake.report_picture(run_key), report
        with Image.open(_local(lake.report_picture(run_key))) as image:
            assert image.format == "PNG" and image.size[0] > 1000
        preview = pq.read_table(_local(lake.pca(run_key) + "/_preview"))
        assert set(preview.column_names) >= {"label", "pc1", "pc2"} and preview.num_rows <= 2000
    assert f"run picture: {lake.report_picture(pca_only_run[1])}" in pca_only_run[0].output


def test_the_same_target_again_with_nothing_new_does_nothing(same_target_run, pca_only_run, lake_root):
    result, run_key = same_target_run
    assert result.state == "success", result.output[-6000:]
    assert result.tasks.get("run_local_steps") == "skipped"
    report = _report(Lake(f"file://{lake_root}"), run_key)
    assert report["route"] == "nothing_to_do"
    assert f"k={PCA_K} is the latest PCA output's (run {pca_only_run[1]})" in report["route_reason"]
    assert report["uris"]["pca"] is None and report["uris"]["picture"] is None


@pytest.fixture(scope="module")
def labels_only_run(run_pipeline, lake_root, uploads, same_target_run):
    """The app writes the labels its users confirmed: one good row, one for the broken photo, one for a photo
    that does not exist. Nothing else is new."""
    labels = lake_root / "labels" / "app-2026-01-06.csv"
    labels.parent.mkdir(parents=True)
    good, broken = sorted(uploads["app_files"])[0], uploads["app_broken"].split(f"{lake_root}/", 1)[1]
    labels.write_text(f"path,label\n{good},{uploads['app_label']}\n{broken},{uploads['app_label']}\n"
                      f"uploads/2026-01-03/u9/never.jpg,{uploads['app_label']}\n")
    result = run_pipeline(lake_root, LABELS_ONLY, {"pca_k": PCA_K})
    return result, run_key_for("manual", result.run_id, None)


def test_confirmed_labels_alone_retrain_on_the_photos_features_and_bad_rows_are_named(labels_only_run, lake_root,
                                                                                     uploads):
    result, run_key = labels_only_run
    assert result.state == "success", result.output[-6000:]
    lake = Lake(f"file://{lake_root}")
    report = _report(lake, run_key)
    assert report["route"] == "pca_only", report["route_reason"]
    assert "labels" in report["route_reason"]
    assert [s["name"] for s in report["steps"]] == ["reduce_pca", "train_classifier"], "no photo featurized again"
    labels = report["labels"]
    assert labels["accepted"] == 1 and labels["rejected_by_reason"] == {"rejected_upload": 1, "unknown_path": 1}
    assert [r["path"] for r in _rows(lake.manifest_labels(run_key))] == [uploads["app"][0]]
    assert report["classifier"]["labelled_uploads"] == 1
    # Trained on it under its confirmed label: one more training or held-out image than the PCA-only run had
    assert report["classifier"]["n_train"] + report["classifier"]["n_test"] == _trained_on(uploads) + 1
    assert sorted(p.relative_to(lake_root).as_posix() for p in (lake_root / "uploads").rglob("*.jpg")) == sorted(
        list(uploads["app_files"]) + ["uploads/2026-01-03/u2/IMG_3.jpg"]), "no photo moved or copied"
