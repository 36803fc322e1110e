"""Small files next to Spark output (reports, job results), for file:// and s3:// alike.

Spark writes Parquet through the Hadoop FileSystem; these helpers use the same
FileSystem through the JVM gateway, so a JSON report lands wherever the Parquet
did (local disk, HDFS, or S3 through EMRFS/S3A) with the same credentials.
"""
from __future__ import annotations


def _hadoop_path(spark, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def write_text(spark, uri: str, text: str) -> None:
    """Write (or replace) one UTF-8 text object at ``uri``."""
    path, fs = _hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()

