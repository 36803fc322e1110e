"""bench/bench_features.py: the job's steady rate from its workers' log lines."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import bench_features as bench  # noqa: E402


def worker_line(clock: str, pid: int, done: int, rate_so_far: float, end: bool = False) -> str:
    suffix = ", partition done" if end else ""
    return (f"2026-11-30 {clock} fruits.extract_features INFO worker pid {pid}: {done} images through "
            f"the model ({rate_so_far:.1f} images/s){suffix}")


def test_steady_rate_leaves_out_each_workers_first_images():
    # Worker 1 is slow for its first 1024 images (1024 in 20 s) then does 1024 in 8 s: 128/s.
    # Worker 2 does 512 in 10 s, then 1536 in 12 s after its 1024th image: 128/s.
    lines = [
        "26/11/30 10:00:00 WARN Utils: something else",
        worker_line("10:00:10,000", 1, 512, 51.2),
        worker_line("10:00:10,000", 2, 512, 51.2),
        worker_line("10:00:20,000", 1, 1024, 51.2),
        worker_line("10:00:14,000", 2, 1024, 73.1),
        worker_line("10:00:28,000", 1, 2048, 73.1, end=True),
        worker_line("10:00:26,000", 2, 2560, 98.5, end=True),
    ]
    assert bench.steady_rate(lines, warmup=1024) == pytest.approx(256.0)
    assert bench.rate_from_model_build(lines) == pytest.approx(73.1 + 98.5)


def test_a_worker_that_never_passed_the_warm_up_counts_at_its_rate_so_far():
    lines = [worker_line("10:00:10,000", 7, 512, 50.0), worker_line("10:00:15,000", 7, 700, 46.7, end=True),
             worker_line("10:00:10,000", 8, 1024, 100.0), worker_line("10:00:14,000", 8, 1536, 110.0, end=True)]
    assert bench.steady_rate(lines, warmup=1024) == pytest.approx(46.7 + 128.0)


def test_no_worker_lines_means_no_rate():
    assert bench.steady_rate(["FRUITS_RESULT {}"]) is None


def test_a_worker_on_several_partitions_is_counted_over_all_of_them_pauses_included():
    # Four partitions of 500, each logged at 125/s over its own 4 s, with 1 s between partitions (the
    # task's start and commit): from the 1,500th image on, 500 images in 5 s. Counting each partition
    # alone (its own "500 images", its own rate) gave 125/s.
    lines = [worker_line(f"10:00:{5 * k + 4:02d},000", 3, 500, 125.0, end=True) for k in range(4)]
    assert bench.steady_rate(lines, warmup=1024) == pytest.approx(100.0)
    assert bench.rate_from_model_build(lines) == pytest.approx(2000 / 19)


def test_the_bare_processes_are_measured_around_the_job_and_compared_by_their_mean():
    assert bench.local_slots("local[2]") == 2 and bench.local_slots("spark://host:7077") is None
    after = {"featurized": 4000, "seconds": 17.0, "steady_images_per_second": 210.0}
    both = bench.bracketing({"featurized": 4000, "seconds": 16.0, "steady_images_per_second": 250.0}, after)
    assert (both["steady_images_per_second"], both["steady_before_job"], both["steady_after_job"]) == (230.0, 250.0, 210.0)
    assert bench.bracketing(None, after)["steady_images_per_second"] == 210.0
