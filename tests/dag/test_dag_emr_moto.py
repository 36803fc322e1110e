"""Whole DAG runs in EMR mode against a moto server (S3 + EMR), with deferrable sensors.

moto never runs or finishes EMR steps: a background thread in this process (the server
shares moto's backends with it) moves each step to its final state and writes the small
result files the Spark jobs would have written, so that the report task has something to read.
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def moto_endpoint():
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def aws(moto_endpoint, monkeypatch, airflow_db):
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": moto_endpoint, "region_name": REGION},
    }))
    monkeypatch.setenv("FRUITS_POLL_SECONDS", "1")
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")
    monkeypatch.setenv("FRUITS_REGION", REGION)
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
    weights = tmp_path / "tiny.weights.h5"
    weights.write_bytes(b"not really weights")
    monkeypatch.setenv("FRUITS_WEIGHTS", str(weights))
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


def test_emr_run_processes_new_uploads_and_terminates_the_cluster(aws, lake_bucket, step_finisher, tmp_path):
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
    assert "models/tiny.weights.h5" in keys
    assert any(k.startswith("code/") and k.endswith("/fruits_spark.zip") for k in keys)
    assert sum(k.startswith("raw/") for k in keys) == 6  # raw/ untouched
    rejected = pq.read_table(io.BytesIO(s3.get_object(
        Bucket=lake_bucket, Key=f"manifests/{report['run_key']}/rejected/part-00000.parquet")["Body"].read()))
    assert sorted(rejected.column("path").to_pylist()) == [f"s3://{lake_bucket}/raw/kiwi/broken.jpg",
                                                          f"s3://{lake_bucket}/raw/kiwi/empty.jpg"]


def test_a_failed_step_fails_the_run_and_still_terminates_the_cluster(aws, lake_bucket, step_finisher, tmp_path,
                                                                      capfd):
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
