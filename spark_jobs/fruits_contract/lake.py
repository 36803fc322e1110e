"""The lake layout (docs/design.md, "The lake"): every folder and file name the pipeline reads or
writes, and the URIs built from them.

Every URI is built from one base, ``s3://bucket`` or ``file:///path``, so the same code serves EMR
and a laptop. The Spark jobs receive their input and output URIs as arguments and use the names
here for what they write inside them.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import unquote, urlparse

# The Spark steps, in the order a run adds them; each is spark_jobs/<name>.py.
EXTRACT_FEATURES, REDUCE_PCA, TRAIN_CLASSIFIER, PREDICT_UPLOADS = (
    "extract_features", "reduce_pca", "train_classifier", "predict_uploads")
STEP_NAMES = (EXTRACT_FEATURES, REDUCE_PCA, TRAIN_CLASSIFIER, PREDICT_UPLOADS)
# The jobs' shared code as shipped to a cluster (spark-submit --py-files): fruits_spark and this package.
PY_FILES_ZIP = "fruits_spark.zip"
# Inside code/<version>/: the EMR bootstrap action and the wheels it installs from.
BOOTSTRAP_SCRIPT = "bootstrap/install_python_deps.sh"
WHEELHOUSE = "wheelhouse"

# The file each job writes last, after its Parquet's job commit: an output folder counts only once it
# holds this file. Spark's _SUCCESS would not do: on EMR's S3-optimized committer a job that dies
# leaves its committed tasks' files visible, and _SUCCESS comes before the feature job's _rejects/.
# One PUT, so on S3 it is there whole or not at all (docs/reliability.md).
JOB_RESULT_FILE = "_job_result.json"
# The last stderr line of a job that succeeded: this prefix, then the job result as JSON (what the local
# runner reads from spark-submit's output).
RESULT_LINE_PREFIX = "FRUITS_RESULT "

# manifests/<run_key>/valid/ and rejected/: (column, Arrow type name) of their Parquet.
MANIFEST_VALID_COLUMNS = (("path", "string"), ("label", "string"), ("size", "int64"), ("format", "string"),
                          ("width", "int32"), ("height", "int32"))
MANIFEST_REJECTED_COLUMNS = (("path", "string"), ("reason", "string"), ("detail", "string"))
# manifests/<run_key>/labels/: the confirmed labels the run trains on (labels/ resolved: last row wins).
MANIFEST_LABELS_COLUMNS = (("path", "string"), ("label", "string"))

# features/batch=<run_key>/ and its side tables (names starting with "_": Spark's readers skip them).
BATCH_FOLDER_PREFIX = "batch="
REJECTS_FOLDER = "_rejects"  # path, reason, detail
DUPLICATES_FOLDER = "_duplicates"  # path, duplicate_of, sha256

# pca/<run_key>/
PCA_REPORT_FILE = "_pca_report.json"
PCA_MODEL_FOLDER = "_model"  # centering + PCA, one Spark PipelineModel
# The feature moments the fit solved (count, mean, scatter) and the batches they are of: the next PCA merges
# its new batches into them instead of a pass over every feature (fruits_spark.pca, "moments").
PCA_MOMENTS_FILE = "_moments.npz"
# Superseded run outputs (pca/<run_key>/, classifier/<run_key>/held_out/) kept whole beyond the published one
# and this run's: the newest COPIES_KEPT (fruits_spark.retention); the others are thinned.
COPIES_KEPT = 3
PCA_PREVIEW_FOLDER = "_preview"  # label, pc1, pc2 of a deterministic sample, for the run's picture
PCA_PREVIEW_COLUMNS = ("label", "pc1", "pc2")
PCA_PREVIEW_MAX_ROWS = 2_000

# classifier/<run_key>/
CLASSIFIER_MODEL_FOLDER = "model"
CLASSIFIER_LABELS_FILE = "labels.json"
CLASSIFIER_FIGURES_FILE = "figures.json"
CLASSIFIER_HELD_OUT_FOLDER = "held_out"
CLASSIFIER_EXPORT_FOLDER = "export"

# ledger/: what every upload became, Delta Lake tables the Airflow side reads and writes (plugins
# fruits_pipeline/ledger.py); the Spark jobs never read them.
LEDGER_DONE_TABLE = "done"  # path, outcome, reason, detail, duplicate_of, size; partitioned by batch (run key)
LEDGER_ARRIVALS_TABLE = "arrivals"  # path, size, arrived, source: uploads met and not yet settled
LEDGER_RECONCILED_FILE = "_reconciled.json"  # when the uploads were last listed against the ledger
# How long S3's record of an upload may come back: the queue's message retention (SQS's maximum, 14
# days, which infra/ sets). A notification for a path the ledger settled within this window is a
# redelivery; later, S3 can only be telling of a new write of that key.
REDELIVERY_WINDOW_DAYS = 14

# Pointers to the outputs the next run builds on (docs/design.md, "The lake"): one small JSON
# object each, written in one PUT after the output it names is complete.
CURRENT_FILE = "current.json"

SCHEDULED_KEY_FORMAT = "%Y-%m-%dT%H%M%SZ"
_SCHEDULED_KEY = re.compile(r"^\d{4}-\d\d-\d\dT\d{6}Z$")
_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
# Room for "batch=" and a suffix within a file system's 255-byte name limit, and short enough to read.
_MAX_SLUG = 100
_FILE_URI_ONE_SLASH = re.compile(r"^file:/(?!/)")


def run_key_for(run_type: str, run_id: str, data_interval_end: datetime | None) -> str:
    """A filesystem- and S3-safe key for one run.

    Scheduled runs are keyed by their data interval end, so a rerun of the same day
    overwrites its own outputs; manual runs by their run id, as it is when it is already safe,
    else (any character of an id given through the API) by a readable part and a digest of it.
    """
    if run_type == "scheduled" and data_interval_end is not None:
        return data_interval_end.strftime(SCHEDULED_KEY_FORMAT)
    slug = _UNSAFE_KEY_CHARS.sub("-", run_id).strip("-.")[:_MAX_SLUG].strip("-.")
    if slug and slug == run_id and not _SCHEDULED_KEY.match(slug):
        return slug
    # Changed on the way (or shaped like a scheduled run's key): a digest of the run id itself keeps two
    # run ids that read alike ("a/b", "a b", "a..b", "été", "ete") on two keys.
    return f"{slug or 'run'}-{hashlib.sha256(run_id.encode('utf-8', 'surrogatepass')).hexdigest()[:12]}"


def canonical_uri(path: str) -> str:
    """One spelling per object, on both sides: ``file:///abs/path`` for local files (Spark writes
    ``file:/abs/path``), ``s3://bucket/key`` for S3; percent-escapes are decoded so that label folders
    with spaces compare equal whichever side listed them."""
    path = unquote(path)
    if path.startswith("/"):
        return "file://" + path
    return _FILE_URI_ONE_SLASH.sub("file:///", path)


def join_uri(base: str, *names: str) -> str:
    """``base/name/...``: a file or folder inside an output folder."""
    return "/".join([base.rstrip("/"), *(name.strip("/") for name in names)])


def batch_key_of(uri: str, features_root: str) -> str | None:
    """The run key of the ``batch=<run_key>`` folder that holds ``uri`` under ``features_root``, or None."""
    first = canonical_uri(uri)[len(canonical_uri(features_root).rstrip("/")) + 1:].split("/", 1)[0]
    return first[len(BATCH_FOLDER_PREFIX):] if first.startswith(BATCH_FOLDER_PREFIX) else None


@dataclass(frozen=True)
class BatchStates:
    """The feature batches of a features root: committed ones (their job wrote JOB_RESULT_FILE, its
    last file), oldest commit first, and partial ones (a job that died after some of its tasks
    committed: on S3 with EMR's committer their files are visible). Only committed batches count,
    for exactly-once and for the PCA: a partial batch's images are taken again by the next run."""

    committed: tuple[str, ...] = ()
    partial: tuple[str, ...] = ()


def batch_states(committed_at: dict[str, float | None]) -> BatchStates:
    """The committed-batch rule, for both sides. ``committed_at``: run key -> when its
    JOB_RESULT_FILE was written (any number that orders commits), or None when it has none."""
    committed = sorted((key for key, at in committed_at.items() if at is not None),
                       key=lambda key: (committed_at[key], key))
    return BatchStates(tuple(committed), tuple(sorted(key for key, at in committed_at.items() if at is None)))


@dataclass(frozen=True)
class Lake:
    base_uri: str

    def __post_init__(self):
        parsed = urlparse(self.base_uri)
        if parsed.scheme not in ("s3", "file") or (parsed.scheme == "s3" and not parsed.netloc):
            raise ValueError(
                f"FRUITS_LAKE_URI={self.base_uri!r} is not a lake URI: use s3://bucket[/prefix] or file:///absolute/path"
            )
        object.__setattr__(self, "base_uri", self.base_uri.rstrip("/"))

    @property
    def scheme(self) -> str:
        return urlparse(self.base_uri).scheme

    @property
    def bucket(self) -> str | None:
        """The S3 bucket, or None for a local lake."""
        return urlparse(self.base_uri).netloc if self.scheme == "s3" else None

    @property
    def local_root(self) -> str | None:
        """The folder of a ``file://`` lake, or None for S3."""
        return urlparse(self.base_uri).path if self.scheme == "file" else None

    def uri(self, *parts: str) -> str:
        return join_uri(self.base_uri, *parts)

    # Inputs
    def raw(self) -> str:
        """Labelled images, ``raw/<label>/<file>``."""
        return self.uri("raw")

    def uploads(self) -> str:
        """The app's photos to identify, ``uploads/<any depth>/<file>``: no label."""
        return self.uri("uploads")

    def inputs(self) -> tuple[str, str]:
        """The folders the pipeline reads and never modifies."""
        return self.raw(), self.uploads()

    # Per-run outputs
    def manifests_root(self) -> str:
        return self.uri("manifests")

    def manifest_valid(self, run_key: str) -> str:
        return self.uri("manifests", run_key, "valid")

    def manifest_rejected(self, run_key: str) -> str:
        return self.uri("manifests", run_key, "rejected")

    def manifest_labels(self, run_key: str) -> str:
        """The confirmed labels of uploads this run trains on (``labels/`` resolved by validation)."""
        return self.uri("manifests", run_key, "labels")

    def labels_root(self) -> str:
        """What the app writes when a user confirms a fruit: ``labels/<any>.csv|.parquet`` rows path, label."""
        return self.uri("labels")

    def features_root(self) -> str:
        return self.uri("features")

    def features(self, run_key: str) -> str:
        return self.uri("features", f"{BATCH_FOLDER_PREFIX}{run_key}")

    def feature_rejects(self, run_key: str) -> str:
        return join_uri(self.features(run_key), REJECTS_FOLDER)

    def feature_duplicates(self, run_key: str) -> str:
        return join_uri(self.features(run_key), DUPLICATES_FOLDER)

    def pca_root(self) -> str:
        return self.uri("pca")

    def pca(self, run_key: str) -> str:
        return self.uri("pca", run_key)

    def pca_report(self, run_key: str) -> str:
        return join_uri(self.pca(run_key), PCA_REPORT_FILE)

    def pca_model(self, run_key: str) -> str:
        return join_uri(self.pca(run_key), PCA_MODEL_FOLDER)

    def pca_preview(self, run_key: str) -> str:
        return join_uri(self.pca(run_key), PCA_PREVIEW_FOLDER)

    def pca_current(self) -> str:
        """The pointer to the PCA the next run builds on (the latest completed one)."""
        return self.uri("pca", CURRENT_FILE)

    def classifier_root(self) -> str:
        return self.uri("classifier")

    def classifier(self, run_key: str) -> str:
        return self.uri("classifier", run_key)

    def classifier_figures(self, run_key: str) -> str:
        """The held-out figures train_classifier writes: the run report's ``classifier`` object, less its uri."""
        return join_uri(self.classifier(run_key), CLASSIFIER_FIGURES_FILE)

    def classifier_current(self) -> str:
        """The pointer to the published classifier: what ``classify`` uses when given the lake."""
        return self.uri("classifier", CURRENT_FILE)

    def predictions_root(self) -> str:
        return self.uri("predictions")

    def predictions(self, run_key: str) -> str:
        """The answers of the current classifier for the uploads featurized in the run."""
        return self.uri("predictions", run_key)

    def job_result(self, output_uri: str) -> str:
        """The JOB_RESULT_FILE of a job's output folder: it says what the job did (or why it trained nothing)."""
        return join_uri(output_uri, JOB_RESULT_FILE)

    def ledger(self, table: str) -> str:
        """One of the ledger's Delta tables (LEDGER_DONE_TABLE, LEDGER_ARRIVALS_TABLE)."""
        return self.uri("ledger", table)

    def ledger_reconciled(self) -> str:
        return self.uri("ledger", LEDGER_RECONCILED_FILE)

    def reports_root(self) -> str:
        return self.uri("reports")

    def report(self, run_key: str) -> str:
        return self.uri("reports", f"{run_key}.json")

    def report_picture(self, run_key: str) -> str:
        return self.uri("reports", f"{run_key}.png")

    # Shared, staged once
    def model(self, name: str) -> str:
        return self.uri("models", name)

    def code(self, version: str) -> str:
        return self.uri("code", version)

    def emr_logs(self) -> str:
        return self.uri("logs", "emr") + "/"
