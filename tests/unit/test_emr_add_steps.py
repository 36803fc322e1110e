"""Adding a run's steps is idempotent: running add_steps again on the same cluster adds nothing."""
from __future__ import annotations

import pytest

from fruits_pipeline.emr import FruitsAddStepsOperator, steps_already_added
from moto_emr import REGION

STEPS = [
    {"Name": f"{name} 2026-11-22T000000Z", "ActionOnFailure": "CANCEL_AND_WAIT",
     "HadoopJarStep": {"Jar": "command-runner.jar", "Args": ["spark-submit", f"{name}.py"]}}
    for name in ("extract_features", "reduce_pca")
]


@pytest.fixture
def emr_cluster(emr):
    cluster_id = emr.run_job_flow(
        Name="fruits test", ReleaseLabel="emr-7.10.0", JobFlowRole="EMR_EC2_DefaultRole",
        ServiceRole="EMR_DefaultRole",
        Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
    )["JobFlowId"]
    return emr, cluster_id


def _operator(cluster_id):
    return FruitsAddStepsOperator(task_id="add_steps", job_flow_id=cluster_id, steps=STEPS,
                                  aws_conn_id=None, region_name=REGION)


def test_steps_already_added_finds_this_runs_steps_in_order(emr_cluster):
    client, cluster_id = emr_cluster
    names = [step["Name"] for step in STEPS]
    assert steps_already_added(client, cluster_id, names) is None
    added = client.add_job_flow_steps(JobFlowId=cluster_id, Steps=STEPS)["StepIds"]
    assert steps_already_added(client, cluster_id, names) == added
    assert steps_already_added(client, cluster_id, ["reduce_pca another-run"]) is None


def test_running_add_steps_again_returns_the_existing_steps_instead_of_adding_them(emr_cluster):
    client, cluster_id = emr_cluster
    first = client.add_job_flow_steps(JobFlowId=cluster_id, Steps=STEPS)["StepIds"]
    pushed = {}
    ti = type("TaskInstance", (), {"xcom_push": lambda self, key, value: pushed.update({key: value})})()
    again = _operator(cluster_id).execute({"ti": ti})
    assert again == first
    assert pushed["step_id_of"] == {"extract_features": first[0], "reduce_pca": first[1]}  # what the sensors read
    assert len(client.list_steps(ClusterId=cluster_id)["Steps"]) == len(STEPS)
    # the provider's links of the cluster, as its own execute would have stored them
    assert pushed["emr_cluster"]["job_flow_id"] == cluster_id and pushed["emr_cluster"]["region_name"] == REGION
    assert pushed["emr_logs"]["job_flow_id"] == cluster_id
