"""Real features for the PCA tests: the sample through Keras' MobileNetV2 with the real weights.

A plain module (not a conftest) so that tests/spark and tests/cluster import the same code:
the features (computed once per session by tests/conftest.py's `real_keras_features`) and the
scikit-learn reference both hold the PCA job to.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

SAMPLE = os.environ.get("FRUITS_SAMPLE_DIR")
WEIGHTS = os.environ.get("FRUITS_WEIGHTS")
NEEDS_REAL_DATA = "needs the real sample and weights: set FRUITS_SAMPLE_DIR and FRUITS_WEIGHTS (.ci/run does)"


def keras_features(image_paths: list[str], weights: str) -> np.ndarray:
    """Keras' own MobileNetV2, loading and preprocessing on the images: the reference the feature
    job is held to (it resizes bicubic, as here)."""
    import keras

    model = keras.applications.MobileNetV2(weights=None, include_top=False, input_shape=(224, 224, 3),
                                           pooling="avg")
    model.load_weights(weights)
    pixels = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(224, 224),
                                                                     interpolation="bicubic"))
                       for p in image_paths])
    return model.predict(keras.applications.mobilenet_v2.preprocess_input(pixels), batch_size=32,
                         verbose=0).astype(np.float32)


def litert_features(image_paths: list[str]) -> np.ndarray:
    """The feature job's own features: its decode and the LiteRT model the repository ships (converted
    from the real weights), one image at a time."""
    from fruits_contract.model import SHIPPED_MODEL_PATH
    from fruits_spark.feature_model import LiteRTModel
    from fruits_spark.features import model_input

    model = LiteRTModel(SHIPPED_MODEL_PATH.read_bytes())
    return np.concatenate([model.predict(model_input(Path(p).read_bytes()))
                           for p in image_paths])


def real_image_paths(sample_dir: str) -> list[str]:
    """Every third image of the sample's Test set: about 220 images of all 10 labels."""
    return sorted(str(p) for p in Path(sample_dir, "Test").glob("*/*.jpg"))[::3]


def write_real_features(root: Path, paths: list[str], matrix: np.ndarray,
                        model: str = "keras") -> tuple[Path, list[str], np.ndarray]:
    """The features of ``paths`` (row i = path i, as `real_keras_features` gives them) by ``model`` (the
    feature job's ``model`` column) as the feature job writes them, in two batches (root/batch=a, root/batch=b). Returns root, the file:// paths and
    the matrix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    half = len(paths) // 2
    for name, part in (("a", slice(0, half)), ("b", slice(half, None))):
        (root / f"batch={name}").mkdir(parents=True)
        pq.write_table(pa.table({
            "path": ["file://" + p for p in paths[part]],
            "label": [Path(p).parent.name for p in paths[part]],
            "features": pa.array(list(matrix[part]), type=pa.list_(pa.float32())),
            "model": [model] * len(paths[part]),
        }), root / f"batch={name}" / "part-00000.parquet")
        (root / f"batch={name}" / "_job_result.json").write_text("{}")  # committed, as the job leaves it
    return root, ["file://" + p for p in paths], matrix


def sklearn_reference(matrix: np.ndarray, variance: float):
    """scikit-learn's full PCA of ``matrix`` and the smallest k keeping ``variance`` of the total."""
    from sklearn.decomposition import PCA as SklearnPCA

    sklearn = SklearnPCA(svd_solver="full").fit(matrix.astype(np.float64))
    k = int(np.searchsorted(np.cumsum(sklearn.explained_variance_ratio_), variance - 1e-9)) + 1
    return sklearn, k


def assert_same_axes(a: np.ndarray, b: np.ndarray, what: str) -> None:
    """Column i of ``a`` and of ``b`` point along the same axis (up to sign): |cosine| >= 0.9999."""
    for index in range(a.shape[1]):
        cosine = abs(a[:, index] @ b[:, index]) / (np.linalg.norm(a[:, index]) * np.linalg.norm(b[:, index]))
        assert cosine >= 0.9999, f"{what}: component {index} |cosine| {cosine}"
