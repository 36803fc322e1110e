"""tests/ui only: dags/fruits_pipeline_dag.py in EMR mode, as DAG `fruits_pipeline_emr`.

The DAG file reads FRUITS_COMPUTE when it is parsed, so one Airflow serves one mode per DAG file.
For the UI suite to run both modes in one Airflow, this file applies the EMR settings that the
suite wrote to $AIRFLOW_HOME/fruits_emr_env.json (S3 lake and EMR on a moto server) to its own
process, then runs the real DAG file's source under another dag_id. The dag-processor and each
task's process parse files in processes of their own, so these settings never reach the local DAG.
"""
import json
import os
from pathlib import Path

REAL_DAG_FILE = Path(__file__).resolve().parents[3] / "dags" / "fruits_pipeline_dag.py"
DAG_ID_LINE = 'dag_id="fruits_pipeline",'

os.environ.update(json.loads((Path(os.environ["AIRFLOW_HOME"]) / "fruits_emr_env.json").read_text()))
_source = REAL_DAG_FILE.read_text()
if _source.count(DAG_ID_LINE) != 1:
    raise RuntimeError(f"{REAL_DAG_FILE} no longer has exactly one {DAG_ID_LINE!r}: update tests/ui/emr_dags")
exec(compile(_source.replace(DAG_ID_LINE, 'dag_id="fruits_pipeline_emr",'), __file__, "exec"))
