"""The feature job on local Spark (local[2]: broadcast and two Python workers are exercised).

Real Fruits-360 images and real weights when FRUITS_SAMPLE_DIR / FRUITS_WEIGHTS are set;
otherwise generated images and random weights (the quality test then skips and says why).
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

from fruits_spark import features
from fruits_spark.common import canonical_uri

BAD_FILES = {
    # file name -> expected reason
    "empty.jpg": "empty",
    "truncated.jpg": "truncated",
    "not_an_image.jpg": "not_an_image",
    "bomb.png": "decompression_bomb",
}
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


@pytest.fixture(scope="module")
def lake(images_dir, tmp_path_factory) -> Path:
    """images_dir (real or generated) + a label with spaces holding bad content and odd modes."""
    root = tmp_path_factory.mktemp("lake") / "raw"
    shutil.copytree(images_dir, root)
    mixed = root / "mixed bag"
    _write_bad_files(mixed)
    for mode in ODD_MODES:
        suffix = "png" if mode in ("I;16", "LA", "1", "P", "RGBA") else "jpg"
        image = _odd_mode_image(mode)
        image.save(mixed / f"mode_{mode.replace(';', '_')}.{suffix.upper() if mode == 'L' else suffix}")
    (mixed / "readme.txt").write_text("not listed: not an image extension")
    return root


@pytest.fixture(scope="module")
def driver_weights(spark, weights_file):
    return features.load_weights_on_driver(spark, str(weights_file))


@pytest.fixture(scope="module")
def first_run(spark, lake, driver_weights, tmp_path_factory):
    output = tmp_path_factory.mktemp("features") / "batch=test"
    result = features.run(spark, str(lake), str(output), weights=driver_weights, weights_uri="test.weights.h5")
    return output, result


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


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


def test_escape_hadoop_glob_makes_brackets_literal():
    assert features.escape_hadoop_glob("file:///a/b [1]/c*.jpg") == "file:///a/b \\[1\\]/c\\*.jpg"


# --- the job on Spark ---------------------------------------------------------------------


def test_output_schema_is_path_label_1280_floats_model(first_run):
    output, _ = first_run
    schema = pq.read_schema(next(output.glob("*.parquet")))
    assert schema.names == ["path", "label", "features", "model"]
    assert str(schema.field("features").type) in ("list<element: float>", "list<item: float>")
    table = pd.read_parquet(output)
    assert {len(v) for v in table.features} == {features.FEATURE_DIM}
    assert table.features.iloc[0].dtype == np.float32
    assert (table.model == "mobilenet_v2_1.0_224_avg/test.weights.h5").all()


def test_every_good_image_is_featurized_with_canonical_path_and_label(first_run, lake):
    output, result = first_run
    table = pd.read_parquet(output)
    expected = {canonical_uri(str(p)) for p in _image_files(lake) if p.name not in BAD_FILES}
    assert set(table.path) == expected
    assert len(table) == len(expected)
    # labels are parent folder names, spaces kept, and paths are file:/// with real spaces
    for path, label in zip(table.path, table.label):
        assert path.startswith("file:///") and "%20" not in path
        assert path.split("/")[-2] == label
    assert "mixed bag" in set(table.label)
    assert {f"mode_{m.replace(';', '_')}" for m in ODD_MODES} <= {Path(p).stem for p in table.path}


def test_bad_content_is_rejected_with_reason_and_counted(first_run, lake):
    output, result = first_run
    rejects = pd.read_parquet(output / "_rejects")
    by_name = {Path(p).name: reason for p, reason in zip(rejects.path, rejects.reason)}
    assert by_name == BAD_FILES
    assert rejects.detail.str.len().min() > 0
    assert result["rejected"] == len(BAD_FILES)
    assert result["featurized"] == len(pd.read_parquet(output))
    assert result["read"] == result["featurized"] + result["rejected"]
    written = json.loads((output / "_job_result.json").read_text())
    assert written == result and written["job"] == "extract_features"


def test_rerun_replaces_output_instead_of_appending(spark, first_run, lake, driver_weights):
    output, result = first_run
    again = features.run(spark, str(lake), str(output), weights=driver_weights, weights_uri="test.weights.h5")
    assert again["featurized"] == result["featurized"]
    assert len(pd.read_parquet(output)) == result["featurized"]
    assert len(pd.read_parquet(output / "_rejects")) == len(BAD_FILES)


def test_manifest_reads_only_listed_files_and_executors_never_open_the_weights(
    spark, lake, weights_file, tmp_path
):
    # A file name with glob characters and a label with spaces, listed in the manifest.
    odd = lake / "mixed bag" / "fig [1].jpg"
    odd.write_bytes(_jpeg_bytes(5))
    listed = [odd] + [p for p in _image_files(lake) if p.parent.name != "mixed bag"][:3]
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    pd.DataFrame({"path": [canonical_uri(str(p)) for p in listed] * 2}).to_parquet(manifest / "part-0.parquet")

    # Weights loaded on the driver from a copy that is then deleted: the job can only succeed
    # if the executors get them from the broadcast.
    copy = tmp_path / "staged" / "mobilenet_v2.weights.h5"
    copy.parent.mkdir()
    shutil.copy(weights_file, copy)
    loaded = features.load_weights_on_driver(spark, str(copy))
    copy.unlink()

    output = tmp_path / "out"
    result = features.run(spark, str(lake), str(output), manifest_uri=str(manifest), weights=loaded,
                          weights_uri=str(copy))
    table = pd.read_parquet(output)
    assert sorted(table.path) == sorted(canonical_uri(str(p)) for p in listed)
    assert result == {**result, "read": 4, "featurized": 4, "rejected": 0}
    assert "mixed bag" in set(table.label)


def test_empty_manifest_writes_an_empty_table(spark, lake, driver_weights, tmp_path):
    manifest = tmp_path / "manifest"
    manifest.mkdir()
    pd.DataFrame({"path": pd.Series([], dtype=str)}).to_parquet(manifest / "part-0.parquet")
    result = features.run(spark, str(lake), str(tmp_path / "out"), manifest_uri=str(manifest),
                          weights=driver_weights)
    assert (result["read"], result["featurized"], result["rejected"]) == (0, 0, 0)


def test_features_equal_a_direct_keras_predict(first_run, sample_dir, real_weights):
    if sample_dir is None:
        pytest.skip("FRUITS_SAMPLE_DIR is not set: real Fruits-360 images are needed to judge feature quality")
    if real_weights is None:
        pytest.skip("FRUITS_WEIGHTS is not set: real ImageNet weights are needed to judge feature quality")
    import keras

    output, _ = first_run
    table = pd.read_parquet(output)
    table = table[table.label != "mixed bag"].sort_values("path").head(12)
    model = features.build_model(weights=None)
    model.load_weights(real_weights)
    pixels = np.stack([
        keras.utils.img_to_array(
            keras.utils.load_img(path[len("file://"):], target_size=(224, 224), interpolation="bicubic")
        )
        for path in table.path
    ])
    expected = model.predict(keras.applications.mobilenet_v2.preprocess_input(pixels), verbose=0)
    got = np.stack(table.features.to_numpy())
    cosine = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
    assert cosine.min() >= 0.9999, cosine


def test_a_reused_python_worker_builds_its_model_once(driver_weights):
    """Spark reuses Python workers across tasks: the second task of the same weights must get
    the model the first one built, not rebuild it (nor fail looking it up)."""

    class Broadcast:  # what the UDF reads: Spark's Broadcast exposes the arrays as .value
        def __init__(self, value):
            self.value = value
            self.reads = 0

        def __getattribute__(self, name):
            if name == "value":
                object.__setattr__(self, "reads", object.__getattribute__(self, "reads") + 1)
            return object.__getattribute__(self, name)

    broadcast = Broadcast(driver_weights)
    key = features.weights_fingerprint(driver_weights)
    first = features._worker_predictor(broadcast, key, tf_threads=1)
    second = features._worker_predictor(broadcast, key, tf_threads=1)
    assert second is first
    assert broadcast.reads == 1
    output = second(np.zeros((2, features.IMAGE_SIZE, features.IMAGE_SIZE, 3), dtype=np.float32)).numpy()
    assert output.shape == (2, 1280)


def test_weights_signature_of_keras_mobilenet_v2():
    """The driver's structural check, read without TensorFlow, agrees with Keras' own model."""
    model = features.build_model(weights=None)
    signature = features.weights_signature(features._keras_format_bytes(model))
    assert signature == features.MOBILENET_V2_SIGNATURE == (len(model.get_weights()), model.count_params())


def test_workers_load_from_memory_exactly_what_keras_loads_from_the_file(weights_file, driver_weights):
    from_file = features.build_model(weights=None)
    from_file.load_weights(weights_file)
    from_memory = features.build_model(weights=None)
    features.set_weights_from_bytes(from_memory, driver_weights)
    pairs = list(zip(from_file.get_weights(), from_memory.get_weights()))
    assert len(pairs) == 260 and all(np.array_equal(a, b) for a, b in pairs)


def test_driver_refuses_weights_that_are_not_mobilenet_v2(spark, tmp_path):
    import keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other_path = tmp_path / "other.weights.h5"
    other.save_weights(other_path)
    with pytest.raises(SystemExit, match=r"not MobileNetV2 .*2 arrays holding 15 numbers"):
        features.load_weights_on_driver(spark, str(other_path))
    not_hdf5 = tmp_path / "notes.weights.h5"
    not_hdf5.write_text("these are not weights")
    with pytest.raises(SystemExit, match="not an HDF5 weights file"):
        features.load_weights_on_driver(spark, str(not_hdf5))


@pytest.mark.parametrize("what,message", [("missing", "FileNotFoundException"), ("folder", "is a folder, not a file")])
def test_driver_names_weights_it_cannot_read(spark, tmp_path, what, message):
    uri = str(tmp_path / "nowhere.weights.h5") if what == "missing" else str(tmp_path)
    with pytest.raises(SystemExit, match=f"--weights {uri}: cannot be read .*{message}"):
        features.load_weights_on_driver(spark, uri)


WARMED_WORKERS_CHECK = """
import json, os, sys
import pandas as pd
from pyspark.sql import functions as F
from fruits_spark.common import build_session
from fruits_spark import features

spark = build_session("warm-up-check", features.SESSION_CONFIG)
warm = features.warm_up_workers(spark, 2, tf_threads=1)
warm.join()

@F.pandas_udf("string")
def worker_state(ids: pd.Series) -> pd.Series:
    from fruits_spark import features as on_worker
    return pd.Series([f"{os.getpid()} {'predict' in on_worker._WORKER}"] * len(ids))

seen = [row.state.split() for row in spark.range(0, 2, 1, 2).select(worker_state("id").alias("state")).collect()]
print("CHECK " + json.dumps({"warmed": warm.pids, "seen": seen}))
spark.stop()
"""


def _spark_submit(python: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """spark-submit on local[2], driver and workers running ``python``, as the DAG runs the jobs locally."""
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [str(Path(sys.executable).parent / "spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
         *args],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=600,
    )


def test_feature_tasks_run_in_the_workers_warmed_for_them(tmp_path):
    """The warm-up is an RDD job, the feature job a pandas UDF: in a fresh job, Spark must hand
    the UDF's tasks the warmed workers (one worker pool), or the warm-up is paid for nothing."""
    script = tmp_path / "check.py"
    script.write_text(WARMED_WORKERS_CHECK)
    done = _spark_submit(sys.executable, str(script))
    lines = [line for line in done.stdout.splitlines() if line.startswith("CHECK ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    check = json.loads(lines[0][len("CHECK "):])
    assert len(check["warmed"]) == 2
    assert {int(pid) for pid, _ in check["seen"]} <= set(check["warmed"])
    assert all(built == "True" for _, built in check["seen"])


def _preload_in_subprocess(extra_path: Path | None = None) -> subprocess.CompletedProcess:
    """What Spark does with tf_daemon: run it, then read the port from its stdout."""
    code = (
        "import sys\n"
        "from fruits_spark.tf_daemon import preload_tensorflow\n"
        "preload_tensorflow()\n"
        "loaded = 'tensorflow' in sys.modules and hasattr(sys.modules['tensorflow'], 'config')\n"
        "if loaded:\n"
        "    import tensorflow as tf\n"
        "    tf.config.threading.set_intra_op_parallelism_threads(1)  # raises once TF has started\n"
        "print('PORT', loaded)\n"
    )
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)


def test_tf_daemon_imports_tensorflow_but_does_not_start_it():
    done = _preload_in_subprocess()
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "PORT True\n"


def test_tf_daemon_keeps_stdout_for_the_port_and_says_when_tensorflow_fails(tmp_path):
    fake = tmp_path / "tensorflow"
    fake.mkdir()
    (fake / "__init__.py").write_text("import os\nos.write(1, b'noise on stdout\\n')\nraise ImportError('no TF here')\n")
    done = _preload_in_subprocess(tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == "PORT False\n"
    assert "noise on stdout" in done.stderr
    assert "fruits_spark.tf_daemon: TensorFlow not preloaded (ImportError: no TF here)" in done.stderr


def test_packaged_copy_runs_where_fruits_spark_is_not_installed(images_dir, weights_file, tmp_path):
    """What `make package` ships, run as on a cluster (`--py-files fruits_spark.zip`) but on a
    local master, by a Python that has every dependency and not fruits_spark: the workers' daemon
    (fruits_spark.tf_daemon) must find the package in the zip."""
    import site

    from fruits_pipeline.code_package import build_code_package
    from fruits_pipeline.settings import REPO_ROOT

    package = build_code_package(REPO_ROOT / "spark_jobs", tmp_path / "package")
    bare = tmp_path / "bare-python"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    bare_python = bare / "bin" / "python"
    bare_site = subprocess.run([str(bare_python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip()
    # A plain path line: the dependencies, without the editable install's own .pth file.
    Path(bare_site, "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    refused = subprocess.run([str(bare_python), "-c", "import fruits_spark"], capture_output=True, text=True)
    assert "No module named 'fruits_spark'" in refused.stderr

    output = tmp_path / "features"
    done = _spark_submit(
        str(bare_python), "--py-files", str(package.files["fruits_spark.zip"]), str(package.files["extract_features.py"]),
        "--images", str(images_dir), "--output", str(output), "--weights", str(weights_file), cwd=tmp_path,
    )
    results = [line for line in done.stdout.splitlines() if line.startswith("FRUITS_RESULT ")]
    assert done.returncode == 0 and results, (done.stdout + done.stderr)[-3000:]
    images = len(_image_files(images_dir))
    assert json.loads(results[0][len("FRUITS_RESULT "):])["featurized"] == images
    assert pq.read_table(output).num_rows == images
