"""Both jobs on a real Spark standalone cluster, from the code package, on real images.

The chain is the pipeline's: the feature job reads the images and writes features, the PCA
job reads those features. Each output is held to the same references as the local run:
Keras' own predictions (cosine >= 0.9999) and scikit-learn's PCA (ratios within 1e-6,
projections |cosine| >= 0.9999).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from fruits_contract.model import SHIPPED_MODEL_PATH
from real_features import NEEDS_REAL_DATA, SAMPLE, WEIGHTS, assert_same_axes, sklearn_reference

pytestmark = pytest.mark.cluster

if not (SAMPLE and WEIGHTS):
    pytest.skip(NEEDS_REAL_DATA, allow_module_level=True)


@pytest.fixture(scope="module")
def images(real_keras_features, tmp_path_factory) -> tuple[Path, list[str]]:
    """About 220 real images in <label>/<file> folders (labels with spaces included), in the order of
    real_keras_features' rows."""
    root = tmp_path_factory.mktemp("raw")
    paths, _ = real_keras_features
    for path in paths:
        target = root / Path(path).parent.name
        target.mkdir(exist_ok=True)
        shutil.copy(path, target / Path(path).name)
    return root, [str(root / Path(p).parent.name / Path(p).name) for p in paths]


@pytest.fixture(scope="module")
def reference(real_keras_features) -> np.ndarray:
    """Keras' features of the images (row i = images[1][i]), computed once per session."""
    return real_keras_features[1]


@pytest.fixture(scope="module")
def sklearn_fit(reference):
    """scikit-learn's PCA of the reference and its k for 90% of the variance, fitted once for the module."""
    return sklearn_reference(reference, 0.9)


def _result_line(completed) -> dict:
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    lines = [line for line in output.splitlines() if line.startswith("FRUITS_RESULT ")]
    assert lines, output[-4000:]
    return json.loads(lines[-1].removeprefix("FRUITS_RESULT "))


@pytest.fixture(scope="module")
def features_on_cluster(submit_to_cluster, images, tmp_path_factory) -> Path:
    root, _ = images
    output = tmp_path_factory.mktemp("lake") / "features" / "batch=standalone"
    # As the EMR step does: the model staged in the lake, given by URI (the package holds no model).
    completed = submit_to_cluster("extract_features.py", "--images", f"file://{root}", "--output",
                                  f"file://{output}", "--model", f"file://{SHIPPED_MODEL_PATH}")
    result = _result_line(completed)
    assert result["featurized"] == len(images[1]) and result["rejected"] == 0, result
    return output


def test_the_cluster_runs_executors_in_their_own_jvms(standalone_cluster, node_python):
    assert standalone_cluster.alive_workers() == 2
    assert "installed" in node_python.bootstrap_log
    # The nodes' Python has the bootstrap's packages and neither the project nor TensorFlow.
    import subprocess

    probe = subprocess.run([str(node_python.python), "-c",
                            "import importlib.util as u; print([m for m in ('fruits_spark', 'fruits_pipeline', "
                            "'tensorflow', 'keras', 'pyspark') if u.find_spec(m)])"],
                           capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert probe.stdout.strip() == "[]", probe.stdout + probe.stderr


def test_feature_job_on_the_cluster_equals_keras(features_on_cluster, images, reference):
    import pyarrow.parquet as pq

    table = pq.read_table(features_on_cluster).to_pydict()
    by_path = dict(zip(table["path"], table["features"]))
    assert len(by_path) == len(images[1])
    for index, path in enumerate(images[1]):
        ours = np.asarray(by_path["file://" + path], dtype=np.float64)
        theirs = reference[index].astype(np.float64)
        cosine = ours @ theirs / (np.linalg.norm(ours) * np.linalg.norm(theirs))
        assert cosine >= 0.9999, f"{path}: cosine {cosine}"


@pytest.fixture(scope="module")
def pca_on_cluster(submit_to_cluster, features_on_cluster, tmp_path_factory) -> tuple[Path, dict]:
    output = tmp_path_factory.mktemp("lake") / "pca"
    result = _result_line(submit_to_cluster("reduce_pca.py", "--features", f"file://{features_on_cluster.parent}",
                                            "--output", f"file://{output}", "--variance", "0.9"))
    return output, result


def test_pca_job_on_the_cluster_equals_scikit_learn(submit_to_cluster, features_on_cluster, pca_on_cluster, images,
                                                    reference, sklearn_fit):
    import pyarrow.parquet as pq

    output, first = pca_on_cluster
    features_root = features_on_cluster.parent
    results = [first, _result_line(submit_to_cluster("reduce_pca.py", "--features", f"file://{features_root}",
                                                     "--output", f"file://{output}", "--variance", "0.9"))]

    sklearn, expected_k = sklearn_fit
    assert [result["k"] for result in results] == [expected_k, expected_k]
    report = json.loads((output / "_pca_report.json").read_text())
    np.testing.assert_allclose(report["explained_variance_ratio"], sklearn.explained_variance_ratio_[:expected_k],
                               atol=1e-6)
    table = pq.read_table(output).to_pydict()
    index_of = {"file://" + path: index for index, path in enumerate(images[1])}
    order = [index_of[path] for path in table["path"]]
    ours = np.asarray(table["pca_features"], dtype=np.float64)
    theirs = sklearn.transform(reference.astype(np.float64))[order, :expected_k]
    assert_same_axes(theirs, ours, "projection")  # every one of scikit-learn's k components


def test_classifier_on_the_cluster_is_the_local_one_bit_for_bit(submit_to_cluster, pca_on_cluster, tmp_path):
    """The same PCA output, train_classifier on the standalone cluster and on local[2]: the same weights and
    figures (its gradients are summed over fixed buckets of the rows, in bucket order, whatever the master)."""
    from fruits_spark.classify import load_export

    pca, _ = pca_on_cluster
    runs = {master: tmp_path / master for master in ("standalone", "local[2]")}
    results = {master: _result_line(submit_to_cluster("train_classifier.py", "--pca", f"file://{pca}",
                                                      "--output", f"file://{output}",
                                                      master=None if master == "standalone" else master))
               for master, output in runs.items()}
    cluster, local = (load_export(str(output)) for output in runs.values())
    assert results["standalone"]["trained"] and results["standalone"]["accuracy"] >= 0.95
    assert np.array_equal(cluster.coefficients, local.coefficients)
    assert np.array_equal(cluster.intercepts, local.intercepts)
    # Everything but when and in which run the accuracy by k was measured (a new measurement each time here).
    timeless = [{**export.metadata["figures"], "accuracy_by_k_measured": None} for export in (cluster, local)]
    assert timeless[0] == timeless[1]


@pytest.mark.parametrize("master", ["standalone", "local[1]", "local[2]"])
def test_ten_fits_on_each_master_give_scikit_learns_k_ratios_and_components(
        submit_to_cluster, features_on_cluster, sklearn_fit, master, tmp_path):
    """The same features, ten fits in one application per master: the same k and ratios as
    scikit-learn and the same components (up to sign) in every fit."""
    completed = submit_to_cluster(Path(__file__).with_name("fit_pca_ten_times.py"),
                                  f"file://{features_on_cluster.parent}", str(tmp_path),
                                  master=None if master == "standalone" else master)
    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]

    sklearn, k = sklearn_fit
    fits = [np.load(tmp_path / f"fit-{number}.npz") for number in range(10)]
    for number, fit in enumerate(fits, start=1):
        assert int(fit["k"]) == k, f"{master}, fit {number}"
        np.testing.assert_allclose(fit["ratios"], sklearn.explained_variance_ratio_[:k], rtol=0, atol=1e-6)
        cosines = np.abs(np.sum(fit["components"] * fits[0]["components"], axis=0))
        assert cosines.min() >= 0.9999, f"{master}, fit {number}: component |cosine| {cosines.min()}"
