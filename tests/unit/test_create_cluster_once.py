"""A kill while create_cluster runs: RunJobFlow succeeded, the task died before returning the id, and
the task runs again (retry, clear, lost worker). It must not create a second cluster for the run."""
from __future__ import annotations

from unittest import mock

from airflow.providers.amazon.aws.links.emr import EmrClusterLink, EmrLogsLink

from fruits_pipeline.emr import FruitsCreateClusterOperator
from fruits_pipeline.job_flow import PROJECT_TAG, cluster_name
from fruits_pipeline.orphans import run_clusters
from moto_emr import REGION

RUN_KEY = "2026-11-22T000000Z"


def job_flow(run_key: str) -> dict:
    return {"Name": cluster_name(run_key), "ReleaseLabel": "emr-7.10.0", "JobFlowRole": "EMR_EC2_DefaultRole",
            "ServiceRole": "EMR_DefaultRole",
            "Instances": {"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
            "Tags": [{"Key": "project", "Value": PROJECT_TAG}, {"Key": "run_key", "Value": run_key}]}


def operator(run_key: str) -> FruitsCreateClusterOperator:
    return FruitsCreateClusterOperator(task_id="create_cluster", job_flow_overrides=job_flow(run_key),
                                       aws_conn_id=None, emr_conn_id=None, region_name=REGION)


def test_running_create_cluster_again_after_a_kill_reuses_the_run_cluster(emr):
    killed_attempt = emr.run_job_flow(**job_flow(RUN_KEY))["JobFlowId"]  # then the worker died
    emr.run_job_flow(**job_flow("2026-11-21T000000Z"))  # another run's cluster is not this run's

    with mock.patch.object(EmrClusterLink, "persist") as cluster_link, mock.patch.object(EmrLogsLink, "persist"):
        again = operator(RUN_KEY).execute({})

    assert again == killed_attempt
    assert run_clusters(emr, RUN_KEY) == [killed_attempt], "one cluster for the run"
    # the task page links to the cluster it found, as it would to one it created
    assert cluster_link.call_args.kwargs["job_flow_id"] == killed_attempt


def test_a_terminated_cluster_of_the_run_is_not_reused(emr):
    """A rerun of a day whose cluster its teardown already terminated gets a new cluster."""
    old = emr.run_job_flow(**job_flow(RUN_KEY))["JobFlowId"]
    emr.terminate_job_flows(JobFlowIds=[old])
    with mock.patch("airflow.providers.amazon.aws.operators.emr.EmrClusterLink.persist"), \
            mock.patch("airflow.providers.amazon.aws.operators.emr.EmrLogsLink.persist"):
        new = operator(RUN_KEY).execute({})
    assert new != old and run_clusters(emr, RUN_KEY) == [new]
