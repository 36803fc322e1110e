"""Airflow for the DAG tests: a throwaway AIRFLOW_HOME on SQLite, the repo's dags/ folder.

The environment is set when this file is imported, before anything imports Airflow
(Airflow reads its configuration once, at import).
"""
from __future__ import annotations

import json
import os
import tempfile
import threading
from datetime import datetime, timezone
from pathlib import Path

import boto3
import pytest

from moto_emr import REGION, all_clusters, complete_step, end_step, moto_server, write_fake_wheelhouse

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


# --- EMR mode against a moto server (S3 + EMR), shared by the EMR DAG test modules ---------------
SUBNET = "subnet-0f1e36df00000000"  # moto's EMR accepts any subnet id; the network is tested in tests/infra


@pytest.fixture(scope="session")  # one server for every module using it: Airflow caches a connection's filesystem
def moto_endpoint():
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(scope="session")
def fake_wheelhouse(tmp_path_factory):
    """A wheel file name per bootstrap pin and architecture: what stage_code checks and ships."""
    return write_fake_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


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


class StepFinisher(threading.Thread):
    """Plays the cluster: finishes each pending/running step (step 1 fails when asked); with preview,
    also writes what the PCA job writes for the run's picture (tests/moto_emr.py)."""

    def __init__(self, s3, fail_first_step: bool, delay_seconds: float = 0.0, preview: bool = False):
        super().__init__(daemon=True)
        self.s3, self.fail_first_step, self.stop = s3, fail_first_step, threading.Event()
        self.delay_seconds = delay_seconds  # long enough and the sensor defers before the step ends
        self.preview = preview
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
        if not self.fail_first_step:
            complete_step(self.s3, step, self.preview)
            return
        end_step(step, "FAILED" if index == 0 else "CANCELLED")
        step.last_state_change_reason = "Step failed with exitCode 1 (test)" if index == 0 else "cancelled"


@pytest.fixture
def step_finisher(aws):
    finishers = []

    def start(fail_first_step=False, delay_seconds=0.0, preview=False):
        finisher = StepFinisher(aws["s3"], fail_first_step, delay_seconds, preview)
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
