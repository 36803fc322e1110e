"""Right to erasure (GDPR art. 17): delete a person's images and every row derived from them.

The images are the labelled ones under ``raw/`` and the app's photos under ``uploads/``; their objects
are deleted (on S3 with every old version and delete marker: with versioning on, a plain delete only
hides the object). Derived rows live in Parquet files under ``manifests/``, ``features/``, ``pca/``,
``classifier/`` (held-out predictions) and ``predictions/``; each file holding a matching ``path`` (or
``duplicate_of``) is rewritten without those rows, and on S3 the old versions of the rewritten file are
deleted too. The app's label files (``labels/<any>.csv|.parquet``, rows path, label, the path spelled as
a key under the lake or as a full URI) are rewritten the same way, in their own format; one that cannot
be parsed is named with the reason and left alone. Models fitted on erased images
(``pca/<run>/_model/`` and the whole ``classifier/<run>/`` of the same run: its Spark model and its
export, which carries that PCA's mean and components) stay until the next run refits without them,
or go now with ``drop_pca_models``.
Without ``confirm`` nothing changes: the plan is printed. Running it again finds nothing left.

Which derived files are read comes from the ledger (``ledger/done``: path -> batch, outcome) when it holds
every selected photo: the files of the batches that settled them (``features/batch=<run>/`` with its
``_rejects/`` and ``_duplicates/``, ``manifests/<run>/``, ``predictions/<run>/``), of the batches whose
duplicates name them, of the runs the ledger has not settled, the confirmed-label manifests, and of the
outputs holding every row only the copies retention keeps whole (``pca/<run>/``, ``classifier/<run>/held_out/``):
bounded by the retention, not by the history. Otherwise (no ledger, or a photo it never saw) every derived
Parquet file is read, as before the ledger. Either way a file is first read for its ``path`` column alone
(on S3 with ranged reads, no read-ahead) and rewritten only when it holds an erased row; the output says
which lookup was used.
"""
from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fruits_contract.lake import (BATCH_FOLDER_PREFIX, CLASSIFIER_HELD_OUT_FOLDER, LEDGER_DONE_TABLE, PCA_MOMENTS_FILE,
                                  Lake, canonical_uri)

# The folders of input images (erasable objects) and of the Parquet derived from them.
INPUT_ROOTS = ("raw", "uploads")
DERIVED_ROOTS = ("manifests", "features", "pca", "classifier", "predictions")
# What the app writes back when a user confirms a fruit (docs/design.md, "The lake").
LABELS_ROOT = "labels"
LABEL_FILE_SUFFIXES = (".csv", ".parquet")


class ErasureError(ValueError):
    """The request names nothing erasable; the message says which input and why."""


# ---------------------------------------------------------------- stores: the lake as keys

class LocalStore:
    """A ``file://`` lake; keys are paths relative to the lake folder."""

    def __init__(self, lake: Lake):
        self.lake = lake
        self.root = Path(lake.local_root)

    def list(self, prefix: str) -> list[str]:
        base = self.root / prefix
        if base.is_file():
            return [prefix]
        if not base.is_dir():
            # A prefix that ends inside a name (raw/App matches raw/Apple/...).
            parent, stem = base.parent, base.name
            if not parent.is_dir():
                return []
            return sorted(
                k for child in parent.iterdir() if child.name.startswith(stem) for k in self.list(str(child.relative_to(self.root)))
            )
        return sorted(str(p.relative_to(self.root)) for p in base.rglob("*") if p.is_file() and not p.name.endswith(".crc"))

    def folders(self, prefix: str) -> list[str]:
        """The names of the folders directly under ``prefix`` (a folder key ending in ``/``)."""
        base = self.root / prefix
        return sorted(child.name for child in base.iterdir() if child.is_dir()) if base.is_dir() else []

    def versions(self, key: str) -> int:
        return 1 if (self.root / key).is_file() else 0

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def open_parquet(self, key: str):
        """A seekable handle on the file: pyarrow reads only the footer and the column chunks it needs."""
        return open(self.root / key, "rb")

    def write(self, key: str, data: bytes) -> None:
        target = self.root / key
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".erase-", delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, target)
        # Hadoop's local filesystem checks part files against their .crc; a stale one fails Spark reads.
        (target.parent / f".{target.name}.crc").unlink(missing_ok=True)

    def delete_all_versions(self, key: str) -> int:
        target = self.root / key
        if not target.exists():
            return 0
        target.unlink()
        (target.parent / f".{target.name}.crc").unlink(missing_ok=True)
        return 1

    def delete_old_versions(self, key: str) -> int:
        return 0

    def ledger_options(self) -> dict:
        return {}


class S3Store:
    """An ``s3://`` lake through boto3 (any endpoint, so moto works); keys are relative to the lake."""

    def __init__(self, lake: Lake, client):
        self.lake = lake
        self.client = client
        self.bucket = lake.bucket
        path = lake.base_uri.split("://", 1)[1].partition("/")[2].strip("/")
        self.base = f"{path}/" if path else ""

    def ledger_options(self) -> dict:
        """delta-rs's storage options for the ledger: this client's credentials, region and endpoint."""
        credentials = self.client._request_signer._credentials.get_frozen_credentials()
        options = {"AWS_ACCESS_KEY_ID": credentials.access_key, "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
                   "AWS_REGION": self.client.meta.region_name, "AWS_ENDPOINT_URL": self.client.meta.endpoint_url,
                   "AWS_ALLOW_HTTP": str(self.client.meta.endpoint_url.startswith("http://")).lower()}
        if credentials.token:
            options["AWS_SESSION_TOKEN"] = credentials.token
        return options

    def _relative(self, full_key: str) -> str:
        return full_key[len(self.base):]

    def _all_versions(self, prefix: str) -> dict[str, list[dict]]:
        """Every version and delete marker under ``prefix``, by key relative to the lake."""
        found: dict[str, list[dict]] = {}
        paginator = self.client.get_paginator("list_object_versions")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.base + prefix):
            for entry in page.get("Versions", []) + page.get("DeleteMarkers", []):
                found.setdefault(self._relative(entry["Key"]), []).append(entry)
        return found

    def list(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.base + prefix):
            keys += [self._relative(o["Key"]) for o in page.get("Contents", [])]
        return sorted(keys)

    def list_with_history(self, prefix: str) -> list[str]:
        """Keys with any version left, including ones whose current version is already deleted."""
        return sorted(self._all_versions(prefix))

    def folders(self, prefix: str) -> list[str]:
        """The names of the folders directly under ``prefix`` (a folder key ending in ``/``): one delimited LIST."""
        paginator = self.client.get_paginator("list_objects_v2")
        names = set()
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.base + prefix, Delimiter="/"):
            names.update(self._relative(p["Prefix"])[len(prefix):].rstrip("/") for p in page.get("CommonPrefixes", []))
        return sorted(names)

    def versions(self, key: str) -> int:
        return len(self._all_versions(key).get(key, []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.base + key)["Body"].read()

    def open_parquet(self, key: str):
        """A seekable handle doing one ranged GET per read and no read-ahead: pyarrow reads the footer and
        the chunks of the columns asked for, not the 1,280 floats a row of a feature file."""
        return _RangedObject(self.client, self.bucket, self.base + key)

    def write(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.base + key, Body=data)

    def _delete(self, entries: list[dict]) -> int:
        for start in range(0, len(entries), 1000):
            chunk = [{"Key": e["Key"], "VersionId": e["VersionId"]} for e in entries[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": chunk, "Quiet": True})
        return len(entries)

    def delete_all_versions(self, key: str) -> int:
        return self._delete(self._all_versions(key).get(key, []))

    def delete_old_versions(self, key: str) -> int:
        return self._delete([e for e in self._all_versions(key).get(key, []) if not e.get("IsLatest")])


class _RangedObject(io.RawIOBase):
    """An S3 object as a read-only seekable file; every read is one ``Range`` GET of what is asked."""

    def __init__(self, client, bucket: str, key: str):
        super().__init__()
        self.client, self.bucket, self.key = client, bucket, key
        self.size = client.head_object(Bucket=bucket, Key=key)["ContentLength"]
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer) -> int:
        end = min(self.size, self.position + len(buffer))
        if end <= self.position:
            return 0
        body = self.client.get_object(Bucket=self.bucket, Key=self.key,
                                      Range=f"bytes={self.position}-{end - 1}")["Body"].read()
        buffer[:len(body)] = body
        self.position += len(body)
        return len(body)


def store_for(lake: Lake, s3_client=None):
    if lake.scheme == "file":
        return LocalStore(lake)
    if s3_client is None:
        import boto3

        s3_client = boto3.client("s3")
    return S3Store(lake, s3_client)


# ---------------------------------------------------------------- what to erase

@dataclass(frozen=True)
class Selection:
    """Images chosen by exact lake URI or by URI prefix (a label folder, any prefix of raw/ or of uploads/)."""

    paths: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    def matches(self, path: str) -> bool:
        return path in self.paths or any(path.startswith(p) for p in self.prefixes)

    def mask(self, column: pa.ChunkedArray) -> pa.ChunkedArray:
        """True for the rows to erase."""
        hit = pc.is_in(column, value_set=pa.array(sorted(self.paths), type=pa.string()))
        for prefix in self.prefixes:
            hit = pc.or_(hit, pc.starts_with(column, prefix))
        return pc.fill_null(hit, False)


def select(lake: Lake, paths=(), labels=(), prefixes=()) -> Selection:
    """Turn the command line into lake URIs under ``raw/`` or ``uploads/``.

    A path may be a full URI (``s3://bucket/raw/...``, ``file:///.../uploads/...``), an absolute local
    path for a file lake, a key relative to the lake (``uploads/2026-12-02/u1/x.jpg``,
    ``raw/Apple/img_1.jpg``) or a key relative to ``raw/`` (``Apple/img_1.jpg``). A prefix likewise;
    one that takes all of ``raw/`` or all of ``uploads/`` is refused.
    """
    exact = set()
    for path in paths:
        exact.add(_under_inputs(lake, path, "path"))
    found_prefixes = []
    for label in labels:
        if not label or "/" in label.strip("/"):
            raise ErasureError(f"--label {label!r} is not a label folder name (one folder under raw/)")
        found_prefixes.append(f"{lake.raw()}/{label.strip('/')}/")
    for prefix in prefixes:
        uri = _under_inputs(lake, prefix, "--prefix")
        for root in INPUT_ROOTS:
            if uri.rstrip("/") == lake.uri(root):
                narrower = "a label or a narrower prefix" if root == "raw" else "a narrower prefix (one user's folder)"
                raise ErasureError(f"--prefix {prefix!r} selects all of {root}/: name {narrower}")
        found_prefixes.append(uri)
    if not exact and not found_prefixes:
        raise ErasureError("nothing selected: give image paths, --label or --prefix")
    return Selection(frozenset(exact), tuple(found_prefixes))


def _under_inputs(lake: Lake, value: str, what: str) -> str:
    if value.startswith(("s3://", "file:/")):
        uri = value.replace("file:/", "file:///", 1) if not value.startswith(("s3://", "file:///")) else value
    elif value.startswith("/") and lake.scheme == "file":
        uri = "file://" + value
    else:
        relative = value.lstrip("/")
        # A key relative to the lake names its folder ("uploads/...", "raw/...", or just "uploads"); any
        # other is relative to raw/, as before uploads/ existed. The trailing "/" of a prefix is kept:
        # "uploads/d/u1/" must not take "uploads/d/u10/".
        if relative.rstrip("/") not in INPUT_ROOTS and not relative.startswith(tuple(f"{r}/" for r in INPUT_ROOTS)):
            relative = f"raw/{relative}"
        uri = f"{lake.base_uri}/{relative}"
    for root in (lake.uri(name) for name in INPUT_ROOTS):
        if (uri == root or uri.startswith(root + "/")) and ".." not in uri[len(root):].split("/"):
            return uri
    raise ErasureError(f"{what} {value!r} is not under the lake's raw/ ({lake.raw()}/) or uploads/ "
                       f"({lake.uploads()}/): only images and what derives from them are erased")


# ---------------------------------------------------------------- plan and apply

@dataclass
class ParquetEdit:
    key: str
    removed: int
    kept: int


@dataclass
class ErasurePlan:
    raw: dict[str, int] = field(default_factory=dict)  # raw/ key -> versions to delete
    uploads: dict[str, int] = field(default_factory=dict)  # uploads/ key -> versions to delete
    parquet: list[ParquetEdit] = field(default_factory=list)
    labels: list[ParquetEdit] = field(default_factory=list)  # labels/ files (CSV or Parquet) to rewrite
    unreadable: dict[str, str] = field(default_factory=dict)  # labels/ key -> why it could not be parsed
    pca_runs: set[str] = field(default_factory=set)  # pca/<run>/ folders whose rows were erased
    mentions: list[str] = field(default_factory=list)  # JSON files (reports) that name an erased image
    ledger: set[str] = field(default_factory=set)  # paths the ledger (ledger/done, ledger/arrivals) holds
    lookup: str = ""  # how the derived files to read were found (the ledger or a full scan), and how many
    read: list[str] = field(default_factory=list)  # the derived Parquet files read (their path column)

    @property
    def empty(self) -> bool:
        return not self.raw and not self.uploads and not self.parquet and not self.labels and not self.ledger


LOOKUP_LEDGER, LOOKUP_FULL_SCAN = "ledger", "full scan"
# The ledger's outcomes of a committed feature batch (record_run's committed=True): a run recorded with
# neither only has its validation's rejects in the ledger, so its files are read like an unrecorded run's.
SETTLED_OUTCOMES = ("featurized", "duplicate")


@dataclass
class Lookup:
    """Where the erased photos' derived rows can be: the Parquet files to read for them."""

    method: str  # LOOKUP_LEDGER or LOOKUP_FULL_SCAN
    why: str  # for a full scan: why the ledger could not be used
    keys: list[str]  # the derived Parquet files that may hold an erased row
    ledger: set[str] = field(default_factory=set)  # the erased paths the ledger holds (done and arrivals)
    batches: list[str] = field(default_factory=list)  # the runs the ledger placed the photos in
    unsettled: list[str] = field(default_factory=list)  # runs with outputs the ledger has not settled
    copies: int = 0  # files of the outputs holding every row (pca/<run>/, classifier/<run>/held_out/)
    label_manifests: int = 0  # manifests/<run>/labels/ files


def _done_table(store):
    """``ledger/done`` as a delta-rs table, or None when the lake has none (written before the ledger)."""
    if LEDGER_DONE_TABLE not in store.folders("ledger/"):
        return None
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        return DeltaTable(store.lake.ledger(LEDGER_DONE_TABLE), storage_options=store.ledger_options())
    except TableNotFoundError:
        return None


def _data_keys(keys, *, under: str) -> list[str]:
    """The Parquet data files among ``keys`` below the folder ``under``: none inside a folder whose name
    starts with ``_`` or ``.`` (a PCA's ``_model/`` and ``_preview/``, which hold no path)."""
    return [key for key in keys if key.endswith(".parquet") and key.startswith(under)
            and not any(part.startswith(("_", ".")) for part in key[len(under):].split("/")[:-1])]


def _full_scan(store, why: str, held: set[str]) -> Lookup:
    return Lookup(LOOKUP_FULL_SCAN, why, _parquet_keys(store), held)


def locate(store, selection: Selection, image_keys) -> Lookup:
    """The derived Parquet files that may hold the selection's rows, from the ledger when it has a row for
    every photo selected (``image_keys``: the images found under raw/ and uploads/); otherwise all of them."""
    from fruits_pipeline import ledger

    table = _done_table(store)
    if table is None:
        arrivals = ledger.pending_arrivals(store.lake, store.ledger_options()) if store.folders("ledger/") else {}
        return _full_scan(store, "the lake has no ledger of what each upload became (ledger/done)",
                          {path for path in arrivals if selection.matches(path)})
    lake, options = store.lake, store.ledger_options()
    if selection.prefixes:  # a prefix is no lookup by path: the ledger's path column (not the lake's files)
        rows = [row for row in ledger.done_rows(lake, options, columns=["path", "batch"]) if selection.matches(row["path"])]
    else:  # file statistics skip the ledger files that cannot hold these paths
        rows = ledger.done_rows(lake, options, paths=selection.paths, columns=["path", "batch"])
    done = {row["path"] for row in rows}
    # Another upload's duplicate naming an erased photo as its original: its row goes from the ledger too (the
    # copy is no longer done, the next run featurizes it), and its files sit in that upload's batch.
    duplicates = table.to_pyarrow_table(filters=[("outcome", "=", "duplicate")], columns=["path", "duplicate_of", "batch"])
    duplicates = duplicates.filter(selection.mask(duplicates.column("duplicate_of").cast(pa.string())))
    held = (done | set(duplicates.column("path").to_pylist())
            | {path for path in ledger.pending_arrivals(lake, options) if selection.matches(path)})
    photos = set(selection.paths) | {lake.uri(key) for key in image_keys} | done
    missing = sorted(photos - done)
    if not photos:
        return _full_scan(store, "nothing selected is in the ledger or the lake", held)
    if missing:
        return _full_scan(store, f"the ledger has no row for {len(missing)} of the {len(photos)} photo(s) "
                                 f"selected, e.g. {missing[0]}", held)
    batches = {row["batch"] for row in rows} | set(duplicates.column("batch").to_pylist())
    # Runs with outputs whose batch the ledger has not settled (a report task that died, a failed feature
    # step, a run of rejections only): nothing says what they hold, so they are read.
    settled = {action["partition.batch"] for action in pa.table(table.get_add_actions(flatten=True)).to_pylist()
               if action["partition.outcome"] in SETTLED_OUTCOMES}
    manifests = store.list("manifests/")
    runs = ({key.split("/")[1] for key in manifests if key.count("/") >= 2}
            | {name[len(BATCH_FOLDER_PREFIX):] for name in store.folders("features/") if name.startswith(BATCH_FOLDER_PREFIX)}
            | set(store.folders("predictions/")))
    unsettled = sorted(runs - settled - batches)
    # Every run's confirmed labels (manifests/<run>/labels/: only the labelled uploads, one small file a run).
    labels = [key for key in manifests if key.split("/")[2:3] == ["labels"] and key.endswith(".parquet")]
    keys = []
    for run in sorted(batches) + unsettled:  # the batch with its _rejects/ and _duplicates/, its manifests, predictions
        keys += [key for key in store.list(f"features/{BATCH_FOLDER_PREFIX}{run}/") + store.list(f"predictions/{run}/")
                 + [key for key in manifests if key.startswith(f"manifests/{run}/")]
                 if key.endswith(".parquet") and key not in labels]
    # The outputs holding every row: retention thins superseded copies to their report and job result
    # (pca/<run>/) or drops their held_out/, so only the copies kept whole have Parquet left to read.
    copies = [key for key in _data_keys(store.list("pca/"), under="pca/") if key.count("/") >= 2]
    copies += [key for key in store.list("classifier/") if key.endswith(".parquet")
               and key.split("/")[2:3] == [CLASSIFIER_HELD_OUT_FOLDER]]
    return Lookup(LOOKUP_LEDGER, "", keys + labels + copies, held, sorted(batches), unsettled,
                  len(copies), len(labels))


def _lookup_line(found: Lookup, read: int) -> str:
    if found.method == LOOKUP_FULL_SCAN:
        return (f"lookup: full scan ({found.why}): the path column of every derived Parquet file read, "
                f"{read} file(s)")
    def names(runs):
        return ", ".join(runs[:5]) + (f" and {len(runs) - 5} more" if len(runs) > 5 else "")
    line = f"lookup: ledger: batch(es) {names(found.batches)}"
    if found.unsettled:
        line += f", and run(s) it has not settled {names(found.unsettled)}"
    return (f"{line}; the path column of {read} derived Parquet file(s) read: "
            f"{read - found.copies - found.label_manifests} of those runs, {found.copies} of the PCA and held-out "
            f"copies retention keeps, {found.label_manifests} confirmed-label manifest(s)")


def _erase_from_ledger(store, paths: set[str], confirm: bool, out) -> None:
    """Delete the ledger's rows of ``paths`` (only the partitions holding them are rewritten), then the files
    Delta kept for time travel, with every old version of them on S3."""
    from fruits_pipeline import ledger

    lake = store.lake
    if not confirm:
        out(f"ledger {lake.uri('ledger')}: would remove the rows of {len(paths)} path(s)")
        return
    removed = ledger.erase_paths(lake, paths, store.ledger_options())
    files = ledger.vacuum(lake, store.ledger_options())
    for key in files:
        store.delete_all_versions(key)
    out(f"ledger {lake.uri('ledger')}: removed {removed} row(s) of {len(paths)} path(s); {len(files)} superseded "
        "file(s) deleted with their versions")


def _image_candidates(store, selection: Selection) -> list[str]:
    """Keys under raw/ or uploads/ (with any version left) that the selection takes."""
    base = store.lake.base_uri + "/"
    lister = getattr(store, "list_with_history", store.list)
    keys = set()
    for uri in sorted(selection.paths) + list(selection.prefixes):
        keys.update(lister(uri[len(base):]))
    return sorted(k for k in keys if k.split("/", 1)[0] in INPUT_ROOTS and selection.matches(store.lake.uri(k)))


def _parquet_keys(store) -> list[str]:
    keys = []
    for root in DERIVED_ROOTS:
        keys += [k for k in store.list(root + "/") if k.endswith(".parquet")]
    return keys


def _label_keys(store) -> list[str]:
    return [k for k in store.list(LABELS_ROOT + "/") if k.lower().endswith(LABEL_FILE_SUFFIXES)]


# The column naming an upload besides ``path``: a row of the feature job's ``_duplicates`` (path,
# duplicate_of, sha256) names the upload whose bytes it repeats. Erasing that upload erases the row:
# the other copy, still in raw/, then counts as new and is featurized by the next run.
DUPLICATE_OF = "duplicate_of"


def _erased_rows(handle, selection: Selection) -> tuple[int, int] | None:
    """(rows to erase, rows kept) of a Parquet file, reading only its ``path`` (and ``duplicate_of``)
    column; None when the file has no ``path``."""
    file = pq.ParquetFile(handle)
    names = file.schema_arrow.names
    if "path" not in names:
        return None
    table = file.read(columns=["path"] + ([DUPLICATE_OF] if DUPLICATE_OF in names else []))
    erase = selection.mask(table.column("path"))
    if DUPLICATE_OF in names:
        erase = pc.or_(erase, selection.mask(table.column(DUPLICATE_OF)))
    removed = pc.sum(erase).as_py() or 0
    return removed, table.num_rows - removed


def _filtered(data: bytes, selection: Selection) -> tuple[pa.Table, int] | None:
    """The table without the erased rows and how many went, or None when the file has no ``path``."""
    table = pq.read_table(io.BytesIO(data))
    if "path" not in table.column_names:
        return None
    erase = selection.mask(table.column("path"))
    if DUPLICATE_OF in table.column_names:
        erase = pc.or_(erase, selection.mask(table.column(DUPLICATE_OF)))
    removed = pc.sum(erase).as_py() or 0
    return table.filter(pc.invert(erase)), removed


# ---------------------------------------------------------------- labels/: the app's files

class LabelFileError(ValueError):
    """A label file that cannot be parsed: it is named with this reason and left alone."""


def _names_erased(lake: Lake, selection: Selection, canonical: Selection, value) -> bool:
    """Whether a label row's path names an erased image, whichever spelling the app used: a key under
    the lake (``uploads/...``) or a full URI (``s3://...``, ``file:/...``, ``file:///...``)."""
    if not isinstance(value, str) or not value.strip():
        return False
    value = value.strip()
    full = value.startswith(("s3://", "file:")) or (value.startswith("/") and lake.scheme == "file")
    uri = value if full else lake.uri(value)
    return selection.matches(uri) or canonical.matches(canonical_uri(uri))


def _rewritten_label_file(key: str, data: bytes, keep) -> tuple[bytes, int, int]:
    """The label file without the rows ``keep(path)`` refuses, in its own format: (bytes, removed, kept)."""
    if key.lower().endswith(".parquet"):
        try:
            table = pq.read_table(io.BytesIO(data))
        except Exception as error:  # pyarrow raises several types for a damaged or foreign file
            raise LabelFileError(f"not a readable Parquet file ({type(error).__name__}: {error})") from None
        if "path" not in table.column_names:
            raise LabelFileError(f"no path column (columns: {', '.join(table.column_names) or 'none'})")
        column = table.column("path")
        text = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
        if not (pa.types.is_string(text) or pa.types.is_large_string(text) or pa.types.is_null(text)):
            raise LabelFileError(f"its path column is {column.type}, not text")
        kept = [keep(value) for value in column.to_pylist()]
        if all(kept):
            return data, 0, table.num_rows
        buffer = io.BytesIO()
        pq.write_table(table.filter(pa.array(kept, pa.bool_())), buffer)
        return buffer.getvalue(), kept.count(False), kept.count(True)
    return _rewritten_label_csv(data, keep)


def _rewritten_label_csv(data: bytes, keep) -> tuple[bytes, int, int]:
    """A CSV with a header naming a ``path`` column. The header and every kept record stay as written,
    byte for byte (quoting, line endings, a UTF-8 BOM): only the erased records' lines go."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise LabelFileError(f"not UTF-8 text ({error})") from None
    bom = "\ufeff" if text.startswith("\ufeff") else ""
    text = text[len(bom):]
    consumed: list[str] = []

    def lines():
        for line in io.StringIO(text, newline=""):
            consumed.append(line)
            yield line

    records: list[tuple[list[str], str]] = []  # each record and the text it was read from
    try:
        for row in csv.reader(lines(), strict=True):
            records.append((row, "".join(consumed)))
            consumed.clear()
    except csv.Error as error:
        raise LabelFileError(f"not CSV (record {len(records) + 1}: {error})") from None
    if not records:
        return data, 0, 0
    header = [name.strip().lower() for name in records[0][0]]
    if "path" not in header:
        raise LabelFileError(f"no path column in its header ({records[0][1].strip()[:80]!r})")
    column = header.index("path")
    body = records[1:]
    kept = [raw for row, raw in body if len(row) <= column or keep(row[column])]
    removed = len(body) - len(kept)
    if not removed:
        return data, 0, len(kept)
    return (bom + records[0][1] + "".join(kept)).encode("utf-8"), removed, len(kept)


def _label_filter(store, selection: Selection):
    canonical = Selection(frozenset(canonical_uri(p) for p in selection.paths),
                          tuple(canonical_uri(p) for p in selection.prefixes))
    return lambda value: not _names_erased(store.lake, selection, canonical, value)


def plan(store, selection: Selection, progress=None) -> ErasurePlan:
    result = ErasurePlan()
    images = _image_candidates(store, selection)
    for key in images:
        (result.raw if key.startswith("raw/") else result.uploads)[key] = store.versions(key)
    found = locate(store, selection, images)
    for done, key in enumerate(found.keys, start=1):
        if progress and done % 200 == 0:
            progress(f"read {done}/{len(found.keys)} Parquet files for erased rows")
        with store.open_parquet(key) as handle:
            rows = _erased_rows(handle, selection)
        result.read.append(key)
        if rows is None or rows[0] == 0:
            continue
        result.parquet.append(ParquetEdit(key, *rows))
        parts = key.split("/")
        if parts[0] in ("pca", "classifier") and len(parts) > 2:
            result.pca_runs.add(parts[1])
    result.ledger = found.ledger
    result.lookup = _lookup_line(found, len(result.read))
    keep = _label_filter(store, selection)
    for key in _label_keys(store):
        try:
            _, removed, kept = _rewritten_label_file(key, store.read(key), keep)
        except LabelFileError as error:
            result.unreadable[key] = str(error)
            continue
        if removed:
            result.labels.append(ParquetEdit(key, removed, kept))
    # Reports hold counts, not image paths; if one ever names an erased image, say so rather than guess an edit.
    needles = sorted(selection.paths) + list(selection.prefixes)
    for key in store.list("reports/"):
        if key.endswith(".json") and any(n in store.read(key).decode("utf-8", "replace") for n in needles):
            result.mentions.append(key)
    return result


def _handle_model(store, prefix: str, why: str, confirm: bool, drop: bool, out) -> None:
    """Say what happens to a model fitted on erased images, and delete it when asked."""
    keys = store.list(prefix)
    if not keys:
        return
    if drop:
        if confirm:
            for key in keys:
                store.delete_all_versions(key)
        out(f"model {store.lake.uri(prefix)}: {'deleted' if confirm else 'would delete'} ({len(keys)} files), {why}")
    else:
        out(f"model {store.lake.uri(prefix)}: {why}; the next run's refit leaves them out "
            "(add --drop-pca-models to delete this model now)")


def _drop_kept_moments(store, confirm: bool, out) -> None:
    """The PCA's kept feature moments (pca/<run>/_moments.npz) sum the erased rows: gone, the next PCA
    makes one pass over every batch, which no longer holds them."""
    for key in sorted(k for k in store.list("pca/") if k.endswith("/" + PCA_MOMENTS_FILE)):
        if confirm:
            store.delete_all_versions(key)
        out(f"moments {store.lake.uri(key)}: {'deleted' if confirm else 'would delete'} (sums of the erased "
            "images' features; the next PCA recomputes them from the features left)")


def _rewrite(store, key: str, data: bytes) -> str:
    """Replace the file and, on S3, delete its old versions (they still hold the erased rows)."""
    store.write(key, data)
    old = store.delete_old_versions(key)
    return f", {old} old version{'s' if old != 1 else ''} deleted" if old else ""


def _notes(store, found: ErasurePlan, out) -> None:
    for key, why in found.unreadable.items():
        out(f"unreadable {store.lake.uri(key)}: {why}; a label file not parsed, so not checked for erased "
            "photos: left as is, review it by hand")
    for key in found.mentions:
        out(f"note {store.lake.uri(key)}: names an erased image; not edited, review or delete it by hand")


def erase(store, selection: Selection, confirm: bool = False, drop_pca_models: bool = False, out=print) -> ErasurePlan:
    """Print and (with ``confirm``) carry out the erasure; returns what was found."""
    found = plan(store, selection, progress=lambda line: print(line, file=sys.stderr, flush=True))
    verb = "deleted" if confirm else "would delete"
    out(found.lookup)
    if found.empty:
        out("Nothing to erase: no image and no derived row matches (already erased, or never uploaded).")
        _notes(store, found, out)
        return found
    for kind, objects in (("raw ", found.raw), ("upload", found.uploads)):
        for key, versions in objects.items():
            if confirm:
                versions = store.delete_all_versions(key)
            out(f"{kind} {store.lake.uri(key)}: {verb} ({versions} version{'s' if versions != 1 else ''})")
    for edit in found.parquet:
        if confirm:
            table, _ = _filtered(store.read(edit.key), selection)
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            extra = _rewrite(store, edit.key, buffer.getvalue())
            out(f"rows {store.lake.uri(edit.key)}: removed {edit.removed}, kept {edit.kept}{extra}")
        else:
            out(f"rows {store.lake.uri(edit.key)}: would remove {edit.removed}, keep {edit.kept}")
    keep = _label_filter(store, selection)
    for edit in found.labels:
        if confirm:
            try:
                data, edit.removed, edit.kept = _rewritten_label_file(edit.key, store.read(edit.key), keep)
            except LabelFileError as error:  # changed since the plan was made: leave it, say so
                found.unreadable[edit.key] = str(error)
                continue
            extra = _rewrite(store, edit.key, data) if edit.removed else ""
            out(f"labels {store.lake.uri(edit.key)}: removed {edit.removed}, kept {edit.kept}{extra}")
        else:
            out(f"labels {store.lake.uri(edit.key)}: would remove {edit.removed}, keep {edit.kept}")
    if found.ledger:
        _erase_from_ledger(store, found.ledger, confirm, out)
    if any(edit.key.startswith("features/") for edit in found.parquet):
        _drop_kept_moments(store, confirm, out)
    for run in sorted(found.pca_runs):
        _handle_model(store, f"pca/{run}/_model/", "fitted on erased images", confirm, drop_pca_models, out)
        _handle_model(store, f"classifier/{run}/", "trained on erased images (and its export holds the PCA "
                      "fitted on them)", confirm, drop_pca_models, out)
    _notes(store, found, out)
    images = [f"{len(found.raw)} raw objects"] if found.raw or not found.uploads else []
    if found.uploads:
        images.append(f"{len(found.uploads)} uploads")
    rows = sum(e.removed for e in found.parquet)
    summary = f"{', '.join(images)}, {rows} derived rows in {len(found.parquet)} Parquet files"
    if found.labels:
        summary += f", {sum(e.removed for e in found.labels)} label rows in {len(found.labels)} label files"
    if confirm:
        out(f"Erased {summary}.")
    else:
        out(f"Dry run: would erase {summary}. Nothing changed; add --yes to erase.")
    return found
