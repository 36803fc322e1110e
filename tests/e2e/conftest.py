"""End-to-end fixtures: a throwaway Airflow home on SQLite (migrated once per session), a
temporary lake, and a way to run the whole DAG in local mode with real Spark."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from fruits_pipeline import demo
from fruits_pipeline.settings import REPO_ROOT

RUN_DAG = Path(__file__).with_name("run_dag.py")
DAG_RUN_TIMEOUT_SECONDS = 900


def airflow_env(airflow_home: Path, lake_root: Path | None) -> dict:
    # Nothing Airflow- or pipeline-specific leaks in from the test process (other folders configure their own);
    # the feature job runs the model the repository ships.
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "FRUITS_", "PYSPARK_"))}
    return demo.airflow_env(lake_root, airflow_home, base=clean)


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """An Airflow home whose SQLite metadata database is migrated once for the session."""
    home = tmp_path_factory.mktemp("airflow_home")
    result = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"],
                            env=airflow_env(home, None), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return home


@dataclass
class DagRunResult:
    state: str
    run_id: str
    tasks: dict
    output: str


@pytest.fixture(scope="session")
def run_pipeline(airflow_home):
    """run_pipeline(lake_root, logical_date, conf=None) -> DagRunResult: one whole local DAG run."""

    def run(lake_root: Path, logical_date: str, conf: dict | None = None) -> DagRunResult:
        args = [sys.executable, str(RUN_DAG), logical_date] + ([json.dumps(conf)] if conf else [])
        result = subprocess.run(args, env=airflow_env(airflow_home, lake_root), cwd=REPO_ROOT,
                                capture_output=True, text=True, timeout=DAG_RUN_TIMEOUT_SECONDS)
        output = result.stdout + result.stderr
        lines = [l for l in result.stdout.splitlines() if l.startswith("E2E_RESULT ")]
        assert lines, f"the DAG run did not finish (exit {result.returncode}):\n{output[-6000:]}"
        outcome = json.loads(lines[-1].removeprefix("E2E_RESULT "))
        return DagRunResult(outcome["state"], outcome["run_id"], outcome["tasks"], output)

    return run
