"""One local Spark session for every test in tests/spark.

The session is built by the jobs' own `build_session`, as the jobs build theirs; only the
master comes from outside, as spark-submit would pass it. local[2] gives two task slots, so broadcasts and two separate Python workers are exercised.
"""
from __future__ import annotations

import logging
import os

import pytest

TEST_MASTER = "local[2]"
# py4j logs "Closing down clientserver connection" from __del__ at interpreter exit, after
# pytest has closed the stream: a traceback at the end of every run, about nothing.
logging.getLogger("py4j").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def spark():
    # build_session takes its master from spark-submit; PYSPARK_SUBMIT_ARGS is how a plain
    # Python process passes the same arguments to the JVM it launches.
    previous = os.environ.get("PYSPARK_SUBMIT_ARGS")
    os.environ["PYSPARK_SUBMIT_ARGS"] = (
        f"--master {TEST_MASTER} --conf spark.ui.enabled=false "
        "--conf spark.sql.shuffle.partitions=4 pyspark-shell"
    )
    from fruits_spark.session import build_session

    session = build_session("fruits-tests")
    try:
        yield session
    finally:
        session.stop()
        if previous is None:
            os.environ.pop("PYSPARK_SUBMIT_ARGS", None)
        else:
            os.environ["PYSPARK_SUBMIT_ARGS"] = previous

