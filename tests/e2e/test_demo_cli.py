"""`python -m fruits_pipeline.demo` (make demo's driver) through Airflow's own CLI, on the path that
needs no Spark: uploads that all fail validation. The Spark path is covered by test_local_pipeline."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fruits_pipeline.settings import REPO_ROOT

pytestmark = pytest.mark.e2e


def test_demo_with_only_broken_uploads_runs_the_dag_and_says_nothing_was_processed(tmp_path):
    images = tmp_path / "images" / "kiwi"
    images.mkdir(parents=True)
    (images / "empty.jpg").write_bytes(b"")
    (images / "letter.jpg").write_text("not a photo")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "FRUITS_"))}
    lake, home = tmp_path / "lake", tmp_path / "airflow"
    command = [sys.executable, "-m", "fruits_pipeline.demo", "--images", str(tmp_path / "images"),
               "--uploads", "", "--lake", str(lake), "--airflow-home", str(home)]

    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert f"copied 2 new images from {tmp_path / 'images'} into raw/ (0 were already there)" in output
    assert "nothing new to process" in output
    # One line per task as it starts and ends, the route and why; Airflow's records only in the log file.
    for task in ("validate_and_plan", "report"):
        assert f"  {task}: started" in result.stdout and f"  {task}: success in " in result.stdout, task
    assert "route nothing_to_do: no valid new upload and no features yet" in result.stdout
    assert "[info" not in result.stdout and "Pushing xcom" not in result.stdout
    (log_line,) = [l for l in result.stdout.splitlines() if l.startswith("make demo: Airflow's full log: ")]
    log_file = Path(log_line.removeprefix("make demo: Airflow's full log: "))
    assert log_file.parent == home and "Pushing xcom" in log_file.read_text()
    assert len(result.stdout.splitlines()) < 40, result.stdout
    reports = list((lake / "reports").glob("*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["counts"]["rejected"] == 2 and report["counts"]["valid"] == 0
    assert report["run_key"].startswith("manual__")
    assert (home / "airflow.db").is_file(), "Airflow ran on the throwaway SQLite home"
    assert sorted(p.name for p in (lake / "raw" / "kiwi").iterdir()) == ["empty.jpg", "letter.jpg"]

    again = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, timeout=600)
    assert again.returncode == 0, (again.stdout + again.stderr)[-6000:]
    assert "copied 0 new images from" in again.stdout and "into raw/ (2 were already there)" in again.stdout
    assert "nothing new to process" in again.stdout
    assert len(list((lake / "reports").glob("*.json"))) == 2, "a second demo is a distinct run with its own report"
