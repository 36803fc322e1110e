"""MobileNetV2 image features on Spark: reading, decoding, the model UDF, and the job itself.

Speed notes (measured with bench/bench_features.py; README "Performance" has the figures):
- One TensorFlow thread pool per Spark task slot, sized to ``spark.task.cpus`` (1 by default).
  Left at TF's default every Python worker starts one thread per core, so two task slots on
  two cores run four busy threads that evict each other's caches: this oversubscription is
  most of what the reference notebook loses.
- Few, large partitions (one per task slot): every task builds its model once, then streams.
  The model is also cached per Python worker process, so an extra task costs no rebuild.
- Arrow batches of ``batch_size`` rows (``spark.sql.execution.arrow.maxRecordsPerBatch``): memory
  stays bounded by one batch of image bytes whatever the upload size, and the UDF gets exactly
  one model batch per Arrow batch.
- The model is called through one traced ``tf.function`` (fixed signature, no retracing),
  not ``model.predict`` which rebuilds a data pipeline and callbacks on every call.
- Decoding of the next batch runs in a background thread while TF predicts the current one
  (Pillow and NumPy release the GIL), so decoding is off the critical path.
- Decoded pixels go straight into one preallocated float32 batch array: no per-row objects.

Start-up, the part a single process would not pay (TensorFlow's import alone is 7 s of one core
here with compiled bytecode):
- TensorFlow is imported once per executor, in the Python daemon that forks the workers
  (tf_daemon), not once per worker.
- The workers start, and build and trace their models, while the driver reads the weights
  (straight through the Hadoop FileSystem, no Spark job) and lists the images (warm_up_workers).
- The model's output is written first: that write runs the model and fills the cache that the
  counts and the rejects then read. Empty files are looked for only when the counts say some
  listed file is missing.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pandas as pd

from fruits_spark.common import canonical_uri, get_logger
from fruits_spark.io import read_bytes, write_text

# The feature job's session (extract_features.py): TensorFlow imported once per executor.
SESSION_CONFIG = {"spark.python.daemon.module": "fruits_spark.tf_daemon"}
IMAGE_SIZE = 224
FEATURE_DIM = 1280
MODEL_FAMILY = "mobilenet_v2_1.0_224_avg"
DEFAULT_BATCH_SIZE = 64
# Hadoop glob, applied to file names while listing: .jpg .jpeg .png in any letter case.
IMAGE_GLOB = "*.{[jJ][pP][gG],[jJ][pP][eE][gG],[pP][nN][gG]}"
_HADOOP_GLOB_CHARS = "\\{}[]*?"

log = get_logger("fruits.extract_features")


# ---------------------------------------------------------------------------
# Pure helpers: one image's bytes -> pixels, or a reason why not (no Spark, no TF)
# ---------------------------------------------------------------------------
class RejectedImage(Exception):
    """Content that is not a usable image; ``reason`` is a short stable code."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def _to_rgb(img):
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16/32-bit grey: convert("RGB") would clip everything above 255 to white.
        pixels = np.asarray(img, dtype=np.uint32)
        if img.mode.startswith("I;16") or pixels.max(initial=0) > 255:
            pixels = pixels >> 8
        img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def decode_image(content: bytes) -> np.ndarray:
    """Bytes of any image Pillow opens -> uint8 RGB array (224, 224, 3), bicubic resize.

    Raises RejectedImage for empty, non-image, truncated content and decompression bombs
    (more pixels than Pillow's MAX_IMAGE_PIXELS).
    """
    from PIL import Image, UnidentifiedImageError

    if content is None or len(content) == 0:
        raise RejectedImage("empty", "zero bytes")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that; refuse them all.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(content)) as img:
                img.load()
                rgb = _to_rgb(img).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
                return np.asarray(rgb, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise RejectedImage("decompression_bomb", str(exc)) from None
    except UnidentifiedImageError as exc:
        raise RejectedImage("not_an_image", str(exc)) from None
    except OSError as exc:
        reason = "truncated" if "truncated" in str(exc).lower() else "decode_error"
        raise RejectedImage(reason, str(exc)) from None
    except Exception as exc:  # any other decoder failure is bad content, never a job failure
        raise RejectedImage("decode_error", f"{type(exc).__name__}: {exc}") from None


@dataclass
class DecodedBatch:
    """Model input for the decodable rows of one Arrow batch, plus why the others were not."""

    pixels: np.ndarray  # float32 (n_ok, 224, 224, 3), already preprocess_input'ed
    ok_rows: np.ndarray  # int positions of the decodable rows in the batch
    reasons: list  # per row: None or reason code
    details: list  # per row: None or detail text


def decode_batch(contents) -> DecodedBatch:
    """Decode a sequence of image bytes into one preallocated float32 batch (MobileNetV2 scaling)."""
    from keras.applications.mobilenet_v2 import preprocess_input

    n = len(contents)
    pixels = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    reasons: list = [None] * n
    details: list = [None] * n
    ok = []
    for i, content in enumerate(contents):
        try:
            pixels[len(ok)] = decode_image(content)
            ok.append(i)
        except RejectedImage as rejected:
            reasons[i], details[i] = rejected.reason, rejected.detail[:500]
    pixels = preprocess_input(pixels[: len(ok)])
    return DecodedBatch(pixels, np.asarray(ok, dtype=np.int64), reasons, details)


# ---------------------------------------------------------------------------
# The model: weights read once on the driver, broadcast, set into a weights=None model
# ---------------------------------------------------------------------------
def build_model(weights=None):
    """MobileNetV2 alpha 1.0, 224x224, no top, global average pooling (1280 outputs)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    return keras.applications.MobileNetV2(
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        alpha=1.0,
        include_top=False,
        pooling="avg",
        weights=weights,
    )


# MobileNetV2 alpha 1.0, 224, no top, in Keras' .weights.h5 format: 260 arrays holding 2,257,984
# numbers (test_weights_signature_of_keras_mobilenet_v2 checks them against Keras itself).
MOBILENET_V2_SIGNATURE = (260, 2_257_984)


def weights_signature(content: bytes) -> tuple[int, int] | None:
    """(arrays, numbers) of a Keras .weights.h5 held in memory; None for another HDF5 layout
    (e.g. the legacy .h5 that keras.applications downloads). Reads no TensorFlow."""
    import h5py

    shapes = []
    with h5py.File(io.BytesIO(content), "r") as handle:
        if "layers" not in handle:
            return None
        handle.visititems(lambda _, node: shapes.append(node.shape) if isinstance(node, h5py.Dataset) else None)
    return len(shapes), int(sum(int(np.prod(shape)) for shape in shapes))


def _keras_format_bytes(model) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mobilenet_v2.weights.h5")
        model.save_weights(path)
        with open(path, "rb") as handle:
            return handle.read()


def load_weights_on_driver(spark, weights_uri: str | None) -> bytes:
    """The model's weights as the bytes of a Keras .weights.h5, read here on the driver only.

    ``weights_uri``: a local path or any URI Spark reads (s3://, file://). A Keras .weights.h5 is
    checked with h5py and passed on as is: the driver never imports TensorFlow, which would cost
    it as much time as a worker's whole model build. A legacy Keras .h5 is converted once here.
    None: Keras' ImageNet weights, downloaded by Keras on the driver.
    """
    if weights_uri is None:
        try:
            return _keras_format_bytes(build_model(weights="imagenet"))
        except Exception as exc:
            raise SystemExit(
                "extract_features: no --weights given and Keras could not download its ImageNet "
                f"MobileNetV2 weights ({type(exc).__name__}: {exc}). Pass --weights URI of a staged "
                "mobilenet_v2_1.0_224_no_top.weights.h5 (the DAG stages it under <lake>/models/)."
            ) from None
    uri = weights_uri if "://" in weights_uri else canonical_uri(os.path.abspath(weights_uri))
    try:
        content = read_bytes(spark, uri)
    except Exception as exc:
        java = getattr(exc, "java_exception", None)  # a Py4JJavaError: its Java exception is the reason
        reason = java.toString() if java is not None else f"{type(exc).__name__}: {exc}"
        raise SystemExit(f"--weights {weights_uri}: cannot be read ({reason})") from None
    try:
        signature = weights_signature(content)
    except OSError as exc:
        raise SystemExit(f"--weights {weights_uri}: not an HDF5 weights file ({exc})") from None
    if signature is None:
        content = _converted_legacy_weights(content, weights_uri)
    elif signature != MOBILENET_V2_SIGNATURE:
        raise SystemExit(
            f"--weights {weights_uri}: not MobileNetV2 (alpha 1.0, 224, no top) weights: {signature[0]} arrays "
            f"holding {signature[1]:,} numbers, expected {MOBILENET_V2_SIGNATURE[0]} holding {MOBILENET_V2_SIGNATURE[1]:,}"
        )
    return content


def _converted_legacy_weights(content: bytes, weights_uri: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, "mobilenet_v2_legacy.h5")
        with open(local, "wb") as handle:
            handle.write(content)
        model = build_model(weights=None)
        try:
            model.load_weights(local)
        except Exception as exc:
            raise SystemExit(
                f"--weights {weights_uri}: not MobileNetV2 (alpha 1.0, 224, no top) weights "
                f"({type(exc).__name__}: {exc})"
            ) from None
    return _keras_format_bytes(model)


def set_weights_from_bytes(model, content: bytes) -> None:
    """Load a .weights.h5 held in memory with Keras' own loader: an executor never opens a file."""
    from keras.src.saving import saving_lib

    store = saving_lib.H5IOStore(io.BytesIO(content), mode="r")
    failed, errors = set(), {}
    try:
        saving_lib._load_state(model, weights_store=store, assets_store=None, inner_path="",
                               visited_saveables=set(), failed_saveables=failed, error_msgs=errors)
    finally:
        store.close()
    if failed:
        saving_lib._raise_loading_failure(errors)


def model_name(weights_uri: str | None) -> str:
    """The `model` column: architecture and which weights, e.g. mobilenet_v2_1.0_224_avg/imagenet."""
    source = os.path.basename(weights_uri.rstrip("/")) if weights_uri else "keras-imagenet"
    return f"{MODEL_FAMILY}/{source}"


# This Python worker's model: built and traced once, its weights replaced when a job brings others.
_WORKER: dict = {}


def _worker_model(tf_threads: int) -> dict:
    """Everything a worker needs before the weights: TensorFlow with its pools sized to the task
    slot, the model built with ``weights=None``, and predict traced.

    Built once per Python worker; Spark reuses workers across tasks and jobs (warm_up_workers).
    """
    if "predict" in _WORKER:
        return _WORKER
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(tf_threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass  # TF already started in this reused worker: its pools were sized then
    model = build_model(weights=None)

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
    def predict(x):
        return model(x, training=False)

    # Traces and optimizes the graph. A single image: oneDNN still creates its kernels for the
    # batch shape on the first real batch (about 2 s with one thread), but no batch of zeros is paid.
    predict(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32))
    _WORKER.update(model=model, predict=predict, weights_key=None)
    return _WORKER


def _worker_predictor(broadcast_weights, weights_key: str, tf_threads: int):
    """This worker's traced predict function, holding the broadcast weights.

    The broadcast is read, and the weights set, only when ``weights_key`` (a fingerprint of the
    weights) differs from what the model holds: a reused worker pays it once per weights.
    """
    worker = _worker_model(tf_threads)
    if worker["weights_key"] != weights_key:
        set_weights_from_bytes(worker["model"], broadcast_weights.value)
        worker["weights_key"] = weights_key
    return worker["predict"]


def warm_up_workers(spark, slots: int, tf_threads: int):
    """Start every task slot's Python worker now and have it build and trace its model (all but
    the weights) while the driver reads the weights and lists the images.

    Returns the background thread running the warm-up job; once joined, ``thread.pids`` holds
    the warmed workers' process ids. Left to the feature job's tasks, the workers would start
    only once the driver is done, and their start (TensorFlow, see tf_daemon) and model build
    would come after the driver's work instead of beside it.

    Spark pools Python workers per environment and reuses them (spark.python.worker.reuse), so
    the feature job's tasks get these warmed workers. For the two environments to match, the
    SQL runner must not add its simplified-traceback variable, which this RDD job does not set.
    An RDD job rather than a pandas UDF: it starts before the SQL engine's first-query set-up.
    Best effort: a failure is logged and the feature job's tasks build their models themselves.
    """
    import threading

    spark.conf.set("spark.sql.execution.pyspark.udf.simplifiedTraceback.enabled", "false")

    def warm(_):
        started = time.monotonic()
        # What the feature task imports first (Arrow for the pandas UDF, Pillow for decoding).
        import pyarrow  # noqa: F401
        from PIL import Image  # noqa: F401

        _worker_model(tf_threads)
        yield os.getpid(), time.monotonic() - started

    warmed = spark.sparkContext.parallelize(range(slots), slots).mapPartitions(warm)

    def run():
        try:
            workers = warmed.collect()
        except Exception as exc:  # e.g. the session stopping on a driver error
            log.warning("warming the workers failed (%s: %s); the tasks build their models themselves",
                        type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            return
        thread.pids.extend(pid for pid, _ in workers)
        log.info("workers ready: %s", "; ".join(f"pid {pid} in {seconds:.1f} s" for pid, seconds in workers))

    thread = threading.Thread(target=run, name="warm-up-workers", daemon=True)
    thread.pids = []
    thread.start()
    return thread


def weights_fingerprint(weights: bytes) -> str:
    import hashlib

    return hashlib.sha256(weights).hexdigest()


def make_featurize_udf(broadcast_weights, weights_key: str, tf_threads: int = 1, log_every: int = 512):
    """Scalar Iterator pandas UDF: (path as Spark lists it, image bytes) ->
    struct(path canonical, features, reject_reason, reject_detail).

    ``broadcast_weights`` is the Broadcast of the weight arrays; the executor reads nothing else.
    The path is made canonical here rather than in a UDF of its own: each Python UDF of a stage
    takes a Python worker of its own, and a second one could take a warmed worker from this one.
    """
    from pyspark.sql.functions import pandas_udf

    def featurize(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        predict = None  # built on the first batch: an empty partition never starts TF
        started, done, next_log = time.monotonic(), 0, log_every
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as pool:
            pending = None
            for paths, contents in batches:
                if predict is None:  # before any decode thread imports Keras
                    predict = _worker_predictor(broadcast_weights, weights_key, tf_threads)
                    started = time.monotonic()  # the rate logged is the steady-state one
                future = pool.submit(decode_batch, contents.tolist())
                if pending is not None:
                    yield _predict_frame(predict, *pending)
                pending = paths.map(canonical_uri), future
                done += len(contents)
                if done >= next_log:
                    rate = done / max(time.monotonic() - started, 1e-9)
                    log.info("worker pid %d: %d images through the model (%.1f images/s)", os.getpid(), done, rate)
                    next_log += log_every
            if pending is not None:
                yield _predict_frame(predict, *pending)
        if done:
            rate = done / max(time.monotonic() - started, 1e-9)
            log.info("worker pid %d: %d images through the model (%.1f images/s), partition done",
                     os.getpid(), done, rate)

    return pandas_udf(featurize, FEATURIZED_TYPE_DDL)


FEATURIZED_TYPE_DDL = "struct<path: string, features: array<float>, reject_reason: string, reject_detail: string>"


def _predict_frame(predict, paths: pd.Series, decoding) -> pd.DataFrame:
    batch: DecodedBatch = decoding.result()
    n = len(batch.reasons)
    features = [None] * n
    if len(batch.ok_rows):
        output = predict(batch.pixels).numpy().astype(np.float32, copy=False)
        for row, vector in zip(batch.ok_rows.tolist(), output):
            features[row] = vector
    return pd.DataFrame({"path": paths.to_numpy(), "features": features, "reject_reason": batch.reasons,
                         "reject_detail": batch.details})


# ---------------------------------------------------------------------------
# DataFrame transformations (each testable on a tiny frame)
# ---------------------------------------------------------------------------
def escape_hadoop_glob(uri: str) -> str:
    """A literal file name for Spark's path loader, which treats {}[]*?\\ as glob syntax."""
    return "".join("\\" + ch if ch in _HADOOP_GLOB_CHARS else ch for ch in uri)


def manifest_paths(spark, manifest_uri: str) -> list[str]:
    """Distinct canonical paths listed in a manifest (strings only; images are never collected)."""
    try:
        frame = spark.read.parquet(manifest_uri)
    except Exception as exc:
        raise SystemExit(f"--manifest {manifest_uri}: cannot be read as Parquet ({type(exc).__name__}: {exc})") from None
    if "path" not in frame.columns:
        raise SystemExit(f"--manifest {manifest_uri}: has no 'path' column (columns: {frame.columns})")
    return sorted({row.path for row in frame.select("path").distinct().collect() if row.path})


def read_images(spark, images_uri: str, paths: list[str] | None = None):
    """path (as Spark lists it), content of the image files; featurize makes the path canonical.

    With ``paths`` (a manifest) exactly those files are read, never a listing of the whole
    tree (raw/ only grows). Without, ``images_uri`` is listed recursively.
    """

    reader = (
        spark.read.format("binaryFile")
        .option("pathGlobFilter", IMAGE_GLOB)
        .option("recursiveFileLookup", "true")
    )
    if paths is None:
        raw = reader.load(images_uri)
    elif not paths:
        raw = spark.createDataFrame([], "path string, content binary")
    else:
        raw = reader.load([escape_hadoop_glob(p) for p in paths])
    return raw.select("path", "content")


def with_label(frame):
    """label = name of the folder holding the file (spaces kept)."""
    from pyspark.sql import functions as F

    return frame.withColumn("label", F.element_at(F.split("path", "/"), -2))


def few_partitions(frame, slots: int):
    """At most one partition per task slot: each task builds its model once then streams.

    coalesce, not repartition: no shuffle of image bytes.
    """
    return frame.coalesce(slots) if frame.rdd.getNumPartitions() > slots else frame


def featurize(frame, featurize_udf):
    """path, content -> path (canonical), label, features (null when rejected), reject_reason, reject_detail."""
    from pyspark.sql import functions as F

    result = frame.select(featurize_udf(F.col("path"), F.col("content")).alias("result")).select("result.*")
    return with_label(result).select("path", "label", "features", "reject_reason", "reject_detail")


def accepted(featurized, model: str):
    """The output table: path, label, features array<float>[1280], model."""
    from pyspark.sql import functions as F

    return featurized.where(F.col("reject_reason").isNull()).select(
        "path", "label", "features", F.lit(model).alias("model")
    )


def rejected(featurized, empty_files=None):
    """The rejects table: path, reason, detail (decode failures, plus the empty files if given)."""
    from pyspark.sql import functions as F

    rejects = featurized.where(F.col("reject_reason").isNotNull()).select(
        "path", F.col("reject_reason").alias("reason"), F.col("reject_detail").alias("detail")
    )
    return rejects if empty_files is None else rejects.unionByName(empty_files)


def empty_files(spark, listed_paths: list[str], featurized):
    """Listed files that never reached the model: Spark's file scan silently skips zero-byte files.

    ``listed_paths``: the listing Spark already made (``DataFrame.inputFiles()``).
    """
    from pyspark.sql import functions as F

    listed = sorted({canonical_uri(p) for p in listed_paths})
    if not listed:
        return spark.createDataFrame([], "path string, reason string, detail string")
    listed_frame = spark.createDataFrame([(p,) for p in listed], "path string")
    return listed_frame.join(featurized.select("path"), "path", "left_anti").select(
        "path", F.lit("empty").alias("reason"), F.lit("zero bytes").alias("detail")
    )


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------
def task_slots(spark) -> int:
    return max(1, spark.sparkContext.defaultParallelism // int(spark.conf.get("spark.task.cpus", "1")))


def run(
    spark,
    images_uri: str,
    output_uri: str,
    manifest_uri: str | None = None,
    weights_uri: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    weights: bytes | None = None,
) -> dict:
    """The whole feature job on an existing session; returns the FRUITS_RESULT counts.

    ``weights`` lets a caller pass the bytes load_weights_on_driver already read (tests).
    """
    from pyspark import StorageLevel

    started = time.monotonic()
    output_uri = output_uri.rstrip("/")
    if batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {batch_size}")
    # One model batch per Arrow batch; bounds the image bytes held per task.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))

    paths = manifest_paths(spark, manifest_uri) if manifest_uri else None
    if paths is not None:
        log.info("manifest %s lists %d images", manifest_uri, len(paths))
    tf_threads = int(spark.conf.get("spark.task.cpus", "1"))
    slots = task_slots(spark)
    warming = warm_up_workers(spark, slots, tf_threads) if paths != [] else None
    if weights is None:
        weights = load_weights_on_driver(spark, weights_uri)
    broadcast = spark.sparkContext.broadcast(weights)
    log.info("weights read on the driver (%.1f MB) and broadcast; %d task slots, %d TF thread(s) each",
             len(weights) / 1e6, slots, tf_threads)

    images = few_partitions(read_images(spark, images_uri, paths), slots)
    udf = make_featurize_udf(broadcast, weights_fingerprint(weights), tf_threads)
    featurized = featurize(images, udf).persist(StorageLevel.DISK_ONLY)
    try:
        listed = images.inputFiles()  # the listing Spark made: paths only, on the driver
        log.info("featurizing %d files under %s in %d partition(s)", len(listed), images_uri,
                 images.rdd.getNumPartitions())
        # This write runs the model, once per image, and fills the cache; the rest reads the cache.
        accepted(featurized, model_name(weights_uri)).write.mode("overwrite").parquet(output_uri)
        counts = _count(featurized)
        empties = None
        if len(listed) > counts["featurized"] + counts["rejected"]:  # Spark's scan skips zero-byte files
            empties = empty_files(spark, listed, featurized).persist()
            counts["rejected"] += empties.count()
        rejected(featurized, empties).coalesce(1).write.mode("overwrite").parquet(f"{output_uri}/_rejects")
        if empties is not None:
            empties.unpersist()
    finally:
        featurized.unpersist()
        broadcast.destroy()
        if warming is not None:
            warming.join()
    result = {
        "job": "extract_features",
        "read": counts["featurized"] + counts["rejected"],
        "featurized": counts["featurized"],
        "rejected": counts["rejected"],
        "seconds": round(time.monotonic() - started, 3),
    }
    write_text(spark, f"{output_uri}/_job_result.json", json.dumps(result))
    log.info("read %d images, featurized %d, rejected %d (see %s/_rejects) in %.1f s",
             result["read"], result["featurized"], result["rejected"], output_uri, result["seconds"])
    return result


def _count(featurized) -> dict:
    from pyspark.sql import functions as F

    row = featurized.agg(
        F.count(F.when(F.col("reject_reason").isNull(), 1)).alias("featurized"),
        F.count(F.col("reject_reason")).alias("rejected"),
    ).first()
    return {"featurized": int(row.featurized), "rejected": int(row.rejected)}
