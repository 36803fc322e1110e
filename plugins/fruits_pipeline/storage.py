"""Lake I/O through Airflow's ObjectStoragePath: one code path for ``s3://`` and ``file://``.

Paths written into manifests use the canonical spelling shared with the Spark jobs
(``file:///abs/path`` unencoded, ``s3://bucket/key``).
"""
from __future__ import annotations

import json
from typing import Any


def lake_path(uri: str, conn_id: str | None):
    from airflow.sdk import ObjectStoragePath

    # file:// needs no connection; s3:// uses the AWS connection (endpoint, region, credentials).
    return ObjectStoragePath(uri, conn_id=conn_id if uri.startswith("s3://") else None)


def canonical(protocol: str, fs_name: str) -> str:
    """The URI of an object from its filesystem name (``bucket/key`` or ``/abs/path``)."""
    if protocol in ("file", "local"):
        return "file://" + fs_name
    return f"{protocol}://{fs_name.lstrip('/')}"


def list_file_info(uri: str, conn_id: str | None, maxdepth: int | None = None) -> dict[str, dict]:
    """Every object under ``uri`` (recursively, or ``maxdepth`` levels down) as canonical URI ->
    its file system's info (size, modification time...)."""
    root = lake_path(uri, conn_id)
    if not root.exists():
        return {}
    protocol = "file" if uri.startswith("file://") else uri.split("://", 1)[0]
    found = root.fs.find(root.path, detail=True, maxdepth=maxdepth)
    return {canonical(protocol, name): info for name, info in found.items() if info.get("type", "file") == "file"}


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


def read_bytes(uri: str, conn_id: str | None) -> bytes:
    return lake_path(uri, conn_id).read_bytes()


def write_bytes(uri: str, data: bytes, conn_id: str | None) -> None:
    path = lake_path(uri, conn_id)
    if uri.startswith("file://"):
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def exists(uri: str, conn_id: str | None) -> bool:
    return lake_path(uri, conn_id).exists()


def read_json(uri: str, conn_id: str | None) -> dict[str, Any] | None:
    path = lake_path(uri, conn_id)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def write_json(uri: str, payload: dict, conn_id: str | None) -> None:
    write_bytes(uri, json.dumps(payload, indent=2, sort_keys=True).encode(), conn_id)


def remove_tree(uri: str, conn_id: str | None, *, raw_uri: str) -> None:
    """Remove an output folder this pipeline wrote; refuses anything inside ``raw_uri``."""
    if uri.rstrip("/") == raw_uri.rstrip("/") or uri.startswith(raw_uri.rstrip("/") + "/"):
        raise ValueError(f"refusing to delete {uri}: uploads under {raw_uri} are never modified")
    path = lake_path(uri, conn_id)
    if path.exists():
        path.fs.rm(path.path, recursive=True)
