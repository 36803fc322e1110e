"""Small files next to Spark output (reports, job results), for file:// and s3:// alike.

Spark writes Parquet through the Hadoop FileSystem; these helpers use the same
FileSystem through the JVM gateway, so a JSON report lands wherever the Parquet
did (local disk, HDFS, or S3 through EMRFS/S3A) with the same credentials.
"""
from __future__ import annotations

import tempfile
from pathlib import Path


def _hadoop_path(spark, uri: str):
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    return path, path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def read_bytes(spark, uri: str) -> bytes:
    """The whole content of one file at ``uri``, read on the driver without a Spark job.

    The JVM copies it to a local temporary file that Python then reads: through py4j the bytes
    would travel as text (about 2 s for the 9 MB model here)."""
    path, fs = _hadoop_path(spark, uri)
    if not fs.exists(path):
        raise FileNotFoundError(f"{uri}: no such file")
    if not fs.getFileStatus(path).isFile():
        raise IsADirectoryError(f"{uri} is a folder, not a file")
    with tempfile.TemporaryDirectory(prefix="fruits-read-") as tmp:
        local = Path(tmp) / "content"
        target = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(local.as_uri())
        fs.copyToLocalFile(False, path, target, True)  # True: no .crc file beside it
        return local.read_bytes()


def write_text(spark, uri: str, text: str) -> None:
    """Write (or replace) one UTF-8 text object at ``uri``."""
    path, fs = _hadoop_path(spark, uri)
    stream = fs.create(path, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()



def copy_from_local(spark, local_file: Path, uri: str) -> None:
    """Upload (or replace) one local file to ``uri`` through Hadoop's FileSystem (no bytes through py4j)."""
    path, fs = _hadoop_path(spark, uri)
    source = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(Path(local_file).resolve().as_uri())
    fs.copyFromLocalFile(False, True, source, path)  # keep the source, overwrite the target


def write_bytes(spark, uri: str, data: bytes) -> None:
    """Write (or replace) one binary object at ``uri``, through a local file (no bytes through py4j)."""
    with tempfile.TemporaryDirectory(prefix="fruits-write-") as tmp:
        local = Path(tmp) / "content"
        local.write_bytes(data)
        copy_from_local(spark, local, uri)


def delete_tree(spark, uri: str) -> None:
    """Remove the file or folder at ``uri`` (nothing when absent)."""
    path, fs = _hadoop_path(spark, uri)
    fs.delete(path, True)


def list_folders(spark, uri: str) -> list[str]:
    """The URIs of the folders directly under ``uri`` (none when it does not exist), in name order."""
    from fruits_contract.lake import canonical_uri

    path, fs = _hadoop_path(spark, uri)
    if not fs.exists(path):
        return []
    return sorted(canonical_uri(status.getPath().toString()) for status in fs.listStatus(path) if status.isDirectory())


def delete_entries(spark, uri: str, drops) -> int:
    """Remove the entries directly under the folder ``uri`` whose name ``drops(name)`` is true (a local
    file system's checksum file ``.<name>.crc`` goes with its file); returns how many went."""
    path, fs = _hadoop_path(spark, uri)
    if not fs.exists(path):
        return 0
    removed = 0
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        checksum_of = name[1:-len(".crc")] if name.startswith(".") and name.endswith(".crc") else None
        if drops(checksum_of if checksum_of is not None else name):
            fs.delete(status.getPath(), True)
            removed += checksum_of is None
    return removed


def exists(spark, uri: str) -> bool:
    path, fs = _hadoop_path(spark, uri)
    return bool(fs.exists(path))


def modified_ms(spark, uri: str) -> int | None:
    """The modification time of the file at ``uri`` in milliseconds, or None when there is none."""
    path, fs = _hadoop_path(spark, uri)
    return int(fs.getFileStatus(path).getModificationTime()) if fs.exists(path) else None


def read_job_output(spark, uri: str, columns: tuple[str, ...], *, flag: str, made_by: str, error: type[Exception],
                    partitions: tuple[str, ...] = ()):
    """``columns`` of the Parquet table another job wrote at ``uri`` (only its ``partitions`` folders
    when given), or ``error`` with a message naming the flag, the URI and what is wrong with it."""
    from pyspark.errors import AnalysisException

    try:
        frame = spark.read.option("basePath", uri).parquet(*partitions) if partitions else spark.read.parquet(uri)
    except AnalysisException as exc:
        message = str(exc)
        if "PATH_NOT_FOUND" in message or "Path does not exist" in message:
            raise error(f"{flag} {uri}: no such folder") from None
        if "UNABLE_TO_INFER_SCHEMA" in message or "Unable to infer schema" in message:
            raise error(f"{flag} {uri}: no Parquet files (no rows)") from None
        raise
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise error(f"{flag} {uri}: columns {missing} are missing (found {frame.columns}); "
                    f"expected {made_by}'s output: {', '.join(columns)}")
    return frame.select(*columns)
