"""Faults a deployment meets on AWS, injected on moto: S3 throttling and dropped connections, and a kill
while create_cluster or add_steps runs (docs/reliability.md)."""
from __future__ import annotations

import json

import boto3
import pytest

from generated_images import write_generated_images
from moto_emr import REGION
from moto_faults import faulty_moto_server
from fruits_pipeline import storage, tasks
from fruits_pipeline.settings import Settings

BUCKET = "fruits-faults"


@pytest.fixture(scope="module")
def faulty_s3(tmp_path_factory):
    """(endpoint, injector, s3 client) of a moto server that throttles or drops requests when told, with a
    bucket holding four uploads."""
    with faulty_moto_server() as (endpoint, injector):
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        root = tmp_path_factory.mktemp("uploads")
        for path in write_generated_images(root, per_label=2, labels=("apple red", "kiwi")):
            s3.upload_file(str(path), BUCKET, f"raw/{path.relative_to(root)}")
        yield endpoint, injector, s3


def use_connection(monkeypatch, conn_id: str, endpoint: str, **extra) -> Settings:
    """Settings of a lake in the faulty bucket through connection ``conn_id`` (its own cached filesystem)."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": REGION, **extra}}))
    return Settings.from_env({"FRUITS_LAKE_URI": f"s3://{BUCKET}", "AWS_CONN_ID": conn_id, "FRUITS_REGION": REGION})


def test_throttling_and_dropped_connections_are_retried_and_reported(faulty_s3, monkeypatch):
    endpoint, injector, s3 = faulty_s3
    settings = use_connection(monkeypatch, "aws_flaky", endpoint)
    injector.clear()
    injected = [
        injector.inject("slowdown", "GET", "list-type=2&prefix=raw", times=2),  # listing raw/
        injector.inject("drop", "GET", "/raw/kiwi/img_001.jpg", times=2),  # an upload's bytes
        injector.inject("slowdown", "PUT", "/manifests/", times=2),  # the manifests
        injector.inject("drop", "PUT", "/reports/", times=1),  # the report
    ]

    plan = tasks.validate_and_plan(settings, {"dry_run": True}, "flaky")
    validation = plan.validation
    report = tasks.write_run_report(settings, plan)

    assert [fault.served for fault in injected] == [2, 2, 2, 1], "every fault was met"
    assert validation["valid"] == 4 and validation["rejected"] == 0
    written = json.loads(s3.get_object(Bucket=BUCKET, Key="reports/flaky.json")["Body"].read())
    assert written["status"] == "success" and written["counts"]["valid"] == 4
    details = " | ".join(f["detail"] for f in report["faults"] if f["kind"] == "s3_retried")
    assert "ListObjectsV2: SlowDown x2" in details and "PutObject: SlowDown x2" in details
    # One drop or two: aiohttp resends a GET once by itself when a reused keep-alive connection drops,
    # unseen by botocore (aiohttp's retry_persistent_connection); what botocore saw is what is counted.
    assert "GetObject: ConnectionClosedError x" in details
    assert "faults met" in tasks.summary_text(report)


def test_after_the_retries_the_task_fails_naming_the_object_and_the_error(faulty_s3, monkeypatch):
    endpoint, injector, _ = faulty_s3
    # One botocore attempt per call (the connection's config_kwargs reach the lake's filesystem; botocore's
    # max_attempts would count retries only): s3fs's own 5 tries remain, so running out takes seconds,
    # not the default 25 attempts (5 of botocore's legacy mode, 5 times).
    settings = use_connection(monkeypatch, "aws_throttled", endpoint,
                              config_kwargs={"retries": {"total_max_attempts": 1}})
    injector.clear()
    throttled = injector.inject("slowdown", "PUT", "/reports/throttled.json", times=-1)

    with pytest.raises(storage.LakeIOError, match=rf"writing s3://{BUCKET}/reports/throttled\.json failed "
                                                   r"after retries: .*reduce your request rate"):
        storage.write_json(settings.lake.report("throttled"), {"status": "success"}, settings.aws_conn_id)
    assert throttled.served == 5, "botocore's one attempt, then s3fs's own retries"


def test_hostile_keys_on_s3_are_processed_literally_or_rejected(faulty_s3, monkeypatch, tmp_path):
    from fruits_contract.lake import run_key_for
    from fruits_pipeline.validation import validate_uploads, write_manifests

    endpoint, injector, s3 = faulty_s3
    injector.clear()
    bucket = "fruits-hostile-names"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    image = write_generated_images(tmp_path, per_label=1, labels=("kiwi",))[0].read_bytes()
    keys = {"dots": "raw/../../x.jpg", "long": "raw/kiwi/" + "n" * 1000 + ".jpg", "plain": "raw/kiwi/a.jpg"}
    for key in keys.values():
        s3.put_object(Bucket=bucket, Key=key, Body=image)
    s3.put_object(Bucket=bucket, Key="raw/label/", Body=b"")  # a console's "create folder"
    monkeypatch.setenv("AIRFLOW_CONN_AWS_NAMES", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": REGION}}))
    lake = Settings.from_env({"FRUITS_LAKE_URI": f"s3://{bucket}", "FRUITS_REGION": REGION}).lake
    run_key = run_key_for("manual", "api run/../ 🍎", None)

    result = validate_uploads(lake, run_key, full_refresh=False, conn_id="aws_names", max_image_bytes=10**6,
                              min_image_side=32)
    write_manifests(lake, result, "aws_names")

    uri = {name: f"s3://{bucket}/{key}" for name, key in keys.items()}
    assert {row["path"] for row in result.valid} == {uri["long"], uri["plain"]}
    reasons = {row["path"]: row["reason"] for row in result.rejected}
    assert reasons.pop(uri["dots"]) == "unsafe_name"
    assert set(reasons) <= {f"s3://{bucket}/raw/label/"}, "the folder marker is skipped or rejected, nothing else"
    written = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]
                     if not o["Key"].startswith(("raw/", "ledger/")))
    assert written == [f"manifests/{run_key}/rejected/part-00000.parquet", f"manifests/{run_key}/valid/part-00000.parquet"]
    from fruits_pipeline import ledger

    assert {uri["long"], uri["plain"], uri["dots"]} <= set(ledger.pending_arrivals(lake, "aws_names")), \
        "the ledger on S3 holds each key literally"
