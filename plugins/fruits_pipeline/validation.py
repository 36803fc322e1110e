"""Validate new uploads and write the run's manifests (docs/design.md, "The lake").

Headers only: each upload costs one ranged read of its first 64 KiB (more only when its header
needs it) and a header parse (fruits_contract.headers, the same definition of the accepted formats as
the feature job's): format, width and height as stored, and the checks that need no pixels. The
pixels are decoded on the cluster, by the feature job, which rejects what it cannot decode.

Exactly once: an upload is selected when no feature batch of another run holds its path (in its
features, or in its ``_duplicates``: the same bytes as a featurized upload of that run)
(late uploads and images of a failed run are picked up by the next run); a rerun of the
same run key selects the same uploads again and overwrites its own outputs.
Previously rejected uploads (in another run's ``rejected`` manifest, or in the ``_rejects`` of
another run's feature batch) are not re-validated:
a rejection is a property of the bytes, so they are counted as ``previously_rejected`` and
skipped until a ``full_refresh`` run, which takes every upload.
Two kinds of uploads, treated alike but for their label: ``raw/<label>/<file>``, labelled by its
folder, and ``uploads/<any depth>/<file>``, the app's photos to identify, which have none.
Nothing in ``raw/`` or ``uploads/`` is ever moved or deleted.
"""
from __future__ import annotations

import io
import logging
import posixpath
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fruits_contract import headers
from fruits_contract.lake import (DUPLICATES_FOLDER, MANIFEST_REJECTED_COLUMNS, MANIFEST_VALID_COLUMNS, REJECTS_FOLDER,
                                  Lake, batch_key_of, batch_states)
from fruits_contract.names import label_of, unsafe_name_reason
from fruits_pipeline import storage

log = logging.getLogger(__name__)

MANIFEST_FILE = "part-00000.parquet"
REJECTED_EXAMPLES_PER_REASON = 3  # in the run report; the rejected manifest lists them all


@dataclass
class ValidationResult:
    run_key: str
    listed: int = 0  # uploads selected for this run
    total_in_raw: int = 0
    total_in_uploads: int = 0
    already_featurized: int = 0
    previously_rejected: int = 0
    valid: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    partial_batches_ignored: list[str] = field(default_factory=list)  # features/batch=* left by a failed job
    upload_collisions: list[dict] = field(default_factory=list)  # uploads named like a raw/ image (upload_collisions)
    labels: dict | None = None  # the users' confirmed labels (confirmed_labels.ConfirmedLabels.summary)
    uploads: frozenset = frozenset()  # every photo under uploads/ (what a confirmed label may name)
    rejected_before: frozenset = frozenset()  # photos rejected by an earlier run and not featurized since

    def rejected_uploads(self) -> frozenset:
        """The photos under uploads/ set aside, by this run or an earlier one: a label for one of them
        has no features to train on."""
        return (frozenset(row["path"] for row in self.rejected) | self.rejected_before) & self.uploads

    def rejected_by_reason(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rejected:
            counts[row["reason"]] = counts.get(row["reason"], 0) + 1
        return dict(sorted(counts.items()))

    def rejected_examples(self, per_reason: int = REJECTED_EXAMPLES_PER_REASON) -> dict[str, list[str]]:
        """The first few rejected paths of each reason: what a person opens to see why."""
        examples: dict[str, list[str]] = {}
        for row in self.rejected:
            paths = examples.setdefault(row["reason"], [])
            if len(paths) < per_reason:
                paths.append(row["path"])
        return dict(sorted(examples.items()))

    def valid_by_format(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.valid:
            counts[row["format"]] = counts.get(row["format"], 0) + 1
        return dict(sorted(counts.items()))

    def summary(self) -> dict:
        return {"run_key": self.run_key, "total_in_raw": self.total_in_raw,
                "total_in_uploads": self.total_in_uploads, "listed": self.listed,
                "already_featurized": self.already_featurized, "previously_rejected": self.previously_rejected,
                "valid": len(self.valid), "rejected": len(self.rejected),
                "rejected_by_reason": self.rejected_by_reason(), "valid_by_format": self.valid_by_format(),
                "rejected_examples": self.rejected_examples(),
                "partial_batches_ignored": self.partial_batches_ignored,
                "upload_collisions": self.upload_collisions, "labels": self.labels}


def check_image(uri: str, size: int, read_range, *, label: str | None, max_bytes: int,
                min_side: int, labelled: bool = True) -> tuple[str, dict]:
    """("valid", row) or ("rejected", row) for one upload, from its header alone.

    ``labelled``: the upload is under raw/, where it needs a label folder; an app photo under
    uploads/ has none (``label`` None). ``read_range(start, end) -> bytes`` reads the upload; it is
    called only when the listing's size and the label allow the upload, for the first 64 KiB and
    then only what the header needs.
    """
    from PIL import Image

    def rejected(reason: str, detail: str):
        return "rejected", {"path": uri, "reason": reason, "detail": detail}

    if labelled and not label:
        return rejected("no_label_folder", "upload is not in a raw/<label>/ folder")
    if size <= 0:
        return rejected("empty", "file has 0 bytes")
    if size > max_bytes:
        return rejected("too_large", f"{size} bytes > limit {max_bytes}")
    try:
        header = headers.header_of(read_range, size)
    except headers.RejectedImage as error:
        return rejected(error.reason, error.detail)
    width, height = header.width, header.height
    # The decoders refuse at 2x MAX_IMAGE_PIXELS and the feature job at 1x: so do we, before any pixel.
    if Image.MAX_IMAGE_PIXELS and width * height > Image.MAX_IMAGE_PIXELS:
        return rejected("decompression_bomb", f"{header.format} of {width}x{height} pixels > {Image.MAX_IMAGE_PIXELS}")
    if min(width, height) < min_side:  # the short side, whatever the photo's orientation
        return rejected("too_small", f"{width}x{height} < minimum side {min_side}")
    return "valid", {"path": uri, "label": label, "size": int(size), "format": header.format,
                     "width": int(width), "height": int(height)}


def _read_paths(uris, conn_id: str | None) -> set[str]:
    paths: set[str] = set()
    for uri in uris:
        paths.update(storage.read_parquet_column(uri, conn_id, "path"))
    return paths


@dataclass(frozen=True)
class BatchFiles:
    """Other runs' ``features/batch=<run_key>/`` folders, run key -> the URIs of their files, split by
    the committed-batch rule (``fruits_contract.lake.batch_states``): only committed batches count; a
    partial batch's images are taken again, and the PCA job ignores it too."""

    committed: dict[str, list[str]]
    partial: dict[str, list[str]]

    def committed_files_of(self, folder: str) -> list[str]:
        """The Parquet files of one side table (``_rejects``, ``_duplicates``) of the committed batches."""
        return [uri for uris in self.committed.values() for uri in uris
                if uri.endswith(".parquet") and f"/{folder}/" in uri]


def batch_files(lake: Lake, *, exclude_run_key: str, conn_id: str | None) -> BatchFiles:
    root = lake.features_root()
    files: dict[str, list[str]] = {}
    for uri in storage.list_files(root, conn_id):
        run_key = batch_key_of(uri, root)
        if run_key not in (None, exclude_run_key):
            files.setdefault(run_key, []).append(uri)
    # A listing gives no commit times, and exactly-once needs none: every committed batch counts.
    states = batch_states({key: 0 if lake.job_result(lake.features(key)) in uris else None
                           for key, uris in files.items()})
    return BatchFiles({key: files[key] for key in states.committed}, {key: files[key] for key in states.partial})


def featurized_paths(lake: Lake, *, exclude_run_key: str, conn_id: str | None,
                     batches: BatchFiles | None = None) -> set[str]:
    """Paths held by the committed ``features/batch=*`` other than this run's (read with pyarrow)."""
    batches = batches or batch_files(lake, exclude_run_key=exclude_run_key, conn_id=conn_id)
    root = lake.features_root()
    return _read_paths([uri for uris in batches.committed.values() for uri in uris
                        if storage.is_parquet_data_file(root, uri)], conn_id)


def previously_rejected_paths(lake: Lake, *, exclude_run_key: str, conn_id: str | None,
                              batches: BatchFiles | None = None) -> set[str]:
    """Paths rejected by another run: by validation (``manifests/*/rejected``) or by the
    feature job (``features/batch=*/_rejects`` of a committed batch)."""
    manifests = lake.manifests_root()
    files = [uri for uri in storage.list_files(manifests, conn_id)
             if uri.endswith(".parquet") and "/rejected/" in uri
             and uri[len(manifests) + 1:].split("/", 1)[0] != exclude_run_key]
    batches = batches or batch_files(lake, exclude_run_key=exclude_run_key, conn_id=conn_id)
    return _read_paths(files + batches.committed_files_of(REJECTS_FOLDER), conn_id)


def duplicate_paths(lake: Lake, *, exclude_run_key: str, conn_id: str | None,
                    batches: BatchFiles | None = None) -> set[str]:
    """Paths another run's feature job left out as duplicates (``_duplicates`` of a committed batch):
    done as surely as the featurized ones, whose bytes they share."""
    batches = batches or batch_files(lake, exclude_run_key=exclude_run_key, conn_id=conn_id)
    return _read_paths(batches.committed_files_of(DUPLICATES_FOLDER), conn_id)


def remove_replaced_partial_batches(lake: Lake, batches: BatchFiles, featurized: set[str],
                                    conn_id: str | None) -> list[str]:
    """Remove the partial batches whose every image a committed batch now holds (a later run took them
    again), so that they are not met, and reported, again every day; returns the URIs removed."""
    root = lake.features_root()
    removed = []
    for key, uris in sorted(batches.partial.items()):
        if _read_paths([uri for uri in uris if storage.is_parquet_data_file(root, uri)], conn_id) <= featurized:
            storage.remove_tree(lake.features(key), conn_id, inputs=lake.inputs())
            removed.append(lake.features(key))
    return removed


def upload_collisions(lake: Lake, selected: dict[str, int], raw_files: dict[str, int]) -> list[dict]:
    """The selected uploads whose key below uploads/ is a raw/ image's key below raw/
    (``uploads/Apple/1.jpg`` and ``raw/Apple/1.jpg``): most likely a labelled image sent again, or an
    app writing into the wrong folder. Each is processed as an upload (no label) and named in the report."""
    uploads_root, raw_root = lake.uploads() + "/", lake.raw() + "/"
    return [{"path": uri, "raw_path": raw_root + uri[len(uploads_root):]} for uri in sorted(selected)
            if uri.startswith(uploads_root) and raw_root + uri[len(uploads_root):] in raw_files]


def select_uploads(listed: dict[str, int], featurized: set[str], rejected_before: set[str],
                   full_refresh: bool) -> dict[str, int]:
    if full_refresh:
        return dict(sorted(listed.items()))
    return {uri: size for uri, size in sorted(listed.items()) if uri not in featurized and uri not in rejected_before}


def listed_uploads(lake: Lake, conn_id: str | None) -> dict[str, dict[str, int]]:
    """Each upload folder (raw/, uploads/) -> its files (canonical URI -> size), hidden names left out."""
    return {root: {uri: size for uri, size in storage.list_files(root, conn_id).items()
                   if not posixpath.basename(uri).startswith(".")}
            for root in (lake.raw(), lake.uploads())}


def validate_uploads(lake: Lake, run_key: str, *, full_refresh: bool, conn_id: str | None, max_image_bytes: int,
                     min_image_side: int, max_workers: int = 4) -> ValidationResult:
    raw_root = lake.raw()
    by_root = listed_uploads(lake, conn_id)
    listed = {uri: size for files in by_root.values() for uri, size in files.items()}
    root_of = {uri: root for root, files in by_root.items() for uri in files}
    batches = batch_files(lake, exclude_run_key=run_key, conn_id=conn_id)
    featurized = set() if full_refresh else (
        featurized_paths(lake, exclude_run_key=run_key, conn_id=conn_id, batches=batches)
        | duplicate_paths(lake, exclude_run_key=run_key, conn_id=conn_id, batches=batches))
    rejected_before = set() if full_refresh else previously_rejected_paths(lake, exclude_run_key=run_key,
                                                                          conn_id=conn_id, batches=batches)
    selected = select_uploads(listed, featurized, rejected_before, full_refresh)
    result = ValidationResult(run_key=run_key, listed=len(selected), total_in_raw=len(by_root[raw_root]),
                              total_in_uploads=len(by_root[lake.uploads()]),
                              already_featurized=len(featurized & listed.keys()),
                              previously_rejected=len((rejected_before - featurized) & listed.keys()),
                              partial_batches_ignored=sorted(lake.features(key) for key in batches.partial),
                              upload_collisions=upload_collisions(lake, selected, by_root[raw_root]),
                              uploads=frozenset(by_root[lake.uploads()]),
                              rejected_before=frozenset(rejected_before - featurized))
    for collision in result.upload_collisions:
        log.warning("%s has the name of the labelled image %s: processed as an app photo, without a label",
                    collision["path"], collision["raw_path"])
    if not full_refresh:
        for batch in remove_replaced_partial_batches(lake, batches, featurized, conn_id):
            log.info("removed %s: a feature job died before committing it; committed batches hold its images", batch)
            result.partial_batches_ignored.remove(batch)
    for batch in result.partial_batches_ignored:
        log.warning("ignoring %s: a feature job died before committing it; its images are taken again", batch)
    unsafe = {uri: reason for uri in selected if (reason := unsafe_name_reason(root_of[uri], uri))}
    result.rejected += [{"path": uri, "reason": "unsafe_name", "detail": reason} for uri, reason in unsafe.items()]
    selected = {uri: size for uri, size in selected.items() if uri not in unsafe}
    log.info("raw/ holds %d uploads, uploads/ %d; %d selected for run %s (%d already featurized, %d rejected before)",
             result.total_in_raw, result.total_in_uploads, result.listed, run_key, result.already_featurized,
             result.previously_rejected)

    def check(item):
        uri, size = item
        return check_image(uri, size, lambda start, end: storage.read_range(uri, conn_id, start, end),
                           label=label_of(raw_root, uri), labelled=root_of[uri] == raw_root,
                           max_bytes=max_image_bytes, min_side=min_image_side)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="validate") as pool:
        for done, (verdict, row) in enumerate(pool.map(check, selected.items()), start=1):
            (result.valid if verdict == "valid" else result.rejected).append(row)
            if done % 500 == 0 or done == len(selected):
                log.info("validated %d/%d uploads (%d valid, %d rejected)", done, len(selected),
                         len(result.valid), len(result.rejected))
    return result


def write_manifests(lake: Lake, result: ValidationResult, conn_id: str | None) -> dict[str, str]:
    """Write (replace) ``manifests/<run_key>/valid`` and ``rejected``; returns their URIs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    uris = {"valid": lake.manifest_valid(result.run_key), "rejected": lake.manifest_rejected(result.run_key)}
    for kind, rows, columns in (("valid", result.valid, MANIFEST_VALID_COLUMNS),
                                ("rejected", result.rejected, MANIFEST_REJECTED_COLUMNS)):
        schema = pa.schema([(name, getattr(pa, arrow_type)()) for name, arrow_type in columns])
        storage.remove_tree(uris[kind], conn_id, inputs=lake.inputs())  # a rerun replaces its own manifest
        table = pa.Table.from_pylist(rows, schema=schema)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        storage.write_bytes(f"{uris[kind]}/{MANIFEST_FILE}", sink.getvalue(), conn_id)
    return uris
