"""fruits_pipeline in EMR mode (DAG `fruits_pipeline_emr`, see emr_dags/) on a moto server, run by the
real scheduler, LocalExecutor workers and triggerer of the suite's Airflow.

Each step sensor is deferrable: the test ends an EMR step only once its sensor is DEFERRED, so the
trigger running in the triggerer is what sees the step end. A run is then marked failed through
the REST API while a sensor is deferred: terminate_cluster, the teardown, must still end the cluster.
"""
from __future__ import annotations

import html
import json

import pytest

from fruits_contract.lake import run_key_for
from fruits_pipeline.run_report_view import NO_REPORT_SENTENCE
from moto_emr import REGION, cluster_by_id, complete_step
from run_report_tab import PAGE, assert_shows_the_report, get, open_tab

from .conftest import EMR_BUCKET as BUCKET

pytestmark = pytest.mark.ui

DAG_ID = "fruits_pipeline_emr"
SENSORS = ("watch_extract_features", "watch_reduce_pca", "watch_train_classifier", "watch_predict_uploads")
EMPTY_UPLOAD = "raw/kiwi/empty upload.jpg"
CLUSTER_TASKS = ("create_cluster", "add_steps", *SENSORS, "terminate_cluster")
RUN_TIMEOUT_SECONDS = 300


@pytest.fixture(scope="module")
def emr_lake(aws, images_dir) -> dict:
    """An encrypted eu-west-3 bucket with a few uploads under raw/ (put there after the first run)."""
    s3 = aws["s3"]
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/fruits"}}]})
    images = [image for label in sorted(images_dir.iterdir())[:2] for image in sorted(label.iterdir())[:2]]
    return {"s3": s3, "images": images}


@pytest.fixture(scope="module")
def unpaused(airflow, emr_lake) -> dict:
    """Unpausing runs the last interval at once: with raw/ empty it has nothing to do (no cluster)."""
    airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    (run,) = airflow.wait_for(lambda: airflow.dag_runs(DAG_ID), 60, "the scheduled run of the last interval")
    run = airflow.wait_for_run(DAG_ID, run["dag_run_id"], RUN_TIMEOUT_SECONDS)
    s3 = emr_lake["s3"]
    for image in emr_lake["images"]:
        s3.put_object(Bucket=BUCKET, Key=f"raw/{image.parent.name}/{image.name}", Body=image.read_bytes())
    s3.put_object(Bucket=BUCKET, Key=EMPTY_UPLOAD, Body=b"")  # rejected with a reason, shown on the Run report tab
    return run


def _trigger(airflow, conf: dict) -> str:
    return airflow.api("POST", f"/api/v2/dags/{DAG_ID}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]


def _xcom(airflow, run_id: str, task_id: str):
    body = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}"
                              "/xcomEntries/return_value?deserialize=true")
    value = body["value"]
    return json.loads(value) if isinstance(value, str) and value.startswith(("[", "{", '"')) else value


def _wait_until_deferred(airflow, run_id: str, task_id: str, timeout: float = RUN_TIMEOUT_SECONDS) -> dict:
    """The task instance once it is DEFERRED and its trigger is held by a running triggerer."""
    def deferred():
        ti = airflow.task_instances(DAG_ID, run_id).get(task_id)
        if ti and ti["state"] in ("failed", "upstream_failed", "skipped", "success"):
            raise AssertionError(f"{task_id} ended {ti['state']} without deferring")
        return ti if ti and ti["state"] == "deferred" and ti.get("trigger") and ti.get("triggerer_job") else None
    return airflow.wait_for(deferred, timeout, f"{task_id} to be deferred in the triggerer", interval=0.5)


def _wait_until_the_trigger_saw_the_step_running(airflow, run_id: str, task_id: str, timeout: float = 60) -> None:
    """As with a real step, which runs for minutes: the trigger polls it at least once before it ends."""
    folder = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"

    def polled_once():
        return any("non-terminal state" in log.read_text(errors="replace")
                   for log in folder.glob("attempt=*.log.trigger.*.log"))
    airflow.wait_for(polled_once, timeout, f"the trigger of {task_id} to poll its step", interval=0.5)


def _links(airflow, run_id: str, task_id: str) -> dict:
    return airflow.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/links")["extra_links"]


def _cluster_links(cluster_id: str) -> dict:
    """The provider's EmrClusterLink and EmrLogsLink targets for the cluster (LogUri s3://<bucket>/logs/emr/)."""
    console = "https://console.aws.amazon.com"
    return {"EMR Cluster": f"{console}/emr/home?region={REGION}#/clusterDetails/{cluster_id}",
            "EMR Cluster Logs": f"{console}/s3/buckets/{BUCKET}/logs/emr/?region={REGION}&prefix={cluster_id}/"}


def _step_ids(ti: dict) -> tuple[str, str]:
    fields = ti["rendered_fields"]
    return fields["job_flow_id"], fields["step_id"]


def _complete(s3, cluster_id: str, step_id: str) -> None:
    """Plays the cluster: the step succeeds, with the outputs its job writes (the PCA preview too)."""
    (step,) = [s for s in cluster_by_id(cluster_id).steps if s.id == step_id]
    complete_step(s3, step, preview=True)


def test_unpausing_with_no_upload_does_nothing_and_creates_no_cluster(airflow, unpaused):
    assert unpaused["run_type"] == "scheduled" and unpaused["state"] == "success"
    states = {k: v["state"] for k, v in airflow.task_instances(DAG_ID, unpaused["dag_run_id"]).items()}
    assert states["report"] == "success" and states.get("create_cluster") in (None, "skipped"), states


def test_a_triggered_run_ends_with_its_cluster_terminated_and_its_sensors_ran_in_the_triggerer(
        browser, airflow, aws, unpaused, screenshots):
    run_id = _trigger(airflow, {"core_instance_count": 1})
    deferred = {}
    for sensor in SENSORS:
        ti = _wait_until_deferred(airflow, run_id, sensor)
        deferred[sensor] = ti
        _wait_until_the_trigger_saw_the_step_running(airflow, run_id, sensor)
        _complete(aws["s3"], *_step_ids(ti))  # the step ends while its sensor waits in the triggerer
    run = airflow.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_SECONDS)

    tis = airflow.task_instances(DAG_ID, run_id)
    states = {k: v["state"] for k, v in tis.items()}
    assert run["state"] == "success", states
    cluster_id = _xcom(airflow, run_id, "create_cluster")
    cluster = cluster_by_id(cluster_id)
    assert cluster.state == "TERMINATED"
    assert [step.state for step in cluster.steps] == ["COMPLETED"] * 4
    for sensor, ti in deferred.items():
        # the provider's EmrStepSensorTrigger, first polling one interval after the deferral (emr.py)
        assert ti["trigger"]["classpath"] == "fruits_pipeline.emr.StepTriggerPollingAfterOneInterval", ti["trigger"]
        assert ti["triggerer_job"]["job_type"] == "TriggererJob" and ti["triggerer_job"]["state"] == "running"
        # resumed by the trigger's event in the same try: nothing failed and retried the sensor
        assert tis[sensor]["state"] == "success" and tis[sensor]["try_number"] == 1, tis[sensor]
    assert states["terminate_cluster"] == "success"

    browser.open(f"/dags/{DAG_ID}/runs/{run_id}")
    browser.element(f"[data-testid='grid-{run_id}-terminate_cluster']")
    browser.screenshot(screenshots / "emr_run_grid.png")

    # the Run report tab: the report the run wrote to S3, through the DAG's AWS connection
    key = f"reports/{run_key_for('manual', run_id, None)}.json"
    report = json.loads(aws["s3"].get_object(Bucket=BUCKET, Key=key)["Body"].read())
    seen = open_tab(browser, DAG_ID, run_id, screenshot=screenshots / "emr_run_report_tab.png")
    assert seen["picture_width"], "the picture is displayed (loaded, not broken)"
    assert_shows_the_report(seen["fields"], report)
    assert seen["fields"]["cluster_id"] == cluster_id and report["estimated_cost"]["amount"] > 0
    assert report["counts"]["rejected_examples"] == {"empty": [f"s3://{BUCKET}/{EMPTY_UPLOAD}"]}

    # the provider's links on each EMR task lead to this run's cluster and its logs
    for task in CLUSTER_TASKS:
        assert _links(airflow, run_id, task) == _cluster_links(cluster_id), task


@pytest.fixture(scope="module")
def marked_failed(airflow, aws, unpaused) -> dict:
    """A run with work, marked failed through the REST API while watch_extract_features is deferred."""
    run_id = _trigger(airflow, {"full_refresh": True})  # the same uploads again: a run with work
    ti = _wait_until_deferred(airflow, run_id, "watch_extract_features")
    cluster_id, _ = _step_ids(ti)
    running_before = cluster_by_id(cluster_id).state
    tab_while_running = get(airflow.base_url, PAGE, {"dag_id": DAG_ID, "run_id": run_id}, airflow.token())
    airflow.api("PATCH", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}", {"state": "failed"})
    run = airflow.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT_SECONDS)
    states = {k: v["state"] for k, v in airflow.task_instances(DAG_ID, run_id).items()}
    return {"run": run, "states": states, "cluster_id": cluster_id, "cluster_state_before": running_before,
            "tab_while_running": tab_while_running}


def test_a_run_marked_failed_while_its_sensor_is_deferred_still_terminates_the_cluster(marked_failed):
    states = marked_failed["states"]
    assert marked_failed["cluster_state_before"] not in ("TERMINATING", "TERMINATED")
    assert states["watch_extract_features"] == "failed", states  # the deferred sensor, stopped by the mark
    assert states["terminate_cluster"] == "success", states  # the teardown ran after the run was marked
    assert cluster_by_id(marked_failed["cluster_id"]).state == "TERMINATED"


def test_a_failed_try_that_deferred_keeps_its_cluster_links(airflow, marked_failed):
    run_id = marked_failed["run"]["dag_run_id"]
    assert _links(airflow, run_id, "watch_extract_features") == _cluster_links(marked_failed["cluster_id"])
    assert _links(airflow, run_id, "terminate_cluster") == _cluster_links(marked_failed["cluster_id"])


def test_the_tab_of_a_run_that_has_no_report_yet_says_so(marked_failed):
    status, body, _ = marked_failed["tab_while_running"]  # read while its sensor was deferred
    assert status == 200 and html.escape(NO_REPORT_SENTENCE).encode() in body, body


def test_a_run_marked_failed_stays_failed_once_its_teardown_has_run(marked_failed):
    # Airflow 3.3 leaves the run running while a teardown is pending, skips the tasks not yet run (the
    # report among them), and sets the run's state from its leaves once the teardown is done.
    assert marked_failed["run"]["state"] == "failed", (
        "the run marked failed ended " + marked_failed["run"]["state"] + f": its leaves were skipped {marked_failed['states']}")


def test_no_deferred_task_was_failed_by_a_state_mismatch(airflow, unpaused):
    """apache/airflow #71580, #72716: a stale executor success for a resumed deferred task fails it."""
    log = airflow.log_file("scheduler").read_text(errors="replace")
    mismatches = [line for line in log.splitlines() if "state mismatch" in line or "killed externally" in line
                  or "task instance's state attribute is" in line]
    assert mismatches == []
