"""The photos' bytes, read by the feature job's Python code itself: Spark hands the workers paths only.

Passing 2-5 MB photos through the JVM (binaryFile, a copy, Arrow, the pipe to the worker) cost
17-23 ms of JVM CPU per 12 MP upload, more than decoding it at reduced size (docs/performance.md).
Here a worker reads each photo from the lake straight into its own memory:

- ``s3://`` (and EMR's ``s3a://``, ``s3n://``) through boto3, one client per process, botocore's
  standard retries (throttling, 5xx, dropped connections), every retried attempt counted
  (fruits_contract.s3_faults) for the run report. Region and endpoint come from the environment
  (AWS_REGION: the EMR cluster's spark-defaults set it; AWS_ENDPOINT_URL_S3 for moto), credentials
  from the node's instance profile: the same role EMRFS used, so no new permission.
- ``file://`` from disk.

``read_ahead`` keeps READ_THREADS S3 reads in flight ahead of the decode, in order, so that waiting on
S3 overlaps the decoding and at most READ_THREADS + 1 photos are in memory at once.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator

from fruits_contract.headers import RejectedImage
from fruits_contract.s3_faults import S3FaultCounter

READ_THREADS = 4
S3_SCHEMES = ("s3://", "s3a://", "s3n://")
# botocore's standard mode: exponential backoff with jitter, throttling errors included.
S3_MAX_ATTEMPTS = 10
# Folders and files a Spark listing leaves out (metadata such as _SUCCESS, .DS_Store): a local
# listing leaves out the same.
HIDDEN_PREFIXES = ("_", ".")

# What the client is built from: a process whose environment says another endpoint or region (a test
# against moto) gets another client.
CLIENT_ENV = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID")

S3_FAULTS = S3FaultCounter()
_CLIENT_LOCK = threading.Lock()
_CLIENTS: dict[tuple, object] = {}
_POOL: ThreadPoolExecutor | None = None


def s3_client():
    """This process's S3 client for its environment (boto3 clients are thread-safe), built once."""
    key = tuple(os.environ.get(name) for name in CLIENT_ENV)
    with _CLIENT_LOCK:
        if key not in _CLIENTS:
            import boto3
            from botocore.config import Config

            config = Config(retries={"mode": "standard", "max_attempts": S3_MAX_ATTEMPTS},
                            max_pool_connections=2 * READ_THREADS)
            client = boto3.session.Session().client("s3", config=config)
            client.meta.events.register("needs-retry.s3", S3_FAULTS.note)
            _CLIENTS[key] = client
        return _CLIENTS[key]


def bucket_and_key(uri: str) -> tuple[str, str]:
    rest = uri.split("://", 1)[1]
    bucket, _, key = rest.partition("/")
    return bucket, key


def local_path(uri: str) -> str:
    """The file a ``file:///abs/path`` URI (the lake's spelling: never percent-encoded) names."""
    for prefix in ("file://", "file:"):
        if uri.startswith(prefix):
            return uri[len(prefix):]
    return uri


def storage_of(uri: str) -> str:
    """"s3" or "file": where ``uri`` is read from; any other scheme raises ValueError naming it."""
    if uri.startswith(S3_SCHEMES):
        return "s3"
    if uri.startswith("file:") or uri.startswith("/"):
        return "file"
    raise ValueError(f"{uri}: the feature job reads photos from s3:// or file:// only")


def read_photo(uri: str) -> bytes:
    """The bytes of the photo at ``uri``. A photo that is gone (removed after it was listed or
    validated) raises RejectedImage("missing"); any other failure, after the client's retries, raises:
    the task fails and Spark runs it again, rather than a photo being rejected for a passing fault."""
    if storage_of(uri) == "s3":
        bucket, key = bucket_and_key(uri)
        client = s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise RejectedImage("missing", f"{uri}: no such object (removed after it was listed?)") from None
    try:
        with open(local_path(uri), "rb") as photo:
            return photo.read()
    except FileNotFoundError:
        raise RejectedImage("missing", f"{uri}: no such file (removed after it was listed?)") from None


def photo_size(uri: str) -> int:
    """The size in bytes of the photo at ``uri`` (HEAD or stat); missing: RejectedImage("missing")."""
    if storage_of(uri) == "s3":
        bucket, key = bucket_and_key(uri)
        client = s3_client()
        try:
            return int(client.head_object(Bucket=bucket, Key=key)["ContentLength"])
        except client.exceptions.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise RejectedImage("missing", f"{uri}: no such object") from None
            raise
    try:
        return os.stat(local_path(uri)).st_size
    except FileNotFoundError:
        raise RejectedImage("missing", f"{uri}: no such file") from None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _CLIENT_LOCK:
        if _POOL is None:  # one per Python worker, kept with it (Spark reuses its workers)
            _POOL = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="photo-read")
        return _POOL


def _outcome(read: Callable[[str], object], uri: str):
    try:
        return read(uri)
    except RejectedImage as rejected:
        return rejected


def read_ahead(uris: Iterable[str], read: Callable[[str], object] = read_photo,
               window: int = READ_THREADS) -> Iterator[tuple[str, object]]:
    """(uri, what ``read`` gave, or the RejectedImage it raised) for each of ``uris``, in order, with
    up to ``window`` S3 reads running ahead of the consumer. A local file is read when its turn
    comes: a read from disk (the page cache, mostly) has no wait to hide, and handing each one to a
    thread cost about 2% of the job's rate on 100-px Fruits-360 images. ``uris`` is pulled lazily;
    other errors are raised where their photo's turn comes."""
    pool, pending, source = _pool(), deque(), iter(uris)

    def submit() -> None:
        for uri in source:
            pending.append((uri, pool.submit(_outcome, read, uri) if uri.startswith(S3_SCHEMES) else None))
            return

    for _ in range(window):
        submit()
    while pending:
        uri, future = pending.popleft()
        submit()
        yield uri, (future.result() if future is not None else _outcome(read, uri))


def list_photos(root: str) -> list[tuple[str, int]]:
    """(canonical URI, size) of every file under ``root`` at any depth, in name order, but the
    hidden ones (HIDDEN_PREFIXES, as a Spark listing); zero-byte files included (they are rejected
    as empty, never left out). A local ``root`` that is no folder raises FileNotFoundError."""
    found = []
    if storage_of(root) == "s3":
        bucket, prefix = bucket_and_key(root.rstrip("/") + "/")
        pages = s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        for page in pages:
            for entry in page.get("Contents", []):
                relative = entry["Key"][len(prefix):]
                if relative and not relative.endswith("/") and not _hidden(relative.split("/")):
                    found.append((f"s3://{bucket}/{entry['Key']}", int(entry["Size"])))
        return sorted(found)
    top = local_path(root).rstrip("/") or "/"
    if not os.path.isdir(top):
        raise FileNotFoundError(f"{root}: no such folder")
    for folder, subfolders, files in os.walk(top):
        subfolders[:] = [name for name in subfolders if not name.startswith(HIDDEN_PREFIXES)]
        for name in files:
            if not name.startswith(HIDDEN_PREFIXES):
                path = os.path.join(folder, name)
                found.append(("file://" + path, os.stat(path).st_size))
    return sorted(found)


def _hidden(parts: list[str]) -> bool:
    return any(part.startswith(HIDDEN_PREFIXES) for part in parts)
