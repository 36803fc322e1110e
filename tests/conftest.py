"""Fixtures shared by every test folder: the real data on hand, or small stand-ins.

`.ci/run` sets FRUITS_SAMPLE_DIR (real Fruits-360 images) and FRUITS_WEIGHTS (real
MobileNetV2 ImageNet weights). Without them, tests generate small images and random
weights; tests that judge feature quality then skip and say why.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

from generated_images import write_generated_images

# Spark's Python workers must run this interpreter (the one with pandas, pyarrow, TF).
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

NO_SAMPLE = "FRUITS_SAMPLE_DIR is not set: real Fruits-360 images are needed to judge feature quality"
NO_WEIGHTS = "FRUITS_WEIGHTS is not set: real ImageNet weights are needed to judge feature quality"


@pytest.fixture(scope="session")
def sample_dir() -> Path | None:
    """The real Fruits-360 sample (Training/<label>/*.jpg, Test/<label>/*.jpg), or None."""
    value = os.environ.get("FRUITS_SAMPLE_DIR")
    return Path(value) if value and Path(value).is_dir() else None


@pytest.fixture(scope="session")
def real_weights() -> Path | None:
    value = os.environ.get("FRUITS_WEIGHTS")
    return Path(value) if value and Path(value).is_file() else None


@pytest.fixture(scope="session")
def weights_file(real_weights, tmp_path_factory) -> Path:
    """Real weights when on hand, else random MobileNetV2 weights saved in Keras' format."""
    if real_weights is not None:
        return real_weights
    import keras

    model = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(224, 224, 3), pooling="avg"
    )
    path = tmp_path_factory.mktemp("weights") / "random_mobilenet_v2.weights.h5"
    model.save_weights(path)
    return path


@pytest.fixture(scope="session")
def images_dir(sample_dir, tmp_path_factory) -> Path:
    """A small folder of <label>/<file> images: a slice of the real sample, or generated ones."""
    root = tmp_path_factory.mktemp("images")
    if sample_dir is not None:
        import shutil

        for label_dir in sorted((sample_dir / "Test").iterdir())[:4]:
            target = root / label_dir.name
            target.mkdir()
            for src in sorted(label_dir.glob("*.jpg"))[:8]:
                shutil.copy(src, target / src.name)
    else:
        write_generated_images(root)
    return root


@pytest.fixture(scope="session")
def real_keras_features() -> tuple[list[str], np.ndarray]:
    """real_image_paths of FRUITS_SAMPLE_DIR through Keras' MobileNetV2 with FRUITS_WEIGHTS, once per
    session for tests/spark and tests/cluster: (paths, matrix), row i = path i, read-only."""
    from real_features import NEEDS_REAL_DATA, SAMPLE, WEIGHTS, keras_features, real_image_paths

    if not (SAMPLE and WEIGHTS):
        pytest.skip(NEEDS_REAL_DATA)
    paths = real_image_paths(SAMPLE)
    matrix = keras_features(paths, WEIGHTS)
    matrix.setflags(write=False)
    return paths, matrix


@pytest.fixture(scope="session")
def host_wheelhouse(tmp_path_factory) -> Path:
    """The bootstrap's wheels for this machine's architecture: `make package`'s dist/wheelhouse when it
    has them, else downloaded once for the session (pip's own cache makes that quick after the first time).
    Used by tests/unit/test_code_package.py and tests/cluster's node_python."""
    from fruits_pipeline.code_package import build_wheelhouse
    from fruits_pipeline.job_code import bootstrap_pins, missing_wheels

    repo_root = Path(__file__).resolve().parents[1]
    jobs_dir = repo_root / "spark_jobs"
    architectures = (os.uname().machine,)
    made = repo_root / "dist" / "wheelhouse"
    if not missing_wheels(made, bootstrap_pins(jobs_dir), architectures):
        return made
    folder = tmp_path_factory.mktemp("wheelhouse")
    build_wheelhouse(folder, jobs_dir, architectures=architectures)
    return folder


@pytest.fixture(scope="session")
def phone_source(sample_dir) -> "Image.Image":
    """The picture the phone-style uploads show: a real sample image, else a generated one."""
    from PIL import Image

    if sample_dir is not None:
        from phone_photos import sample_images

        return Image.open(sample_images(sample_dir, 1)[0]).convert("RGB")
    rng = np.random.default_rng(11)
    pixels = np.full((100, 100, 3), 255, dtype=np.uint8)
    pixels[20:80, 30:70] = rng.integers(0, 200, (60, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


@pytest.fixture(scope="session")
def phone_uploads(phone_source) -> dict[str, bytes]:
    """One small (640x480) phone-style upload of each kind (tests/phone_photos.py KINDS and "mpo"),
    made once per session: size does not matter where these are used, and HEIC encoding is slow."""
    from phone_photos import KINDS, phone_frame, upload_bytes

    upright = phone_frame(phone_source, (640, 480))
    return {kind: upload_bytes(upright, kind) for kind in (*KINDS, "mpo")}


@pytest.fixture(scope="session")
def phone_photo_12mp(phone_source) -> bytes:
    """A 12 MP (4032x3024) JPEG stored sideways with EXIF Orientation 6, as a phone writes it."""
    from phone_photos import jpeg_bytes, phone_frame

    return jpeg_bytes(phone_frame(phone_source), orientation=6)
