"""make demo's driver: what it copies, what it refuses and how it says so (no Airflow started here;
tests/e2e runs the DAG itself)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fruits_pipeline import demo
from fruits_pipeline.settings import REPO_ROOT


def _jpeg(path: Path, content: bytes = b"\xff\xd8\xff jpeg bytes") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_fruits360_layout_lands_under_label_folders_without_collisions(tmp_path):
    images = tmp_path / "fruits-360"
    _jpeg(images / "Training" / "Apple Red 1" / "r_1_100.jpg", b"train")
    _jpeg(images / "Test" / "Apple Red 1" / "r_1_100.jpg", b"test")
    _jpeg(images / "Test" / "Kiwi" / "2_100.JPG")
    (images / "Test" / "Kiwi" / "notes.txt").write_text("not an image")
    _jpeg(images / ".hidden" / "x.jpg")
    raw = tmp_path / "lake" / "raw"

    result = demo.copy_new_images(images, raw)

    assert result == demo.CopyResult(copied=3, already_there=0)
    assert sorted(str(p.relative_to(raw)) for p in raw.rglob("*") if p.is_file()) == [
        "Apple Red 1/Test__r_1_100.jpg", "Apple Red 1/Training__r_1_100.jpg", "Kiwi/Test__2_100.JPG"]
    assert (raw / "Apple Red 1" / "Training__r_1_100.jpg").read_bytes() == b"train"


def test_second_copy_adds_only_new_images_and_never_overwrites(tmp_path, capsys):
    images, raw = tmp_path / "images", tmp_path / "raw"
    _jpeg(images / "banana" / "a.jpg", b"a")
    _jpeg(images / "banana" / "b.jpg", b"b")
    assert demo.copy_new_images(images, raw) == demo.CopyResult(2, 0)
    assert demo.copy_new_images(images, raw) == demo.CopyResult(0, 2)

    _jpeg(images / "banana" / "c.jpg", b"c")
    (images / "banana" / "a.jpg").write_bytes(b"changed")
    assert demo.copy_new_images(images, raw) == demo.CopyResult(1, 2)
    assert (raw / "banana" / "a.jpg").read_bytes() == b"a", "an upload in raw/ is never modified"
    assert "already exists with other content" in capsys.readouterr().out


def test_an_image_outside_a_label_folder_is_refused(tmp_path):
    _jpeg(tmp_path / "images" / "loose.jpg")
    with pytest.raises(demo.DemoError, match="not in a label folder"):
        demo.copy_new_images(tmp_path / "images", tmp_path / "raw")


def _run_demo(args: list[str], env_overrides: dict, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("FRUITS_SAMPLE_DIR", "FRUITS_MODEL")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-m", "fruits_pipeline.demo", "--lake", str(tmp_path / "lake"),
                           "--airflow-home", str(tmp_path / "airflow"), *args],
                          capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=120)


@pytest.mark.parametrize("images_arg, detail", [
    (["--images", "/nonexistent/fruits"], "is not a folder"),
    (["--images", "{empty}"], "holds no photo (.jpg"),
])
def test_bad_images_stop_it_at_once_and_say_what_is_expected(tmp_path, images_arg, detail):
    (tmp_path / "empty").mkdir()
    args = [a.replace("{empty}", str(tmp_path / "empty")) for a in images_arg]
    result = _run_demo(args, {}, tmp_path)
    assert result.returncode == 2
    assert detail in result.stderr
    assert "<label>/<image>.jpg" in result.stderr and str(demo.DEMO_IMAGES) in result.stderr
    assert not (tmp_path / "airflow").exists(), "Airflow must not start without images"
    assert not (tmp_path / "lake").exists()


def test_a_missing_model_or_a_bad_pca_param_stops_it_before_airflow(tmp_path):
    result = _run_demo([], {"FRUITS_MODEL": str(tmp_path / "missing.tflite")}, tmp_path)
    assert result.returncode == 2 and "missing.tflite is missing" in result.stderr
    assert "FRUITS_MODEL" in result.stderr
    result = _run_demo(["--pca-k", "0"], {}, tmp_path)
    assert result.returncode == 2 and "pca_k=0 must be between 1 and 1280" in result.stderr
    assert not (tmp_path / "airflow").exists() and not (tmp_path / "lake").exists()


def test_with_no_images_given_it_takes_the_shipped_sample(monkeypatch):
    assert demo.choose_images(None) == demo.DEMO_IMAGES
    assert demo.check_model(None).name == "mobilenet_v2_1.0_224_no_top.tflite"


def test_the_shipped_sample_is_small_licensed_and_has_labels_with_spaces():
    images = demo.find_images(demo.DEMO_IMAGES)
    labels = {image.parent.name for image in images}
    size = sum(image.stat().st_size for image in images)
    assert 100 <= len(images) and 3 <= len(labels) <= 8
    assert size <= 1_000_000, f"the demo sample is {size} bytes: keep it under about 1 MB"
    assert sum(" " in label for label in labels) >= 2
    assert all(image.parent.parent == demo.DEMO_IMAGES for image in images), "flat <label>/<file> layout"
    from fruits_spark.images import sniff

    # a few phone-style uploads beside the Fruits-360 JPEGs: one of each format the app sends
    assert {sniff(image.read_bytes()[:64]) for image in images} == {"JPEG", "PNG", "WEBP", "HEIF"}
    attribution = (demo.DEMO_IMAGES / "ATTRIBUTION.md").read_text()
    assert "Mihai Oltean" in attribution and "CC BY-SA 4.0" in attribution
    assert all(label in attribution for label in labels)
    license_text = (demo.DEMO_IMAGES / "LICENSE-CC-BY-SA-4.0.txt").read_text()
    assert "Attribution-ShareAlike 4.0 International Public License" in license_text
    assert "Section 3 -- License Conditions." in license_text


def test_airflow_runs_on_a_throwaway_sqlite_home_in_local_mode(tmp_path):
    env = demo.airflow_env(tmp_path / "lake", tmp_path / "home", base={"FRUITS_MODEL": "/elsewhere.tflite"})
    assert env["AIRFLOW_HOME"] == str(tmp_path / "home")
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{tmp_path / 'home' / 'airflow.db'}"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["FRUITS_COMPUTE"] == "local"
    assert env["FRUITS_LAKE_URI"] == f"file://{tmp_path / 'lake'}"
    assert "FRUITS_MODEL" not in env, "the shipped model unless one is given"
    assert demo.airflow_env(None, tmp_path, "/m.tflite", base={})["FRUITS_MODEL"] == "/m.tflite"


# Lines as `airflow dags test` prints them (structlog), shortened.
DAGS_TEST_OUTPUT = """2026-11-30T04:36:29.287360Z [info     ] DAG bundles loaded: dags-folder [airflow.dag_processing.bundles.manager.DagBundlesManager] loc=manager.py:304
2026-11-30T04:36:29.431835Z [info     ] [DAG TEST] starting task_id=validate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-11-30T04:36:29.432442Z [info     ] [DAG TEST] running task <TaskInstance: fruits_pipeline.validate manual__x [TaskInstanceState.SCHEDULED] ti_id=01a> [airflow.sdk.definitions.dag] loc=dag.py:1504
2026-11-30T04:36:36.127685Z [info     ] raw/ holds 15 uploads; 15 selected for run r (0 already featurized, 0 rejected before) [fruits_pipeline.validation] loc=validation.py:160
2026-11-30T04:36:36.512559Z [info     ] route features_and_pca: 15 valid new upload(s) to featurize [fruits_pipeline.tasks] loc=tasks.py:99
2026-11-30T04:36:36.518397Z [info     ] Done. Returned value was: {'run_key': 'r', 'total_in_raw': 15, 'listed': 15} [airflow.task.operators] loc=python.py:233
2026-11-30T04:36:36.518894Z [info     ] Pushing xcom                   [task] loc=task_runner.py:2280 ti=RuntimeTaskInstance(id=UUID('01a'))
2026-11-30T04:36:36.583664Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a loc=task_instances.py:485 new_state=success rows_affected=1 ti_id=01a
2026-11-30T04:36:36.616793Z [info     ] [DAG TEST] end task task_id=validate map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
2026-11-30T04:36:36.805374Z [info     ] [DAG TEST] starting task_id=run_local_steps map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1501
2026-11-30T04:36:43.338534Z [info     ] [extract_features] 26/11/30 04:36:43 INFO BlockManagerMasterEndpoint: Registering block manager [fruits_pipeline.local_runner] loc=local_runner.py:31
2026-11-30T04:37:15.422959Z [info     ] [extract_features] 2026-11-30 04:37:15,422 fruits.extract_features INFO worker pid 6496: 7 images through the model (4.5 images/s), partition done [fruits_pipeline.local_runner] loc=local_runner.py:31
2026-11-30T04:37:21.656795Z [info     ] [extract_features] FRUITS_RESULT {"job": "extract_features", "read": 15} [fruits_pipeline.local_runner] loc=local_runner.py:31
2026-11-30T04:37:22.931293Z [info     ] step extract_features finished in 46.0s [fruits_pipeline.local_runner] loc=local_runner.py:39
2026-11-30T04:37:47.302352Z [info     ] [reduce_pca] 2026-11-30 04:37:47,297 reduce_pca INFO fitting centered PCA: 15 rows x 1280 dims -> k=5 [fruits_pipeline.local_runner] loc=local_runner.py:31
2026-11-30T04:37:50.000000Z [error    ] Task failed with exception     [task] loc=task_runner.py:1000
2026-11-30T04:38:04.097030Z [info     ] Task instance state updated    [airflow.api_fastapi.execution_api.routes.task_instances] correlation_id=01a loc=task_instances.py:485 new_state=failed rows_affected=1 ti_id=01a
2026-11-30T04:38:04.107859Z [info     ] [DAG TEST] end task task_id=run_local_steps map_index=-1 [airflow.sdk.definitions.dag] loc=dag.py:1563
"""


def test_the_progress_shows_tasks_job_progress_and_errors_and_drops_airflows_records():
    progress = demo.ProgressFilter()
    shown = [out for line in DAGS_TEST_OUTPUT.splitlines(keepends=True) for out in progress.feed(line)]
    assert shown == [
        "04:36:29  validate: started",
        "04:36:36    raw/ holds 15 uploads; 15 selected for run r (0 already featurized, 0 rejected before)",
        "04:36:36    route features_and_pca: 15 valid new upload(s) to featurize",
        "04:36:36  validate: success in 7.2 s",
        "04:36:36  run_local_steps: started",
        "04:37:15    extract_features: worker pid 6496: 7 images through the model (4.5 images/s), partition done",
        "04:37:22    step extract_features finished in 46.0s",
        "04:37:47    reduce_pca: fitting centered PCA: 15 rows x 1280 dims -> k=5",
        "04:37:50    ERROR Task failed with exception",
        "04:38:04  run_local_steps: failed in 87.3 s",
    ]
    assert progress.feed("Traceback (most recent call last):\n") == []


def test_the_newest_report_is_the_one_the_run_wrote(tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    old = reports / "old.json"
    old.write_text("{}")
    before = demo.reports(tmp_path)
    assert demo.newest_report(tmp_path, before) is None
    new = reports / "manual__2026-11-22T04-50-00.json"
    new.write_text(json.dumps({}))
    assert demo.newest_report(tmp_path, before) == new


def test_the_summary_ends_with_the_held_out_accuracy_and_the_command_to_classify_a_photo():
    from fruits_pipeline.demo import CLASSIFY_EXAMPLE, REPO_ROOT, describe
    from fruits_contract.lake import Lake
    from fruits_pipeline.report import build_report

    figures = {"accuracy": 0.975, "macro_f1": 0.97, "n_train": 160, "n_test": 40, "excluded_labels": {},
               "per_label": {}, "confusion_matrix": {"labels": [], "matrix": []}, "accuracy_by_k": {"8": 0.975}}
    report = build_report(Lake("file:///lake"), run_key="r", status="success", compute="local",
                          validation={"listed": 200, "valid": 200, "rejected": 0},
                          pca_report={"k": 8, "cumulative": 0.9, "n_images": 200}, classifier_figures=figures)
    last_lines = describe(report).splitlines()[-2:]
    assert "right on 97.5% of the 40 images it never saw in training" in last_lines[0]
    assert last_lines[1] == f"  make classify MODEL=file:///lake/classifier/r IMAGES={CLASSIFY_EXAMPLE}"
    assert (REPO_ROOT / CLASSIFY_EXAMPLE).is_file()


def test_app_photos_land_under_uploads_at_their_depth_once(tmp_path):
    photos = tmp_path / "photos" / "2026-12-06" / "u1"
    photos.mkdir(parents=True)
    (photos / "IMG_1.heic").write_bytes(b"heic")
    (photos / "notes.md").write_text("not a photo")
    lake_uploads = tmp_path / "lake" / "uploads"
    assert demo.copy_new_uploads(tmp_path / "photos", lake_uploads) == demo.CopyResult(1, 0)
    assert [p.relative_to(lake_uploads).as_posix() for p in lake_uploads.rglob("*") if p.is_file()] == \
        ["2026-12-06/u1/IMG_1.heic"]
    assert demo.copy_new_uploads(tmp_path / "photos", lake_uploads) == demo.CopyResult(0, 1)


def test_the_shipped_app_photos_are_small_licensed_and_one_of_each_format_with_a_photo_of_no_fruit():
    from fruits_spark.images import sniff

    photos = demo.find_images(demo.DEMO_UPLOADS)
    assert len(photos) == 5 and all(len(p.relative_to(demo.DEMO_UPLOADS).parts) == 3 for p in photos)
    assert {sniff(p.read_bytes()[:64]) for p in photos} == {"JPEG", "PNG", "WEBP", "HEIF"}
    shipped = demo.find_images(demo.DEMO_IMAGES) + photos
    assert sum(p.stat().st_size for p in shipped) <= 2_000_000, "keep the demo's data under about 2 MB"
    attribution = (demo.DEMO_UPLOADS / "ATTRIBUTION.md").read_text()
    assert all(p.relative_to(demo.DEMO_UPLOADS).as_posix() in attribution for p in photos)
    assert "CC BY 2.0" in attribution and "danielbuechele" in attribution and "Mihai Oltean" in attribution


def test_the_summary_lists_each_app_photos_answer(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    top = pa.list_(pa.struct([("label", pa.string()), ("probability", pa.float64())]))
    folder = tmp_path / "predictions"
    folder.mkdir()
    pq.write_table(pa.table({
        "path": [f"file://{tmp_path}/uploads/d/u/b.jpg", f"file://{tmp_path}/uploads/d/u/a.heic"],
        "label": [None, "lemon"], "probability": [0.4, 0.99], "unsure": [True, False],
        "top": pa.array([[{"label": "Corn", "probability": 0.4}, {"label": "lemon", "probability": 0.3}],
                         [{"label": "lemon", "probability": 0.99}]], type=top)}), folder / "part-0.parquet")
    report = {"uris": {"predictions": f"file://{folder}"}, "predictions": {"predicted": 2}}
    assert demo.photo_answers(report) == [
        "make demo: the app's photos, as the app would answer them:",
        "  d/u/a.heic: lemon (p 0.99)",
        "  d/u/b.jpg: unsure (not close to any fruit it knows; closest Corn 0.40, lemon 0.30)"]
    assert demo.photo_answers({"uris": {}, "predictions": None}) == []
