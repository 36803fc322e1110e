"""fruits_pipeline in local compute mode, used through the UI as a person would (issue 15).

In file order: log in and find the DAG; read the trigger form; have bad values refused; unpause
the DAG so that the scheduler runs the last interval on the uploads present; then trigger, from
the form, a run with a new pca_k, which refits the PCA on all features without extracting any;
then read the scheduled run's "Run report" tab, and check who may read it.
Runs are followed through the REST API (/api/v2), outputs are read from the lake.
"""
from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fruits_contract.lake import Lake, run_key_for
from run_report_tab import PAGE, PICTURE, PNG_MAGIC, assert_shows_the_report, get, open_tab, token_for
from ui_airflow import NO_ROLE

pytestmark = pytest.mark.ui

DAG_ID = "fruits_pipeline"
CONTRACT_PARAMS = {"full_refresh", "pca_variance", "pca_k", "instance_type", "core_instance_count",
                   "use_spot", "dry_run"}
CLUSTER_PARAMS = {"instance_type", "core_instance_count", "use_spot"}
NEW_PCA_K = 3  # a PCA target other than the scheduled run's (pca_variance 0.95, the default)
BAD_VALUES = [("core_instance_count", 0), ("pca_variance", 1.5), ("instance_type", "m9.huge")]


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def _run_key(run: dict) -> str:
    end = run.get("data_interval_end")
    return run_key_for(run["run_type"], run["dag_run_id"],
                       datetime.fromisoformat(end.replace("Z", "+00:00")) if end else None)


def _report(lake: Lake, run_key: str) -> dict:
    return json.loads(_local(lake.report(run_key)).read_text())


def _failure_context(airflow, run: dict) -> str:
    tis = airflow.task_instances(DAG_ID, run["dag_run_id"])
    return f"run {run['dag_run_id']} ended {run['state']}: {({k: v['state'] for k, v in tis.items()})}"


def test_login_and_the_dag_is_listed_without_import_error(browser, airflow):
    assert DAG_ID in browser.dag_ids_listed()
    errors = airflow.api("GET", "/api/v2/importErrors")
    assert errors["total_entries"] == 0, errors["import_errors"]
    dag = airflow.api("GET", f"/api/v2/dags/{DAG_ID}")
    assert dag["has_import_errors"] is False
    assert dag["is_paused"] is True, "DAGS_ARE_PAUSED_AT_CREATION, as in docker-compose.yaml"


def test_trigger_form_shows_each_params_title_and_description(browser, airflow, screenshots):
    params = airflow.api("GET", f"/api/v2/dags/{DAG_ID}/details")["params"]
    assert set(params) == CONTRACT_PARAMS
    browser.open_trigger_form(DAG_ID)
    fields = browser.form_fields()
    browser.screenshot(screenshots / "trigger_form.png", height=1900)

    assert set(fields) == CONTRACT_PARAMS
    for name, spec in params.items():
        title = spec["schema"].get("title")
        description = spec.get("description") or spec["schema"].get("description")
        assert title and title != name, f"{name} has no human title"
        assert description, f"{name} has no description"
        assert fields[name]["title"] == title, name
        assert fields[name]["description"] == description, name
        assert "\n" not in description, f"{name}: the description is one line"
    for name in CLUSTER_PARAMS:  # FRUITS_COMPUTE=local: the form says these apply to EMR runs only
        assert "EMR runs only" in fields[name]["description"], fields[name]["description"]


@pytest.mark.parametrize("param, value", BAD_VALUES, ids=[name for name, _ in BAD_VALUES])
def test_a_bad_value_is_refused_with_the_params_name(browser, airflow, param, value):
    runs_before = len(airflow.dag_runs(DAG_ID))

    browser.open_trigger_form(DAG_ID)
    if isinstance(value, str):  # an enum: the select offers only the allowed types
        assert "No options" in browser.select_options_for(param, value)
    else:  # a number outside the range never stays in the field
        assert browser.type_into(param, str(value)) not in (str(value), "")
    browser.open("/dags")  # leave the form without triggering

    # The form's own request, with the value a person could type in its JSON conf: a 400 naming the param.
    status, body = airflow.call("POST", f"/api/v2/dags/{DAG_ID}/dagRuns",
                                {"logical_date": None, "conf": {param: value}})
    assert status == 400, body
    assert f"param {param}" in body["detail"], body["detail"]
    assert len(airflow.dag_runs(DAG_ID)) == runs_before, "a refused value created a run"


@pytest.fixture(scope="module")
def uploads(images_dir, local_lake) -> list[Path]:
    copied = []
    for image in sorted(images_dir.glob("*/*")):
        target = local_lake / "raw" / image.parent.name / image.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, target)
        copied.append(target)
    return copied


@pytest.fixture(scope="module")
def scheduled_run(browser, airflow, uploads) -> dict:
    """The person unpauses the DAG in the UI; the scheduler creates and runs the last interval's run."""
    assert airflow.dag_runs(DAG_ID) == []
    browser.open(f"/dags/{DAG_ID}")
    browser.element("[data-testid=toggle-pause]").click()
    airflow.wait_for(lambda: not airflow.api("GET", f"/api/v2/dags/{DAG_ID}")["is_paused"], 30, "the DAG to unpause")
    (run,) = airflow.wait_for(lambda: airflow.dag_runs(DAG_ID, run_type="scheduled"), 60, "the scheduler's run")
    return airflow.wait_for_run(DAG_ID, run["dag_run_id"])


def test_unpausing_runs_the_last_interval_on_the_uploads(airflow, scheduled_run, uploads, local_lake):
    run = scheduled_run
    assert run["state"] == "success", _failure_context(airflow, run)
    interval_end = datetime.fromisoformat(run["data_interval_end"].replace("Z", "+00:00"))
    now = datetime.now(timezone.utc)
    assert now - timedelta(days=1) < interval_end <= now, "the last complete interval, no catchup"

    lake = Lake(f"file://{local_lake}")
    run_key = _run_key(run)
    report = _report(lake, run_key)
    assert report["status"] == "success" and report["route"] == "features_and_pca", report
    assert report["counts"]["featurized"] == len(uploads) == report["counts"]["reduced"]
    features = pq.read_table(_local(lake.features(run_key))).to_pylist()
    assert sorted(r["path"] for r in features) == sorted(f"file://{p}" for p in uploads)


@pytest.fixture(scope="module")
def pca_k_run(browser, airflow, scheduled_run) -> dict:
    """Right after the scheduled run, a person triggers a run from the form with a new pca_k."""
    browser.open_trigger_form(DAG_ID)
    assert browser.type_into("pca_k", str(NEW_PCA_K)) == str(NEW_PCA_K)
    browser.submit_trigger()
    (run,) = airflow.wait_for(lambda: airflow.dag_runs(DAG_ID, run_type="manual"), 30, "the triggered run")
    return airflow.wait_for_run(DAG_ID, run["dag_run_id"])


def test_a_run_triggered_with_a_new_pca_k_refits_the_pca_without_new_features(
        browser, airflow, pca_k_run, uploads, local_lake, screenshots):
    run = pca_k_run
    assert run["conf"].get("pca_k") == NEW_PCA_K, run["conf"]
    assert run["state"] == "success", _failure_context(airflow, run)
    browser.open(f"/dags/{DAG_ID}/runs/{run['dag_run_id']}")
    browser.element(f"[data-testid='grid-{run['dag_run_id']}-report']")
    browser.screenshot(screenshots / "run_grid.png")

    lake = Lake(f"file://{local_lake}")
    run_key = _run_key(run)
    report = _report(lake, run_key)
    assert report["status"] == "success", report
    assert report["route"] == "pca_only", (report["route"], report.get("route_reason"))
    assert report["pca"]["k"] == NEW_PCA_K
    assert report["counts"]["reduced"] == len(uploads)
    assert not _local(lake.features(run_key)).exists(), "a new PCA target extracts no features"
    rows = pq.read_table(_local(lake.pca(run_key))).to_pylist()
    assert len(rows) == len(uploads) and {len(r["pca_features"]) for r in rows} == {NEW_PCA_K}
    assert json.loads(_local(lake.pca_report(run_key)).read_text())["k"] == NEW_PCA_K
    assert _local(lake.report(run_key)).with_suffix(".png").is_file(), "every run with a PCA draws its picture"


def test_the_run_report_tab_shows_the_runs_report_and_picture(browser, scheduled_run, local_lake, screenshots):
    run = scheduled_run
    report = _report(Lake(f"file://{local_lake}"), _run_key(run))
    seen = open_tab(browser, DAG_ID, run["dag_run_id"], screenshot=screenshots / "run_report_tab.png")
    assert seen["picture_width"], "the picture is displayed (loaded, not broken)"
    assert_shows_the_report(seen["fields"], report)
    assert seen["fields"]["route"] == "features + PCA" and seen["fields"]["run_state"] == "success"


def test_the_run_report_and_picture_are_served_only_to_users_who_may_read_the_dags_runs(
        airflow, scheduled_run, local_lake):
    run_id = scheduled_run["dag_run_id"]
    query = {"dag_id": DAG_ID, "run_id": run_id}
    no_role = token_for(airflow.base_url, NO_ROLE, json.loads(
        (airflow.home / "simple_auth_manager_passwords.json.generated").read_text())[NO_ROLE])
    for path in (PAGE, PICTURE):
        assert get(airflow.base_url, path, query)[0] == 401, f"{path}: anonymous"
        assert get(airflow.base_url, path, query, "not.a.token")[0] == 403, f"{path}: a forged token"
        assert get(airflow.base_url, path, query, no_role)[0] == 403, f"{path}: a user who may not read the runs"
    status, body, content_type = get(airflow.base_url, PICTURE, query, airflow.token())
    picture = _local(Lake(f"file://{local_lake}").report_picture(_run_key(scheduled_run)))
    assert (status, content_type) == (200, "image/png") and body.startswith(PNG_MAGIC) and body == picture.read_bytes()
    status, body, _ = get(airflow.base_url, PAGE, query, airflow.token())
    assert status == 200 and b'data-field="status">success<' in body


@pytest.mark.parametrize("query, status", [
    ("dag_id=fruits_pipeline&run_id=..%2F..%2Fetc%2Fpasswd", 400),
    ("dag_id=fruits_pipeline&run_id=%252e%252e%252freports", 400),  # encoded twice
    ("dag_id=fruits_pipeline&run_id=..%5C..%5Cx", 400),
    ("dag_id=..%2Ffruits_pipeline&run_id=x", 400),
    ("dag_id=not_the_pipeline&run_id=x", 404),
    ("dag_id=fruits_pipeline&run_id=manual__no_such_run", 404),
], ids=["dotdot-slash", "double-encoded", "backslash", "dag-id-dotdot", "another-dag", "no-such-run"])
def test_ids_leading_outside_reports_or_to_another_dag_are_refused(airflow, scheduled_run, query, status):
    for path in (PAGE, PICTURE):
        got, body, _ = get(airflow.base_url, path, query, airflow.token())
        assert got == status, (path, query, body)

