"""MobileNetV2 image features on Spark: reading, decoding, the model UDF, and the job itself.

The model is the TFLite flatbuffer of Keras' MobileNetV2 (DESIGN.md, "The model"), run by LiteRT
(``ai-edge-litert``, XNNPACK, fp32). No TensorFlow anywhere in the job: its import alone cost each
executor seconds and ~1 GB, LiteRT runs the same graph about twice as fast per thread, and its
import and interpreter build take well under a second, so nothing needs to be pre-started.

Speed notes (measured with bench/bench_features.py; docs/performance.md has the figures):
- The driver reads the model file once (Hadoop FS, any URI) and broadcasts its bytes; each Python
  worker builds one interpreter from them, with ``spark.task.cpus`` threads (1 by default): more
  threads than the task slot has cores make the slots' threads evict each other's caches.
- The interpreter is cached per Python worker (Spark reuses workers) and keyed by the model's
  sha256, so a second task or job with the same model builds nothing.
- Few, large partitions (a few per task slot), Arrow batches of ``batch_size`` rows: memory stays
  bounded by one batch of image bytes and its pixels. The interpreter itself runs one image per
  invoke (LiteRTModel says why).
- Each worker decodes a batch (straight into one float32 array) then runs the model on it, in
  one thread: there is one worker per core already, and a decoding thread beside the model only
  made the two compete for that core (measured: 2-3% fewer images per second, never more).
- The features are written without Parquet's dictionary encoding, which never fits continuous
  floats: trying it was the largest share of the JVM's work per image.
- One pass: the output is written straight from the UDF, which reports its counts and rejects
  through accumulators (Tally); no cache of the features, no second job to count them. The
  rejects are then written from the driver; empty files are looked for only when the counts say
  some listed file is missing.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from fruits_contract.lake import DUPLICATES_FOLDER, EXTRACT_FEATURES, JOB_RESULT_FILE, REJECTS_FOLDER, canonical_uri
from fruits_contract.model import FEATURE_DIM, MODEL_FAMILY, SHIPPED_MODEL_PATH
from fruits_contract.names import hadoop_name_problem
from fruits_spark.common import get_logger, lost_executors
from fruits_spark.images import IMAGE_SIZE, RejectedImage, model_pixels
from fruits_spark.io import read_bytes, write_text

DEFAULT_BATCH_SIZE = 64
# A TFLite flatbuffer carries this file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"
_HADOOP_GLOB_CHARS = "\\{}[]*?"

log = get_logger("fruits.extract_features")


# ---------------------------------------------------------------------------
# Pure helpers: one image's bytes -> pixels, or a reason why not (no Spark, no model)
# ---------------------------------------------------------------------------
def decode_image(content: bytes) -> np.ndarray:
    """Bytes of an upload -> uint8 RGB array (224, 224, 3): what the model sees (images.model_pixels:
    format by content, EXIF upright, centred square, on white, bicubic, JPEGs decoded at reduced size).

    Raises RejectedImage for empty, unaccepted, truncated content and decompression bombs
    (more pixels than Pillow's MAX_IMAGE_PIXELS).
    """
    return model_pixels(content)


def preprocess(pixels: np.ndarray) -> np.ndarray:
    """MobileNetV2's input scaling, x / 127.5 - 1, as Keras' preprocess_input does it (same two
    float32 operations in the same order, so the result is bit-identical); float32, in place
    when ``pixels`` already is float32."""
    x = pixels if pixels.dtype == np.float32 else pixels.astype(np.float32)
    np.divide(x, np.float32(127.5), out=x)
    np.subtract(x, np.float32(1.0), out=x)
    return x


@dataclass
class DecodedBatch:
    """Model input for the decodable rows of one Arrow batch, plus why the others were not."""

    pixels: np.ndarray  # float32 (n_ok, 224, 224, 3), already preprocessed
    ok_rows: np.ndarray  # int positions of the decodable rows in the batch
    reasons: list  # per row: None or reason code
    details: list  # per row: None or detail text


def decode_batch(contents) -> DecodedBatch:
    """Decode a sequence of image bytes into one preallocated float32 batch (MobileNetV2 scaling)."""
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
    return DecodedBatch(preprocess(pixels[: len(ok)]), np.asarray(ok, dtype=np.int64), reasons, details)


# ---------------------------------------------------------------------------
# The model: a TFLite flatbuffer read once on the driver, broadcast, one interpreter per worker
# ---------------------------------------------------------------------------
class ModelError(ValueError):
    """Bytes that are not the MobileNetV2 flatbuffer the job needs; the message says what they are."""


class LiteRTModel:
    """One LiteRT interpreter (XNNPACK, fp32) on the model's bytes: float32 pixels -> features.

    The interpreter runs one image per invoke, whatever the batch it is given: measured here, 1
    thread does about 140 images per CPU-second at one image per invoke and about 103 at 64 (the
    activations of one image stay in the CPU caches), and the process peaks at 220 MB, not 580 MB.
    """

    def __init__(self, flatbuffer: bytes, threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.flatbuffer = flatbuffer  # the interpreter reads the model from this buffer: keep it alive
        self.threads = threads
        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        (self._input,), (self._output,) = (self.interpreter.get_input_details(),
                                          self.interpreter.get_output_details())
        self.interpreter.resize_tensor_input(self._input["index"], [1, *self.input_shape])
        self.interpreter.allocate_tensors()

    @property
    def input_shape(self) -> tuple:
        return tuple(int(d) for d in self._input["shape_signature"][1:])

    @property
    def output_width(self) -> int:
        return int(self._output["shape_signature"][-1])

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """float32 (n, 224, 224, 3) -> float32 (n, 1280)."""
        pixels = np.ascontiguousarray(pixels, dtype=np.float32)
        features = np.empty((len(pixels), self.output_width), dtype=np.float32)
        for i in range(len(pixels)):
            self.interpreter.set_tensor(self._input["index"], pixels[i:i + 1])
            self.interpreter.invoke()
            features[i] = self.interpreter.get_tensor(self._output["index"])[0]
        return features


def check_model(content: bytes) -> LiteRTModel:
    """An interpreter on ``content`` once it is known to be a flatbuffer with MobileNetV2's shapes."""
    if len(content) < 8 or content[4:8] != TFLITE_IDENTIFIER:
        raise ModelError(f"not a TFLite flatbuffer (file identifier {content[4:8]!r}, expected {TFLITE_IDENTIFIER!r})")
    try:
        model = LiteRTModel(content)
    except Exception as exc:
        raise ModelError(f"LiteRT cannot load it ({type(exc).__name__}: {exc})") from None
    if model.input_shape != (IMAGE_SIZE, IMAGE_SIZE, 3) or model.output_width != FEATURE_DIM:
        raise ModelError(f"not MobileNetV2 (224, no top, average pooling): input {model.input_shape}, "
                         f"{model.output_width} outputs; expected ({IMAGE_SIZE}, {IMAGE_SIZE}, 3) and {FEATURE_DIM}")
    return model


def load_model_on_driver(spark, model_uri: str | None) -> bytes:
    """The model flatbuffer's bytes, read here on the driver only and checked.

    ``model_uri``: a local path or any URI Spark reads (s3://, file://); None: the model the
    repository ships (fruits_contract.model.SHIPPED_MODEL_PATH, not in the zip a cluster gets: the DAG always
    passes the staged copy).
    """
    flag = f"--model {model_uri}" if model_uri else f"--model not given and the default {SHIPPED_MODEL_PATH}"
    uri = model_uri or str(SHIPPED_MODEL_PATH)
    uri = uri if "://" in uri else canonical_uri(os.path.abspath(uri))
    try:
        content = read_bytes(spark, uri)
    except Exception as exc:
        java = getattr(exc, "java_exception", None)  # a Py4JJavaError: its Java exception is the reason
        reason = java.toString() if java is not None else f"{type(exc).__name__}: {exc}"
        raise SystemExit(f"{flag}: cannot be read ({reason}); `make model` writes the default") from None
    try:
        check_model(content)
    except ModelError as exc:
        raise SystemExit(f"{flag}: {exc}") from None
    return content


def model_fingerprint(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def model_name(content: bytes) -> str:
    """The `model` column: the architecture and which flatbuffer, by content, wherever it was staged."""
    return f"{MODEL_FAMILY}/tflite-sha256-{model_fingerprint(content)[:16]}"


def provenance_path(model_path: Path) -> Path:
    """The provenance JSON beside a model file: same stem, .provenance.json."""
    return Path(model_path).with_suffix(".provenance.json")


# This Python worker's interpreter, rebuilt only when a task brings another model or thread count.
_WORKER: dict = {}


def worker_model(broadcast_model, model_key: str, threads: int) -> LiteRTModel:
    """This worker's interpreter on the broadcast model; the broadcast is read only when
    ``model_key`` (the model's sha256) or the thread count differ from what the worker holds."""
    if _WORKER.get("key") != (model_key, threads):
        _WORKER.clear()  # the old interpreter goes before the new one is built
        _WORKER.update(key=(model_key, threads), model=LiteRTModel(broadcast_model.value, threads))
    return _WORKER["model"]


class ListParam:
    """Accumulator of lists (pyspark AccumulatorParam protocol): the rejects of every task."""

    def zero(self, value):
        return []

    def addInPlace(self, left, right):
        left.extend(right)
        return left


@dataclass
class Tally:
    """What the UDF's tasks report to the driver besides their rows: accumulators, counted once
    per partition because the UDF runs in the write's result stage. With them the output is
    written in one pass: no cache of the features, no second job to count them or find rejects."""

    featurized: object  # Accumulator[int]
    rejects: object  # Accumulator[list[(path, reason, detail)]]

    @classmethod
    def on(cls, sc) -> "Tally":
        return cls(sc.accumulator(0), sc.accumulator([], ListParam()))

    def add(self, frame: pd.DataFrame) -> None:
        rejected = frame[frame.reject_reason.notna()]
        self.featurized.add(len(frame) - len(rejected))
        if len(rejected):
            self.rejects.add(list(zip(rejected.path, rejected.reject_reason, rejected.reject_detail)))


def make_featurize_udf(broadcast_model, model_key: str, threads: int = 1, tally: Tally | None = None,
                       log_every: int = 512):
    """Scalar Iterator pandas UDF: (path as Spark lists it, image bytes) ->
    struct(path canonical, features, reject_reason, reject_detail).

    ``broadcast_model`` is the Broadcast of the flatbuffer's bytes; the executor reads nothing else.
    ``tally``, when given, gets every output frame's counts and rejects.
    The path is made canonical here rather than in a UDF of its own: each Python UDF of a stage
    takes a Python worker (and an interpreter) of its own.
    """
    from pyspark.sql.functions import pandas_udf

    def featurize(batches: Iterator[tuple[pd.Series, pd.Series]]) -> Iterator[pd.DataFrame]:
        model = None  # built on the first batch: an empty partition reads no broadcast
        started, done, next_log = time.monotonic(), 0, log_every
        for paths, contents in batches:
            if model is None:
                model = worker_model(broadcast_model, model_key, threads)
                started = time.monotonic()  # the rates logged leave out the interpreter's build
            frame = _predict_frame(model, paths.map(canonical_uri), decode_batch(contents.tolist()))
            if tally is not None:
                tally.add(frame)
            yield frame
            done += len(contents)
            if done >= next_log:
                rate = done / max(time.monotonic() - started, 1e-9)
                log.info("worker pid %d: %d images through the model (%.1f images/s)", os.getpid(), done, rate)
                next_log += log_every
        if done:
            rate = done / max(time.monotonic() - started, 1e-9)
            log.info("worker pid %d: %d images through the model (%.1f images/s), partition done",
                     os.getpid(), done, rate)

    # Nondeterministic: it has side effects (the tally), and without it the optimizer pushes the
    # filter on reject_reason below the coalesce with a second copy of the UDF (the model runs twice).
    return pandas_udf(featurize, FEATURIZED_TYPE_DDL).asNondeterministic()


# The features' leaf column in Parquet's schema (Spark writes arrays as the standard 3-level LIST).
FEATURES_PARQUET_COLUMN = "features.list.element"
FEATURIZED_TYPE_DDL = "struct<path: string, features: array<float>, reject_reason: string, reject_detail: string>"


def _predict_frame(model: LiteRTModel, paths: pd.Series, batch: DecodedBatch) -> pd.DataFrame:
    n = len(batch.reasons)
    features = [None] * n
    if len(batch.ok_rows):
        for row, vector in zip(batch.ok_rows.tolist(), model.predict(batch.pixels)):
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


def read_images(spark, images_uri: str | None, paths: list[str] | None = None):
    """path (as Spark lists it), length, content of the files; featurize makes the path canonical.

    Every file is read, whatever its name: formats are recognised by content (fruits_spark.images),
    and what is not an accepted image is rejected with a reason, never left out of the listing.
    With ``paths`` (a manifest) exactly those files are read, never a listing of the whole
    tree (raw/ only grows). Without, ``images_uri`` is listed recursively.
    """

    reader = spark.read.format("binaryFile").option("recursiveFileLookup", "true")
    if paths is None:
        raw = reader.load(images_uri)
    elif not paths:
        raw = spark.createDataFrame([], "path string, length long, content binary")
    else:
        raw = reader.load([escape_hadoop_glob(p) for p in paths])
    return raw.select("path", "length", "content")


def same_size_paths(sizes) -> list[str]:
    """The paths (as listed) of the non-empty files that share their size with another: the only
    ones that can be duplicates, so the only ones hashed (``sizes``: (path, length) pairs)."""
    by_size: dict[int, list[str]] = {}
    for path, length in sizes:
        if length:
            by_size.setdefault(int(length), []).append(path)
    return sorted(path for group in by_size.values() if len(group) > 1 for path in group)


def duplicates_of(hashes) -> list[tuple[str, str, str]]:
    """(path, duplicate_of, sha256) for every file whose bytes another file of the run also has; the
    one kept is the smallest canonical path of its group (``hashes``: (canonical path, sha256) pairs)."""
    by_hash: dict[str, list[str]] = {}
    for path, digest in hashes:
        by_hash.setdefault(digest, []).append(path)
    rows = []
    for digest, group in by_hash.items():
        kept, *others = sorted(group)
        rows += [(path, kept, digest) for path in others]
    return sorted(rows)


def find_duplicates(spark, images) -> tuple[list[str], list[tuple[str, str, str]]]:
    """(paths as listed, rows of the duplicates table) of the files of ``images`` whose bytes another
    file already has. Reads the files' sizes (a listing, no content), then hashes only the files that
    share a size, by reading those again: each photo is featurized once per run."""
    from pyspark.sql import functions as F

    candidates = same_size_paths((row.path, row.length) for row in images.select("path", "length").collect())
    if not candidates:
        return [], []
    hashed = read_images(spark, None, candidates).select("path", F.sha2("content", 256).alias("sha256")).collect()
    listed_as = {canonical_uri(row.path): row.path for row in hashed}
    rows = duplicates_of((canonical_uri(row.path), row.sha256) for row in hashed)
    return [listed_as[path] for path, _, _ in rows], rows


def with_label(frame):
    """label = name of the folder holding the file (spaces kept)."""
    from pyspark.sql import functions as F

    return frame.withColumn("label", F.element_at(F.split("path", "/"), -2))


# Partitions per task slot. One per slot left the slowest partition alone at the end: phone uploads
# cost 0.04 s (a JPEG at reduced size) to 0.45 s (a 12 MP HEIC) each, and coalesce balances file
# counts, not costs (measured: one worker done after 22 s, the other after 80 s). The interpreter
# is cached per Python worker, so a further task on the same worker builds nothing.
PARTITIONS_PER_SLOT = 4


def few_partitions(frame, slots: int):
    """A few partitions per task slot (PARTITIONS_PER_SLOT): each worker builds its model once, and
    a slot that finishes early takes the next partition instead of waiting for the slowest.

    coalesce, not repartition: no shuffle of image bytes; it never adds partitions, and asking
    the frame how many it has would plan the whole query once more (seconds on a cold session).
    """
    return frame.coalesce(slots * PARTITIONS_PER_SLOT)


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


REJECTS_DDL = "path string, reason string, detail string"
DUPLICATES_DDL = "path string, duplicate_of string, sha256 string"


def rejects_table(spark, rejects: list):
    """The rejects table: path, reason, detail, one row per (path, reason, detail) given."""
    return spark.createDataFrame(sorted(rejects), REJECTS_DDL)


def split_unreadable(uris: list[str]) -> tuple[list[str], list[tuple[str, str, str]]]:
    """Canonical URIs -> (those Spark can read under their names, rejects (uri, "unsafe_name", why)
    for the others): fruits_contract.names.hadoop_name_problem, the rule validation applies before the job."""
    readable, rejects = [], []
    for uri in uris:
        why = hadoop_name_problem(uri)
        if why:
            rejects.append((uri, "unsafe_name", why))
        else:
            readable.append(uri)
    return readable, rejects


def empty_files(listed_paths: list[str], seen_paths) -> list[tuple[str, str, str]]:
    """Listed files that never reached the model (Spark's file scan silently skips zero-byte
    files), as rejects. ``listed_paths``: the listing Spark already made (``DataFrame.inputFiles()``);
    ``seen_paths``: the canonical paths featurized or rejected."""
    missing = {canonical_uri(p) for p in listed_paths} - set(seen_paths)
    return [(path, "empty", "zero bytes") for path in sorted(missing)]


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
    model_uri: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    model: bytes | None = None,
) -> dict:
    """The whole feature job on an existing session; returns the FRUITS_RESULT counts.

    ``model`` lets a caller pass the bytes load_model_on_driver already read (tests).
    """
    started = time.monotonic()
    output_uri = output_uri.rstrip("/")
    if batch_size < 1:
        raise SystemExit(f"--batch-size must be at least 1, got {batch_size}")
    # Rows per Arrow batch: bounds the image bytes and pixels held per task.
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(batch_size))
    slots = task_slots(spark)

    paths = manifest_paths(spark, manifest_uri) if manifest_uri else None
    if paths is not None:
        log.info("manifest %s lists %d images", manifest_uri, len(paths))
    if model is None:
        model = load_model_on_driver(spark, model_uri)
    threads = int(spark.conf.get("spark.task.cpus", "1"))
    broadcast = spark.sparkContext.broadcast(model)
    log.info("model read on the driver (%.1f MB) and broadcast in %.1f s; %d task slots, %d LiteRT thread(s) each",
             len(model) / 1e6, time.monotonic() - started, slots, threads)

    # Names Spark cannot read literally are rejected unread: reading one failed the whole job.
    if paths is not None:
        paths, unreadable = split_unreadable(paths)
    images = read_images(spark, images_uri, paths)
    listed = images.inputFiles()  # the listing Spark made: paths only, on the driver
    if paths is None:
        readable, unreadable = split_unreadable([canonical_uri(path) for path in listed])
        if unreadable:  # the others, by name
            images = read_images(spark, None, readable)
    duplicate_listed, duplicates = find_duplicates(spark, images)
    if duplicate_listed:
        from pyspark.sql import functions as F

        images = images.where(~F.col("path").isin(duplicate_listed))
    images = few_partitions(images, slots)
    tally = Tally.on(spark.sparkContext)
    udf = make_featurize_udf(broadcast, model_fingerprint(model), threads, tally)
    try:
        log.info("featurizing %d files under %s (%d duplicates left out) in at most %d partition(s)",
                 len(listed), images_uri, len(duplicates), slots * PARTITIONS_PER_SLOT)
        # The one pass over the images: the model runs once per image, the tally counts as it goes.
        (accepted(featurize(images, udf), model_name(model)).write.mode("overwrite")
         .option(f"parquet.enable.dictionary#{FEATURES_PARQUET_COLUMN}", "false").parquet(output_uri))
    finally:
        broadcast.destroy()
    rejects = list(tally.rejects.value) + unreadable
    counts = {"featurized": int(tally.featurized.value), "rejected": len(rejects), "duplicates": len(duplicates)}
    if len(listed) > sum(counts.values()):  # Spark's scan skips zero-byte files
        written = [row.path for row in spark.read.parquet(output_uri).select("path").collect()]
        empties = empty_files(listed, [*written, *(path for path, _, _ in rejects + duplicates)])
        rejects += empties
        counts["rejected"] += len(empties)
    rejects_table(spark, rejects).coalesce(1).write.mode("overwrite").parquet(f"{output_uri}/{REJECTS_FOLDER}")
    # Beside _rejects: duplicates are done (exactly-once reads their paths) though not in the features.
    (spark.createDataFrame(duplicates, DUPLICATES_DDL).coalesce(1).write.mode("overwrite")
     .parquet(f"{output_uri}/{DUPLICATES_FOLDER}"))
    result = {
        "job": EXTRACT_FEATURES,
        "read": sum(counts.values()),
        **counts,
        "seconds": round(time.monotonic() - started, 3),
        "executors_lost": lost_executors(spark),  # their tasks ran again elsewhere: the run report lists them
    }
    write_text(spark, f"{output_uri}/{JOB_RESULT_FILE}", json.dumps(result))  # last: the batch counts from here
    log.info("read %d images, featurized %d, rejected %d (see %s/%s), %d duplicates (%s) in %.1f s",
             result["read"], result["featurized"], result["rejected"], output_uri, REJECTS_FOLDER, result["duplicates"],
             DUPLICATES_FOLDER, result["seconds"])
    return result
