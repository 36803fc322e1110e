"""Keras MobileNetV2 -> the TFLite flatbuffer the feature job runs with LiteRT (`make model`).

    python -m fruits_spark.model_conversion [--weights FILE.weights.h5] [--images DIR]
        [--output spark_jobs/models/mobilenet_v2_1.0_224_no_top.tflite]

Development only: this is the one module that imports TensorFlow (to convert, and to run Keras
for the equality check). Nothing on the cluster or in the Airflow runtime imports it.

The result is written only if every check image's LiteRT feature vector equals Keras'
``model.predict`` on the same pixels (cosine at least EQUALITY_MIN_COSINE); the provenance JSON
beside it records the source weights' sha256, the converter's versions and that check.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fruits_contract.model import FEATURE_DIM, SHIPPED_MODEL_PATH
from fruits_spark.feature_model import LiteRTModel, provenance_path
from fruits_spark.features import decode_image, preprocess
from fruits_spark.images import IMAGE_SIZE

# The feature contract (docs/design.md, "Feature job"): each vector equals Keras' predict at this cosine.
EQUALITY_MIN_COSINE = 0.9999
CHECK_IMAGES = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class ConversionRefused(Exception):
    """The converted model does not reproduce Keras: nothing is written."""


def sha256_of(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def keras_model(weights: str | None):
    """MobileNetV2 alpha 1.0, 224, no top, average pooling; ``weights``: a .weights.h5, or None for
    Keras' own ImageNet weights (downloaded by Keras, or taken from its cache)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    import keras

    model = keras.applications.MobileNetV2(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3), alpha=1.0, include_top=False,
                                           pooling="avg", weights=None if weights else "imagenet")
    if weights:
        model.load_weights(weights)
    return model


def keras_imagenet_weights_file() -> Path:
    """Where Keras keeps the ImageNet file it downloads, for its sha256 in the provenance."""
    import keras

    cache = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    matches = sorted(cache.glob("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"))
    if not matches:
        raise FileNotFoundError(f"Keras {keras.__version__} left no MobileNetV2 weights in {cache}")
    return matches[0]


def convert(model) -> bytes:
    """The model as a TFLite flatbuffer: fp32, no quantization, any batch size (-1 batch dim)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32, name="images")])
    def serve(images):
        return {"features": model(images, training=False)}

    # No trackable object: the converter then freezes the variables into constants. Given the
    # model, it keeps them as resource variables that LiteRT reads uninitialized (NaN features).
    converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
    converter.optimizations = []  # fp32 as Keras computes it: quantization would change the features
    return converter.convert()


def check_images(images_dir: Path | None, count: int = CHECK_IMAGES) -> tuple[np.ndarray, str]:
    """Preprocessed float32 pixels of up to ``count`` real images (spread over the labels), decoded
    exactly as the feature job decodes them; seeded noise images when no folder is given."""
    if images_dir is not None:
        files = sorted(p for p in Path(images_dir).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise SystemExit(f"--images {images_dir}: no .jpg/.jpeg/.png files to check the conversion on")
        picked = files[:: max(1, len(files) // count)][:count]
        pixels = np.stack([decode_image(p.read_bytes()) for p in picked])
        return preprocess(pixels), f"{len(picked)} images from {Path(images_dir).name}/"
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    return preprocess(pixels), "16 seeded noise images (no --images / FRUITS_SAMPLE_DIR given)"


def cosines(got: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64."""
    got, expected = got.astype(np.float64), expected.astype(np.float64)
    return (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))


def equality_check(flatbuffer: bytes, model, pixels: np.ndarray, batch_size: int = 16) -> dict:
    """LiteRT on the flatbuffer vs Keras' ``model.predict`` on the same pixels."""
    litert = LiteRTModel(flatbuffer, threads=os.cpu_count() or 1)
    got = np.concatenate([litert.predict(pixels[i:i + batch_size]) for i in range(0, len(pixels), batch_size)])
    expected = model.predict(pixels, batch_size=batch_size, verbose=0)
    similarity = cosines(got, expected)
    return {
        "images": int(len(pixels)),
        "min_cosine": float(similarity.min()),
        "max_abs_difference": float(np.abs(got - expected).max()),
        "required_min_cosine": EQUALITY_MIN_COSINE,
        "passed": bool(got.shape == expected.shape == (len(pixels), FEATURE_DIM)
                       and similarity.min() >= EQUALITY_MIN_COSINE),
    }


def converter_versions() -> dict:
    import ai_edge_litert
    import keras
    import tensorflow as tf
    from importlib.metadata import version

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", None) or version("ai-edge-litert"),
            "numpy": np.__version__, "python": platform.python_version(), "machine": platform.machine()}


def build(weights: str | None, images_dir: Path | None, output: Path) -> dict:
    """Convert, check, and write ``output`` and its provenance; raises ConversionRefused on a failed check."""
    try:
        model = keras_model(weights)
    except Exception as exc:
        what = f"--weights {weights}" if weights else "Keras' ImageNet weights (no FRUITS_WEIGHTS given)"
        raise ConversionRefused(f"{what} could not be loaded into MobileNetV2 1.0 224 no top "
                                f"({type(exc).__name__}: {exc}); give FRUITS_WEIGHTS=/path/to/x.weights.h5") from None
    source = Path(weights) if weights else keras_imagenet_weights_file()
    flatbuffer = convert(model)
    pixels, described = check_images(images_dir)
    check = equality_check(flatbuffer, model, pixels) | {"inputs": described}
    if not check["passed"]:
        raise ConversionRefused(
            f"converted model refused: min cosine {check['min_cosine']:.10f} against Keras on {described} "
            f"(at least {EQUALITY_MIN_COSINE} required); {output} left as it was")
    provenance = {
        "file": output.name,
        "sha256": sha256_of(flatbuffer),
        "bytes": len(flatbuffer),
        "model": "Keras MobileNetV2, alpha 1.0, 224x224x3, no top, global average pooling, 1280 float32",
        "input": {"shape": [-1, IMAGE_SIZE, IMAGE_SIZE, 3], "dtype": "float32",
                  "preprocessing": "RGB resized to 224x224 (bicubic), then x / 127.5 - 1"},
        "source_weights": {"file": source.name, "sha256": sha256_of(source.read_bytes()),
                           "origin": "given with --weights / FRUITS_WEIGHTS" if weights else "Keras' ImageNet download"},
        "license": "Apache-2.0, as the ImageNet weights it is converted from",
        "converter": converter_versions() | {"api": "tf.lite.TFLiteConverter.from_concrete_functions (variables frozen), no optimizations"},
        "equality_check": check,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(output, flatbuffer)
    _atomic_write(provenance_path(output), (json.dumps(provenance, indent=2) + "\n").encode())
    return provenance


def _atomic_write(path: Path, content: bytes) -> None:
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as handle:
        handle.write(content)
    os.chmod(handle.name, 0o644)  # a temporary file is private; the model is for everyone
    os.replace(handle.name, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS") or None,
                        help="Keras .weights.h5 of MobileNetV2 1.0 224 no top (default: FRUITS_WEIGHTS, else Keras' ImageNet)")
    parser.add_argument("--images", default=os.environ.get("FRUITS_SAMPLE_DIR") or None,
                        help="real images for the equality check (default: FRUITS_SAMPLE_DIR)")
    parser.add_argument("--output", type=Path, default=SHIPPED_MODEL_PATH)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.weights and not Path(args.weights).is_file():
        parser.error(f"--weights {args.weights}: not a file")
    try:
        provenance = build(args.weights, Path(args.images) if args.images else None, args.output)
    except ConversionRefused as refused:
        print(f"make model: {refused}", file=sys.stderr)
        return 1
    check = provenance["equality_check"]
    print(f"make model: wrote {args.output} ({provenance['bytes']:,} bytes, sha256 {provenance['sha256'][:16]}...): "
          f"min cosine {check['min_cosine']:.10f} against Keras on {check['inputs']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
