"""Bring a lake written before the ledger into it (docs/design.md, "The ledger"):

    python -m fruits_pipeline.migrate --lake s3://bucket [--conn aws_default]         # dry run: what it would record
    python -m fruits_pipeline.migrate --lake s3://bucket --yes

Every committed feature batch (``features/batch=<run_key>/`` with its job result) and every run that
validated uploads without one (``manifests/<run_key>/rejected``) is recorded in ``ledger/done`` as the
report task records a run: one commit per run, on the clock of its job result (or manifest), so the
redelivery window is the runs' own. Idempotent: a run already recorded is skipped, so a migration that
was stopped goes on where it stopped, and a second one records nothing. Partial batches (a job that died
before its job result) are left as they are: their photos are taken again by the next run. Nothing
else changes; the next run lists the lake once (its first reconciliation) and finds what is new.
"""
from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field

from fruits_contract.lake import Lake, batch_key_of
from fruits_pipeline import ledger, storage

log = logging.getLogger(__name__)


@dataclass
class MigrationPlan:
    batches: dict[str, float] = field(default_factory=dict)  # committed batch -> when it was committed
    rejections_only: dict[str, float] = field(default_factory=dict)  # run that featurized nothing -> when
    already_recorded: list[str] = field(default_factory=list)
    partial: list[str] = field(default_factory=list)


def _written_at(info: dict) -> float:
    modified = info.get("LastModified") or info.get("mtime") or info.get("created") or 0
    return modified.timestamp() if hasattr(modified, "timestamp") else float(modified)


def plan_migration(lake: Lake, conn_id: str | None) -> MigrationPlan:
    """What a migration records, from one listing of features/ and manifests/ (run by run)."""
    found, recorded = MigrationPlan(), ledger.done_state(lake, conn_id).recorded
    root = lake.features_root()
    batches = {}
    for folder in storage.list_folders(root, conn_id):
        key = batch_key_of(folder + "/", root)
        if key is not None:
            batches[key] = storage.list_file_info(lake.job_result(folder), conn_id)
    for key, info in sorted(batches.items()):
        if key in recorded:
            found.already_recorded.append(key)
        elif info:
            found.batches[key] = _written_at(next(iter(info.values())))
        else:
            found.partial.append(key)
    for folder in storage.list_folders(lake.manifests_root(), conn_id):
        key = folder.rsplit("/", 1)[1]
        if key in batches:
            continue
        if key in recorded:
            found.already_recorded.append(key)
            continue
        info = storage.list_file_info(lake.manifest_rejected(key), conn_id)
        if info:
            found.rejections_only[key] = max(_written_at(entry) for entry in info.values())
    return found


def migrate(lake: Lake, conn_id: str | None, *, confirm: bool, out=print) -> MigrationPlan:
    found = plan_migration(lake, conn_id)
    verb = "recorded" if confirm else "would record"
    todo = sorted([(at, key, True) for key, at in found.batches.items()]
                  + [(at, key, False) for key, at in found.rejections_only.items()])
    for done, (at, key, committed) in enumerate(todo, start=1):
        counts = ledger.record_run(lake, key, conn_id, committed=committed, now=at) if confirm else None
        what = ", ".join(f"{n} {outcome}" for outcome, n in sorted(counts.items())) if counts else \
            ("its feature batch" if committed else "its rejections")
        out(f"[{done}/{len(todo)}] run {key}: {verb} ({what})")
    for key in found.partial:
        out(f"run {key}: partial feature batch (no job result), not recorded: its photos are taken again")
    summary = f"{len(todo)} run(s) to record, {len(found.already_recorded)} already in the ledger"
    out(f"Migrated: {summary}." if confirm else f"Dry run: {summary}. Nothing changed; add --yes to migrate.")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Record a lake written before the ledger in ledger/done.")
    parser.add_argument("--lake", required=True, help="the lake's base URI (s3://bucket[/prefix] or file:///path)")
    parser.add_argument("--conn", default="aws_default", help="the Airflow AWS connection for an s3:// lake")
    parser.add_argument("--yes", action="store_true", help="record (without it: print what would be recorded)")
    args = parser.parse_args(argv)
    try:
        lake = Lake(args.lake)
    except ValueError as error:
        print(f"migrate: {error}", file=sys.stderr)
        return 2
    migrate(lake, args.conn if lake.bucket else None, confirm=args.yes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
