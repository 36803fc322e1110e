"""Find and validate new uploads and write the run's manifests (docs/design.md, "The lake", "The ledger").

Headers only: each upload costs one ranged read of its first 64 KiB (more only when its header
needs it) and a header parse (fruits_contract.headers, the same definition of the accepted formats as
the feature job's): format, width and height as stored, and the checks that need no pixels. The
pixels are decoded on the cluster, by the feature job, which rejects what it cannot decode.

New uploads come from S3's own record of what arrived: its event notifications, drained from a queue
into the ledger's arrivals (fruits_pipeline.upload_events), and a reconciliation that lists raw/ and
uploads/ every few days (Settings.reconcile_every_days) against the ledger (what the notifications missed). A lake
without a queue (a local one) is listed every run. Nothing else is listed: what is done is the
ledger's (fruits_pipeline.ledger), not a scan of features/ and manifests/.

Exactly once: an upload is selected when no other run settled it (featurized, left out as a duplicate
of a featurized one, or rejected: a rejection is a property of the bytes, counted as
``previously_rejected`` and skipped until a ``full_refresh`` run, which takes every upload). Late
uploads and images of a failed run stay in the arrivals and are taken by the next run; a rerun of the
same run key selects the same uploads again and overwrites its own outputs.
Two kinds of uploads, treated alike but for their label: ``raw/<label>/<file>``, labelled by its
folder, and ``uploads/<any depth>/<file>``, the app's photos to identify, which have none.
Nothing in ``raw/`` or ``uploads/`` is ever moved or deleted.
"""
from __future__ import annotations

import io
import logging
import posixpath
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

from fruits_contract import headers
from fruits_contract.lake import MANIFEST_REJECTED_COLUMNS, MANIFEST_VALID_COLUMNS, Lake, batch_key_of
from fruits_contract.names import label_of, unsafe_name_reason
from fruits_pipeline import ledger, storage

log = logging.getLogger(__name__)

MANIFEST_FILE = "part-00000.parquet"
REJECTED_EXAMPLES_PER_REASON = 3  # in the run report; the rejected manifest lists them all


def count_by(rows, column: str) -> dict[str, int]:
    """How many ``rows`` have each value of ``column``, sorted by value (the run report's counts)."""
    return dict(sorted(Counter(row[column] for row in rows).items()))


@dataclass
class ValidationResult:
    run_key: str
    listed: int = 0  # uploads selected for this run
    total_in_raw: int | None = 0  # None: the run did not list the lake (S3's notifications said what is new)
    total_in_uploads: int | None = 0
    already_featurized: int = 0  # of the uploads met, those another run settled as featurized or duplicate
    featurized_in_lake: int = 0  # photos the ledger holds as featurized (what a PCA-only run refits on)
    previously_rejected: int = 0
    valid: list[dict] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    partial_batches_ignored: list[str] = field(default_factory=list)  # features/batch=* left by a failed job
    upload_collisions: list[dict] = field(default_factory=list)  # uploads named like a raw/ image (upload_collisions)
    labels: dict | None = None  # the users' confirmed labels (confirmed_labels.ConfirmedLabels.summary)
    notifications: dict | None = None  # the queue's drain (upload_events.DrainSummary.as_dict), when there is one

    def rejected_by_reason(self) -> dict[str, int]:
        return count_by(self.rejected, "reason")

    def rejected_examples(self, per_reason: int = REJECTED_EXAMPLES_PER_REASON) -> dict[str, list[str]]:
        """The first few rejected paths of each reason: what a person opens to see why."""
        examples: dict[str, list[str]] = {}
        for row in self.rejected:
            paths = examples.setdefault(row["reason"], [])
            if len(paths) < per_reason:
                paths.append(row["path"])
        return dict(sorted(examples.items()))

    def valid_by_format(self) -> dict[str, int]:
        return count_by(self.valid, "format")

    def summary(self) -> dict:
        return {"run_key": self.run_key, "total_in_raw": self.total_in_raw,
                "total_in_uploads": self.total_in_uploads, "listed": self.listed,
                "already_featurized": self.already_featurized, "featurized_in_lake": self.featurized_in_lake,
                "previously_rejected": self.previously_rejected,
                "valid": len(self.valid), "rejected": len(self.rejected),
                "rejected_by_reason": self.rejected_by_reason(), "valid_by_format": self.valid_by_format(),
                "rejected_examples": self.rejected_examples(),
                "partial_batches_ignored": self.partial_batches_ignored,
                "upload_collisions": self.upload_collisions, "labels": self.labels,
                "notifications": self.notifications}


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


def catch_up(lake: Lake, run_key: str, conn_id: str | None, *, now: float) -> tuple[list[str], ledger.DoneState]:
    """Record in the ledger the committed feature batches of other runs it does not hold (their run's
    report task died after the job committed); returns the run keys of the partial batches (a job that
    died before its JOB_RESULT_FILE: its images are taken again) and the ledger's state with what it
    recorded (read again only when it recorded a batch). One listing of features/' folders, and one
    existence check per batch the ledger does not know."""
    state = ledger.done_state(lake, conn_id)
    root = lake.features_root()
    partial, caught_up = [], False
    for folder in storage.list_folders(root, conn_id):
        key = batch_key_of(folder + "/", root)
        if key in (None, run_key) or key in state.recorded:
            continue
        if storage.exists(lake.job_result(folder), conn_id):
            log.warning("batch %s was committed but not in the ledger (its run's report did not record it): "
                        "recorded now", key)
            ledger.record_run(lake, key, conn_id, committed=True, now=now)
            caught_up = True
        else:
            partial.append(key)
    return partial, ledger.done_state(lake, conn_id) if caught_up else state


def remove_replaced_partial_batches(lake: Lake, partial: list[str], conn_id: str | None) -> list[str]:
    """Remove the partial batches whose every image the ledger holds as settled by another run (a later
    run took them again), so that they are not met, and reported, again every day; returns the URIs removed."""
    removed = []
    for key in partial:
        uri = lake.features(key)
        paths = set(ledger.batch_paths(lake, key, conn_id))
        settled = {row["path"] for row in ledger.done_rows(lake, conn_id, paths=paths, columns=["path", "batch"])
                   if row["batch"] != key}
        if paths <= settled:
            try:
                storage.remove_tree(uri, conn_id, inputs=lake.inputs())
            except OSError as error:  # left where it is: no run reads a partial batch; tried again tomorrow
                log.warning("partial batch %s not removed: %s", uri, error)
                continue
            removed.append(uri)
    return removed


def reconciliation_due(lake: Lake, conn_id: str | None, *, every_days: int, now: float) -> bool:
    """Whether this run lists the uploads against the ledger: every ``every_days`` days, and on the first run."""
    last = storage.read_json(lake.ledger_reconciled(), conn_id)
    return last is None or now - float(last["at"]) >= every_days * 86_400


def settled_by_others(lake: Lake, run_key: str, conn_id: str | None, *, batches=None, paths=None) -> dict[str, str]:
    """Path -> outcome of the uploads other runs settled (of ``batches``, of ``paths``; None: all); a photo
    featurized by one run and rejected by another (a retaken photo) counts as featurized."""
    settled: dict[str, str] = {}
    for row in ledger.done_rows(lake, conn_id, batches=batches, paths=paths, columns=["path", "outcome", "batch"]):
        if row["batch"] != run_key and settled.get(row["path"]) in (None, ledger.REJECTED):
            settled[row["path"]] = row["outcome"]
    return settled


def reconcile(lake: Lake, listed: dict[str, int], settled: dict[str, str], run_key: str, conn_id: str | None, *,
              now: float) -> int:
    """Add to the arrivals every listed upload the ledger neither settled nor holds as arrived (what S3's
    notifications missed, or every new upload of a lake without a queue); returns how many."""
    pending = ledger.pending_arrivals(lake, conn_id)
    found = datetime.fromtimestamp(now, timezone.utc).isoformat()
    missing = [ledger.Arrival(path, size, found, "listing") for path, size in sorted(listed.items())
               if path not in settled and path not in pending]
    ledger.add_arrivals(lake, missing, conn_id)
    storage.write_json(lake.ledger_reconciled(), {"at": now, "run_key": run_key, "listed": len(listed),
                                                  "added": len(missing)}, conn_id)
    return len(missing)


def upload_collisions(lake: Lake, selected: dict[str, int], raw_exists) -> list[dict]:
    """The selected uploads whose key below uploads/ is a raw/ image's key below raw/
    (``uploads/Apple/1.jpg`` and ``raw/Apple/1.jpg``): most likely a labelled image sent again, or an
    app writing into the wrong folder. Each is processed as an upload (no label) and named in the report.
    ``raw_exists(uris) -> set``: which of these raw/ URIs exist."""
    uploads_root, raw_root = lake.uploads() + "/", lake.raw() + "/"
    twins = {uri: raw_root + uri[len(uploads_root):] for uri in sorted(selected) if uri.startswith(uploads_root)}
    existing = raw_exists(set(twins.values())) if twins else set()
    return [{"path": uri, "raw_path": twin} for uri, twin in twins.items() if twin in existing]


def listed_uploads(lake: Lake, conn_id: str | None) -> dict[str, dict[str, int]]:
    """Each upload folder (raw/, uploads/) -> its files (canonical URI -> size), hidden names left out."""
    return {root: {uri: size for uri, size in storage.list_files(root, conn_id).items()
                   if not posixpath.basename(uri).startswith(".")}
            for root in (lake.raw(), lake.uploads())}


def root_of(lake: Lake, uri: str) -> str:
    """The input folder (raw/ or uploads/) an upload's URI is under."""
    return lake.raw() if uri.startswith(lake.raw() + "/") else lake.uploads()


@dataclass(frozen=True)
class Candidates:
    """The uploads a run considers, and how it found them."""

    uploads: dict[str, int]  # canonical URI -> size
    by_root: dict[str, dict[str, int]] | None  # the listing, when the run listed the lake
    notified: dict | None  # the queue's drain summary (upload_events.DrainSummary.as_dict), when there is a queue
    settled: dict[str, str]  # of them, those another run settled (-> outcome): not selected
    seen_settled: dict[str, str]  # of every upload met (listed, or notified), those other runs settled: the counts


def candidates(lake: Lake, run_key: str, *, conn_id: str | None, queue, full_refresh: bool,
               reconcile_every_days: int, now: float, done: ledger.DoneState) -> Candidates:
    """Every listed upload (``full_refresh``), else the arrivals not yet settled (S3's notifications,
    drained into the ledger, and what a reconciliation listing found) and what this run's own earlier
    attempt settled (a rerun takes the same uploads again). ``done``: the ledger's state (catch_up's)."""
    notified = queue.drain(lambda arrivals: ledger.add_arrivals(lake, arrivals, conn_id)) if queue else None
    listing = full_refresh or queue is None or reconciliation_due(lake, conn_id, every_days=reconcile_every_days,
                                                                  now=now)
    by_root = listed_uploads(lake, conn_id) if listing else None
    listed = {uri: size for files in (by_root or {}).values() for uri, size in files.items()}
    if full_refresh:
        return Candidates(dict(sorted(listed.items())), by_root, notified, {}, {})
    listed_settled: dict[str, str] = {}
    if by_root is not None:
        listed_settled = {path: outcome for path, outcome in settled_by_others(lake, run_key, conn_id).items()
                          if path in listed}
        added = reconcile(lake, listed, listed_settled, run_key, conn_id, now=now)
        log.info("listed raw/ and uploads/ against the ledger: %d upload(s) it did not know%s", added,
                 " (missed by the notifications)" if queue else "")
    own = {row["path"]: int(row["size"] or 0)
           for row in ledger.done_rows(lake, conn_id, batches={run_key}, columns=["path", "size"])}
    met = dict(sorted((own | ledger.pending_arrivals(lake, conn_id)).items()))
    # An arrival settled by a run recent enough for its notification to be a redelivery
    # (REDELIVERY_WINDOW_DAYS) is done; after that, S3 can only be telling of a new write of the key.
    recent = done.recent_batches(now=now)
    settled = settled_by_others(lake, run_key, conn_id, batches=recent, paths=set(met))
    ledger.forget_arrivals(lake, settled.keys(), conn_id)
    return Candidates(met, by_root, notified, settled, listed_settled | settled)


def validate_uploads(lake: Lake, run_key: str, *, full_refresh: bool, conn_id: str | None, max_image_bytes: int,
                     min_image_side: int, max_workers: int = 4, queue=None,
                     reconcile_every_days: int = 7, now: float | None = None) -> ValidationResult:
    """``queue``: S3's notifications of new uploads (upload_events.UploadQueue); without one, every run
    lists the lake (a local lake). ``now``: the run's clock (seconds since the epoch), for the
    reconciliation's schedule and the redelivery window."""
    now = time.time() if now is None else now
    raw_root = lake.raw()
    partial, done = catch_up(lake, run_key, conn_id, now=now)
    found = candidates(lake, run_key, conn_id=conn_id, queue=queue, full_refresh=full_refresh,
                       reconcile_every_days=reconcile_every_days, now=now, done=done)
    met = found.uploads
    featurized = {path for path, outcome in found.seen_settled.items() if outcome != ledger.REJECTED}
    rejected_before = found.seen_settled.keys() - featurized
    selected = {uri: size for uri, size in met.items() if uri not in found.settled}
    by_root = found.by_root
    result = ValidationResult(run_key=run_key, listed=len(selected),
                              total_in_raw=len(by_root[raw_root]) if by_root else None,
                              total_in_uploads=len(by_root[lake.uploads()]) if by_root else None,
                              already_featurized=len(featurized), previously_rejected=len(rejected_before),
                              partial_batches_ignored=sorted(lake.features(key) for key in partial),
                              notifications=found.notified,
                              featurized_in_lake=done.counts.get(ledger.FEATURIZED, 0))
    raw_exists = (lambda uris: uris & by_root[raw_root].keys()) if by_root else \
        (lambda uris: {uri for uri in uris if storage.exists(uri, conn_id)})
    result.upload_collisions = upload_collisions(lake, selected, raw_exists)
    for collision in result.upload_collisions:
        log.warning("%s has the name of the labelled image %s: processed as an app photo, without a label",
                    collision["path"], collision["raw_path"])
    if not full_refresh:
        for batch in remove_replaced_partial_batches(lake, partial, conn_id):
            log.info("removed %s: a feature job died before committing it; committed batches hold its images", batch)
            result.partial_batches_ignored.remove(batch)
    for batch in result.partial_batches_ignored:
        log.warning("ignoring %s: a feature job died before committing it; its images are taken again", batch)
    unsafe = {uri: reason for uri in selected if (reason := unsafe_name_reason(root_of(lake, uri), uri))}
    result.rejected += [{"path": uri, "reason": "unsafe_name", "detail": reason} for uri, reason in unsafe.items()]
    selected = {uri: size for uri, size in selected.items() if uri not in unsafe}
    log.info("%s; %d selected for run %s (%d already featurized, %d rejected before)",
             f"raw/ holds {result.total_in_raw} uploads, uploads/ {result.total_in_uploads}" if by_root else
             f"{len(met)} upload(s) notified and not yet settled", result.listed, run_key,
             result.already_featurized, result.previously_rejected)

    def check(item):
        uri, size = item
        return check_image(uri, size, lambda start, end: storage.read_range(uri, conn_id, start, end),
                           label=label_of(raw_root, uri), labelled=root_of(lake, uri) == raw_root,
                           max_bytes=max_image_bytes, min_side=min_image_side)

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="validate") as pool:
        for done, (verdict, row) in enumerate(pool.map(check, selected.items()), start=1):
            (result.valid if verdict == "valid" else result.rejected).append(row)
            if done % 500 == 0 or done == len(selected):
                log.info("validated %d/%d uploads (%d valid, %d rejected)", done, len(selected),
                         len(result.valid), len(result.rejected))
    return result


def known_uploads(lake: Lake, result: ValidationResult, conn_id: str | None):
    """``(uris) -> (uploads, rejected)``: which of these photos under uploads/ exist for the ledger (settled
    by a run, or met by this one) and which of them were set aside (rejected and never featurized), what a
    confirmed label is checked against (confirmed_labels). A lookup by path: file statistics skip the
    ledger files that cannot hold them."""
    def known(uris: set[str]) -> tuple[set[str], set[str]]:
        uris = {uri for uri in uris if uri.startswith(lake.uploads() + "/")}
        rows = ledger.done_rows(lake, conn_id, paths=uris, columns=["path", "outcome", "batch"])
        rows = [row for row in rows if row["batch"] != result.run_key]
        this_run = {row["path"] for row in result.valid} | {row["path"] for row in result.rejected}
        exists = ({row["path"] for row in rows} | this_run) & uris
        featurized = {row["path"] for row in rows if row["outcome"] != ledger.REJECTED} | \
            {row["path"] for row in result.valid}
        rejected = ({row["path"] for row in rows if row["outcome"] == ledger.REJECTED}
                    | {row["path"] for row in result.rejected}) - featurized
        return exists, rejected & uris
    return known


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
