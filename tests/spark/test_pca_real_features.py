"""reduce_pca on real features: the sample through MobileNetV2 with the real ImageNet weights.

Synthetic matrices hid a PCA that was wrong in some fits (Spark ML's SVD of a rank-deficient
covariance, see fruits_spark.pca); real features have ~1060 zero eigenvalues out of 1280, so
these tests use them: equal to scikit-learn, and the same answer on every fit, partitioning
and master (tests/cluster runs the job on a standalone cluster against these features).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from fruits_spark.jobs import reduce_pca
from fruits_spark.pca import fit_pca, project, read_features, to_vectors
from real_features import NEEDS_REAL_DATA, SAMPLE, WEIGHTS, assert_same_axes, sklearn_reference, write_real_features

pytestmark = pytest.mark.spark

needs_real_data = pytest.mark.skipif(not (SAMPLE and WEIGHTS), reason=NEEDS_REAL_DATA)


@pytest.fixture(scope="session")
def real_features(real_keras_features, tmp_path_factory):
    return write_real_features(tmp_path_factory.mktemp("real") / "features", *real_keras_features)


def components_of(result) -> np.ndarray:
    return result.model.stages[-1].pc.toArray()


@needs_real_data
def test_projection_equals_scikit_learn_on_real_features(spark, real_features):
    root, paths, matrix = real_features
    sklearn, k = sklearn_reference(matrix, 0.9)

    result = fit_pca(read_features(spark, str(root)).repartition(7), str(root), variance=0.9)

    assert result.report["k"] == k
    rows = sorted(result.reduced.collect(), key=lambda row: row["path"])
    ours = np.array([row["pca_features"] for row in rows], dtype=np.float64)
    theirs = sklearn.transform(matrix.astype(np.float64))[[paths.index(row["path"]) for row in rows], :k]
    assert_same_axes(ours, theirs, "projection")


@needs_real_data
def test_ten_fits_on_any_partitioning_give_scikit_learns_k_ratios_and_components(spark, real_features):
    """Spark ML's PCA got about half of such fits wrong (k=82 instead of 18): the spectrum it
    returned depended on the order in which partition results reached the driver."""
    root, _, matrix = real_features
    sklearn, k = sklearn_reference(matrix, 0.9)
    frames = {n: read_features(spark, str(root)).repartition(n) for n in (1, 2, 7)}

    first = None
    for number in range(10):
        partitions = (1, 2, 7)[number % 3]
        result = fit_pca(frames[partitions], str(root), variance=0.9)
        what = f"fit {number + 1} on {partitions} partition(s)"
        assert result.report["k"] == k, what
        np.testing.assert_allclose(result.report["explained_variance_ratio"], sklearn.explained_variance_ratio_[:k],
                                   rtol=0, atol=1e-6, err_msg=what)
        first = first or result
        np.testing.assert_allclose(result.report["explained_variance_ratio"], first.report["explained_variance_ratio"],
                                   rtol=0, atol=1e-12, err_msg=what)
        assert_same_axes(components_of(result), components_of(first), what)


@needs_real_data
def test_saved_model_projects_a_new_image_like_the_job(spark, real_features, tmp_path):
    """_model/ is centering + PCA: loaded elsewhere, it gives a new image the job's coordinates."""
    from pyspark.ml import PipelineModel

    root, paths, matrix = real_features
    output = tmp_path / "pca"
    reduce_pca.run(spark, reduce_pca.parse_args(["--features", str(root), "--output", str(output), "--k", "12"]))

    model = PipelineModel.load(str(output / "_model"))
    np.testing.assert_allclose(model.stages[0].mean.toArray(), matrix.astype(np.float64).mean(axis=0), atol=1e-6)
    one_image = read_features(spark, str(root)).where(f"path = '{paths[5]}'")
    again = project(model, to_vectors(one_image)).first()["pca_features"]
    saved = spark.read.parquet(str(output)).where(f"path = '{paths[5]}'").first()["pca_features"]
    np.testing.assert_allclose(again, saved, rtol=0, atol=1e-6)
    # and by hand: (x - mean) @ components, the definition a non-Spark reader would use
    by_hand = (matrix[5].astype(np.float64) - model.stages[0].mean.toArray()) @ model.stages[-1].pc.toArray()
    np.testing.assert_allclose(saved, by_hand, rtol=0, atol=1e-4)
    report = json.loads((output / "_pca_report.json").read_text())
    assert report["k"] == 12 and len(saved) == 12
    preview = spark.read.parquet(str(output / "_preview"))
    assert set(preview.columns) >= {"label", "pc1", "pc2"} and preview.count() == len(paths)
