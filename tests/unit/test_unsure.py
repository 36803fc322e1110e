"""The "not sure" rule (fruits_spark.unsure) and how the export carries it to classify."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fruits_spark.classify import load_export, write_export
from fruits_spark.unsure import TRAINING_QUANTILE, fit_unsure_rule, rule_figures


def clustered(n_per_label=200, k=6, labels=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(labels, k))
    scales = rng.uniform(0.5, 2.0, size=k)  # correlated, unequal axes: what Mahalanobis is for
    mixing = rng.normal(size=(k, k))
    z = np.concatenate([centres[c] + (rng.normal(size=(n_per_label, k)) * scales) @ mixing for c in range(labels)])
    return z, np.repeat(np.arange(labels), n_per_label), centres


def test_a_label_mean_is_sure_a_far_point_is_not_and_the_threshold_is_the_training_quantile():
    z, y, centres = clustered()
    rule = fit_unsure_rule(z, y, 3)
    assert not rule.unsure(centres).any()
    assert rule.unsure(centres[:1] + 1000.0).all()
    within = (~rule.unsure(z)).mean()
    assert TRAINING_QUANTILE - 1 / len(z) <= within <= TRAINING_QUANTILE + 1 / len(z)


@pytest.mark.parametrize("n_per_label, k", [(200, 6), (4, 30)])
def test_distances_are_mahalanobis_to_the_nearest_label_under_scikit_learns_ledoit_wolf(n_per_label, k):
    from sklearn.covariance import ledoit_wolf

    z, y, _ = clustered(n_per_label=n_per_label, k=k, seed=1)
    rule = fit_unsure_rule(z, y, 3)
    means = np.stack([z[y == c].mean(axis=0) for c in range(3)])
    covariance, _ = ledoit_wolf(z - means[y], assume_centered=True)
    precision = np.linalg.inv(covariance)
    probes = np.random.default_rng(2).normal(scale=15.0, size=(50, z.shape[1]))
    brute = np.sqrt(np.min([np.einsum("ni,ij,nj->n", probes - m, precision, probes - m) for m in means], axis=0))
    np.testing.assert_allclose(rule.distances(probes), brute, rtol=1e-7)


def test_the_same_rows_give_the_same_rule_bit_for_bit():
    z, y, _ = clustered(seed=3)
    a, b = fit_unsure_rule(z, y, 3), fit_unsure_rule(z.copy(), y.copy(), 3)
    assert a.threshold == b.threshold and np.array_equal(a.whitening, b.whitening) and np.array_equal(a.means, b.means)


def test_fewer_training_rows_than_components_still_give_a_finite_rule():
    z, y, centres = clustered(n_per_label=3, k=20, labels=2, seed=4)  # 6 rows, 20 dimensions: singular covariance
    rule = fit_unsure_rule(z, y, 2)
    assert np.isfinite(rule.whitening).all() and np.isfinite(rule.threshold)
    assert not rule.unsure(z[:1]).any()


def test_a_label_without_training_rows_is_refused():
    z, y, _ = clustered(seed=5)
    with pytest.raises(ValueError, match=r"labels \[3\]"):
        fit_unsure_rule(z, y, 4)


def test_figures_count_sure_and_right_unsure_and_sure_and_wrong():
    z, y, centres = clustered(seed=6)
    rule = fit_unsure_rule(z, y, 3)
    held_out = np.concatenate([centres, centres[:1] + 1000.0])  # 3 sure, 1 unsure
    figures = rule_figures(rule, held_out, np.array([True, True, False, True]), centres + 1000.0)
    assert (figures["held_out"], figures["held_out_sure_and_right"], figures["held_out_unsure"],
            figures["held_out_sure_and_wrong"]) == (4, 0.5, 0.25, 0.25)
    assert (figures["not_fruit_photos"], figures["not_fruit_unsure"]) == (3, 1.0)
    assert rule_figures(rule, held_out, np.ones(4, bool), None)["not_fruit_unsure"] is None


def export_with(tmp_path, rule=None):
    """An export of a 3-label classifier on k=6 identity PCA features, with ``rule`` or without (an old export)."""
    z, y, centres = clustered(seed=7)
    dim, k = 6, 6
    arrays = {"pca_mean": np.zeros(dim), "pca_components": np.eye(dim, k), "coefficients": centres / 10.0,
              "intercepts": np.zeros(3)}
    metadata = {"run_key": "r1", "labels": ["a", "b", "c"], "k": k}
    if rule is not None:
        arrays |= rule.arrays()
        metadata["unsure"] = {"threshold": rule.threshold}
    write_export(tmp_path, metadata, arrays)
    return load_export(str(tmp_path)), centres


def test_the_export_carries_the_rule_to_the_answers(tmp_path):
    z, y, _ = clustered(seed=7)
    export, centres = export_with(tmp_path, fit_unsure_rule(z, y, 3))
    answers = export.answers(np.concatenate([centres[:1], centres[:1] + 1000.0]))
    assert answers[0]["unsure"] is False and answers[0]["label"] == answers[0]["top"][0]["label"]
    assert answers[1]["unsure"] is True and answers[1]["label"] is None and answers[1]["top"][0]["label"]


def test_an_export_made_before_the_rule_answers_every_photo_sure(tmp_path):
    export, centres = export_with(tmp_path)
    assert export.unsure_rule is None
    assert [answer["unsure"] for answer in export.answers(centres + 1000.0)] == [False] * 3


def test_the_shipped_features_of_the_photos_of_no_fruit_are_what_the_shipped_model_gives_them():
    """A changed photo list or feature model must come with remade features (python -m fruits_spark.not_fruit)."""
    pytest.importorskip("skimage", reason="the photos of no fruit come from scikit-image (a dev dependency)")
    from fruits_contract.model import SHIPPED_MODEL_PATH
    from fruits_spark.not_fruit import NOT_FRUIT_PHOTOS, photo_features, shipped_features

    flatbuffer = SHIPPED_MODEL_PATH.read_bytes()
    features, made_by = shipped_features()
    assert made_by == hashlib.sha256(flatbuffer).hexdigest()
    assert features.shape == (len(NOT_FRUIT_PHOTOS), 1280)
    np.testing.assert_allclose(photo_features(flatbuffer), features, atol=1e-5)
