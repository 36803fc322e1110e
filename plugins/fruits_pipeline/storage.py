"""Lake I/O through Airflow's ObjectStoragePath: one code path for ``s3://`` and ``file://``.

Paths written into manifests use the canonical spelling shared with the Spark jobs
(``file:///abs/path`` unencoded, ``s3://bucket/key``).
"""
from __future__ import annotations

import functools
import json
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from fruits_contract.s3_faults import S3FaultCounter, report_faults

# Retryable errors the S3 client met in this process, by operation: each was retried by botocore (its
# retry config: the connection's config_kwargs) and, when botocore gave up, by s3fs (5 tries).
_S3_FAULTS = S3FaultCounter()


class LakeIOError(OSError):
    """A lake operation that still failed after the S3 client's retries; names the object and the error."""


def _names_the_object(action: str):
    """Decorator: an I/O error of ``function(uri, ...)`` becomes a LakeIOError naming ``uri`` (a missing
    object stays FileNotFoundError)."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(uri, *args, **kwargs):
            try:
                return function(uri, *args, **kwargs)
            except (FileNotFoundError, LakeIOError):
                raise
            except (OSError, BotoCoreError, ClientError) as error:
                raise LakeIOError(f"{action} {uri} failed after retries: {type(error).__name__}: {error}") from error
        return wrapper
    return decorate


def take_s3_faults() -> list[dict]:
    """The retryable S3 errors met since the last call, as report faults, and forget them."""
    return report_faults(_S3_FAULTS.take())


def lake_path(uri: str, conn_id: str | None):
    from airflow.sdk import ObjectStoragePath

    # file:// needs no connection; s3:// uses the AWS connection (endpoint, region, credentials).
    path = ObjectStoragePath(uri, conn_id=conn_id if uri.startswith("s3://") else None)
    if uri.startswith("s3://"):  # the filesystem is cached per connection: registered once (unique_id)
        path.fs.s3.meta.events.register("needs-retry.s3", _S3_FAULTS.note, unique_id="fruits-s3-faults")
    return path


def canonical(protocol: str, fs_name: str) -> str:
    """The URI of an object from its filesystem name (``bucket/key`` or ``/abs/path``)."""
    if protocol in ("file", "local"):
        return "file://" + fs_name
    return f"{protocol}://{fs_name.lstrip('/')}"


@_names_the_object("listing")
def list_file_info(uri: str, conn_id: str | None, maxdepth: int | None = None) -> dict[str, dict]:
    """Every object under ``uri`` (recursively, or ``maxdepth`` levels down) as canonical URI ->
    its file system's info (size, modification time...)."""
    root = lake_path(uri, conn_id)
    root.fs.invalidate_cache(root.path)  # the filesystem is cached per connection: its listings would be stale
    if not root.exists():
        return {}
    protocol = "file" if uri.startswith("file://") else uri.split("://", 1)[0]
    found = root.fs.find(root.path, detail=True, maxdepth=maxdepth)
    return {canonical(protocol, name): info for name, info in found.items() if info.get("type", "file") == "file"}


@_names_the_object("listing")
def list_folders(uri: str, conn_id: str | None) -> list[str]:
    """The canonical URIs of the folders directly under ``uri`` (on S3 one delimited listing per
    1,000 of them: their contents are not listed)."""
    root = lake_path(uri, conn_id)
    root.fs.invalidate_cache(root.path)
    if not root.exists():
        return []
    protocol = "file" if uri.startswith("file://") else uri.split("://", 1)[0]
    return sorted(canonical(protocol, entry["name"].rstrip("/")) for entry in root.fs.ls(root.path, detail=True)
                  if entry.get("type") == "directory")


def list_files(uri: str, conn_id: str | None) -> dict[str, int]:
    """Every object under ``uri`` (recursively) as canonical URI -> size in bytes."""
    return {name: int(info.get("size") or 0) for name, info in list_file_info(uri, conn_id).items()}


def parquet_data_files(uri: str, conn_id: str | None) -> list[str]:
    """The Parquet data files of the table(s) under ``uri``, sorted: what Spark reads there, i.e.
    without the files and folders whose name starts with ``_`` or ``.`` (``_rejects/``,
    ``_SUCCESS``, ``.crc``...)."""
    root = uri.rstrip("/")
    return sorted(name for name in list_files(root, conn_id) if is_parquet_data_file(root, name))


def is_parquet_data_file(root: str, uri: str) -> bool:
    """Whether Spark reads ``uri`` as data of the table at ``root`` (see ``parquet_data_files``)."""
    return uri.endswith(".parquet") and not any(part.startswith(("_", ".")) for part in uri[len(root) + 1:].split("/"))


@_names_the_object("reading")
def read_parquet_column(uri: str, conn_id: str | None, column: str) -> list:
    """One column of a Parquet file, reading only that column's pages and the footer. s3fs reads ahead
    50 MiB by default, which pulled a whole feature file (1,280 floats a row) to read its paths: no
    read-ahead, so each of pyarrow's reads (the footer, the column chunk) is one ranged GET."""
    import pyarrow.parquet as pq

    options = {"cache_type": "none"} if uri.startswith("s3://") else {}
    with lake_path(uri, conn_id).open("rb", **options) as handle:
        return pq.read_table(handle, columns=[column]).column(column).to_pylist()


@_names_the_object("reading")
def read_bytes(uri: str, conn_id: str | None) -> bytes:
    return lake_path(uri, conn_id).read_bytes()


@_names_the_object("reading")
def read_range(uri: str, conn_id: str | None, start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of an object: one ranged GET on S3, a seek on file://."""
    path = lake_path(uri, conn_id)
    return path.fs.cat_file(path.path, start=start, end=end)


@_names_the_object("writing")
def write_bytes(uri: str, data: bytes, conn_id: str | None) -> None:
    """Write an object whole: a reader sees the old bytes or the new ones, never part of them (one PUT on
    S3; on file://, a hidden file beside it renamed over it, as a PUT would replace the object)."""
    path = lake_path(uri, conn_id)
    if not uri.startswith("file://"):
        path.write_bytes(data)
        return
    import os
    import tempfile

    folder = os.path.dirname(path.path)
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".writing-")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path.path)
    except BaseException:
        os.unlink(temporary)
        raise


@_names_the_object("checking")
def exists(uri: str, conn_id: str | None) -> bool:
    return lake_path(uri, conn_id).exists()


@_names_the_object("reading")
def read_json(uri: str, conn_id: str | None) -> dict[str, Any] | None:
    path = lake_path(uri, conn_id)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_json(uri: str, payload: dict, conn_id: str | None) -> None:
    write_bytes(uri, json.dumps(payload, indent=2, sort_keys=True).encode(), conn_id)


@_names_the_object("removing")
def remove_tree(uri: str, conn_id: str | None, *, inputs: tuple[str, ...]) -> None:
    """Remove an output folder this pipeline wrote; refuses anything inside the ``inputs`` folders
    (the lake's raw/ and uploads/: Lake.inputs())."""
    for kept in inputs:
        if uri.rstrip("/") == kept.rstrip("/") or uri.startswith(kept.rstrip("/") + "/"):
            raise ValueError(f"refusing to delete {uri}: uploads under {kept} are never modified")
    path = lake_path(uri, conn_id)
    if path.exists():
        path.fs.rm(path.path, recursive=True)
        # s3fs ignores the per-key errors of a DeleteObjects (an AccessDenied included): a folder that
        # is still there would be taken for removed, and come back in the next run's listing.
        path.fs.invalidate_cache(path.path)
        if path.exists():
            raise OSError(f"{uri}: not removed (S3 refused some deletes: may the role s3:DeleteObject there?)")
