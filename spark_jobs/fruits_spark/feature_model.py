"""The feature model: MobileNetV2 as a TFLite flatbuffer, run by LiteRT (docs/design.md, "The model").

The flatbuffer is read once on the driver (any URI Hadoop reads), checked, and broadcast; each
Python worker builds one interpreter from the broadcast bytes and keeps it for the tasks that
follow (``worker_model``). NumPy and LiteRT only: the classify command runs the same model.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from fruits_contract.lake import canonical_uri
from fruits_contract.model import FEATURE_DIM, MODEL_FAMILY, SHIPPED_MODEL_PATH
from fruits_spark.errors import FeatureInputError
from fruits_spark.images import IMAGE_SIZE
from fruits_spark.io import read_bytes

# A TFLite flatbuffer carries this file identifier at bytes 4..8.
TFLITE_IDENTIFIER = b"TFL3"


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
        raise FeatureInputError(f"{flag}: cannot be read ({reason}); `make model` writes the default") from None
    try:
        check_model(content)
    except ModelError as exc:
        raise FeatureInputError(f"{flag}: {exc}") from None
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
