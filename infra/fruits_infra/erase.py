"""Right to erasure (GDPR art. 17): delete a person's images and every row derived from them.

Raw objects are deleted (on S3 with every old version and delete marker: with versioning on,
a plain delete only hides the object). Derived rows live in Parquet files under
``manifests/``, ``features/``, ``pca/`` and ``classifier/`` (held-out predictions); each file holding a
matching ``path`` (or ``duplicate_of``) is rewritten without those rows, and on S3 the old versions of the rewritten file are
deleted too. Models fitted on erased images (``pca/<run>/_model/`` and the whole ``classifier/<run>/``
of the same run: its Spark model and its export, which carries that PCA's mean and components) stay
until the next run refits without them, or go now with ``drop_pca_models``.
Without ``confirm`` nothing changes: the plan is printed. Running it again finds nothing left.
"""
from __future__ import annotations

import io
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fruits_contract.lake import Lake

DERIVED_ROOTS = ("manifests", "features", "pca", "classifier")


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

    def versions(self, key: str) -> int:
        return 1 if (self.root / key).is_file() else 0

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

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


class S3Store:
    """An ``s3://`` lake through boto3 (any endpoint, so moto works); keys are relative to the lake."""

    def __init__(self, lake: Lake, client):
        self.lake = lake
        self.client = client
        self.bucket = lake.bucket
        path = lake.base_uri.split("://", 1)[1].partition("/")[2].strip("/")
        self.base = f"{path}/" if path else ""

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

    def versions(self, key: str) -> int:
        return len(self._all_versions(key).get(key, []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self.base + key)["Body"].read()

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
    """Images chosen by exact canonical path or by path prefix (a label folder or any prefix of raw/)."""

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
    """Turn the command line into canonical lake URIs under ``raw/``.

    A path may be a full URI (``s3://bucket/raw/...``, ``file:///.../raw/...``), an absolute local
    path for a file lake, or a key relative to ``raw/`` (``Apple/img_1.jpg``).
    """
    raw = lake.raw() + "/"
    exact = set()
    for path in paths:
        exact.add(_under_raw(lake, path, "path"))
    found_prefixes = []
    for label in labels:
        if not label or "/" in label.strip("/"):
            raise ErasureError(f"--label {label!r} is not a label folder name (one folder under raw/)")
        found_prefixes.append(f"{raw}{label.strip('/')}/")
    for prefix in prefixes:
        uri = _under_raw(lake, prefix, "--prefix")
        if uri.rstrip("/") == lake.raw():
            raise ErasureError(f"--prefix {prefix!r} selects all of raw/: name a label or a narrower prefix")
        found_prefixes.append(uri)
    if not exact and not found_prefixes:
        raise ErasureError("nothing selected: give image paths, --label or --prefix")
    return Selection(frozenset(exact), tuple(found_prefixes))


def _under_raw(lake: Lake, value: str, what: str) -> str:
    raw = lake.raw()
    if value.startswith(("s3://", "file://")):
        uri = value.replace("file:/", "file:///", 1) if value.startswith("file:/") and not value.startswith("file:///") else value
    elif value.startswith("/") and lake.scheme == "file":
        uri = "file://" + value
    else:
        relative = value.lstrip("/")
        relative = relative[len("raw/"):] if relative.startswith("raw/") else relative
        uri = f"{raw}/{relative}"
    if not (uri == raw or uri.startswith(raw + "/")) or ".." in uri[len(raw):].split("/"):
        raise ErasureError(f"{what} {value!r} is not under the lake's raw/ ({raw}/): only uploads and what derives from them are erased")
    return uri


# ---------------------------------------------------------------- plan and apply

@dataclass
class ParquetEdit:
    key: str
    removed: int
    kept: int


@dataclass
class ErasurePlan:
    raw: dict[str, int] = field(default_factory=dict)  # key -> versions to delete
    parquet: list[ParquetEdit] = field(default_factory=list)
    pca_runs: set[str] = field(default_factory=set)  # pca/<run>/ folders whose rows were erased
    mentions: list[str] = field(default_factory=list)  # JSON files (reports) that name an erased image

    @property
    def empty(self) -> bool:
        return not self.raw and not self.parquet


def _raw_candidates(store, selection: Selection) -> list[str]:
    lake_raw = store.lake.raw() + "/"
    lister = getattr(store, "list_with_history", store.list)
    keys = set()
    for uri in sorted(selection.paths) + list(selection.prefixes):
        keys.update(lister("raw/" + uri[len(lake_raw):]))
    return sorted(k for k in keys if selection.matches(store.lake.uri(k)))


def _parquet_keys(store) -> list[str]:
    keys = []
    for root in DERIVED_ROOTS:
        keys += [k for k in store.list(root + "/") if k.endswith(".parquet")]
    return keys


# The column naming an upload besides ``path``: a row of the feature job's ``_duplicates`` (path,
# duplicate_of, sha256) names the upload whose bytes it repeats. Erasing that upload erases the row:
# the other copy, still in raw/, then counts as new and is featurized by the next run.
DUPLICATE_OF = "duplicate_of"


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


def plan(store, selection: Selection, progress=None) -> ErasurePlan:
    result = ErasurePlan()
    for key in _raw_candidates(store, selection):
        result.raw[key] = store.versions(key)
    keys = _parquet_keys(store)
    for done, key in enumerate(keys, start=1):
        if progress and done % 200 == 0:
            progress(f"scanned {done}/{len(keys)} Parquet files for erased rows")
        filtered = _filtered(store.read(key), selection)
        if filtered is None or filtered[1] == 0:
            continue
        table, removed = filtered
        result.parquet.append(ParquetEdit(key, removed, table.num_rows))
        parts = key.split("/")
        if parts[0] in ("pca", "classifier") and len(parts) > 2:
            result.pca_runs.add(parts[1])
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


def erase(store, selection: Selection, confirm: bool = False, drop_pca_models: bool = False, out=print) -> ErasurePlan:
    """Print and (with ``confirm``) carry out the erasure; returns what was found."""
    found = plan(store, selection, progress=lambda line: print(line, file=sys.stderr, flush=True))
    verb = "deleted" if confirm else "would delete"
    if found.empty:
        out("Nothing to erase: no raw object and no derived row matches (already erased, or never uploaded).")
        for key in found.mentions:
            out(f"note {store.lake.uri(key)}: names an erased image; not edited, review or delete it by hand")
        return found
    for key, versions in found.raw.items():
        if confirm:
            versions = store.delete_all_versions(key)
        out(f"raw  {store.lake.uri(key)}: {verb} ({versions} version{'s' if versions != 1 else ''})")
    for edit in found.parquet:
        if confirm:
            table, _ = _filtered(store.read(edit.key), selection)
            buffer = io.BytesIO()
            pq.write_table(table, buffer)
            store.write(edit.key, buffer.getvalue())
            old = store.delete_old_versions(edit.key)
            extra = f", {old} old version{'s' if old != 1 else ''} deleted" if old else ""
            out(f"rows {store.lake.uri(edit.key)}: removed {edit.removed}, kept {edit.kept}{extra}")
        else:
            out(f"rows {store.lake.uri(edit.key)}: would remove {edit.removed}, keep {edit.kept}")
    for run in sorted(found.pca_runs):
        _handle_model(store, f"pca/{run}/_model/", "fitted on erased images", confirm, drop_pca_models, out)
        _handle_model(store, f"classifier/{run}/", "trained on erased images (and its export holds the PCA "
                      "fitted on them)", confirm, drop_pca_models, out)
    for key in found.mentions:
        out(f"note {store.lake.uri(key)}: names an erased image; not edited, review or delete it by hand")
    rows = sum(e.removed for e in found.parquet)
    summary = f"{len(found.raw)} raw objects, {rows} derived rows in {len(found.parquet)} Parquet files"
    if confirm:
        out(f"Erased {summary}.")
    else:
        out(f"Dry run: would erase {summary}. Nothing changed; add --yes to erase.")
    return found
