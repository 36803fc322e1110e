"""An image's path -> its bytes -> its MobileNetV2 features, on Spark: the decode, the model UDF and its tally.

The decode functions are NumPy and Pillow only (the classify command calls them, and records their
names in its export); pandas and Spark are imported by the UDF's code alone, where it runs.

Speed notes (measured with bench/bench_features.py; docs/performance.md has the figures):
- Spark hands the UDF paths only; the worker reads each photo itself (fruits_spark.photo_reader),
  a few reads ahead of the decode, and drops its bytes once decoded: memory stays bounded by a few
  photos' bytes and one Arrow batch of pixels. The interpreter itself runs one image per invoke
  (fruits_spark.feature_model.LiteRTModel says why).
- Each worker decodes a batch (straight into one float32 array) then runs the model on it, in
  one thread: there is one worker per core already, and a decoding thread beside the model only
  made the two compete for that core (measured: 2-3% fewer images per second, never more). The
  read threads mostly wait on the network or the disk.
- One pass: the output is written straight from the UDF, which reports its counts and rejects
  through accumulators (Tally); no cache of the features, no second job to count them.
"""
from __future__ import annotations

import itertools
import os
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from fruits_contract.s3_faults import merge_faults
from fruits_spark.feature_model import LiteRTModel, worker_model
from fruits_spark.images import IMAGE_SIZE, RejectedImage, model_pixels
from fruits_spark import photo_reader
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


def model_input(content: bytes) -> np.ndarray:
    """One upload's bytes -> the model's input batch of one, float32 (1, 224, 224, 3): decode_image, then
    preprocess. Raises RejectedImage as decode_image does."""
    return preprocess(decode_image(content)[None].astype(np.float32))


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


def decode_batch(contents, n: int | None = None) -> DecodedBatch:
    """Decode image bytes into one preallocated float32 batch (MobileNetV2 scaling). ``contents``
    may be an iterator of ``n`` items, consumed one at a time (each photo's bytes can go once
    decoded); an item may be the RejectedImage its read raised."""
    n = len(contents) if n is None else n
    pixels = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.float32)
    reasons: list = [None] * n
    details: list = [None] * n
    ok = []
    for i, content in enumerate(contents):
        try:
            if isinstance(content, RejectedImage):
                raise content
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


class FaultsParam:
    """Accumulator of ``{operation: {error: attempts}}`` (fruits_contract.s3_faults): the S3 retries
    of every task's reads."""

    def zero(self, value):
        return {}

    def addInPlace(self, left, right):
        return merge_faults(left, right)


@dataclass
class Tally:
    """What the UDF's tasks report to the driver besides their rows: accumulators, counted once
    per partition because the UDF runs in the write's result stage. With them the output is
    written in one pass: no cache of the features, no second job to count them or find rejects."""

    featurized: object  # Accumulator[int]
    rejects: object  # Accumulator[list[(path, reason, detail)]]
    s3_retried: object  # Accumulator[{operation: {error: attempts}}]

    @classmethod
    def on(cls, sc) -> "Tally":
        return cls(sc.accumulator(0), sc.accumulator([], ListParam()), sc.accumulator({}, FaultsParam()))

    def add(self, frame, s3_retried: dict | None = None) -> None:
        """``frame``: a pandas DataFrame the UDF yields (path, features, reject_reason, reject_detail);
        ``s3_retried``: the S3 retries its reads met."""
        rejected = frame[frame.reject_reason.notna()]
        self.featurized.add(len(frame) - len(rejected))
        if len(rejected):
            self.rejects.add(list(zip(rejected.path, rejected.reject_reason, rejected.reject_detail)))
        if s3_retried:
            self.s3_retried.add(s3_retried)


def make_featurize_udf(broadcast_model, model_key: str, threads: int = 1, tally: Tally | None = None,
                       log_every: int = 512):
    """Scalar Iterator pandas UDF: canonical path -> struct(path, features, reject_reason, reject_detail).

    The worker reads each photo itself (photo_reader.read_ahead, across the Arrow batches: the next
    batch's first photos arrive while this one's last decode). ``broadcast_model`` is the Broadcast
    of the flatbuffer's bytes. ``tally``, when given, gets every output frame's counts, rejects and
    S3 retries.
    """
    import pandas as pd
    from pyspark.sql.functions import pandas_udf

    def featurize(batches):
        model = None  # built on the first batch: an empty partition reads no broadcast
        started, done, next_log = time.monotonic(), 0, log_every
        arrived = deque()  # the Arrow batches whose paths read_ahead has pulled, not yet answered

        def every_path():
            for paths in batches:
                if len(paths):  # an empty batch needs no answer: the rows out still match the rows in
                    arrived.append(paths)
                    yield from paths.tolist()

        reads = photo_reader.read_ahead(every_path())
        while (first := next(reads, None)) is not None:
            paths = arrived.popleft()
            if model is None:
                model = worker_model(broadcast_model, model_key, threads)
                started = time.monotonic()  # the rates logged leave out the interpreter's build
            contents = (content for _, content in itertools.chain([first], itertools.islice(reads, len(paths) - 1)))
            frame = _predict_frame(model, paths, decode_batch(contents, len(paths)))
            if tally is not None:
                tally.add(frame, photo_reader.S3_FAULTS.take())  # the module's: the UDF pickles names, not it
            yield frame
            done += len(paths)
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
    featurize.__annotations__ = {"batches": Iterator[pd.Series], "return": Iterator[pd.DataFrame]}
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
def with_label(frame, labelled_root: str):
    """label = name of the folder holding the file (spaces kept) for the files under
    ``labelled_root`` (raw/); null for the others (the app's photos under uploads/)."""
    from pyspark.sql import functions as F

    root = labelled_root.rstrip("/") + "/"
    return frame.withColumn("label", F.when(F.col("path").startswith(root), F.element_at(F.split("path", "/"), -2)))


def featurize(frame, featurize_udf, labelled_root: str):
    """path (canonical) -> path, label (with_label), features (null when rejected), reject_reason,
    reject_detail."""
    from pyspark.sql import functions as F

    result = frame.select(featurize_udf(F.col("path")).alias("result")).select("result.*")
    return with_label(result, labelled_root).select("path", "label", "features", "reject_reason", "reject_detail")


def accepted(featurized, model: str):
    """The output table: path, label, features array<float>[1280], model."""
    from pyspark.sql import functions as F

    return featurized.where(F.col("reject_reason").isNull()).select(
        "path", "label", "features", F.lit(model).alias("model")
    )

