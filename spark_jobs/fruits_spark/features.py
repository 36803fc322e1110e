"""An image's bytes -> its MobileNetV2 features, on Spark: the decode, the model UDF and its tally.

The decode functions are NumPy and Pillow only (the classify command calls them, and records their
names in its export); pandas and Spark are imported by the UDF's code alone, where it runs.

Speed notes (measured with bench/bench_features.py; docs/performance.md has the figures):
- Few, large partitions (a few per task slot), Arrow batches of ``batch_size`` rows: memory stays
  bounded by one batch of image bytes and its pixels. The interpreter itself runs one image per
  invoke (fruits_spark.feature_model.LiteRTModel says why).
- Each worker decodes a batch (straight into one float32 array) then runs the model on it, in
  one thread: there is one worker per core already, and a decoding thread beside the model only
  made the two compete for that core (measured: 2-3% fewer images per second, never more).
- One pass: the output is written straight from the UDF, which reports its counts and rejects
  through accumulators (Tally); no cache of the features, no second job to count them.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from fruits_contract.lake import canonical_uri
from fruits_spark.feature_model import LiteRTModel, worker_model
from fruits_spark.images import IMAGE_SIZE, RejectedImage, model_pixels
from fruits_spark.job_runner import get_logger

# The feature job's log, on the driver and in the workers' UDF (bench/ reads its rate lines).
log = get_logger("fruits.extract_features")


# ---------------------------------------------------------------------------
# One image's bytes -> the model's input, or a reason why not (NumPy and Pillow: no Spark, no model)
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
# The model UDF: decode and features in the Python workers, counts and rejects back to the driver
# ---------------------------------------------------------------------------
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

    def add(self, frame) -> None:
        """``frame``: a pandas DataFrame the UDF yields (path, features, reject_reason, reject_detail)."""
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
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def featurize(batches):
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

    # Spark tells a scalar iterator UDF by its type hints, resolved in this module's namespace, which
    # has no pandas (the decode functions above must import without it): given here, as objects.
    featurize.__annotations__ = {"batches": Iterator[tuple[pd.Series, pd.Series]], "return": Iterator[pd.DataFrame]}
    # Nondeterministic: it has side effects (the tally), and without it the optimizer pushes the
    # filter on reject_reason below the coalesce with a second copy of the UDF (the model runs twice).
    return pandas_udf(featurize, FEATURIZED_TYPE_DDL).asNondeterministic()


FEATURIZED_TYPE_DDL = "struct<path: string, features: array<float>, reject_reason: string, reject_detail: string>"


def _predict_frame(model: LiteRTModel, paths, batch: DecodedBatch):
    """The UDF's output frame for one batch: ``paths`` (a pandas Series) and the features of its decodable rows."""
    import pandas as pd

    n = len(batch.reasons)
    features = [None] * n
    if len(batch.ok_rows):
        for row, vector in zip(batch.ok_rows.tolist(), model.predict(batch.pixels)):
            features[row] = vector
    return pd.DataFrame({"path": paths.to_numpy(), "features": features, "reject_reason": batch.reasons,
                         "reject_detail": batch.details})


# ---------------------------------------------------------------------------
# DataFrame transformations around the UDF (each testable on a tiny frame)
# ---------------------------------------------------------------------------
def with_label(frame):
    """label = name of the folder holding the file (spaces kept)."""
    from pyspark.sql import functions as F

    return frame.withColumn("label", F.element_at(F.split("path", "/"), -2))


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

