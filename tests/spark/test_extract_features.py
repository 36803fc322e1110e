"""The feature job on local Spark (local[2]: broadcast and two Python workers are exercised).

The job runs the model the repository ships (spark_jobs/models/) with LiteRT. Real Fruits-360
images when FRUITS_SAMPLE_DIR is set, otherwise generated ones; the equality test against Keras
needs the real images and the source weights (FRUITS_WEIGHTS) and skips, saying why, without them.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fruits_contract.lake import canonical_uri
from fruits_contract.model import FEATURE_DIM, MODEL_FAMILY, SHIPPED_MODEL_PATH
from fruits_spark import feature_model, features, photo_reader
from fruits_spark.errors import FeatureInputError
from fruits_spark.jobs import extract_features
from phone_photos import hostile_uploads

BAD_FILES = {
    # file name -> expected reason
    "empty.jpg": "empty",
    "truncated.jpg": "truncated",
    "not_an_image.jpg": "not_an_image",
    "bomb.png": "decompression_bomb",
    "readme.txt": "not_an_image",  # listed like any file: rejected by content, not left out by name
}
HOSTILE_FILES = {"truncated.heic": "truncated", "giant.jpg": "decompression_bomb", "ztxt_1gb.png": "truncated",
                 "zeros.heic": "not_an_image"}
# Phone-style uploads under names that say nothing or lie: formats are read from the bytes.
PHONE_NAMES = {"jpeg": "photo.JPG", "jpeg_sideways": "sideways.jpeg", "heic": "iphone.HEIC", "webp": "shared.bin",
               "png_alpha": "cutout", "mpo": "pixel.jpg"}
ODD_MODES = ("L", "RGBA", "P", "CMYK", "I;16", "LA", "1")


def _jpeg_bytes(seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def _odd_mode_image(mode: str) -> Image.Image:
    rng = np.random.default_rng(3)
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65535, (64, 80), dtype=np.uint16))
    return Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).convert(mode)


def _write_bad_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(_jpeg_bytes()[:700])
    (folder / "not_an_image.jpg").write_bytes(b"<html>this is not a picture</html>" * 20)
    # More pixels than Pillow's MAX_IMAGE_PIXELS; as a 1-bit PNG it is only a few kB.
    Image.new("1", (10000, 9500)).save(folder / "bomb.png")
    (folder / "readme.txt").write_text("notes that were uploaded by mistake")


@pytest.fixture(scope="module")
def lake(images_dir, phone_uploads, tmp_path_factory) -> Path:
    """images_dir (real or generated) + a label with spaces holding bad content, odd modes, phone-style
    uploads, the issue's hostile files and a second copy of one image under another name."""
    root = tmp_path_factory.mktemp("lake") / "raw"
    shutil.copytree(images_dir, root)
    mixed = root / "mixed bag"
    _write_bad_files(mixed)
    for mode in ODD_MODES:
        suffix = "png" if mode in ("I;16", "LA", "1", "P", "RGBA") else "jpg"
        image = _odd_mode_image(mode)
        image.save(mixed / f"mode_{mode.replace(';', '_')}.{suffix.upper() if mode == 'L' else suffix}")
    for kind, name in PHONE_NAMES.items():
        (mixed / name).write_bytes(phone_uploads[kind])
    for name, content in hostile_uploads(phone_uploads).items():
        (mixed / name).write_bytes(content)
    original = sorted((root / sorted(p.name for p in images_dir.iterdir())[0]).iterdir())[0]
    shutil.copy(original, mixed / "same bytes, another name.jpg")
    return root


def _duplicate_and_original(lake: Path) -> tuple[str, str]:
    copy = lake / "mixed bag" / "same bytes, another name.jpg"
    original = next(p for p in lake.rglob("*") if p.is_file() and p != copy and p.read_bytes() == copy.read_bytes())
    # the one kept is the smallest canonical path: "mixed bag" sorts after the sample's labels
    return canonical_uri(str(copy)), canonical_uri(str(original))


@pytest.fixture(scope="module")
def driver_model(spark):
    return feature_model.load_model_on_driver(spark, str(SHIPPED_MODEL_PATH))


@pytest.fixture(scope="module")
def first_run(spark, lake, driver_model, tmp_path_factory):
    output = tmp_path_factory.mktemp("features") / "batch=test"
    result = extract_features.run(spark, extract_features.parse_args(["--images", str(lake), "--output", str(output)]),
                                  model=driver_model)
    return output, result


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def _cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    return (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))


# --- pure helpers -------------------------------------------------------------------------


@pytest.mark.parametrize("name,reason", sorted(BAD_FILES.items()))
def test_decode_image_rejects_bad_content_with_a_reason(tmp_path, name, reason):
    _write_bad_files(tmp_path)
    with pytest.raises(features.RejectedImage) as caught:
        features.decode_image((tmp_path / name).read_bytes())
    assert caught.value.reason == reason
    assert caught.value.detail


@pytest.mark.parametrize("mode", ODD_MODES)
def test_decode_image_turns_any_pillow_mode_into_rgb_224(mode):
    buffer = io.BytesIO()
    _odd_mode_image(mode).save(buffer, "PNG" if mode != "CMYK" else "JPEG")
    pixels = features.decode_image(buffer.getvalue())
    assert pixels.shape == (224, 224, 3) and pixels.dtype == np.uint8
    assert pixels.std() > 0  # real content, not a blank frame


def test_sixteen_bit_grey_keeps_its_range_instead_of_clipping_to_white():
    grey = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    buffer = io.BytesIO()
    Image.fromarray(grey).save(buffer, "PNG")
    pixels = features.decode_image(buffer.getvalue())
    assert pixels.min() < 30 and pixels.max() > 225 and 100 < pixels.mean() < 155


def test_decode_batch_keeps_row_positions_of_rejects():
    batch = features.decode_batch([_jpeg_bytes(1), b"", _jpeg_bytes(2)])
    assert batch.ok_rows.tolist() == [0, 2]
    assert batch.reasons == [None, "empty", None]
    assert batch.pixels.shape == (2, 224, 224, 3) and batch.pixels.dtype == np.float32
    assert -1.0 <= batch.pixels.min() and batch.pixels.max() <= 1.0  # MobileNetV2 scaling


def test_decode_batch_takes_an_iterator_of_reads_and_the_rejects_of_the_reads():
    reads = iter([_jpeg_bytes(1), features.RejectedImage("missing", "gone"), _jpeg_bytes(2)])
    batch = features.decode_batch(reads, 3)
    assert batch.ok_rows.tolist() == [0, 2]
    assert (batch.reasons, batch.details) == ([None, "missing", None], [None, "gone", None])


def test_paths_are_dealt_to_partitions_by_size_so_none_gets_all_the_large_photos(spark, monkeypatch):
    monkeypatch.setattr(extract_features, "MIN_PHOTOS_PER_TASK", 2)  # 16 photos on 2 slots: 8 partitions
    photos = [(f"file:///l/{i:02d}.jpg", size) for i, size in enumerate([9_000_000] * 4 + [50_000] * 12)]
    frame = extract_features.paths_frame(spark, photos, 2)
    partitions = frame.rdd.glom().collect()
    assert len(partitions) == 8 and sorted(p for part in partitions for (p,) in part) == [p for p, _ in photos]
    large = {p for p, size in photos if size > 1_000_000}
    assert max(sum(p in large for (p,) in part) for part in partitions) == 1


@pytest.mark.parametrize("photos,slots,partitions", [
    (1, 2, 1), (400, 2, 2), (5_000, 16, 16),  # a day: one task per slot, each pays its start once
    (8_000, 2, 4), (150_000, 16, 64),  # long runs: up to 4 per slot, each of at least 2,000 photos
])
def test_tasks_are_one_per_slot_until_there_are_photos_enough_for_more(photos, slots, partitions):
    assert extract_features.partition_count(photos, slots) == partitions


def test_input_the_job_cannot_use_exits_2_with_the_message_and_stops_the_session(monkeypatch, capsys):
    """Through the one job runner, like the PCA and the classifier (a stand-in session: the tests' own stays up)."""
    from fruits_spark import job_runner

    class Session:
        stopped = False

        def stop(self):
            Session.stopped = True

    monkeypatch.setattr(job_runner, "build_session", lambda *args: Session())
    assert extract_features.main(["--images", "in", "--output", "out", "--batch-size", "0"]) == 2
    assert Session.stopped
    assert "extract_features: error: --batch-size must be at least 1, got 0" in capsys.readouterr().err


def test_preprocess_is_bit_identical_to_keras_preprocess_input():
    from keras.applications.mobilenet_v2 import preprocess_input

    pixels = np.random.default_rng(4).integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    expected = preprocess_input(pixels.astype(np.float32))
    assert np.array_equal(features.preprocess(pixels), expected)


# --- the model on LiteRT ------------------------------------------------------------------


def test_a_batch_gives_each_image_the_features_it_gets_alone(driver_model):
    """Batch sizes change between Arrow batches (rejects, partition ends): resizing the
    interpreter must not mix rows or keep a stale shape."""
    model = feature_model.LiteRTModel(driver_model)
    pixels = features.decode_batch([_jpeg_bytes(seed) for seed in range(3)]).pixels
    together = model.predict(pixels)
    alone = np.concatenate([model.predict(pixels[i:i + 1]) for i in range(3)])
    assert together.shape == (3, FEATURE_DIM) and together.dtype == np.float32
    assert _cosines(together, alone).min() > 0.99999
    assert _cosines(together[:1], together[1:2])[0] < 0.999  # different images, different vectors


def test_a_reused_python_worker_builds_its_interpreter_once(driver_model):
    """Spark reuses Python workers across tasks: the second task with the same model must get
    the interpreter the first one built, without reading the broadcast again."""

    class Broadcast:  # what the UDF reads: Spark's Broadcast exposes the bytes as .value
        def __init__(self, value):
            self._value, self.reads = value, 0

        @property
        def value(self):
            self.reads += 1
            return self._value

    broadcast = Broadcast(driver_model)
    key = feature_model.model_fingerprint(driver_model)
    first = feature_model.worker_model(broadcast, key, threads=1)
    assert feature_model.worker_model(broadcast, key, threads=1) is first
    assert broadcast.reads == 1
    two_threads = feature_model.worker_model(broadcast, key, threads=2)  # another task slot size: rebuilt
    assert two_threads is not first and two_threads.threads == 2 and broadcast.reads == 2


def test_driver_refuses_a_file_that_is_not_a_tflite_flatbuffer(spark, tmp_path):
    notes = tmp_path / "notes.tflite"
    notes.write_text("these are not a model")
    with pytest.raises(FeatureInputError, match=rf"--model {notes}: not a TFLite flatbuffer"):
        feature_model.load_model_on_driver(spark, str(notes))
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(SHIPPED_MODEL_PATH.read_bytes()[:4096])  # the right header, then nothing
    with pytest.raises(FeatureInputError, match=rf"--model {cut}: LiteRT cannot load it"):
        feature_model.load_model_on_driver(spark, str(cut))


def test_driver_refuses_a_flatbuffer_of_another_model(spark, tmp_path):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
    def other(x):
        return tf.reduce_sum(x, axis=1, keepdims=True) * 2.0

    path = tmp_path / "other.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([other.get_concrete_function()]).convert())
    with pytest.raises(FeatureInputError, match=r"not MobileNetV2 .*input \(4,\), 1 outputs"):
        feature_model.load_model_on_driver(spark, str(path))


@pytest.mark.parametrize("what,message", [("missing", "FileNotFoundError: .*nowhere.tflite: no such file"), ("folder", "is a folder, not a file")])
def test_driver_names_a_model_it_cannot_read(spark, tmp_path, what, message):
    uri = str(tmp_path / "nowhere.tflite") if what == "missing" else str(tmp_path)
    with pytest.raises(FeatureInputError, match=f"--model {uri}: cannot be read .*{message}"):
        feature_model.load_model_on_driver(spark, uri)


# --- the job on Spark ---------------------------------------------------------------------


def test_the_model_runs_once_per_image_in_the_written_plan(spark, lake, driver_model):
    """The output is filtered on reject_reason: the optimizer must not copy the UDF into the
    filter (below the coalesce: the model would run twice per image, in many small tasks)."""
    broadcast = spark.sparkContext.broadcast(driver_model)
    images = extract_features.paths_frame(spark, photo_reader.list_photos(str(lake)), 2)
    udf = features.make_featurize_udf(broadcast, "key", tally=features.Tally.on(spark.sparkContext))
    plan = features.accepted(features.featurize(images, udf, str(lake)), "m")._jdf.queryExecution().executedPlan().toString()
    assert plan.count("ArrowEvalPython") == 1, plan


def test_tally_counts_featurized_rows_and_keeps_rejects():
    class Accumulator:
        def __init__(self, value):
            self.value = value

        def add(self, term):
            self.value = self.value + term

    class FaultsAccumulator(Accumulator):
        def add(self, term):
            self.value = features.FaultsParam().addInPlace(self.value, term)

    tally = features.Tally(Accumulator(0), Accumulator([]), FaultsAccumulator({}))
    tally.add(pd.DataFrame({"path": ["a", "b", "c"], "features": [[1.0], None, [2.0]],
                            "reject_reason": [None, "truncated", None], "reject_detail": [None, "cut", None]}),
              {"GetObject": {"SlowDown": 2}})
    tally.add(pd.DataFrame({"path": ["d"], "features": [[3.0]], "reject_reason": [None], "reject_detail": [None]}))
    assert tally.featurized.value == 3
    assert tally.rejects.value == [("b", "truncated", "cut")]
    tally.add(pd.DataFrame({"path": [], "features": [], "reject_reason": [], "reject_detail": []}),
              {"GetObject": {"SlowDown": 1, "ReadTimeoutError": 1}})
    assert tally.s3_retried.value == {"GetObject": {"SlowDown": 3, "ReadTimeoutError": 1}}


@pytest.mark.parametrize("key", ["raw/Apple Pink Lady/r_1_100.jpg", "raw/kiwi/IMG 0001 (1).HEIC", "raw/été/ü#?+&.jpg",
                                 "raw/a/b/c.jpg", "uploads/2026-12-02/user 7/8f3c.heic", "uploads/a.jpg",
                                 "rawish/kiwi/a.jpg"])
def test_the_job_labels_a_path_as_the_contract_does(spark, key):
    """One label rule: the feature job's Spark SQL spelling (features.with_label) gives what
    fruits_contract.names.label_of gives the Airflow side, on any name: the folder under raw/, none
    for the app's photos under uploads/ (a dated folder was a label). (A file directly in raw/ has
    no label: validation rejects it as no_label_folder, so the job never reads it.)"""
    from fruits_contract.names import label_of

    uri = f"s3://bucket/{key}"
    (row,) = features.with_label(spark.createDataFrame([(uri,)], "path string"), "s3://bucket/raw").collect()
    assert row.label == label_of("s3://bucket/raw", uri) == (key.split("/")[-2] if key.startswith("raw/") else None)


def test_the_labelled_root_is_spelt_as_the_paths_are():
    assert extract_features.labelled_root_of("/lake/raw/") == "file:///lake/raw/"
    assert extract_features.labelled_root_of("s3a://bucket/raw") == "s3://bucket/raw"


def test_output_schema_is_path_label_1280_floats_model(first_run, driver_model):
    output, _ = first_run
    schema = pq.read_schema(next(output.glob("*.parquet")))
    assert schema.names == ["path", "label", "features", "model"]
    assert str(schema.field("features").type) in ("list<element: float>", "list<item: float>")
    table = pd.read_parquet(output)
    assert {len(v) for v in table.features} == {FEATURE_DIM}
    assert table.features.iloc[0].dtype == np.float32
    sha = feature_model.model_fingerprint(driver_model)
    assert set(table.model) == {f"{MODEL_FAMILY}/tflite-sha256-{sha[:16]}"}


def test_features_are_written_without_dictionary_encoding(first_run):
    """Continuous floats never fit a dictionary: trying one per page was the JVM's main work per image."""
    output, _ = first_run
    for part in output.glob("*.parquet"):
        metadata = pq.ParquetFile(part).metadata
        for group in range(metadata.num_row_groups):
            columns = {metadata.row_group(group).column(i).path_in_schema: metadata.row_group(group).column(i)
                       for i in range(metadata.num_columns)}
            encodings = set(columns[extract_features.FEATURES_PARQUET_COLUMN].encodings)
            assert "PLAIN_DICTIONARY" not in encodings and "RLE_DICTIONARY" not in encodings, (part, encodings)
            assert "PLAIN_DICTIONARY" in columns["model"].encodings  # the option names one column only


def test_every_good_image_is_featurized_with_canonical_path_and_label(first_run, lake):
    output, result = first_run
    table = pd.read_parquet(output)
    duplicate, _ = _duplicate_and_original(lake)
    expected = {canonical_uri(str(p)) for p in _image_files(lake)
                if p.name not in {**BAD_FILES, **HOSTILE_FILES}} - {duplicate}
    assert set(table.path) == expected
    assert len(table) == len(expected)
    # labels are parent folder names, spaces kept, and paths are file:/// with real spaces
    for path, label in zip(table.path, table.label):
        assert path.startswith("file:///") and "%20" not in path
        assert path.split("/")[-2] == label
    assert "mixed bag" in set(table.label)
    assert {f"mode_{m.replace(';', '_')}" for m in ODD_MODES} <= {Path(p).stem for p in table.path}
    assert set(PHONE_NAMES.values()) <= {Path(p).name for p in table.path}


def test_bad_content_is_rejected_with_reason_and_counted(first_run, lake):
    output, result = first_run
    rejects = pd.read_parquet(output / "_rejects")
    by_name = {Path(p).name: reason for p, reason in zip(rejects.path, rejects.reason)}
    assert by_name == {**BAD_FILES, **HOSTILE_FILES}
    assert rejects.detail.str.len().min() > 0
    details = dict(zip(rejects.path.map(lambda p: Path(p).name), rejects.detail))
    assert details["readme.txt"] == "content is text, not JPEG, PNG, WebP or HEIC/HEIF"
    assert result["rejected"] == len(BAD_FILES) + len(HOSTILE_FILES)
    assert result["featurized"] == len(pd.read_parquet(output))
    assert result["read"] == result["featurized"] + result["rejected"] + result["duplicates"]
    assert result["read"] == len(_image_files(lake))  # every file listed is accounted for
    written = json.loads((output / "_job_result.json").read_text())
    assert written == result and written["job"] == "extract_features"


def test_rerun_replaces_output_instead_of_appending(spark, first_run, lake, driver_model):
    output, result = first_run
    again = extract_features.run(spark, extract_features.parse_args(["--images", str(lake), "--output", str(output)]),
                                 model=driver_model)
    assert again["featurized"] == result["featurized"]
    assert len(pd.read_parquet(output)) == result["featurized"]
    assert len(pd.read_parquet(output / "_rejects")) == len(BAD_FILES) + len(HOSTILE_FILES)
    assert len(pd.read_parquet(output / "_duplicates")) == 1


def test_manifest_reads_only_listed_files_and_executors_never_open_the_model(spark, lake, tmp_path):
    # A file name with glob characters and a label with spaces, listed in the manifest.
    odd = lake / "mixed bag" / "fig [1].jpg"
    odd.write_bytes(_jpeg_bytes(5))
    listed = [odd] + [p for p in _image_files(lake) if p.parent.name != "mixed bag"][:3]
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    pd.DataFrame({"path": [canonical_uri(str(p)) for p in listed] * 2}).to_parquet(manifest / "part-0.parquet")

    # The model read on the driver from a copy that is then deleted: the job can only succeed
    # if the executors get it from the broadcast.
    copy = tmp_path / "staged" / "model.tflite"
    copy.parent.mkdir()
    shutil.copy(SHIPPED_MODEL_PATH, copy)
    loaded = feature_model.load_model_on_driver(spark, str(copy))
    copy.unlink()

    output = tmp_path / "out"
    result = extract_features.run(spark, extract_features.parse_args(["--images", str(lake), "--output", str(output),
                                                                   "--manifest", str(manifest), "--model", str(copy)]),
                                  model=loaded)
    table = pd.read_parquet(output)
    assert sorted(table.path) == sorted(canonical_uri(str(p)) for p in listed)
    assert result == {**result, "read": 4, "featurized": 4, "rejected": 0, "duplicates": 0}
    assert "mixed bag" in set(table.label)


@pytest.mark.parametrize("route", ["listing", "manifest"])
def test_the_apps_photos_are_featurized_with_no_label_whatever_their_folders(spark, driver_model, tmp_path, route):
    """uploads/<date>/<user>/<id>: the folder holding an app photo is no fruit (it was the label)."""
    names = {"raw/kiwi/a.jpg": "kiwi", "uploads/2026-12-02/user 7/8f3c.jpg": None, "uploads/b.jpg": None}
    for index, name in enumerate(names):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(_jpeg_bytes(index))
    argv = ["--images", str(tmp_path / "raw"), "--output", str(tmp_path / "out")]
    if route == "listing":
        argv += ["--uploads", str(tmp_path / "uploads")]
    else:
        (tmp_path / "manifest").mkdir()
        pd.DataFrame({"path": [f"file://{tmp_path / name}" for name in names]}).to_parquet(
            tmp_path / "manifest" / "part-0.parquet")
        argv += ["--manifest", str(tmp_path / "manifest")]
    result = extract_features.run(spark, extract_features.parse_args(argv), model=driver_model)
    table = pd.read_parquet(tmp_path / "out")
    labels = {path: (label if isinstance(label, str) else None) for path, label in zip(table.path, table.label)}
    assert labels == {f"file://{tmp_path / name}": label for name, label in names.items()}
    assert result["featurized"] == 3


def test_a_missing_uploads_folder_is_named_as_the_flag(tmp_path):
    (tmp_path / "raw").mkdir()
    with pytest.raises(FeatureInputError, match=rf"--uploads {tmp_path / 'uploads'}: no such folder"):
        extract_features.listed_photos(str(tmp_path / "raw"), str(tmp_path / "uploads"))


# Distinct bytes each (duplicates would hide a wrong name); names every file system here accepts.
LITERAL_NAMES = ["a b.jpg", "50%off.jpg", "a%b.jpg", "a#b.jpg", "a?b.jpg", "a+b&c=d.jpg", "é ñ.jpg", "a{1}.jpg"]
UNREADABLE_NAMES = {"50%41.jpg": "'%41'", "a%20b.jpg": "'%20'", "12:30:05.jpg": "':'"}


@pytest.mark.parametrize("route", ["listing", "manifest"])
def test_every_name_is_recorded_literally_or_rejected_unread(spark, driver_model, tmp_path, route):
    """Hadoop read 50%41.jpg as 50A.jpg (the upload then never counted as done, and erasing it missed
    its features) and failed the whole job on a ':' in a name: those are rejected, unread, with a
    reason; every other name is recorded as the file system spells it."""
    folder = tmp_path / "raw" / "kiwi"
    folder.mkdir(parents=True)
    names = LITERAL_NAMES + list(UNREADABLE_NAMES)
    for seed, name in enumerate(names):
        (folder / name).write_bytes(_jpeg_bytes(seed))
    uri = {name: f"file://{folder / name}" for name in names}  # as validation spells them (not unquoted)
    manifest = None
    if route == "manifest":
        manifest = tmp_path / "manifest"
        manifest.mkdir()
        pd.DataFrame({"path": list(uri.values())}).to_parquet(manifest / "part-0.parquet")

    output = tmp_path / "out"
    flags = ["--manifest", str(manifest)] if manifest else []
    result = extract_features.run(spark, extract_features.parse_args(["--images", str(tmp_path / "raw"),
                                                                   "--output", str(output), *flags]),
                                  model=driver_model)
    assert sorted(pd.read_parquet(output).path) == sorted(uri[name] for name in LITERAL_NAMES)
    rejects = pd.read_parquet(output / "_rejects")
    assert sorted(rejects.path) == sorted(uri[name] for name in UNREADABLE_NAMES)
    for path, reason, detail in zip(rejects.path, rejects.reason, rejects.detail):
        name = path.rsplit("/", 1)[1]
        assert reason == "unsafe_name" and UNREADABLE_NAMES[name] in detail and "Hadoop" in detail
    assert (result["read"], result["featurized"], result["rejected"]) == (len(names), len(LITERAL_NAMES),
                                                                         len(UNREADABLE_NAMES))


def test_a_missing_images_folder_is_named_as_the_flag(tmp_path):
    nowhere = tmp_path / "no such lake" / "raw"
    with pytest.raises(FeatureInputError, match=rf"--images {nowhere}: no such folder"):
        extract_features.listed_photos(str(nowhere))
    with pytest.raises(FeatureInputError, match=r"--images hdfs://lake/raw: .*s3:// or file:// only"):
        extract_features.listed_photos("hdfs://lake/raw")


def test_empty_manifest_writes_an_empty_table(spark, lake, driver_model, tmp_path):
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    pd.DataFrame({"path": pd.Series([], dtype=str)}).to_parquet(manifest / "part-0.parquet")
    result = extract_features.run(spark, extract_features.parse_args(["--images", str(lake), "--manifest", str(manifest),
                                                                   "--output", str(tmp_path / "out")]), model=driver_model)
    assert (result["read"], result["featurized"], result["rejected"], result["duplicates"]) == (0, 0, 0, 0)


def test_features_equal_a_direct_keras_predict(first_run, sample_dir, real_weights):
    """The contract (docs/design.md, "Feature job"): each vector equals Keras' model.predict with the source weights
    on the same image, decoded by Keras' own loader (bicubic, 224), cosine at least 0.9999."""
    if sample_dir is None:
        pytest.skip("FRUITS_SAMPLE_DIR is not set: real Fruits-360 images are needed to judge feature quality")
    if real_weights is None:
        pytest.skip("FRUITS_WEIGHTS is not set: the Keras source weights are needed to compare with Keras")
    import keras

    output, _ = first_run
    table = pd.read_parquet(output)
    table = table[table.label != "mixed bag"].sort_values("path").head(16)
    model = keras.applications.MobileNetV2(input_shape=(224, 224, 3), include_top=False, pooling="avg", weights=None)
    model.load_weights(real_weights)
    pixels = np.stack([
        keras.utils.img_to_array(
            keras.utils.load_img(path[len("file://"):], target_size=(224, 224), interpolation="bicubic")
        )
        for path in table.path
    ])
    expected = model.predict(keras.applications.mobilenet_v2.preprocess_input(pixels), verbose=0)
    cosine = _cosines(np.stack(table.features.to_numpy()), expected)
    assert len(cosine) >= 8 and cosine.min() >= 0.9999, cosine


def _spark_submit(python: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """spark-submit on local[2], driver and workers running ``python``, as the DAG runs the jobs locally."""
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    return subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
         *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
    )


def test_packaged_copy_runs_without_fruits_spark_installed_and_without_tensorflow(images_dir, tmp_path):
    """What `make package` ships, run as on a cluster (`--py-files fruits_spark.zip`) but on a
    local master, by a Python that has the dependencies but neither fruits_spark nor a working
    TensorFlow or Keras (the EMR nodes install none): driver and workers must need none of them."""
    import site

    from fruits_pipeline.job_code import build_code_package
    from fruits_pipeline.settings import REPO_ROOT

    package = build_code_package(REPO_ROOT / "spark_jobs", tmp_path / "package")
    bare = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    bare_python = bare / "bin" / "python"
    bare_site = Path(subprocess.run([str(bare_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                    capture_output=True, text=True, check=True).stdout.strip())
    # A plain path line: the dependencies, without the editable install's own .pth file.
    (bare_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    for blocked in ("tensorflow", "keras"):  # found before the real ones: any import of them fails
        (bare_site / blocked).mkdir()
        (bare_site / blocked / "__init__.py").write_text(f"raise ImportError('{blocked} is not on the cluster')\n")
    refused = subprocess.run([str(bare_python), "-c", "import fruits_spark"], capture_output=True, text=True)
    assert "No module named 'fruits_spark'" in refused.stderr
    refused = subprocess.run([str(bare_python), "-c", "import tensorflow"], capture_output=True, text=True)
    assert "tensorflow is not on the cluster" in refused.stderr

    output = tmp_path / "features"
    done = _spark_submit(
        str(bare_python), "--py-files", str(package.files["fruits_spark.zip"]), str(package.files["extract_features.py"]),
        "--images", str(images_dir), "--output", str(output), "--model", str(SHIPPED_MODEL_PATH), cwd=tmp_path,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith("FRUITS_RESULT ")]
    assert done.returncode == 0 and results, (done.stdout + done.stderr)[-3000:]
    images = len(_image_files(images_dir))
    assert json.loads(results[0][len("FRUITS_RESULT "):])["featurized"] == images
    assert pq.read_table(output).num_rows == images
