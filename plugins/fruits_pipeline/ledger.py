"""The ledger: what every upload became, in Delta Lake tables under ``ledger/`` (docs/design.md, "The ledger").

``ledger/done``: one row per settled upload (path, outcome featurized | duplicate | rejected, reason,
detail, duplicate_of, size), partitioned by the run that settled it (``batch``: its run key) and by
outcome, so that the counts and the runs recorded come from the table's state alone. A run
records its rows in one Delta commit that replaces its own partition (a rerun replaces, never adds),
after its feature batch is committed; the next run records a committed batch that was not (its report
task died), so a committed batch always ends in the ledger.
``ledger/arrivals``: the uploads met (notified by S3, or found by a listing) and not yet settled; a
run deletes the rows it settled. It holds about a day of uploads.

Both are read and written here, on the Airflow worker, with delta-rs (``deltalake``): no Spark, no
JVM. Delta-rs commits on S3 with S3's conditional writes (a second writer of the same version gets
412 and retries on the new state): two writers never lose each other's rows, and a writer killed
before its commit file leaves only data files no version names. A day reads the table's state (the
last checkpoint and at most ``delta.checkpointInterval`` commits: TABLE_CONFIGURATION), its own arrivals and the recent
partitions: not the history.
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass

from fruits_contract.lake import (DUPLICATES_FOLDER, LEDGER_ARRIVALS_TABLE, LEDGER_DONE_TABLE, REJECTS_FOLDER,
                                  REDELIVERY_WINDOW_DAYS, Lake)
from fruits_pipeline import storage

log = logging.getLogger(__name__)

FEATURIZED, DUPLICATE, REJECTED = "featurized", "duplicate", "rejected"
DONE_COLUMNS = (("path", "string"), ("outcome", "string"), ("reason", "string"), ("detail", "string"),
                ("duplicate_of", "string"), ("size", "int64"), ("recorded_at", "float64"), ("batch", "string"))
ARRIVAL_COLUMNS = (("path", "string"), ("size", "int64"), ("arrived", "string"), ("source", "string"))
# A checkpoint every 10 commits: opening a table reads the checkpoint and at most 10 commit files,
# however old the table (delta-rs's default, 100, would read up to 100 small files a day).
TABLE_CONFIGURATION = {"delta.checkpointInterval": "10"}
# Attempts of one write against commits of other writers (_write): a run is the only writer on a normal day.
COMMIT_ATTEMPTS = 5
# A DELETE names its paths in SQL; this many per statement keeps each statement small.
PATHS_PER_DELETE = 1_000


def _schema(columns):
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, arrow_type)()) for name, arrow_type in columns])


def storage_options(uri: str, conn_id) -> dict[str, str]:
    """delta-rs's options for the lake: on S3 the Airflow connection's credentials, region and endpoint
    (the same as ObjectStoragePath uses); nothing for a local lake. Every function here takes, for
    ``conn_id``, an Airflow connection id or these options themselves (the erasure tool, which has no
    Airflow connection, passes its boto3 client's)."""
    if isinstance(conn_id, dict):
        return conn_id
    if not uri.startswith("s3://"):
        return {}
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=conn_id, client_type="s3")
    credentials = hook.get_credentials()
    options = {"AWS_ACCESS_KEY_ID": credentials.access_key, "AWS_SECRET_ACCESS_KEY": credentials.secret_key,
               "AWS_REGION": hook.conn_region_name or "eu-west-3"}
    if credentials.token:
        options["AWS_SESSION_TOKEN"] = credentials.token
    endpoint = hook.conn_config.get_service_endpoint_url("s3")
    if endpoint:  # moto, or a VPC endpoint
        options["AWS_ENDPOINT_URL"] = endpoint
        options["AWS_ALLOW_HTTP"] = str(endpoint.startswith("http://")).lower()
    return options


# Each table opened once per process (an Airflow task) and brought up to date with the commits made
# since: opening reads the checkpoint and the commits after it, an update only the new commits.
_OPEN: dict[tuple[str, str], object] = {}


def _table(uri: str, conn_id: str | None):
    """The Delta table at ``uri`` as of now, or None before its first commit."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    table = _OPEN.get((uri, repr(conn_id)))
    if table is not None:
        table.update_incremental()
        return table
    # Not DeltaTable.is_deltatable: it holds the GIL while it waits on S3, which starves an S3 endpoint
    # served by the same process (moto in the tests) until delta-rs's timeout.
    try:
        table = DeltaTable(uri, storage_options=storage_options(uri, conn_id))
    except TableNotFoundError:
        return None
    _OPEN[(uri, repr(conn_id))] = table
    return table


def forget_open_tables() -> None:
    """Open the tables afresh next time (what a new task process does)."""
    _OPEN.clear()


def _write(uri: str, rows: list[dict], columns, conn_id: str | None, **kwargs) -> None:
    import pyarrow as pa
    from deltalake import write_deltalake
    from deltalake.exceptions import CommitFailedError

    table = pa.Table.from_pylist(rows, schema=_schema(columns))
    for attempt in range(COMMIT_ATTEMPTS):
        existing = _table(uri, conn_id)
        try:
            if existing is None:
                write_deltalake(uri, table, storage_options=storage_options(uri, conn_id),
                                configuration=TABLE_CONFIGURATION, **kwargs)
            else:
                write_deltalake(existing, table, **kwargs)
            return
        except CommitFailedError:
            # Optimistic concurrency: another writer committed first in a way delta-rs does not merge by itself
            # (seen in CI: "Metadata changed since last commit", two writers each creating the table, or an
            # append against the other's first commit). Read the table again and commit on top of it.
            if attempt == COMMIT_ATTEMPTS - 1:
                raise
            log.warning("ledger %s: commit conflict with another writer, attempt %d of %d", uri, attempt + 2,
                        COMMIT_ATTEMPTS)
            _OPEN.pop((uri, repr(conn_id)), None)


def _quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _delete_paths(uri: str, paths, conn_id: str | None) -> int:
    """Delete the rows of ``paths`` from a ledger table (the arrivals: never looked up by path); returns
    how many rows went."""
    table, paths, deleted = _table(uri, conn_id), sorted(set(paths)), 0
    if table is None:
        return 0
    for start in range(0, len(paths), PATHS_PER_DELETE):
        chunk = paths[start:start + PATHS_PER_DELETE]
        deleted += table.delete(f"path IN ({', '.join(map(_quoted, chunk))})")["num_deleted_rows"]
    return deleted


# ---------------------------------------------------------------------------------------------- done
@dataclass(frozen=True)
class DoneState:
    """What ``ledger/done`` holds, from its state alone (its files' partition values, times and row
    counts: no data file is read)."""

    recorded: dict[str, float]  # run key -> when its rows were recorded (the run's clock, seconds since the epoch)
    counts: dict[str, int]  # outcome -> rows

    def recent_batches(self, *, now: float | None = None, days: int = REDELIVERY_WINDOW_DAYS) -> set[str]:
        """The batches recorded within the last ``days`` (a redelivered notification can only be of those)."""
        since = (time.time() if now is None else now) - days * 86_400
        return {batch for batch, at in self.recorded.items() if at >= since}


def done_state(lake: Lake, conn_id: str | None) -> DoneState:
    import pyarrow as pa

    table = _table(lake.ledger(LEDGER_DONE_TABLE), conn_id)
    if table is None:
        return DoneState({}, {})
    recorded: dict[str, float] = {}
    counts: dict[str, int] = {}
    for action in pa.table(table.get_add_actions(flatten=True)).to_pylist():
        batch, outcome = action["partition.batch"], action["partition.outcome"]
        # The run's own clock, from the file's statistics (a file's time would be the store's)
        at = action.get("max.recorded_at")
        recorded[batch] = max(recorded.get(batch, 0.0), at if at is not None else action["modification_time"] / 1000)
        counts[outcome] = counts.get(outcome, 0) + int(action["num_records"])
    return DoneState(recorded, dict(sorted(counts.items())))


def done_rows(lake: Lake, conn_id: str | None, *, batches=None, paths=None, columns=None) -> list[dict]:
    """Rows of ``ledger/done``: of the ``batches`` partitions (None: all), of the ``paths`` (None: all;
    file statistics skip the files that cannot hold them)."""
    table = _table(lake.ledger(LEDGER_DONE_TABLE), conn_id)
    if table is None or (batches is not None and not batches) or (paths is not None and not paths):
        return []
    filters = [("batch", "in", sorted(batches))] if batches is not None else []
    filters += [("path", "in", sorted(paths))] if paths is not None else []
    # delta-rs's own filters: a DELETE rewrites files with string_view columns, which a pyarrow
    # dataset expression over the table's string schema cannot compare.
    return table.to_pyarrow_table(filters=filters or None, columns=list(columns) if columns else None).to_pylist()


def batch_paths(lake: Lake, run_key: str, conn_id: str | None) -> list[str]:
    """The photos in feature batch ``run_key``'s data files (committed or not), from their ``path`` column alone."""
    return [path for uri in storage.parquet_data_files(lake.features(run_key), conn_id)
            for path in storage.read_parquet_column(uri, conn_id, "path")]


def batch_rows(lake: Lake, run_key: str, conn_id: str | None, *, committed: bool) -> list[dict]:
    """What run ``run_key`` settled: its validation's rejects and, when its feature batch is
    ``committed``, the batch's featurized photos, the job's rejects and the duplicates (read from this
    run's outputs only)."""
    def table_rows(folder: str, columns: list[str]) -> list[dict]:
        import pyarrow.parquet as pq

        rows = []
        for uri in sorted(u for u in storage.list_files(folder, conn_id) if u.endswith(".parquet")):
            with storage.lake_path(uri, conn_id).open("rb") as handle:
                file = pq.ParquetFile(handle)
                present = [name for name in columns if name in file.schema_arrow.names]
                rows += file.read(columns=present).to_pylist()
        return [{name: row.get(name) for name in columns} for row in rows]

    sizes = pending_arrivals(lake, conn_id) | {
        row["path"]: row["size"] for row in table_rows(lake.manifest_valid(run_key), ["path", "size"])}
    rows = [{"path": row["path"], "outcome": REJECTED, "reason": row["reason"], "detail": row["detail"],
             "size": sizes.get(row["path"])} for row in table_rows(lake.manifest_rejected(run_key), ["path", "reason", "detail"])]
    if committed:
        rows += [{"path": path, "outcome": FEATURIZED, "size": sizes.get(path)}
                 for path in batch_paths(lake, run_key, conn_id)]
        rows += [{"path": row["path"], "outcome": REJECTED, "reason": row["reason"], "detail": row["detail"],
                  "size": sizes.get(row["path"])}
                 for row in table_rows(lake.feature_rejects(run_key), ["path", "reason", "detail"])]
        rows += [{"path": row["path"], "outcome": DUPLICATE, "duplicate_of": row["duplicate_of"],
                  "size": sizes.get(row["path"])}
                 for row in table_rows(lake.feature_duplicates(run_key), ["path", "duplicate_of"])]
    return [{**row, "batch": run_key} for row in sorted(rows, key=lambda row: row["path"])]


def record_run(lake: Lake, run_key: str, conn_id: str | None, *, committed: bool, now: float | None = None) -> dict:
    """Record what run ``run_key`` settled in one commit replacing its own partition of ``ledger/done``,
    then delete those paths from ``ledger/arrivals``; returns the counts by outcome. Rows sorted by path,
    so that each file's path statistics are tight (a lookup by path skips the other days' files)."""
    at = time.time() if now is None else now
    rows = [row | {"recorded_at": at} for row in batch_rows(lake, run_key, conn_id, committed=committed)]
    _write(lake.ledger(LEDGER_DONE_TABLE), rows, DONE_COLUMNS, conn_id, mode="overwrite",
           partition_by=["batch", "outcome"], predicate=f"batch = {_quoted(run_key)}")
    settled = _delete_paths(lake.ledger(LEDGER_ARRIVALS_TABLE), [row["path"] for row in rows], conn_id)
    counts = dict(Counter(row["outcome"] for row in rows))
    log.info("ledger: run %s recorded (%s), %d arrival(s) settled", run_key,
             ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) or "nothing", settled)
    return counts


def erase_paths(lake: Lake, paths, conn_id: str | None) -> int:
    """Delete every ledger row of ``paths`` (erasure); returns how many rows went. Only the partitions of
    ``ledger/done`` that hold them are rewritten, each in one commit, through the writer that keeps the
    table's string columns (a Delta DELETE rewrites them as string_view, whose file statistics pyarrow
    cannot compare with the lookups by path). The files they leave stay until ``vacuum``."""
    paths, erased = set(paths), 0
    done = lake.ledger(LEDGER_DONE_TABLE)
    for batch in sorted({row["batch"] for row in done_rows(lake, conn_id, paths=paths, columns=["batch"])}):
        rows = done_rows(lake, conn_id, batches={batch})
        kept = [row for row in rows if row["path"] not in paths]
        _write(done, kept, DONE_COLUMNS, conn_id, mode="overwrite", partition_by=["batch", "outcome"],
               predicate=f"batch = {_quoted(batch)}")
        erased += len(rows) - len(kept)
    return erased + _delete_paths(lake.ledger(LEDGER_ARRIVALS_TABLE), paths, conn_id)


def vacuum(lake: Lake, conn_id: str | None) -> list[str]:
    """Remove the files no current version of the ledger names (after an erasure: the erased rows' old
    files, which Delta keeps for time travel); returns their keys under the lake (``ledger/<table>/...``)."""
    removed = []
    for name in (LEDGER_DONE_TABLE, LEDGER_ARRIVALS_TABLE):
        table = _table(lake.ledger(name), conn_id)
        if table is not None:
            files = table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False)
            removed += [f"ledger/{name}/{file}" for file in files]
    return removed


# ------------------------------------------------------------------------------------------ arrivals
@dataclass(frozen=True)
class Arrival:
    path: str
    size: int
    arrived: str  # ISO 8601, UTC: S3's event time, or when a listing found it
    source: str  # "event" or "listing"


def add_arrivals(lake: Lake, arrivals: list[Arrival], conn_id: str | None) -> None:
    """Append uploads met to ``ledger/arrivals`` in one commit (a path met twice is one upload)."""
    if arrivals:
        _write(lake.ledger(LEDGER_ARRIVALS_TABLE), [vars(arrival) for arrival in arrivals], ARRIVAL_COLUMNS,
               conn_id, mode="append")


def forget_arrivals(lake: Lake, paths, conn_id: str | None) -> int:
    """Delete the arrivals of ``paths`` that another run already settled (a redelivered notification)."""
    return _delete_paths(lake.ledger(LEDGER_ARRIVALS_TABLE), paths, conn_id) if paths else 0


def pending_arrivals(lake: Lake, conn_id: str | None) -> dict[str, int]:
    """Path -> size of every upload met and not yet settled (the latest arrival of a path wins)."""
    table = _table(lake.ledger(LEDGER_ARRIVALS_TABLE), conn_id)
    if table is None:
        return {}
    rows = sorted(table.to_pyarrow_table(columns=["path", "size", "arrived"]).to_pylist(),
                  key=lambda row: row["arrived"])
    return dict(sorted({row["path"]: int(row["size"]) for row in rows}.items()))
