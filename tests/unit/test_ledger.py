"""The ledger (Delta Lake through delta-rs): what a run settled, recorded once; concurrent and killed
writers; the redelivery window; what a confirmed label is checked against."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits_contract.lake import JOB_RESULT_FILE, LEDGER_ARRIVALS_TABLE, Lake
from fruits_pipeline import ledger
from fruits_pipeline.validation import known_uploads, validate_uploads, write_manifests
from generated_images import write_generated_images

LIMITS = dict(conn_id=None, max_image_bytes=200_000, min_image_side=32)
DAY = 86_400


@pytest.fixture
def lake(tmp_path):
    write_generated_images(tmp_path / "lake" / "raw", per_label=3, labels=("kiwi", "pear"))
    (tmp_path / "lake" / "raw" / "kiwi" / "broken.jpg").write_bytes(b"not a photo")
    return Lake(f"file://{tmp_path / 'lake'}")


def commit_batch(lake: Lake, run_key: str, paths: list[str]) -> None:
    """What the feature job leaves: its features (the path column is all the ledger reads) and, last, its
    job result."""
    batch = Path(lake.local_root, "features", f"batch={run_key}")
    batch.mkdir(parents=True)
    pq.write_table(pa.table({"path": paths, "label": ["x"] * len(paths)}), batch / "part-0.parquet")
    (batch / JOB_RESULT_FILE).write_text("{}")


def test_a_run_is_recorded_once_and_a_rerun_replaces_its_rows(lake):
    first = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    write_manifests(lake, first, None)
    commit_batch(lake, "run1", sorted(row["path"] for row in first.valid))
    for _ in range(2):
        counts = ledger.record_run(lake, "run1", None, committed=True)
    assert counts == {"featurized": 6, "rejected": 1}
    state = ledger.done_state(lake, None)
    assert state.counts == {"featurized": 6, "rejected": 1} and set(state.recorded) == {"run1"}
    assert ledger.pending_arrivals(lake, None) == {}, "what the run settled left the arrivals"
    rows = ledger.done_rows(lake, None)
    assert len(rows) == 7 and len({row["path"] for row in rows}) == 7
    assert all(row["size"] > 0 for row in rows if row["outcome"] == "featurized")

    second = validate_uploads(lake, "run2", full_refresh=False, **LIMITS)
    assert second.valid == [] and second.already_featurized == 6 and second.previously_rejected == 1
    assert second.featurized_in_lake == 6


def test_a_committed_batch_its_report_never_recorded_is_recorded_by_the_next_run(lake):
    first = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    write_manifests(lake, first, None)
    commit_batch(lake, "run1", sorted(row["path"] for row in first.valid)[:4])  # the report task then died
    second = validate_uploads(lake, "run2", full_refresh=False, **LIMITS)
    assert "run1" in ledger.done_state(lake, None).recorded
    assert len(second.valid) == 2, "the four featurized are not taken again; the two the job never wrote are"


def test_a_partial_batch_is_not_recorded_and_its_photos_are_taken_again(lake):
    first = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    write_manifests(lake, first, None)
    commit_batch(lake, "run1", sorted(row["path"] for row in first.valid))
    Path(lake.local_root, "features", "batch=run1", JOB_RESULT_FILE).unlink()  # the job died before its last write
    second = validate_uploads(lake, "run2", full_refresh=False, **LIMITS)
    assert ledger.done_state(lake, None).recorded == {}
    assert len(second.valid) == 6 and second.partial_batches_ignored == [lake.features("run1")]


class NotifiedQueue:
    """S3's notifications as the queue hands them over (upload_events.UploadQueue.drain's contract)."""

    def __init__(self, arrivals):
        self.arrivals = arrivals

    def drain(self, record):
        record(self.arrivals)
        return {"messages": len(self.arrivals), "uploads": len(self.arrivals), "ignored": 0, "unreadable": []}


def test_a_notification_is_a_redelivery_within_the_window_and_a_new_write_after_it(lake):
    first = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    write_manifests(lake, first, None)
    commit_batch(lake, "run1", sorted(row["path"] for row in first.valid))
    ledger.record_run(lake, "run1", None, committed=True)
    photo = sorted(row["path"] for row in first.valid)[0]
    size = next(row["size"] for row in first.valid if row["path"] == photo)
    again = [ledger.Arrival(photo, size, "2026-12-07T00:00:00Z", "event")] * 2  # delivered twice
    recorded_at = ledger.done_state(lake, None).recorded["run1"]

    soon = validate_uploads(lake, "run2", full_refresh=False, queue=NotifiedQueue(again), now=recorded_at + 2 * DAY,
                            **LIMITS)
    assert soon.valid == [] and soon.already_featurized == 1 and soon.total_in_raw is None, "no listing"
    assert ledger.pending_arrivals(lake, None) == {}, "the redelivery is forgotten"

    later = validate_uploads(lake, "run3", full_refresh=False, queue=NotifiedQueue(again[:1]),
                             now=recorded_at + 20 * DAY, **LIMITS)
    assert [row["path"] for row in later.valid] == [photo], "S3 notifies only writes: the key was written again"


def test_a_queue_lake_is_listed_on_its_first_run_and_then_every_few_days(lake):
    start = time.time()
    first = validate_uploads(lake, "run1", full_refresh=False, queue=NotifiedQueue([]), now=start, **LIMITS)
    assert first.total_in_raw == 7 and len(first.valid) == 6, "the first run finds what arrived before the queue"
    next_day = validate_uploads(lake, "run2", full_refresh=False, queue=NotifiedQueue([]), now=start + DAY, **LIMITS)
    assert next_day.total_in_raw is None and len(next_day.valid) == 6, "not listed; still pending, still taken"
    week = validate_uploads(lake, "run3", full_refresh=False, queue=NotifiedQueue([]), now=start + 7 * DAY, **LIMITS)
    assert week.total_in_raw == 7


def test_a_confirmed_label_is_checked_against_the_ledger(lake):
    uploads = Path(lake.local_root, "uploads", "2026-12-07")
    uploads.mkdir(parents=True)
    good = Path(lake.local_root, "raw", "kiwi").glob("img_*.jpg").__next__()
    (uploads / "a.jpg").write_bytes(good.read_bytes())
    (uploads / "b.jpg").write_bytes(b"not a photo")
    first = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    write_manifests(lake, first, None)
    commit_batch(lake, "run1", sorted(row["path"] for row in first.valid))
    ledger.record_run(lake, "run1", None, committed=True)
    second = validate_uploads(lake, "run2", full_refresh=False, **LIMITS)
    a, b, gone = (f"{lake.uploads()}/2026-12-07/{name}" for name in ("a.jpg", "b.jpg", "gone.jpg"))
    exists, rejected = known_uploads(lake, second, None)({a, b, gone, f"{lake.raw()}/kiwi/img_000.jpg"})
    assert exists == {a, b} and rejected == {b}
    assert ledger.erase_paths(lake, {a}, None) == 1
    assert known_uploads(lake, second, None)({a})[0] == set(), "an erased photo is unknown"


WRITER = textwrap.dedent("""
    import sys
    from fruits_contract.lake import Lake
    from fruits_pipeline import ledger
    lake, name, commits = Lake(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    for n in range(commits):
        ledger.add_arrivals(lake, [ledger.Arrival(f"{lake.uploads()}/{name}/{n}/{i}.jpg", i, "t", "event")
                                   for i in range(500)], None)
        print(n, flush=True)
""")


def writer(lake: Lake, name: str, commits: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WRITER, lake.base_uri, name, str(commits)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})


def test_two_writers_lose_nothing_of_each_other(lake):
    writers = [writer(lake, name, 8) for name in ("a", "b")]
    for process in writers:
        assert process.wait(timeout=300) == 0
    pending = ledger.pending_arrivals(lake, None)
    assert len(pending) == 2 * 8 * 500
    assert {path.split("/")[-3] for path in pending} == {"a", "b"}


def test_a_writer_killed_mid_commit_leaves_whole_commits_only(lake):
    process = writer(lake, "killed", 1_000)
    for _ in range(3):  # let it commit a few times, then kill it in the middle of the next ones
        process.stdout.readline()
    time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    table = Path(lake.local_root, "ledger", LEDGER_ARRIVALS_TABLE)
    pending = ledger.pending_arrivals(lake, None)
    commits = {path.split("/")[-2] for path in pending}
    assert len(commits) >= 3 and len(pending) == 500 * len(commits), "every commit whole, or not there"
    versions = sorted(table.glob("_delta_log/*.json"))
    assert all(json.loads(line) for version in versions for line in version.read_text().splitlines())
    # and the next writer goes on from there
    ledger.add_arrivals(lake, [ledger.Arrival(f"{lake.uploads()}/after.jpg", 1, "t", "event")], None)
    assert len(ledger.pending_arrivals(lake, None)) == len(pending) + 1
