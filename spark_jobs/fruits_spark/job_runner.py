"""The one way a job runs: its session, its log, its result line and its exit code.

Each job (fruits_spark.jobs) has ``parse_args(argv)``, ``run(spark, args) -> dict`` and a ``main``
that hands both to ``run_job``; its entry script in spark_jobs/ only calls that ``main``.
"""
from __future__ import annotations

import json
import logging
import sys

from fruits_contract.lake import RESULT_LINE_PREFIX
from fruits_spark.errors import JobInputError
from fruits_spark.session import FAULT_TOLERANCE_CONFIG, build_session


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


def run_job(job: str, run, args) -> int:
    """A job's main: ``run(spark, args)`` on a new session, stopped after; its result printed as the
    ``FRUITS_RESULT`` line the local runner reads. Input it cannot use (JobInputError) is logged and
    exits 2."""
    logger = get_logger(job)
    spark = build_session(job, FAULT_TOLERANCE_CONFIG)
    try:
        job_result = run(spark, args)
    except JobInputError as error:
        logger.error("%s failed: %s", job, error)
        print(f"{job}: error: {error}", file=sys.stderr, flush=True)
        return 2
    finally:
        spark.stop()
    print(RESULT_LINE_PREFIX + json.dumps(job_result), file=sys.stderr, flush=True)
    return 0
