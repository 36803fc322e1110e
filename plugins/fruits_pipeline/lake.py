"""The lake layout (DESIGN.md, "The lake"): the one place that knows where things live.

Every URI is built from one base, ``s3://bucket`` or ``file:///path``, so the same code
serves EMR and a laptop.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlparse

from fruits_spark.common import JOB_RESULT_FILE

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")
SCHEDULED_KEY_FORMAT = "%Y-%m-%dT%H%M%SZ"
_SCHEDULED_KEY = re.compile(r"^\d{4}-\d\d-\d\dT\d{6}Z$")
# Room for "batch=" and a suffix within a file system's 255-byte name limit, and short enough to read.
_MAX_SLUG = 100


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
        return "/".join([self.base_uri, *(p.strip("/") for p in parts)])

    # Inputs
    def raw(self) -> str:
        return self.uri("raw")

    # Per-run outputs
    def manifest_valid(self, run_key: str) -> str:
        return self.uri("manifests", run_key, "valid")

    def manifest_rejected(self, run_key: str) -> str:
        return self.uri("manifests", run_key, "rejected")

    def features_root(self) -> str:
        return self.uri("features")

    def features(self, run_key: str) -> str:
        return self.uri("features", f"batch={run_key}")

    def feature_rejects(self, run_key: str) -> str:
        return self.uri("features", f"batch={run_key}", "_rejects")

    def pca(self, run_key: str) -> str:
        return self.uri("pca", run_key)

    def pca_report(self, run_key: str) -> str:
        return self.uri("pca", run_key, "_pca_report.json")

    def pca_model(self, run_key: str) -> str:
        return self.uri("pca", run_key, "_model")

    def classifier(self, run_key: str) -> str:
        return self.uri("classifier", run_key)

    def classifier_figures(self, run_key: str) -> str:
        """The held-out figures train_classifier.py writes: the run report's ``classifier`` object, less its uri."""
        return self.uri("classifier", run_key, "figures.json")

    def classifier_result(self, run_key: str) -> str:
        """train_classifier.py's _job_result.json: says why no classifier was trained, when none was."""
        return self.uri("classifier", run_key, JOB_RESULT_FILE)

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
