"""Classify photos with a run's classifier export: no Spark, no Airflow, no TensorFlow.

    python -m fruits_spark.classify --model URI [--feature-model FILE] IMAGE...

``--model``: the lake (``s3://bucket``, ``file:///lake``: its published classifier, named by
``classifier/current.json``), or one run's classifier, ``classifier/<run_key>/`` (or its ``export/``
folder), as ``s3://...``, ``file://...`` or a plain folder. Each image goes through the feature
job's own decode function (``fruits_spark.features.decode_image``) and the LiteRT model the
repository ships (or ``--feature-model``), then the export's PCA and classifier weights, with NumPy: the same answer as the run's ``predictions/`` for the
same photo and model (``ClassifierExport.answers`` makes both).
Its imports reach NumPy, Pillow, pillow-heif and LiteRT only: ``pip install spark_jobs/`` (the
``fruits-classify`` distribution, which carries the shipped model) is all an app backend needs; it
embeds ``FruitClassifier`` (load once, classify bytes or a path, from any thread), of which this
command is a thin wrapper.
Prints one JSON line per image: ``{"image", "label", "probability", "unsure", "top": [{"label",
"probability"} x 3], "model"}`` (``label`` null when unsure), or ``{"image", "error"}`` for a file
that cannot be classified (also said on stderr). Exit code: 0 when at least one image was
classified, 1 when none was, 2 when the model cannot be used.

The export (docs/classifier.md, "Export format"): ``export/classifier.json`` (format, labels, k,
feature model, decode settings, figures) and ``export/classifier.npz`` (NumPy
arrays, float64: ``pca_mean`` [dim], ``pca_components`` [dim, k], ``coefficients`` [labels, k],
``intercepts`` [labels]; and the "not sure" rule's ``unsure_means`` [labels, k] and ``unsure_whitening``
[k, k], with its threshold in classifier.json's ``unsure``).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from fruits_contract.headers import RejectedImage
from fruits_contract.lake import CLASSIFIER_EXPORT_FOLDER, CURRENT_FILE
from fruits_contract.model import SHIPPED_MODEL_PATH
from fruits_spark.feature_model import LiteRTModel
from fruits_spark.features import model_input
from fruits_spark.unsure import ARRAY_MEANS, ARRAY_WHITENING, UnsureRule, rule_from_arrays

EXPORT_JSON = "classifier.json"
EXPORT_ARRAYS = "classifier.npz"
EXPORT_FORMAT = "fruits-classifier/1"
ARRAY_NAMES = ("pca_mean", "pca_components", "coefficients", "intercepts")
# The "not sure" rule's (fruits_spark.unsure): absent from exports made before it, which answer every photo sure.
OPTIONAL_ARRAY_NAMES = (ARRAY_MEANS, ARRAY_WHITENING)
TOP = 3
# Where an installed fruits-classify carries the shipped model (spark_jobs/pyproject.toml): a checkout
# has it at SHIPPED_MODEL_PATH, outside the packages.
INSTALLED_MODEL_PATH = Path(__file__).resolve().parent / "models" / SHIPPED_MODEL_PATH.name


class ExportError(ValueError):
    """The export cannot be read or used; the message names the URI and what is wrong."""


@dataclass(frozen=True)
class ClassifierExport:
    metadata: dict
    pca_mean: np.ndarray  # [dim]
    pca_components: np.ndarray  # [dim, k]
    coefficients: np.ndarray  # [labels, k]
    intercepts: np.ndarray  # [labels]
    unsure_rule: UnsureRule | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.metadata["labels"])

    def pca_features(self, features: np.ndarray) -> np.ndarray:
        """The PCA job's projection, float32 as it stores it: what the Spark model was trained on."""
        centred = np.asarray(features, dtype=np.float64) - self.pca_mean
        return (centred @ self.pca_components).astype(np.float32)

    def probabilities(self, pca_features: np.ndarray) -> np.ndarray:
        """Multinomial logistic regression, as Spark ML's model computes it: softmax(W z + b)."""
        logits = np.asarray(pca_features, dtype=np.float64) @ self.coefficients.T + self.intercepts
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def top(self, probabilities: np.ndarray, n: int = TOP) -> list[list[dict]]:
        labels = self.labels
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, :n]
        return [[{"label": labels[i], "probability": round(float(row[i]), 6)} for i in ranked]
                for row, ranked in zip(probabilities, order)]

    @property
    def model(self) -> str | None:
        """The run key of the run that trained this classifier (the ``model`` of its predictions)."""
        return self.metadata.get("run_key")

    def unsure(self, pca_features: np.ndarray) -> np.ndarray:
        """Which rows are answered unsure: farther from every label than the rule allows."""
        if self.unsure_rule is None:
            return np.zeros(len(pca_features), dtype=bool)
        return self.unsure_rule.unsure(pca_features)

    def answers(self, features: np.ndarray) -> list[dict]:
        """The answer for each row of ``features`` [n, dim]: ``label`` (None when unsure),
        ``probability`` (the best label's), ``unsure``, ``top`` (the TOP best labels)."""
        pca = self.pca_features(features)
        probabilities = self.probabilities(pca)
        return [{"label": None if unsure else top[0]["label"], "probability": top[0]["probability"],
                 "unsure": bool(unsure), "top": top}
                for top, unsure in zip(self.top(probabilities), self.unsure(pca))]


def write_export(folder: Path, metadata: dict, arrays: dict[str, np.ndarray]) -> list[Path]:
    """Write classifier.json and classifier.npz into ``folder``; returns the two files."""
    missing = [name for name in ARRAY_NAMES if name not in arrays]
    if missing:
        raise ValueError(f"export arrays {missing} are missing")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / EXPORT_ARRAYS, **{name: np.asarray(arrays[name], dtype=np.float64)
                                        for name in (*ARRAY_NAMES, *OPTIONAL_ARRAY_NAMES) if name in arrays})
    payload = {"format": EXPORT_FORMAT, "arrays": EXPORT_ARRAYS, **metadata}
    (folder / EXPORT_JSON).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return [folder / EXPORT_JSON, folder / EXPORT_ARRAYS]


def _reader(uri: str):
    """A function name -> bytes for the files of the folder at ``uri`` (s3://, file:// or a path)."""
    parsed = urlparse(uri)
    if parsed.scheme == "s3":
        try:
            import boto3
        except ImportError:
            raise ExportError(f"--model {uri}: reading s3:// needs boto3 (pip install boto3), which is not "
                              "installed; or copy the folder locally and give its path") from None
        client, prefix = boto3.client("s3"), parsed.path.strip("/")

        def read_s3(name: str) -> bytes:
            key = f"{prefix}/{name}" if prefix else name
            try:
                return client.get_object(Bucket=parsed.netloc, Key=key)["Body"].read()
            except client.exceptions.NoSuchKey:
                raise FileNotFoundError(f"s3://{parsed.netloc}/{key}") from None
        return read_s3
    if parsed.scheme not in ("", "file"):
        raise ExportError(f"--model {uri}: use s3://, file:// or a local folder")
    root = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
    return lambda name: (root / name).read_bytes()


def _read_json(read, name: str, uri: str):
    """The JSON object in file ``name`` of ``uri``, or None when there is no such file."""
    try:
        return json.loads(read(name))
    except FileNotFoundError:
        return None
    except (ValueError, UnicodeDecodeError) as error:
        raise ExportError(f"--model {uri}: {name} is not JSON ({error})") from None


def published_classifier_uri(uri: str, read=None) -> str | None:
    """The ``classifier_uri`` that ``classifier/current.json`` names when ``uri`` is a lake (or
    ``current.json`` when it is the lake's classifier/ folder); None when there is no such pointer."""
    read = read or _reader(uri)
    for name in (f"classifier/{CURRENT_FILE}", CURRENT_FILE):
        pointer = _read_json(read, name, uri)
        if pointer is not None:
            if not isinstance(pointer, dict) or not pointer.get("classifier_uri"):
                raise ExportError(f"--model {uri}: {name} names no classifier_uri ({pointer!r})")
            return pointer["classifier_uri"]
    return None


def load_export(uri: str, read=None) -> ClassifierExport:
    """The export of ``uri``: a run's classifier folder (holding export/), the export folder itself, or
    a lake, whose published classifier (``classifier/current.json``) is used. ``read``: name -> bytes of
    the files under ``uri`` (default: boto3 for s3://, the file system otherwise)."""
    read = read or _reader(uri)
    metadata, prefix = None, ""
    for prefix in (f"{CLASSIFIER_EXPORT_FOLDER}/", ""):
        metadata = _read_json(read, prefix + EXPORT_JSON, uri)
        if metadata is not None:
            break
    if metadata is None:
        published = published_classifier_uri(uri, read)
        if published:
            return load_export(published)
        raise ExportError(f"--model {uri}: no {CLASSIFIER_EXPORT_FOLDER}/{EXPORT_JSON} (nor {EXPORT_JSON}) there, and "
                          f"no classifier/{CURRENT_FILE}: give the lake (once a run has published a classifier) or "
                          "a run's classifier/<run_key>/ folder")
    if metadata.get("format") != EXPORT_FORMAT:
        raise ExportError(f"--model {uri}: format {metadata.get('format')!r}, this command reads {EXPORT_FORMAT!r}")
    try:
        with np.load(io.BytesIO(read(prefix + metadata.get("arrays", EXPORT_ARRAYS))), allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in ARRAY_NAMES}
            optional = {name: npz[name] for name in OPTIONAL_ARRAY_NAMES if name in npz.files}
    except (FileNotFoundError, KeyError, ValueError, OSError) as error:
        raise ExportError(f"--model {uri}: {prefix}{EXPORT_ARRAYS} is missing or damaged ({error})") from None
    export = ClassifierExport(metadata, **arrays, unsure_rule=rule_from_arrays(optional, metadata.get("unsure")))
    dim, k = export.pca_components.shape
    if export.pca_mean.shape != (dim,) or export.coefficients.shape != (len(export.labels), k) \
            or export.intercepts.shape != (len(export.labels),):
        raise ExportError(f"--model {uri}: array shapes do not agree (mean {export.pca_mean.shape}, components "
                          f"{export.pca_components.shape}, coefficients {export.coefficients.shape}, "
                          f"{len(export.labels)} labels)")
    rule = export.unsure_rule
    if rule is not None and (rule.means.shape != (len(export.labels), k) or rule.whitening.shape != (k, k)):
        raise ExportError(f"--model {uri}: the not-sure rule's arrays do not fit the classifier (means "
                          f"{rule.means.shape}, whitening {rule.whitening.shape}, k {k})")
    return export


def check_feature_model(export: ClassifierExport, flatbuffer: bytes, model_path: Path) -> None:
    """Refuse a feature model other than the one whose features the classifier was trained on."""
    expected = (export.metadata.get("feature_model") or {}).get("sha256_prefix")
    actual = hashlib.sha256(flatbuffer).hexdigest()
    if expected and not actual.startswith(expected):
        raise ExportError(f"--feature-model {model_path}: sha256 {actual[:16]}..., but the classifier was trained "
                          f"on features of the model with sha256 {expected}... "
                          f"({export.metadata['feature_model'].get('name')})")


def default_feature_model() -> Path:
    """The model the repository ships: the checkout's file, or the copy an installed fruits-classify carries."""
    return SHIPPED_MODEL_PATH if SHIPPED_MODEL_PATH.is_file() else INSTALLED_MODEL_PATH


class FruitClassifier:
    """A classifier and the feature model, loaded once: what an app backend embeds.

        classifier = FruitClassifier.load("s3://lake")   # the published one (classifier/current.json)
        classifier.classify(photo_bytes)   # {"label": "Pepino" or None, "probability", "unsure", "top"}
        classifier.classify_path("IMG_0001.HEIC")

    Thread-safe: threads decode their photos at once, and take turns on the one LiteRT
    interpreter (an interpreter runs one inference at a time). A photo that is not a usable image
    raises RejectedImage (``reason``, ``detail``), as the feature job rejects it.
    """

    def __init__(self, export: ClassifierExport, flatbuffer: bytes):
        self.export = export  # ClassifierExport
        self._model = LiteRTModel(flatbuffer)
        self._model_lock = threading.Lock()

    @classmethod
    def load(cls, uri: str, feature_model: Path | None = None) -> "FruitClassifier":
        """The classifier at ``uri`` (the lake's published one, a run's ``classifier/<run_key>/``, or its export/) with
        ``feature_model`` (default: the shipped one); ExportError when they cannot be used together."""
        model_path = feature_model or default_feature_model()
        export = load_export(uri)
        flatbuffer = model_path.read_bytes()
        check_feature_model(export, flatbuffer, model_path)
        return cls(export, flatbuffer)

    @property
    def labels(self) -> list[str]:
        return self.export.labels

    @property
    def model(self) -> str | None:
        return self.export.model

    def classify(self, photo: bytes) -> dict:
        """The answer for the photo whose bytes are ``photo``: ``label`` (None when unsure),
        ``probability``, ``unsure`` and ``top``, the three best labels with their probabilities."""
        batch = model_input(photo)
        with self._model_lock:
            features = self._model.predict(batch)
        return self.export.answers(features)[0]

    def classify_path(self, path: str | Path) -> dict:
        return self.classify(Path(path).read_bytes())


def classify_files(classifier: FruitClassifier, images: list[str]) -> list[dict]:
    """One result per image, in order: {"image", "top"} or {"image", "error"}."""
    results = []
    for image in images:
        try:
            results.append({"image": image, **classifier.classify_path(image), "model": classifier.model})
        except RejectedImage as rejected:
            results.append({"image": image, "error": f"not a usable image ({rejected.reason}: {rejected.detail})"})
        except OSError as error:
            results.append({"image": image, "error": f"cannot be read ({error.strerror or error})"})
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fruits_spark.classify", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True,
                        help="the lake (its published classifier) or a run's classifier/<run_key>/ "
                             "(s3://, file:// or a folder)")
    parser.add_argument("--feature-model", type=Path, default=None,
                        help="TFLite feature model (default: the one the repository ships, which an installed "
                             "fruits-classify carries)")
    parser.add_argument("images", nargs="+", metavar="IMAGE")
    args = parser.parse_args(argv)
    try:
        classifier = FruitClassifier.load(args.model, args.feature_model)
    except (ExportError, OSError) as error:
        print(f"classify: error: {error}", file=sys.stderr)
        return 2
    results = classify_files(classifier, args.images)
    for result in results:
        print(json.dumps(result), flush=True)
        if "error" in result:
            print(f"classify: {result['image']}: {result['error']}", file=sys.stderr)
    return 0 if any("error" not in result for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
