"""Whole DAG runs in EMR mode against a moto server (S3 + EMR), with deferrable sensors.

moto never runs or finishes EMR steps: a background thread in this process (the server
shares moto's backends with it) moves each step to its final state and writes the small
result files the Spark jobs would have written, so that the report task has something to read.

Every AWS call the DAG and the provider make is recorded (botocore and aiobotocore, in this
process) and evaluated against the Airflow role's IAM document (fruits_infra.authorization):
moto's own IAM enforcement ignores resource ARNs outside S3 and most conditions.
"""
from __future__ import annotations

import io
import json

import pyarrow.parquet as pq

from fruits_pipeline.job_code import bootstrap_pins
from fruits_pipeline.settings import REPO_ROOT

from generated_images import write_generated_images
from moto_emr import ACCOUNT, REGION, all_clusters

from .conftest import SUBNET

KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/fruits"


def upload_images(s3, bucket, tmp_path, corrupt=True):
    for path in write_generated_images(tmp_path / "images", per_label=2, labels=("apple red", "kiwi")):
        s3.put_object(Bucket=bucket, Key=f"raw/{path.parent.name}/{path.name}", Body=path.read_bytes())
    if corrupt:
        s3.put_object(Bucket=bucket, Key="raw/kiwi/broken.jpg", Body=b"\xff\xd8\xff\xe0 this is not a jpeg")
        s3.put_object(Bucket=bucket, Key="raw/kiwi/empty.jpg", Body=b"")


def airflow_role_refusals(calls, bucket) -> list[str]:
    """The recorded calls the Airflow role's document (rendered for this account and lake) would refuse."""
    from fruits_infra.authorization import Account, denied, requests_for_call
    from fruits_infra.policies import PolicyContext, render
    from fruits_pipeline.settings import Settings

    settings = Settings.from_env()
    context = PolicyContext(account=ACCOUNT, region=REGION, bucket=bucket, prefix="", key_arn=KEY_ARN,
                            service_role=settings.emr_service_role, instance_role=settings.emr_instance_profile,
                            airflow_role="fruits-airflow", airflow_principal=f"arn:aws:iam::{ACCOUNT}:root")
    clusters = {c.id: c for c in all_clusters()}
    account = Account(ACCOUNT, REGION, KEY_ARN, cluster_tags=lambda cluster_id: dict(clusters[cluster_id]._tags))
    requests = [r for service, operation, params in calls for r in requests_for_call(service, operation, params, account)]
    return denied([render("airflow_inline", context)], requests)


def run_dag(run_conf=None):
    from airflow.utils.cli import get_bagged_dag

    dag = get_bagged_dag(None, "fruits_pipeline")  # parses dags/ with the current env and serializes it
    return dag.test(run_conf=run_conf or {})


def task_states(dag_run):
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def read_report(s3, bucket):
    (key,) = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="reports/").get("Contents", [])
              if o["Key"].endswith(".json")]
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_emr_run_processes_new_uploads_and_terminates_the_cluster(aws, lake_bucket, step_finisher, tmp_path,
                                                                  aws_calls):
    s3 = aws["s3"]
    upload_images(s3, lake_bucket, tmp_path)
    clusters_before = {c.id for c in all_clusters()}
    step_finisher()

    dag_run = run_dag({"use_spot": True, "core_instance_count": 3})

    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    (cluster,) = [c for c in all_clusters() if c.id not in clusters_before]
    assert cluster.state == "TERMINATED"
    described = aws["emr"].describe_cluster(ClusterId=cluster.id)["Cluster"]
    tags = {tag["Key"]: tag["Value"] for tag in described["Tags"]}
    assert tags.get("data-residency") == REGION and tags.get("project") == "fruits-pipeline"
    assert [step.state for step in cluster.steps] == ["COMPLETED"] * 4
    assert [step.name.split()[0] for step in cluster.steps] == ["extract_features", "reduce_pca", "train_classifier", "predict_uploads"]
    assert states["watch_train_classifier"] == "success"
    assert cluster.steps[0].args[:3] == ["spark-submit", "--deploy-mode", "cluster"]

    report = read_report(s3, lake_bucket)
    assert report["status"] == "success" and report["cluster_id"] == cluster.id
    counts = report["counts"]
    assert (counts["listed"], counts["valid"], counts["rejected"], counts["featurized"]) == (6, 4, 2, 4)
    assert counts["rejected_by_reason"] == {"bad_header": 1, "empty": 1}
    assert report["reconciliation"] == [] and report["pca"]["k"] == 3
    classifier = report["classifier"]
    assert classifier["uri"] == f"s3://{lake_bucket}/classifier/{report['run_key']}"
    assert set(classifier) == {"uri", "accuracy", "macro_f1", "per_label", "confusion_matrix", "accuracy_by_k",
                               "accuracy_by_k_measured", "fits", "excluded_labels", "n_train", "n_test", "unsure",
                               "publication", "labelled_uploads"}
    assert (classifier["accuracy"], classifier["n_test"]) == (0.75, 4)
    assert [s["name"].split()[0] for s in report["steps"]] == ["extract_features", "reduce_pca", "train_classifier", "predict_uploads"]
    assert report["estimated_cost"]["core"] == {"instance_type": "m5.xlarge", "count": 3, "market": "SPOT"}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=lake_bucket)["Contents"]}
    assert any(k.startswith("models/tiny-") and k.endswith("/tiny.tflite") for k in keys)
    code_prefix = report_code_prefix = next(k for k in keys if k.endswith("/fruits_spark.zip")).rsplit("/", 1)[0]
    wheels = sum(k.startswith(f"{code_prefix}/wheelhouse/") and k.endswith(".whl") for k in keys)
    assert wheels == 2 * len(bootstrap_pins(REPO_ROOT / "spark_jobs"))  # each pin for two architectures
    assert described["Ec2InstanceAttributes"]["Ec2SubnetId"] == SUBNET
    assert tags.get("for-use-with-amazon-emr-managed-policies") == "true"
    (bootstrap,) = aws["emr"].list_bootstrap_actions(ClusterId=cluster.id)["BootstrapActions"]
    assert bootstrap["Args"] == [f"s3://{lake_bucket}/{report_code_prefix}/wheelhouse"]
    assert report["orphan_clusters_terminated"] == []

    # Every call of the run, checked against the Airflow role's document.
    operations = {(service, operation) for service, operation, _ in aws_calls}
    print("AWS calls of the run:", " ".join(sorted(f"{s}:{o}" for s, o in operations)))
    assert {("emr", "RunJobFlow"), ("emr", "ListClusters"), ("emr", "AddJobFlowSteps"), ("emr", "DescribeStep"),
            ("emr", "TerminateJobFlows"), ("s3", "PutObject"), ("s3", "GetBucketEncryption")} <= operations
    assert airflow_role_refusals(aws_calls, lake_bucket) == []
    assert any(k.startswith("code/") and k.endswith("/fruits_spark.zip") for k in keys)
    assert sum(k.startswith("raw/") for k in keys) == 6  # raw/ untouched
    rejected = pq.read_table(io.BytesIO(s3.get_object(
        Bucket=lake_bucket, Key=f"manifests/{report['run_key']}/rejected/part-00000.parquet")["Body"].read()))
    assert sorted(rejected.column("path").to_pylist()) == [f"s3://{lake_bucket}/raw/kiwi/broken.jpg",
                                                          f"s3://{lake_bucket}/raw/kiwi/empty.jpg"]


def test_a_failed_step_fails_the_run_and_still_terminates_the_cluster(aws, lake_bucket, step_finisher, tmp_path,
                                                                      capfd, aws_calls):
    s3 = aws["s3"]
    upload_images(s3, lake_bucket, tmp_path, corrupt=False)
    clusters_before = {c.id for c in all_clusters()}
    step_finisher(fail_first_step=True, delay_seconds=3)  # fails while the sensor is deferred

    dag_run = run_dag()
    output = capfd.readouterr()

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["watch_extract_features"] == "failed"
    assert states["terminate_cluster"] == "success"
    (cluster,) = [c for c in all_clusters() if c.id not in clusters_before]
    assert cluster.state == "TERMINATED"
    step_id = cluster.steps[0].id
    assert "Step failed with exitCode 1 (test)" in output.out + output.err  # the sensor names the reason
    assert f"s3://{lake_bucket}/logs/emr/{cluster.id}/steps/{step_id}/" in output.out + output.err  # and the logs
    report = read_report(s3, lake_bucket)
    assert report["status"] == "failed" and "extract_features" in report["message"]
    assert airflow_role_refusals(aws_calls, lake_bucket) == []  # the failure path's calls too


def test_no_new_upload_creates_no_cluster_and_succeeds(aws, lake_bucket, step_finisher):
    clusters_before = len(all_clusters())
    dag_run = run_dag()
    assert str(dag_run.state) == "success", task_states(dag_run)
    assert len(all_clusters()) == clusters_before
    report = read_report(aws["s3"], lake_bucket)
    assert report["status"] == "success" and "nothing to do" in report["message"]
    assert report["cluster_id"] is None


def test_an_unencrypted_bucket_gets_no_cluster(aws, lake_bucket, step_finisher, tmp_path):
    s3 = aws["s3"]
    s3.delete_bucket_encryption(Bucket=lake_bucket)
    upload_images(s3, lake_bucket, tmp_path, corrupt=False)
    clusters_before = len(all_clusters())

    dag_run = run_dag()

    states = task_states(dag_run)
    assert str(dag_run.state) == "failed" and states["clean_up_and_stage"] == "failed", states
    assert states["create_cluster"] == "upstream_failed"
    assert len(all_clusters()) == clusters_before
    assert read_report(s3, lake_bucket)["status"] == "failed"


def _mark_running_run_failed():
    """What the UI's "mark run failed" does (the public API's service calls the same function)."""
    from airflow.api.common.mark_tasks import set_dag_run_state_to_failed
    from airflow.models.dagbag import DBDagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        dag_run = session.scalars(select(DagRun).where(DagRun.dag_id == "fruits_pipeline",
                                                       DagRun.state == "running")).one()
        dag = DBDagBag().get_dag_for_run(dag_run, session=session)
        set_dag_run_state_to_failed(dag=dag, run_id=dag_run.run_id, commit=True, session=session)


def test_a_run_marked_failed_while_create_cluster_runs_still_terminates_its_cluster(
        aws, lake_bucket, step_finisher, tmp_path, monkeypatch):
    """RunJobFlow went through, then the run was marked failed and create_cluster killed before it
    returned the id: the teardown finds the cluster by its tags (ALL_DONE: under the teardown default
    ALL_DONE_SETUP_SUCCESS it would end upstream_failed and the cluster wait for the idle backstop)."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    upload_images(aws["s3"], lake_bucket, tmp_path, corrupt=False)
    clusters_before = {c.id for c in all_clusters()}
    create = EmrHook.create_job_flow

    def create_then_killed(self, job_flow_overrides):
        create(self, job_flow_overrides)
        _mark_running_run_failed()
        raise RuntimeError("killed: the run was marked failed while create_cluster ran")

    monkeypatch.setattr(EmrHook, "create_job_flow", create_then_killed)
    dag_run = run_dag()

    states = task_states(dag_run)
    # (Airflow leaves a run marked failed running until its pending teardown is done, then recomputes its
    # state from the leaves, which marking skipped: the run ends as Airflow decides; the cluster must go.)
    assert states["create_cluster"] == "failed" and states["add_steps"] == "skipped", states
    assert states["terminate_cluster"] == "success", states
    (cluster,) = [c for c in all_clusters() if c.id not in clusters_before]
    assert cluster.state == "TERMINATED"
    assert cluster.steps == []


def _age(cluster, seconds):
    from datetime import timedelta

    cluster.creation_datetime = cluster.creation_datetime - timedelta(seconds=seconds)  # moto keeps naive UTC


def test_the_next_run_terminates_clusters_earlier_runs_left_and_reports_them(aws, lake_bucket, step_finisher,
                                                                           tmp_path, aws_calls):
    """A cluster whose run died with no teardown at all (scheduler lost): the next run terminates it
    before creating its own, leaves a young one of another run and a cluster of another project alone."""
    from fruits_pipeline.job_flow import cluster_name, cluster_tags
    from fruits_pipeline.settings import Settings

    emr, settings = aws["emr"], Settings.from_env()

    def leave_cluster(name, tags):
        return emr.run_job_flow(Name=name, ReleaseLabel="emr-7.10.0", Tags=tags, JobFlowRole="r", ServiceRole="r",
                                Instances={"InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True,
                                           "MasterInstanceType": "m5.xlarge"})["JobFlowId"]

    orphan = leave_cluster(cluster_name("2026-11-28T000000Z"), cluster_tags(settings, "2026-11-28T000000Z"))
    young = leave_cluster(cluster_name("2026-11-29T000000Z"), cluster_tags(settings, "2026-11-29T000000Z"))
    foreign = leave_cluster("fruits-pipeline-lookalike", [{"Key": "project", "Value": "someone-else"}])
    other = leave_cluster("analytics", [{"Key": "project", "Value": "analytics"}])
    backend_clusters = {c.id: c for c in all_clusters()}
    for cluster_id in (orphan, foreign, other):
        _age(backend_clusters[cluster_id], 3 * 3600)
    _age(backend_clusters[young], 60)
    upload_images(aws["s3"], lake_bucket, tmp_path, corrupt=False)
    step_finisher()

    dag_run = run_dag()

    assert str(dag_run.state) == "success", task_states(dag_run)
    states = {cluster_id: backend_clusters[cluster_id].state for cluster_id in (orphan, young, foreign, other)}
    assert states[orphan] == "TERMINATED"
    assert {states[young], states[foreign], states[other]} <= {"WAITING", "RUNNING", "STARTING", "BOOTSTRAPPING"}
    (listed,) = read_report(aws["s3"], lake_bucket)["orphan_clusters_terminated"]
    assert listed["cluster_id"] == orphan and listed["run_key"] == "2026-11-28T000000Z"
    assert listed["age_seconds"] >= 3 * 3600
    # Only describing the lookalike is refused by the Airflow role (another project's tag): on AWS that is an
    # AccessDenied, which the cleanup skips (tests/unit/test_orphans.py); moto answers it.
    refused = airflow_role_refusals(aws_calls, lake_bucket)
    assert len(refused) == 1 and refused[0].startswith(f"elasticmapreduce:DescribeCluster on "
                                                       f"arn:aws:elasticmapreduce:{REGION}:{ACCOUNT}:cluster/{foreign}")
    for cluster_id in (young, foreign, other):  # clean up for the tests after this one
        emr.terminate_job_flows(JobFlowIds=[cluster_id])
