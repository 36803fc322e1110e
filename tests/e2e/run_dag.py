"""Runs fruits_pipeline once with dag.test() in THIS process and prints the outcome as one line.

The e2e tests call it as a subprocess: Airflow reads AIRFLOW_HOME and its database URL when
first imported, so each Airflow home gets a fresh interpreter instead of sharing one with the
other test folders' Airflow configuration.

    python tests/e2e/run_dag.py LOGICAL_DATE [CONF_JSON]
"""
from __future__ import annotations

import json
import sys
from datetime import datetime

RESULT_PREFIX = "E2E_RESULT "


def main() -> None:
    from airflow.utils.cli import get_bagged_dag

    logical_date = datetime.fromisoformat(sys.argv[1])
    conf = json.loads(sys.argv[2]) if len(sys.argv) > 2 else None
    dag = get_bagged_dag(None, "fruits_pipeline")  # also serializes it, which dag.test() needs
    # run_after fixes the run id (manual__<run_after>), hence the run key: the same date reruns the same run.
    dag_run = dag.test(run_after=logical_date, logical_date=logical_date, run_conf=conf)
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dag_run.get_task_instances()}
    state = str(getattr(dag_run.state, "value", dag_run.state))
    print(RESULT_PREFIX + json.dumps({"state": state, "run_id": dag_run.run_id, "tasks": states}), flush=True)


if __name__ == "__main__":
    main()
