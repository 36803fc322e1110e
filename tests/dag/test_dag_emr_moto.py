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
import socket
import threading
from datetime import datetime, timezone

import boto3
import pyarrow.parquet as pq
import pytest

from generated_images import write_generated_images

REGION = "eu-west-3"
ACCOUNT = "123456789012"
SUBNET = "subnet-0f1e36df00000000"  # moto's EMR accepts any subnet id; the network is tested in tests/infra
KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/fruits"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")  # one server for every module using it: Airflow caches a connection's filesystem
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def fake_wheelhouse(tmp_path_factory):
    """A wheel file name per bootstrap pin and architecture: what stage_code checks and ships."""
    from fruits_pipeline.code_package import ARCHITECTURES, bootstrap_pins
    from fruits_pipeline.settings import REPO_ROOT

    folder = tmp_path_factory.mktemp("wheelhouse")
    for pin in bootstrap_pins(REPO_ROOT / "spark_jobs"):
        name, version = pin.split("==")
        for arch in ARCHITECTURES:
            (folder / f"{name.replace('-', '_')}-{version}-cp311-cp311-manylinux_2_28_{arch}.whl").write_bytes(b"w")
    return folder


@pytest.fixture
def aws(moto_endpoint, monkeypatch, airflow_db, fake_wheelhouse):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "region_name": REGION},
    }))
    monkeypatch.setenv("FRUITS_POLL_SECONDS", "1")
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")
    monkeypatch.setenv("FRUITS_REGION", REGION)
    monkeypatch.setenv("FRUITS_EMR_SUBNET_ID", SUBNET)
    monkeypatch.setenv("FRUITS_WHEELHOUSE", str(fake_wheelhouse))
    return {name: boto3.client(name, region_name=REGION, endpoint_url=moto_endpoint)
            for name in ("s3", "emr")}


@pytest.fixture
def lake_bucket(aws, monkeypatch, request, tmp_path):
    """An encrypted eu-west-3 bucket with 4 good uploads and 2 corrupt ones under raw/."""
    bucket = "fruits-" + request.node.name.lower().replace("_", "-")[:40]
    s3 = aws["s3"]
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/fruits"}}]})
    monkeypatch.setenv("FRUITS_LAKE_URI", f"s3://{bucket}")
    model = tmp_path / "tiny.tflite"
    model.write_bytes(b"not really a flatbuffer")
    monkeypatch.setenv("FRUITS_MODEL", str(model))
    return bucket


def upload_images(s3, bucket, tmp_path, corrupt=True):
    for path in write_generated_images(tmp_path / "images", per_label=2, labels=("apple red", "kiwi")):
        s3.put_object(Bucket=bucket, Key=f"raw/{path.parent.name}/{path.name}", Body=path.read_bytes())
    if corrupt:
        s3.put_object(Bucket=bucket, Key="raw/kiwi/broken.jpg", Body=b"\xff\xd8\xff\xe0 this is not a jpeg")
        s3.put_object(Bucket=bucket, Key="raw/kiwi/empty.jpg", Body=b"")


def emr_backends():
    from moto.backends import get_backend

    accounts = get_backend("emr")[ACCOUNT]
    # moto's server files EMR calls under us-east-1 whatever region the client asked for
    return [accounts[region] for region in ("us-east-1", REGION)]


def all_clusters():
    return [cluster for backend in emr_backends() for cluster in backend.clusters.values()]


def arg_after(args, flag):
    return args[args.index(flag) + 1]


def write_json(s3, uri, payload):
    bucket, key = uri[len("s3://"):].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(payload).encode())


class StepFinisher(threading.Thread):
    """Plays the cluster: finishes each pending/running step (step 1 fails when asked)."""

    def __init__(self, s3, fail_first_step: bool, delay_seconds: float = 0.0):
        super().__init__(daemon=True)
        self.s3, self.fail_first_step, self.stop = s3, fail_first_step, threading.Event()
        self.delay_seconds = delay_seconds  # long enough and the sensor defers before the step ends
        self.errors: list[str] = []

    def run(self):
        while not self.stop.wait(0.2):
            for cluster in all_clusters():
                for index, step in enumerate(cluster.steps):
                    if step.state not in ("PENDING", "RUNNING"):
                        continue
                    try:
                        created = step.creation_date_time.replace(tzinfo=timezone.utc)  # moto keeps naive UTC
                        if (datetime.now(timezone.utc) - created).total_seconds() >= self.delay_seconds:
                            self.finish(cluster, index, step)
                    except Exception as error:  # fail the step rather than leave the sensor waiting
                        self.errors.append(repr(error))
                        step.state = "FAILED"

    def finish(self, cluster, index, step):
        now = datetime.now(timezone.utc)
        step.start_date_time = step.start_date_time or now
        step.end_date_time = now
        if self.fail_first_step:
            step.state = "FAILED" if index == 0 else "CANCELLED"
            step.last_state_change_reason = "Step failed with exitCode 1 (test)" if index == 0 else "cancelled"
            return
        args = step.args
        output = arg_after(args, "--output")
        if "extract_features" in step.name:
            manifest = arg_after(args, "--manifest")
            bucket, key = manifest[len("s3://"):].split("/", 1)
            body = self.s3.get_object(Bucket=bucket, Key=f"{key}/part-00000.parquet")["Body"].read()
            valid = pq.read_table(io.BytesIO(body)).num_rows
            write_json(self.s3, f"{output}/_job_result.json",
                       {"job": "extract_features", "read": valid, "featurized": valid, "rejected": 0, "seconds": 1})
        else:
            report = {"k": 3, "explained_variance_ratio": [0.5, 0.3, 0.15], "cumulative": 0.95,
                      "n_images": 4, "input_dim": 1280}
            write_json(self.s3, f"{output}/_pca_report.json", report)
            write_json(self.s3, f"{output}/_job_result.json",
                       {"job": "reduce_pca", "n_images": 4, "k": 3, "variance_kept": 0.95, "seconds": 1})
        step.state = "COMPLETED"


@pytest.fixture
def step_finisher(aws):
    finishers = []

    def start(fail_first_step=False, delay_seconds=0.0):
        finisher = StepFinisher(aws["s3"], fail_first_step, delay_seconds)
        finisher.start()
        finishers.append(finisher)
        return finisher

    yield start
    for finisher in finishers:
        finisher.stop.set()
        finisher.join(timeout=5)
    assert [e for f in finishers for e in f.errors] == []


@pytest.fixture
def aws_calls(aws, monkeypatch):
    """(service, operation, params) of every AWS call made by anything but this test's own clients."""
    import botocore.client
    from aiobotocore.client import AioBaseClient

    ours = {id(client) for client in aws.values()}
    calls: list[tuple[str, str, dict]] = []

    def record(client, operation, params):
        if id(client) not in ours:
            calls.append((client.meta.service_model.service_name, operation, dict(params)))

    sync_call, async_call = botocore.client.BaseClient._make_api_call, AioBaseClient._make_api_call

    def recorded_sync(self, operation, params):
        record(self, operation, params)
        return sync_call(self, operation, params)

    async def recorded_async(self, operation, params):
        record(self, operation, params)
        return await async_call(self, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recorded_sync)
    monkeypatch.setattr(AioBaseClient, "_make_api_call", recorded_async)
    return calls


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
    assert [step.state for step in cluster.steps] == ["COMPLETED", "COMPLETED"]
    assert cluster.steps[0].args[:3] == ["spark-submit", "--deploy-mode", "cluster"]

    report = read_report(s3, lake_bucket)
    assert report["status"] == "success" and report["cluster_id"] == cluster.id
    counts = report["counts"]
    assert (counts["listed"], counts["valid"], counts["rejected"], counts["featurized"]) == (6, 4, 2, 4)
    assert counts["rejected_by_reason"] == {"empty": 1, "undecodable": 1}
    assert report["reconciliation"] == [] and report["pca"]["k"] == 3
    assert report["estimated_cost"]["core"] == {"instance_type": "m5.xlarge", "count": 3, "market": "SPOT"}
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=lake_bucket)["Contents"]}
    assert any(k.startswith("models/tiny-") and k.endswith("/tiny.tflite") for k in keys)
    code_prefix = report_code_prefix = next(k for k in keys if k.endswith("/fruits_spark.zip")).rsplit("/", 1)[0]
    assert sum(k.startswith(f"{code_prefix}/wheelhouse/") and k.endswith(".whl") for k in keys) == 10
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
    assert str(dag_run.state) == "failed" and states["stage_and_plan"] == "failed", states
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
