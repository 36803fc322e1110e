"""Airflow's components killed in the middle of an EMR-mode run (DAG `fruits_pipeline_emr` on the
suite's moto server), as an orchestrator restarting their containers would: SIGKILL, then a new process.

One run, two outages, each while a step sensor is deferred and its step ends during the outage:
the triggerer and the scheduler together, then the api-server. The run must end success with one
cluster created, its steps added once, and the cluster TERMINATED (docs/reliability.md).
"""
from __future__ import annotations

import json

import pytest

from moto_emr import REGION, all_clusters, cluster_by_id
from fruits_pipeline.job_flow import cluster_name
from fruits_contract.lake import run_key_for

from .conftest import EMR_BUCKET as BUCKET
from .test_ui_emr import DAG_ID, RUN_TIMEOUT_SECONDS, _complete, _step_ids, _trigger, _wait_until_deferred

pytestmark = pytest.mark.ui


@pytest.fixture(scope="module")
def emr_dag(airflow, aws, images_dir):
    """The EMR DAG unpaused (its scheduled run done, with raw/ empty if it was paused) and uploads in
    the bucket, whether test_ui_emr.py ran first or not."""
    s3 = aws["s3"]
    if BUCKET not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [  # the bucket guard
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/fruits"}}]})
    if airflow.api("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"]:
        airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
        (run,) = airflow.wait_for(lambda: airflow.dag_runs(DAG_ID), 60, "the scheduled run of the last interval")
        airflow.wait_for_run(DAG_ID, run["dag_run_id"], RUN_TIMEOUT_SECONDS)
    images = [image for label in sorted(images_dir.iterdir())[:2] for image in sorted(label.iterdir())[:2]]
    for image in images:
        s3.put_object(Bucket=BUCKET, Key=f"raw/{image.parent.name}/{image.name}", Body=image.read_bytes())


def _restart(airflow, *components: str) -> None:
    for component in components:
        airflow.launch(component)
    airflow.wait_ready(240)


@pytest.fixture(scope="module")
def run_through_outages(airflow, aws, emr_dag) -> dict:
    run_id = _trigger(airflow, {"full_refresh": True})  # every upload again: a run with work

    # Outage 1: triggerer and scheduler die while the features sensor waits in the triggerer; its step
    # ends meanwhile. The new triggerer takes the trigger over once the old one's heartbeat is stale.
    ti = _wait_until_deferred(airflow, run_id, "watch_extract_features")
    cluster_id, step_id = _step_ids(ti)
    airflow.kill("triggerer")
    airflow.kill("scheduler")
    _complete(aws["s3"], cluster_id, step_id)
    _restart(airflow, "scheduler", "triggerer")

    # Outage 2: the api-server (the tasks' Execution API) dies while the PCA sensor is deferred.
    ti = _wait_until_deferred(airflow, run_id, "watch_reduce_pca")
    airflow.kill("api-server")
    _complete(aws["s3"], *_step_ids(ti))
    _restart(airflow, "api-server")
    _complete(aws["s3"], *_step_ids(_wait_until_deferred(airflow, run_id, "watch_train_classifier")))
    _complete(aws["s3"], *_step_ids(_wait_until_deferred(airflow, run_id, "watch_predict_uploads")))

    run = airflow.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_SECONDS)
    tis = airflow.task_instances(DAG_ID, run_id)
    run_key = run_key_for("manual", run_id, None)
    return {"run": run, "tis": tis, "cluster_id": cluster_id,
            "clusters": [c for c in all_clusters() if c.name == cluster_name(run_key)]}


def test_killing_the_scheduler_and_the_triggerer_mid_run_loses_nothing(run_through_outages):
    states = {k: v["state"] for k, v in run_through_outages["tis"].items()}
    assert run_through_outages["run"]["state"] == "success", json.dumps(states)
    assert states["watch_extract_features"] == "success" and states["terminate_cluster"] == "success", states
    (cluster,) = run_through_outages["clusters"]  # created once
    assert cluster.id == run_through_outages["cluster_id"] and cluster.state == "TERMINATED"
    assert [step.name.split()[0] for step in cluster.steps] == ["extract_features", "reduce_pca",
                                                                "train_classifier", "predict_uploads"], "added once"
    assert [step.state for step in cluster.steps] == ["COMPLETED"] * 4


def test_killing_the_api_server_mid_run_loses_nothing(run_through_outages):
    states = {k: v["state"] for k, v in run_through_outages["tis"].items()}
    # The sensor resumed while the api-server was down: its Execution API calls waited for the restart
    # (AIRFLOW__WORKERS__EXECUTION_API_RETRIES; with the default it failed as a "state mismatch").
    assert states["watch_reduce_pca"] == "success" and states["report"] == "success", json.dumps(states)
    assert cluster_by_id(run_through_outages["cluster_id"]).state == "TERMINATED"
