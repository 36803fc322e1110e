"""The "not sure" answer: how far a photo's PCA features are from every fruit the classifier knows.

A softmax always sums to 1 over the known labels, so a photo of no fruit still gets a label with a
high-looking probability (a portrait was "Corn" at 0.44, a flower at 0.76). The rule chosen from
measurement (docs/classifier.md, "Not sure") looks at the features instead: the Mahalanobis
distance, under the labels' pooled within-label covariance (Ledoit-Wolf shrunk), from the photo to
the nearest label's mean. A photo farther from every label than TRAINING_QUANTILE of the training
images are from theirs is answered unsure.

NumPy only: ``fruits_spark.classify`` (the app backend's install) applies the rule from the export's
arrays, and the training job fits it on the driver.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METHOD = "Mahalanobis distance to the nearest label"
# Of the training images, this share is within the threshold: 0.995 left 0.4% of held-out fruit unsure
# on the sample and 1.0 lets one mislabelled training image widen the threshold for every label.
TRAINING_QUANTILE = 0.999
ARRAY_MEANS = "unsure_means"  # [labels, k]
ARRAY_WHITENING = "unsure_whitening"  # [k, k]


@dataclass(frozen=True)
class UnsureRule:
    means: np.ndarray  # [labels, k]: each label's mean PCA features
    whitening: np.ndarray  # [k, k]: W with W Wᵀ = the inverse covariance, so distance = |(z - mean) W|
    threshold: float

    def distances(self, pca_features: np.ndarray) -> np.ndarray:
        """The distance of each row [n, k] to the nearest label's mean."""
        z = np.asarray(pca_features, dtype=np.float64) @ self.whitening
        centres = self.means @ self.whitening
        squared = (z * z).sum(axis=1)[:, None] - 2 * z @ centres.T + (centres * centres).sum(axis=1)[None, :]
        return np.sqrt(np.clip(squared.min(axis=1), 0.0, None))

    def unsure(self, pca_features: np.ndarray) -> np.ndarray:
        return self.distances(pca_features) > self.threshold

    def arrays(self) -> dict[str, np.ndarray]:
        return {ARRAY_MEANS: self.means, ARRAY_WHITENING: self.whitening}


def fit_unsure_rule(pca_features: np.ndarray, label_indices: np.ndarray, n_labels: int,
                    quantile: float = TRAINING_QUANTILE) -> UnsureRule:
    """The rule for the training rows ``pca_features`` [n, k] whose labels are ``label_indices`` [n]
    (0..n_labels-1, each present). Rows in a fixed order give the same rule bit for bit."""
    z = np.asarray(pca_features, dtype=np.float64)
    labels = np.asarray(label_indices, dtype=np.int64)
    counts = np.bincount(labels, minlength=n_labels)
    if (counts == 0).any():
        raise ValueError(f"labels {np.flatnonzero(counts == 0).tolist()} have no training rows")
    means = np.zeros((n_labels, z.shape[1]))
    np.add.at(means, labels, z)
    means /= counts[:, None]
    variances, axes = np.linalg.eigh(ledoit_wolf(z - means[labels]))
    whitening = axes / np.sqrt(variances)
    partial = UnsureRule(means, whitening, threshold=np.inf)
    return UnsureRule(means, whitening, threshold=float(np.quantile(partial.distances(z), quantile)))


def ledoit_wolf(residuals: np.ndarray) -> np.ndarray:
    """The covariance of ``residuals`` [n, k] (centred already) shrunk towards a multiple of the identity by
    Ledoit and Wolf's (2004) intensity, as scikit-learn's ``ledoit_wolf(assume_centered=True)``.
    Why: with a few dozen images per label and k of 50-100, the plain covariance's smallest axes are
    noise, and a fruit held out from training falls far along them (measured: 29% of held-out fruit
    stayed sure at 10 images per label with a fixed 0.1% ridge, 90% with this shrinkage)."""
    n, k = residuals.shape
    squares = residuals ** 2
    covariance = residuals.T @ residuals / n
    mu = np.trace(covariance) / k
    delta = ((covariance ** 2).sum() - 2 * mu * np.trace(covariance) + k * mu ** 2) / k
    beta = min(((squares.T @ squares).sum() / n - (covariance ** 2).sum()) / (k * n), delta)
    shrinkage = 0.0 if beta == 0 else beta / delta
    return (1 - shrinkage) * covariance + shrinkage * mu * np.eye(k)


def rule_from_arrays(arrays: dict, metadata: dict | None) -> UnsureRule | None:
    """The export's rule, or None for an export made before the rule existed (every answer sure)."""
    if not metadata or ARRAY_MEANS not in arrays or ARRAY_WHITENING not in arrays:
        return None
    return UnsureRule(np.asarray(arrays[ARRAY_MEANS], dtype=np.float64),
                      np.asarray(arrays[ARRAY_WHITENING], dtype=np.float64), float(metadata["threshold"]))


def rule_figures(rule: UnsureRule, held_out_pca: np.ndarray, held_out_right: np.ndarray,
                 not_fruit_pca: np.ndarray | None) -> dict:
    """What the rule does on the held-out images and on the photos of no fruit: the run report's
    ``classifier.unsure`` (shares of each set; not_fruit_* None when those photos could not be used)."""
    unsure = rule.unsure(held_out_pca)
    right = np.asarray(held_out_right, dtype=bool)
    n = len(unsure)
    figures = {"method": METHOD, "threshold": rule.threshold, "training_quantile": TRAINING_QUANTILE,
               "held_out": n,
               "held_out_sure_and_right": float((~unsure & right).sum() / n) if n else None,
               "held_out_unsure": float(unsure.sum() / n) if n else None,
               "held_out_sure_and_wrong": float((~unsure & ~right).sum() / n) if n else None,
               "not_fruit_photos": None, "not_fruit_unsure": None}
    if not_fruit_pca is not None and len(not_fruit_pca):
        figures |= {"not_fruit_photos": len(not_fruit_pca),
                    "not_fruit_unsure": float(rule.unsure(not_fruit_pca).sum() / len(not_fruit_pca))}
    return figures
