"""The Spark session every job runs in, built one way, and what the application knows about its executors."""
from __future__ import annotations

import os

# A node lost mid-step (a spot node reclaimed, a worker killed): its running tasks fail and run again
# on the other executors, up to maxFailures attempts each; only one attempt of a task commits its
# output (Spark's output commit coordinator), and accumulators count successful attempts only.
# No speculation: a duplicate attempt would run the model twice for nothing (docs/reliability.md).
FAULT_TOLERANCE_CONFIG = {"spark.task.maxFailures": "4", "spark.speculation": "false"}
# Tasks per core that list the paths a job names one by one (build_session says why).
LISTING_TASKS_PER_CORE = 4


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
    # Paths named one by one (the PCA's batch folders; past 32 of them) are listed by a Spark job with
    # one task per path, up to 10,000: 4,000 tasks took 10 s of a 35 s job here. A few tasks per core
    # list them as fast, each taking its share.
    spark.conf.set("spark.sql.sources.parallelPartitionDiscovery.parallelism",
                   str(LISTING_TASKS_PER_CORE * spark.sparkContext.defaultParallelism))
    # Spark's INFO chatter (a line per file read) would bury the jobs' own progress lines.
    spark.sparkContext.setLogLevel("WARN")
    _put_package_on_local_workers_path(spark.sparkContext)
    return spark


def _put_package_on_local_workers_path(sc) -> None:
    """On a local master, give the Python workers the folder or zip that holds fruits_spark.

    The workers unpickle the job's UDF, which refers to fruits_spark by name. On a cluster the
    package reaches them as ``--py-files fruits_spark.zip``; on a local master, a checkout run
    without ``make install`` (the script puts the package on the driver's path only) would fail
    with "No module named 'fruits_spark'". Functions made after this carry the path
    (sc.environment); the driver's path only means something on its own machine, hence local
    masters only.
    """
    if not sc.master.startswith("local"):
        return
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    paths = [p for p in sc.environment.get("PYTHONPATH", "").split(os.pathsep) if p]
    if package_root not in paths:
        sc.environment["PYTHONPATH"] = os.pathsep.join([*paths, package_root])


def lost_executors(spark) -> list[dict]:
    """The executors this application lost (id, host, Spark's reason), from its status store."""
    summaries = spark.sparkContext._jsc.sc().statusStore().executorList(False)
    lost = []
    for index in range(summaries.size()):
        executor = summaries.apply(index)
        if executor.id() != "driver" and not executor.isActive():
            reason = executor.removeReason()
            lost.append({"id": executor.id(), "host": executor.hostPort(),
                         "reason": reason.get() if reason.isDefined() else "no reason given"})
    return lost
