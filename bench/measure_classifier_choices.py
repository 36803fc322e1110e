"""Two design choices of the classifier on the real sample: the "not sure" rule, and what the PCA is fitted on.

    .venv/bin/python bench/measure_classifier_choices.py [--features-cache /tmp/x.npz]

Needs FRUITS_SAMPLE_DIR (the sample: <dir>/<Test|Training>/<label>/*.jpg). Writes
bench/results/classifier_choices.json and prints markdown tables.

Data (all through the feature job's decode and the shipped LiteRT model):
- the sample: every image, label = its folder; held out when crc32("<label>/<file>") % 100 < 20,
  which approximates the pipeline's pmod(xxhash64(...), 100) < 20 (same share, other images);
- 17 photos of no fruit (fruits_spark.not_fruit's shipped features);
- phone-style uploads: every PHONE_EVERY-th sample image centred in a 1008x756 frame with noise
  (tests/phone_photos.py), JPEG, every 4th stored sideways with EXIF Orientation 6.

Model: full PCA (eigenvectors of the covariance, as fruits_spark.pca), k = smallest reaching 95%
of the variance (the pipeline's default), then scikit-learn's multinomial LogisticRegression with
C = 1 / (1e-3 * n_train): Spark ML's regParam=1e-3 objective (mean log-loss + regParam/2 |w|^2),
except that Spark standardizes the features before penalizing and this does not.

A. "Not sure" scores, each unsure above the TRAINING_QUANTILES of the training rows' scores:
   1 - max softmax, energy (-logsumexp of the logits), Mahalanobis distance to the nearest label
   (fruits_spark.unsure, what the pipeline ships), PCA reconstruction residual. Measured on the
   held-out images, the photos of no fruit, the phone-style uploads, and leave-one-label-out
   (an "unknown fruit": PCA, classifier and rule refitted without a label, that label's images scored;
   again with that label's images kept in the PCA's rows, as they are once they are uploads in the lake).
B. PCA fitted on labelled + unlabelled features (what the pipeline does: uploads are in the lake)
   against labelled only, and with the uploads repeated 5x (still fewer than the labelled images)
   and 10x (more), with N(0, 0.01) noise: k, accuracy, the shipped rule, and the bases' principal angles.

--features-cache keeps the features (about a minute to compute) in a file for reruns; keep it
outside the repository.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "spark_jobs"))
sys.path.insert(0, str(REPO / "tests"))

from fruits_contract.model import SHIPPED_MODEL_PATH  # noqa: E402
from fruits_spark.unsure import TRAINING_QUANTILE, fit_unsure_rule  # noqa: E402

RESULT = REPO / "bench" / "results" / "classifier_choices.json"
VARIANCE = 0.95
REG_PARAM = 1e-3
MAX_ITER = 2000
HELD_OUT_PERCENT = 20
TRAINING_QUANTILES = (0.995, TRAINING_QUANTILE, 1.0)
PHONE_EVERY = 10
PHONE_FRAME = (1008, 756)
SIDEWAYS_EVERY = 4
UPLOAD_REPEATS = (5, 10)  # 5x: still fewer rows than the labelled images; 10x: more
UPLOAD_NOISE_STD = 0.01
METHODS = ("softmax", "energy", "mahalanobis", "pca_residual")
# No "|" in these: they go into markdown tables.
METHOD_NAMES = {"softmax": "1 - max softmax", "energy": "energy (-logsumexp logits)",
                "mahalanobis": "Mahalanobis to nearest label (shipped)", "pca_residual": "PCA residual norm ratio"}


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------
@dataclass
class Data:
    paths: list[str]
    label_names: list[str]  # alphabetical; label i is label_names[i]
    labels: np.ndarray  # [n] int
    held_out: np.ndarray  # [n] bool
    features: np.ndarray  # [n, 1280] float32
    phone_features: np.ndarray  # [m, 1280]: phone-style uploads of paths[::PHONE_EVERY]
    phone_labels: np.ndarray  # [m]
    phone_held_out: np.ndarray  # [m]: made from a held-out image (the classifier never saw its source)
    not_fruit: np.ndarray  # [17, 1280]


def split_key(path: str) -> str:
    return f"{Path(path).parent.name}/{Path(path).name}"


def is_held_out(path: str) -> bool:
    return zlib.crc32(split_key(path).encode()) % 100 < HELD_OUT_PERCENT


def phone_features(paths: list[str]) -> np.ndarray:
    """The feature job's decode and model on each path made a phone-style JPEG."""
    from phone_photos import jpeg_bytes, phone_frame

    from fruits_spark.feature_model import LiteRTModel
    from fruits_spark.features import model_input

    model = LiteRTModel(SHIPPED_MODEL_PATH.read_bytes())
    rows = []
    for i, path in enumerate(paths):
        orientation = 6 if i % SIDEWAYS_EVERY == SIDEWAYS_EVERY - 1 else 1
        upload = jpeg_bytes(phone_frame(Path(path), size=PHONE_FRAME, seed=i), orientation=orientation)
        rows.append(model.predict(model_input(upload)))
    return np.concatenate(rows)


def cache_read(cache: str | None, fingerprint: str):
    """(features, phone features) from ``cache`` if it holds these paths' features by this model, else None."""
    if not cache or not Path(cache).exists():
        return None
    with np.load(cache) as npz:
        return (npz["features"], npz["phone"]) if str(npz["fingerprint"]) == fingerprint else None


def load_data(sample_dir: str, cache: str | None, timings: dict) -> Data:
    from real_features import litert_features

    from fruits_spark.not_fruit import shipped_features

    paths = sorted(str(p) for p in Path(sample_dir).glob("*/*/*.jpg"))
    names = [Path(p).parent.name for p in paths]
    label_names = sorted(set(names))
    labels = np.array([label_names.index(n) for n in names])
    phone_paths = paths[::PHONE_EVERY]
    model_sha = hashlib.sha256(SHIPPED_MODEL_PATH.read_bytes()).hexdigest()
    fingerprint = hashlib.sha256("\n".join(paths + [model_sha]).encode()).hexdigest()
    cached = cache_read(cache, fingerprint)
    if cached:
        features, phone = cached
        timings["features_from_cache"] = True
    else:
        start = time.perf_counter()
        features = litert_features(paths)
        timings["sample_features_seconds"] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()
        phone = phone_features(phone_paths)
        timings["phone_features_seconds"] = round(time.perf_counter() - start, 1)
        if cache:
            np.savez(cache, features=features, phone=phone, fingerprint=np.array(fingerprint))
    not_fruit, not_fruit_sha = shipped_features()
    if not_fruit_sha != model_sha:
        raise SystemExit(f"the shipped photos of no fruit were made by model {not_fruit_sha}, "
                         f"not the shipped {model_sha}")
    held_out = np.array([is_held_out(p) for p in paths])
    return Data(paths, label_names, labels, held_out, features, phone, labels[::PHONE_EVERY], held_out[::PHONE_EVERY],
                not_fruit)


# ---------------------------------------------------------------------------
# PCA, classifier, scores
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Pca:
    mean: np.ndarray
    axes: np.ndarray  # [dim, rank]: every component, by decreasing variance
    ratios: np.ndarray  # explained variance ratio of each
    k: int

    @property
    def components(self) -> np.ndarray:
        return self.axes[:, :self.k]

    def project(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components

    def residual(self, x: np.ndarray) -> np.ndarray:
        centred = np.asarray(x, dtype=np.float64) - self.mean
        rest = centred - (centred @ self.components) @ self.components.T
        return np.linalg.norm(rest, axis=1) / np.linalg.norm(centred, axis=1)


def fit_pca(x: np.ndarray, variance: float = VARIANCE) -> Pca:
    """As fruits_spark.pca fits: the covariance's eigenvectors (NumPy eigh; several times faster here than an SVD
    of the rows, which decides whether leave-one-label-out fits in the run)."""
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    centred = x - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / (len(x) - 1))
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    ratios = values / values.sum()
    # The pipeline's rule (fruits_spark.pca): rounding can leave the last cumulative ratio a hair short.
    k = int(np.searchsorted(np.cumsum(ratios), variance - 1e-9)) + 1
    return Pca(mean, vectors, ratios, k)


@dataclass
class Fitted:
    pca: Pca
    classes: np.ndarray  # the label index of each classifier output
    classifier: object
    rules: dict  # quantile -> fruits_spark.unsure.UnsureRule
    thresholds: dict  # method -> quantile -> threshold (training rows' score at that quantile)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.classes[self.classifier.decision_function(self.pca.project(x)).argmax(axis=1)]

    def scores(self, x: np.ndarray) -> dict[str, np.ndarray]:
        from scipy.special import logsumexp, softmax

        z = self.pca.project(x)
        logits = self.classifier.decision_function(z)
        return {"softmax": 1 - softmax(logits, axis=1).max(axis=1), "energy": -logsumexp(logits, axis=1),
                "mahalanobis": self.rules[TRAINING_QUANTILE].distances(z), "pca_residual": self.pca.residual(x)}

    def judge(self, x: np.ndarray, y: np.ndarray | None = None) -> "Judged":
        return Judged(self, self.scores(x), None if y is None else self.predict(x) == y)


@dataclass
class Judged:
    """One set of rows scored once by one fit: what each method and quantile answers."""
    fitted: Fitted
    scores: dict
    right: np.ndarray | None  # None: rows with no label (the photos of no fruit)

    def unsure(self, method: str, quantile: float) -> np.ndarray:
        return self.scores[method] > self.fitted.thresholds[method][quantile]

    def answers(self, method: str, quantile: float) -> dict:
        unsure = self.unsure(method, quantile)
        return {"n": len(unsure), "sure_and_right": share(~unsure & self.right),
                "sure_and_wrong": share(~unsure & ~self.right), "unsure": share(unsure)}


def fit_classifier(pca: Pca, x_train: np.ndarray, y_train: np.ndarray) -> Fitted:
    from sklearn.linear_model import LogisticRegression

    classes, y = np.unique(y_train, return_inverse=True)  # leave-one-label-out: the rule wants labels 0..n-1
    z = pca.project(x_train)
    classifier = LogisticRegression(C=1 / (REG_PARAM * len(z)), max_iter=MAX_ITER).fit(z, y)
    rules = {q: fit_unsure_rule(z, y, len(classes), quantile=q) for q in TRAINING_QUANTILES}
    fitted = Fitted(pca, classes, classifier, rules, {})
    train_scores = fitted.scores(x_train)
    fitted.thresholds = {m: {q: float(np.quantile(train_scores[m], q)) for q in TRAINING_QUANTILES} for m in METHODS}
    # Mahalanobis: the shipped rule's own thresholds (fit_unsure_rule takes the same quantile of the same distances).
    fitted.thresholds["mahalanobis"] = {q: rule.threshold for q, rule in rules.items()}
    return fitted


def train(data: Data, pca_rows: np.ndarray, train_mask: np.ndarray) -> Fitted:
    return fit_classifier(fit_pca(pca_rows), data.features[train_mask], data.labels[train_mask])


def share(mask: np.ndarray) -> float:
    return float(mask.mean()) if len(mask) else float("nan")


# ---------------------------------------------------------------------------
# A: "not sure"
# ---------------------------------------------------------------------------
def measure_unsure(data: Data) -> dict:
    """Each method at each quantile on one fit: the pipeline's PCA on every sample image (no uploads)."""
    train_mask = ~data.held_out
    fitted = train(data, data.features, train_mask)
    held = fitted.judge(data.features[data.held_out], data.labels[data.held_out])
    phone = fitted.judge(data.phone_features, data.phone_labels)
    new = data.phone_held_out
    phone_new = fitted.judge(data.phone_features[new], data.phone_labels[new])
    not_fruit = fitted.judge(data.not_fruit)
    result = {"k": fitted.pca.k, "n_train": int(train_mask.sum()), "n_held_out": int(data.held_out.sum()),
              "held_out_accuracy": share(held.right), "phone_accuracy": share(phone.right), "methods": {}}
    for method in METHODS:
        result["methods"][method] = {str(q): {
            "threshold": fitted.thresholds[method][q],
            "held_out": held.answers(method, q),
            "not_fruit_unsure": int(not_fruit.unsure(method, q).sum()), "not_fruit": len(data.not_fruit),
            "phone": phone.answers(method, q),
            "phone_from_held_out_images": phone_new.answers(method, q),
        } for q in TRAINING_QUANTILES}
    return result


def measure_unknown_fruit(data: Data, in_pca_rows: bool = False) -> dict:
    """Leave one label out of the classifier and rule, and of the PCA unless ``in_pca_rows``; the share of its
    images answered unsure. ``in_pca_rows`` is the pipeline's case once photos of a new fruit are uploads: the
    PCA is fitted on every feature in the lake, theirs included."""
    per_label = {}
    for index, name in enumerate(data.label_names):
        known = data.labels != index
        fitted = train(data, data.features if in_pca_rows else data.features[known], known & ~data.held_out)
        unknown = fitted.judge(data.features[~known])
        nearest = fitted.predict(data.features[~known])
        per_label[name] = {"images": int((~known).sum()), "k": fitted.pca.k,
                           "answered_as": {data.label_names[i]: int(n) for i, n in
                                           zip(*np.unique(nearest, return_counts=True))},
                           "unsure": {m: {str(q): share(unknown.unsure(m, q)) for q in TRAINING_QUANTILES}
                                      for m in METHODS}}
    mean = {m: {str(q): float(np.mean([v["unsure"][m][str(q)] for v in per_label.values()]))
                for q in TRAINING_QUANTILES} for m in METHODS}
    return {"pca_rows_include_the_unknown_label": in_pca_rows, "mean_over_labels": mean, "per_label": per_label}


def measure_unknown_fruit_in_pca_rows(data: Data) -> dict:
    return measure_unknown_fruit(data, in_pca_rows=True)


def nearest_cosines(data: Data) -> dict:
    """How close the measured rows are to a training image: Fruits-360 photographs each fruit turning, so a
    held-out image has near-twins among the training images and the held-out figures are optimistic."""
    def unit(x):
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    training = unit(data.features[~data.held_out])
    held_out, phone = unit(data.features[data.held_out]), unit(data.phone_features)
    sources = unit(data.features[::PHONE_EVERY])
    return {"held_out_to_nearest_training_median": float(np.median((held_out @ training.T).max(axis=1))),
            "phone_to_nearest_training_median": float(np.median((phone @ training.T).max(axis=1))),
            "phone_to_its_own_source_median": float(np.median((phone * sources).sum(axis=1)))}


# ---------------------------------------------------------------------------
# B: what the PCA is fitted on
# ---------------------------------------------------------------------------
def angles_degrees(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The principal angles between the spans of a's and b's columns."""
    from scipy.linalg import subspace_angles

    return np.degrees(subspace_angles(a, b))


def pca_row_variants(data: Data) -> dict[str, np.ndarray]:
    uploads = np.vstack([data.phone_features, data.not_fruit]).astype(np.float64)
    rng = np.random.default_rng(0)
    # Small noise so repeated uploads are distinct rows, as distinct photos of the same things would be.
    variants = {"labelled_only": data.features, "labelled_plus_uploads": np.vstack([data.features, uploads])}
    for repeats in UPLOAD_REPEATS:
        noisy = [uploads + rng.normal(0, UPLOAD_NOISE_STD, uploads.shape) for _ in range(repeats)]
        variants[f"labelled_plus_uploads_x{repeats}"] = np.vstack([data.features, *noisy])
    return variants


def measure_pca_rows(data: Data) -> dict:
    """The same labelled training split; only the PCA's rows change."""
    train_mask = ~data.held_out
    reference = None
    result = {"labelled": len(data.features), "phone_uploads": len(data.phone_features),
              "not_fruit": len(data.not_fruit), "noise_std": UPLOAD_NOISE_STD,
              "feature_std_mean": float(data.features.std(axis=0).mean()), "variants": {}}
    for name, rows in pca_row_variants(data).items():
        fitted = train(data, rows, train_mask)
        if reference is None:  # labelled_only comes first: the basis the others are compared with
            reference = fitted.pca
        k = min(reference.k, fitted.pca.k)
        angles = angles_degrees(reference.axes[:, :k], fitted.pca.axes[:, :k])
        held = fitted.judge(data.features[data.held_out], data.labels[data.held_out])
        phone = fitted.judge(data.phone_features, data.phone_labels)
        result["variants"][name] = {
            "pca_rows": len(rows), "k": fitted.pca.k,
            "held_out_accuracy": share(held.right),
            "mahalanobis_held_out": held.answers("mahalanobis", TRAINING_QUANTILE),
            "mahalanobis_not_fruit_unsure": int(fitted.judge(data.not_fruit).unsure("mahalanobis",
                                                                                    TRAINING_QUANTILE).sum()),
            "phone_accuracy": share(phone.right),
            "mahalanobis_phone": phone.answers("mahalanobis", TRAINING_QUANTILE),
            "angle_k": k,
            # The largest angle also counts components that merely swap places with a neighbour of near-equal
            # variance across the cut at k; the median, and the first 3 (variances 0.25, 0.22, 0.13, then 0.04 on
            # the sample, well apart), show whether the basis itself turns.
            "largest_angle_degrees": float(angles.max()),
            "median_angle_degrees": float(np.median(angles)),
            "largest_angle_first_3_degrees": float(angles_degrees(reference.axes[:, :3], fitted.pca.axes[:, :3]).max()),
            "largest_angle_first_10_degrees": float(angles_degrees(reference.axes[:, :10],
                                                                   fitted.pca.axes[:, :10]).max()),
            # The labelled images' variance within the first angle_k components: a basis drifting towards the
            # uploads keeps less of it (the largest angle alone also moves when near-equal eigenvalues swap).
            "labelled_variance_kept_first_k": labelled_variance_kept(data.features, fitted.pca.axes[:, :k]),
            "labelled_variance_kept_own_k": labelled_variance_kept(data.features, fitted.pca.components),
        }
    return result


def labelled_variance_kept(x: np.ndarray, axes: np.ndarray) -> float:
    centred = np.asarray(x, dtype=np.float64) - x.mean(axis=0)
    return float(((centred @ axes) ** 2).sum() / (centred ** 2).sum())


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------
def pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def tables(result: dict) -> str:
    a, unknown, b = result["unsure"], result["unknown_fruit"], result["pca_rows"]
    unknown_in = result["unknown_fruit_in_pca_rows"]
    lines = [f"A. Not sure (k={a['k']}, {a['n_train']} training / {a['n_held_out']} held-out images; held-out accuracy "
             f"{pct(a['held_out_accuracy'])}, phone-style accuracy {pct(a['phone_accuracy'])})", "",
             "| method | quantile | held-out sure & right | held-out sure & wrong | no fruit unsure | "
             "phone sure & right | unknown fruit unsure (mean of 10) | same, its images in the PCA rows |",
             "|---|---|---|---|---|---|---|---|"]
    for method in METHODS:
        for q in TRAINING_QUANTILES:
            m = a["methods"][method][str(q)]
            lines.append(f"| {METHOD_NAMES[method]} | {q} | {pct(m['held_out']['sure_and_right'])} | "
                         f"{pct(m['held_out']['sure_and_wrong'])} | {m['not_fruit_unsure']}/{m['not_fruit']} | "
                         f"{pct(m['phone']['sure_and_right'])} | {pct(unknown['mean_over_labels'][method][str(q)])} | "
                         f"{pct(unknown_in['mean_over_labels'][method][str(q)])} |")
    lines += ["", f"A5. Unknown fruit, per label left out: share of its images unsure at quantile {TRAINING_QUANTILE}, "
              "PCA without its images / with them (as uploads)", "",
              "| label left out | images | k | answered as (most) | "
              + " | ".join(METHOD_NAMES[m] for m in METHODS) + " |",
              "|---|---|---|---|" + "---|" * len(METHODS)]
    for name, v in unknown["per_label"].items():
        most = max(v["answered_as"], key=v["answered_as"].get)
        lines.append(f"| {name} | {v['images']} | {v['k']} | {most} ({v['answered_as'][most]}) | "
                     + " | ".join(f"{pct(v['unsure'][m][str(TRAINING_QUANTILE)])} / "
                                  f"{pct(unknown_in['per_label'][name]['unsure'][m][str(TRAINING_QUANTILE)])}"
                                  for m in METHODS) + " |")
    lines += ["", f"B. PCA rows ({b['labelled']} labelled; uploads: {b['phone_uploads']} phone-style + "
              f"{b['not_fruit']} no fruit; Mahalanobis at {TRAINING_QUANTILE}; angles against labelled_only)", "",
              "| PCA fitted on | rows | k | held-out accuracy | held-out sure & right | no fruit unsure | "
              "phone accuracy | largest angle, first k | median angle, first k | largest angle, first 3 | "
              "labelled variance in first k |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in b["variants"].items():
        lines.append(f"| {name} | {v['pca_rows']} | {v['k']} | {pct(v['held_out_accuracy'])} | "
                     f"{pct(v['mahalanobis_held_out']['sure_and_right'])} | "
                     f"{v['mahalanobis_not_fruit_unsure']}/{b['not_fruit']} | "
                     f"{pct(v['phone_accuracy'])} | {v['largest_angle_degrees']:.1f}° (k={v['angle_k']}) | "
                     f"{v['median_angle_degrees']:.1f}° | {v['largest_angle_first_3_degrees']:.1f}° | "
                     f"{pct(v['labelled_variance_kept_first_k'])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features-cache", help="an .npz outside the repository to keep the features in")
    parser.add_argument("--output", default=str(RESULT))
    args = parser.parse_args()
    sample_dir = os.environ.get("FRUITS_SAMPLE_DIR")
    if not sample_dir:
        raise SystemExit("set FRUITS_SAMPLE_DIR to the sample (<dir>/<Test|Training>/<label>/*.jpg)")
    started, timings, measured = time.perf_counter(), {}, {}
    data = load_data(sample_dir, args.features_cache, timings)
    measures = {"unsure": measure_unsure, "unknown_fruit": measure_unknown_fruit,
                "unknown_fruit_in_pca_rows": measure_unknown_fruit_in_pca_rows, "pca_rows": measure_pca_rows}
    for name, measure in measures.items():
        start = time.perf_counter()
        measured[name] = measure(data)
        timings[f"{name}_seconds"] = round(time.perf_counter() - start, 1)
    result = {
        "what": "the classifier's 'not sure' methods and the PCA's rows, on the real sample "
                "(bench/measure_classifier_choices.py)",
        "sample": {"dir": sample_dir, "images": len(data.paths),
                   "per_label": {n: int((data.labels == i).sum()) for i, n in enumerate(data.label_names)},
                   "held_out": int(data.held_out.sum()), "phone_uploads": len(data.phone_features),
                   "phone_uploads_from_held_out_images": int(data.phone_held_out.sum()),
                   "not_fruit_photos": len(data.not_fruit)},
        "method": {
            "feature_model": SHIPPED_MODEL_PATH.name,
            "split": f"held out when crc32('<label>/<file>') % 100 < {HELD_OUT_PERCENT}: approximates the pipeline's "
                     "pmod(xxhash64(...), 100) (Spark, seed 42): same share, not the same images",
            "pca": f"full PCA (NumPy eigh of the covariance), k = smallest reaching {VARIANCE} of the variance",
            "classifier": f"sklearn LogisticRegression(C=1/({REG_PARAM}*n_train), max_iter={MAX_ITER}), multinomial: "
                          f"approximates Spark ML regParam={REG_PARAM} (which also standardizes the features)",
            "unsure": "score > the training rows' score at the quantile; "
                      "Mahalanobis is fruits_spark.unsure.fit_unsure_rule",
            "phone_uploads": f"every {PHONE_EVERY}th sample image in a {PHONE_FRAME[0]}x{PHONE_FRAME[1]} frame "
                             f"(tests/phone_photos.phone_frame, seed = its index), JPEG, every {SIDEWAYS_EVERY}th "
                             "with EXIF Orientation 6",
            "upload_repeats": f"uploads repeated {list(UPLOAD_REPEATS)}x with N(0, {UPLOAD_NOISE_STD}) noise (std) "
                              "on every feature",
        },
    }
    result["sample"]["cosine"] = nearest_cosines(data)
    result |= measured
    result["seconds"] = timings | {"total": round(time.perf_counter() - started, 1)}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(tables(result))
    print(f"\nwrote {args.output} in {result['seconds']['total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
