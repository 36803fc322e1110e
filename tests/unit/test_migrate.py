"""A lake written before the ledger, migrated (dry run, stopped half-way, run twice), then its next day."""
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits_contract.lake import JOB_RESULT_FILE, Lake
from fruits_pipeline import ledger
from fruits_pipeline.migrate import main, migrate
from fruits_pipeline.validation import validate_uploads, write_manifests
from generated_images import write_generated_images

LIMITS = dict(conn_id=None, max_image_bytes=200_000, min_image_side=32)


def commit_batch(lake: Lake, run_key: str, paths: list[str], *, committed: bool = True) -> None:
    batch = Path(lake.local_root, "features", f"batch={run_key}")
    batch.mkdir(parents=True)
    pq.write_table(pa.table({"path": paths, "label": ["x"] * len(paths)}), batch / "part-0.parquet")
    if committed:
        (batch / JOB_RESULT_FILE).write_text("{}")


@pytest.fixture
def old_lake(tmp_path):
    """Three runs as main wrote them before the ledger: a committed batch, a day of rejections only, and
    a batch whose job died before its job result."""
    raw = tmp_path / "lake" / "raw"
    write_generated_images(raw, per_label=2, labels=("kiwi", "pear"))
    (raw / "kiwi" / "broken.jpg").write_bytes(b"not a photo")
    lake = Lake(f"file://{tmp_path / 'lake'}")
    day1 = validate_uploads(lake, "day1", full_refresh=False, **LIMITS)
    write_manifests(lake, day1, None)
    commit_batch(lake, "day1", [row["path"] for row in day1.valid])
    write_generated_images(raw, per_label=1, labels=("plum",))
    (raw / "plum" / "empty.jpg").write_bytes(b"")
    day2 = validate_uploads(lake, "day2", full_refresh=False, **LIMITS)
    day2.valid = [row for row in day2.valid if "/plum/" not in row["path"]]  # as if it had validated only the rest
    write_manifests(lake, day2, None)
    write_generated_images(raw, per_label=1, labels=("fig",))
    commit_batch(lake, "day3", [f"{lake.raw()}/fig/img_000.jpg"], committed=False)
    shutil.rmtree(tmp_path / "lake" / "ledger")  # main's code wrote none
    ledger.forget_open_tables()
    return lake


def test_a_dry_run_changes_nothing(old_lake, capsys):
    assert main(["--lake", old_lake.base_uri]) == 0
    out = capsys.readouterr().out
    assert "Dry run: 2 run(s) to record, 0 already in the ledger" in out
    assert "run day3: partial feature batch" in out
    assert not Path(old_lake.local_root, "ledger").exists()


def test_a_stopped_migration_goes_on_and_a_second_records_nothing(old_lake, monkeypatch):
    real, calls = ledger.record_run, []

    def dies_on_the_second(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 2:
            raise KeyboardInterrupt("stopped")
        return real(*args, **kwargs)

    monkeypatch.setattr(ledger, "record_run", dies_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        migrate(old_lake, None, confirm=True, out=lambda line: None)
    monkeypatch.setattr(ledger, "record_run", real)
    assert set(ledger.done_state(old_lake, None).recorded) == {calls[0]}
    found = migrate(old_lake, None, confirm=True, out=lambda line: None)
    assert found.already_recorded == [calls[0]] and len(found.batches) + len(found.rejections_only) == 1
    again = migrate(old_lake, None, confirm=True, out=lambda line: None)
    assert not again.batches and not again.rejections_only and sorted(again.already_recorded) == ["day1", "day2"]
    assert ledger.done_state(old_lake, None).counts == {"featurized": 4, "rejected": 2}


def test_the_next_day_on_a_migrated_lake_takes_only_what_is_new(old_lake):
    migrate(old_lake, None, confirm=True, out=lambda line: None)
    write_generated_images(Path(old_lake.local_root, "raw"), per_label=1, labels=("lime",))
    day4 = validate_uploads(old_lake, "day4", full_refresh=False, **LIMITS)
    taken = sorted(row["path"].split("/raw/")[1] for row in day4.valid)
    # plum (validated by day2, never featurized), fig (its batch died) and the new lime; not day1's four
    assert taken == ["fig/img_000.jpg", "lime/img_000.jpg", "plum/img_000.jpg"]
    assert day4.already_featurized == 4 and day4.previously_rejected == 2
