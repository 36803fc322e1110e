"""Thirty days of uploads against moto (S3, its notifications to SQS, the queue): the validate task's
S3 and SQS cost on day 25-30 is the cost of day 5-10, every upload is featurized once, and a
redelivered or lost notification changes nothing (issue 28).

Each day: the app uploads new photos (S3 notifies the queue), the validate task's work runs
(validation, its manifests, the confirmed labels) against the moto server, the day's feature batch is
committed as the feature job leaves it (its paths and its job result; the job itself is tested in
tests/spark), and the report task records the day in the ledger. Requests and response bytes are
counted at the server, so delta-rs, s3fs and boto3 are all seen.
"""
from __future__ import annotations

import io
import json

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fruits_contract.lake import JOB_RESULT_FILE, Lake
from fruits_pipeline import ledger
from fruits_pipeline.confirmed_labels import confirmed_labels
from fruits_pipeline.upload_events import UploadQueue
from fruits_pipeline.validation import known_uploads, validate_uploads, write_manifests
from moto_emr import REGION
from moto_faults import faulty_moto_server

BUCKET, QUEUE = "fruits-thirty-days", "fruits-uploads"
DAYS, UPLOADS_PER_DAY, HISTORY = 30, 12, 150
START = 1_796_000_000.0  # the first day's run, seconds since the epoch
DAY = 86_400
RECONCILE_EVERY_DAYS = 7
LOST_ON_DAY, REDELIVERED_ON_DAY = 11, 20
# What the ledger's state gains per day (a few file entries in its checkpoint) and the listing of
# features/' folders (one entry a day): bytes, not requests.
STATE_BYTES_PER_DAY = 4_000


def photo(n: int) -> bytes:
    sink = io.BytesIO()
    Image.new("RGB", (48, 40), (n % 251, (n // 251) % 251, 90)).save(sink, "JPEG")
    return sink.getvalue()


def commit_batch_as_the_feature_job_would(s3, lake: Lake, run_key: str, valid: list[dict]) -> None:
    sink = io.BytesIO()
    pq.write_table(pa.table({"path": [row["path"] for row in valid], "label": [row["label"] for row in valid]}), sink)
    prefix = f"features/batch={run_key}"
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/part-00000.parquet", Body=sink.getvalue())
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{JOB_RESULT_FILE}", Body=b"{}")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    with faulty_moto_server() as (endpoint, injector):
        s3 = boto3.client("s3", region_name=REGION, endpoint_url=endpoint)
        sqs = boto3.client("sqs", region_name=REGION, endpoint_url=endpoint)
        s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        for n in range(HISTORY):  # the lake before its queue: the first run's listing finds these
            s3.put_object(Bucket=BUCKET, Key=f"raw/Label{n % 5}/h{n}.jpg", Body=photo(n))
        url = sqs.create_queue(QueueName=QUEUE)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [
            {"Id": f"new-{folder}", "QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
             "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": f"{folder}/"}]}}}
            for folder in ("raw", "uploads")]})
        sqs.purge_queue(QueueUrl=url)
        yield endpoint, injector, s3, sqs, url


def run_days(world, monkeypatch) -> dict:
    endpoint, injector, s3, sqs, url = world
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DAYS", json.dumps({
        "conn_type": "aws", "login": "testing", "password": "testing",
        "extra": {"endpoint_url": endpoint, "region_name": REGION}}))
    lake, conn = Lake(f"s3://{BUCKET}"), "aws_days"
    queue = UploadQueue(url, lake, conn, REGION)
    days, featurized, uploaded, kept_message, lost = {}, [], set(), None, None
    for day in range(1, DAYS + 1):
        now, run_key = START + (day - 1) * DAY, f"day{day:02d}"
        for n in range(UPLOADS_PER_DAY):
            key = f"uploads/2026-11-{day:02d}/user{n % 3}/{n}.jpg"
            s3.put_object(Bucket=BUCKET, Key=key, Body=photo(10_000 + day * 100 + n))
            uploaded.add(f"s3://{BUCKET}/{key}")
        if day == LOST_ON_DAY:  # one notification never reaches the run
            (lost,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"]
            sqs.delete_message(QueueUrl=url, ReceiptHandle=lost["ReceiptHandle"])
        if day == REDELIVERED_ON_DAY - 2:
            kept_message = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1)["Messages"][0]
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=kept_message["ReceiptHandle"],
                                          VisibilityTimeout=0)
        if day == REDELIVERED_ON_DAY:  # SQS hands a message of two days ago over again
            sqs.send_message(QueueUrl=url, MessageBody=kept_message["Body"])

        injector.clear()
        ledger.forget_open_tables()  # each task is a new process
        result = validate_uploads(lake, run_key, full_refresh=False, conn_id=conn, max_image_bytes=10**6,
                                  min_image_side=32, queue=queue, reconcile_every_days=RECONCILE_EVERY_DAYS, now=now)
        write_manifests(lake, result, conn)
        confirmed_labels(lake, conn, known_uploads(lake, result, conn))
        validate = {"requests": len(injector.requests), "bytes": sum(injector.response_bytes),
                    "s3_requests": sum(1 for _, target in injector.requests if target.startswith(f"/{BUCKET}")),
                    "listed": result.total_in_raw is not None, "valid": len(result.valid)}
        commit_batch_as_the_feature_job_would(s3, lake, run_key, result.valid)
        injector.clear()
        ledger.forget_open_tables()
        ledger.record_run(lake, run_key, conn, committed=True, now=now)
        days[day] = {"validate": validate, "record": {"requests": len(injector.requests),
                                                      "bytes": sum(injector.response_bytes)}}
        featurized += [row["path"] for row in result.valid]
    return {"days": days, "featurized": featurized, "uploaded": uploaded, "lost": lost}


@pytest.fixture(scope="module")
def simulation(world):
    monkeypatch = pytest.MonkeyPatch()
    try:
        yield run_days(world, monkeypatch)
    finally:
        monkeypatch.undo()


def test_every_upload_is_featurized_once_whatever_the_queue_did(simulation):
    featurized = simulation["featurized"]
    history = {f"s3://{BUCKET}/raw/Label{n % 5}/h{n}.jpg" for n in range(HISTORY)}
    assert len(featurized) == len(set(featurized)), "an upload featurized twice (a redelivery taken again)"
    assert set(featurized) == simulation["uploaded"] | history


def test_a_lost_notification_is_found_by_the_next_reconciliation(simulation):
    days = simulation["days"]
    listed = [day for day, costs in days.items() if costs["validate"]["listed"]]
    assert listed == list(range(1, DAYS + 1, RECONCILE_EVERY_DAYS)), "listed on day 1, then once a week"
    reconciled_after_loss = min(day for day in listed if day > LOST_ON_DAY)
    assert days[LOST_ON_DAY]["validate"]["valid"] == UPLOADS_PER_DAY - 1
    assert days[reconciled_after_loss]["validate"]["valid"] == UPLOADS_PER_DAY + 1


def test_the_validate_task_costs_the_day_not_the_history(simulation):
    days = simulation["days"]
    daily = {day: costs for day, costs in days.items() if not costs["validate"]["listed"]}
    early = [daily[day]["validate"] for day in range(5, 11) if day in daily and day != REDELIVERED_ON_DAY]
    late = [daily[day]["validate"] for day in range(25, 31) if day in daily]
    print("validate cost by day:", json.dumps({day: c["validate"] for day, c in days.items()}))
    print("record cost by day:", json.dumps({day: c["record"] for day, c in days.items()}))
    assert early and late
    for kind in ("requests", "s3_requests"):
        assert max(c[kind] for c in late) <= max(c[kind] for c in early) + 5, (kind, early, late)
    assert max(c["bytes"] for c in late) <= max(c["bytes"] for c in early) + 20 * STATE_BYTES_PER_DAY, (early, late)
    # The report task's commit: a sawtooth, highest on the days delta-rs writes a checkpoint (every 10
    # commits of a table); compared over each window's days.
    for kind, margin in (("requests", 20), ("bytes", 20 * STATE_BYTES_PER_DAY)):
        early_mean = sum(days[day]["record"][kind] for day in range(5, 11)) / 6
        late_mean = sum(days[day]["record"][kind] for day in range(25, 31)) / 6
        assert late_mean <= early_mean + margin, (kind, early_mean, late_mean)
