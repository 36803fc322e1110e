"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME on SQLite, the repo's dags/ folder.

The environment is set when this file is imported, before anything imports Airflow
(Airflow reads its configuration once, at import).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS_FOLDER = REPO / "dags"
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="fruits-airflow-home-"))

os.environ.update({
    "AIRFLOW_HOME": str(AIRFLOW_HOME),
    "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
    "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "eu-west-3",
})
os.environ.setdefault("FRUITS_LAKE_URI", f"file://{AIRFLOW_HOME}/lake")


@pytest.fixture(scope="session")
def airflow_db():
    from airflow.configuration import conf
    from airflow.utils import db

    # Airflow reads its config once per process: if another test folder imported it first with
    # another AIRFLOW_HOME, never reset that database. Run tests/dag in its own pytest process.
    configured = conf.get("database", "sql_alchemy_conn")
    if str(AIRFLOW_HOME) not in configured:
        pytest.fail(f"Airflow was configured before tests/dag/conftest.py ({configured}); "
                    "run `pytest tests/dag` in its own process")
    db.resetdb()
    return AIRFLOW_HOME


def parse_dag_folder():
    """A DagBag of dags/ as the dag-processor sees it (import errors included)."""
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_FOLDER))
