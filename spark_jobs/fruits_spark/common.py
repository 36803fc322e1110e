"""Session, logging and path helpers shared by the two Spark jobs."""
from __future__ import annotations

import logging
import re
import sys
from urllib.parse import unquote

_FILE_URI_ONE_SLASH = re.compile(r"^file:/(?!/)")


def get_logger(name: str) -> logging.Logger:
    """A logger that writes plain lines to stderr (shown in the EMR step's stderr and the Airflow task log)."""
    logger = logging.getLogger(name)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def build_session(app_name: str, config: dict[str, str] | None = None):
    """The SparkSession for a job; master and resources come from spark-submit, not from code.

    ``config``: the job's own settings (static ones must be set before the session starts).
    """
    from pyspark.sql import SparkSession

    builder = (
        SparkSession.builder.appName(app_name)
        # Partition values like batch=2026-11-22T000000Z stay strings, never guessed as dates.
        .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
    )
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    # Spark's INFO chatter (a line per file read) would bury the jobs' own progress lines.
    spark.sparkContext.setLogLevel("WARN")
    return spark


def canonical_uri(path: str) -> str:
    """One spelling per object, shared with the Airflow side's manifests.

    Local files are ``file:///abs/path`` (Spark writes ``file:/abs/path``), S3 objects
    ``s3://bucket/key``; percent-escapes are decoded so that label folders with spaces
    compare equal whichever side listed them.
    """
    path = unquote(path)
    if path.startswith("/"):
        return "file://" + path
    return _FILE_URI_ONE_SLASH.sub("file:///", path)
