"""The Airflow that tests/ui starts is the one docker-compose.yaml starts: same components, same settings.

tests/ui runs the components as processes (no Docker engine here); this test keeps the two in step, so
a setting changed in one place without the other fails here. What the suite sets differently is listed
in tests/ui/ui_airflow.py with the reason, and checked to be exactly that.
"""
from __future__ import annotations

import json
import re
import sys

import pytest
import yaml

from fruits_pipeline.settings import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests" / "ui"))
import ui_airflow  # noqa: E402

COMPOSE = REPO_ROOT / "docker-compose.yaml"


def _expand_default(value: str) -> str:
    """What `${NAME:-default}` becomes when NAME is unset (as docker compose does)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def compose_env(compose) -> dict:
    return {k: _expand_default(str(v)) for k, v in compose["x-airflow-common"]["environment"].items()}


@pytest.fixture(scope="module")
def suite_env(tmp_path_factory) -> dict:
    home = tmp_path_factory.mktemp("home")
    return ui_airflow.airflow_environment(home, port=18080, health_port=18974, lake_root=home / "lake",
                                          moto_endpoint="http://127.0.0.1:5000", base={})


def test_the_suite_starts_the_airflow_services_of_the_compose_file(compose):
    services = compose["services"]
    airflow_services = {name: s for name, s in services.items()
                        if s.get("image") == compose["x-airflow-common"]["image"] and name != "airflow-init"}
    assert sorted(s["command"] for s in airflow_services.values()) == sorted(ui_airflow.COMPONENTS)
    init = services["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert ui_airflow.INIT_COMMAND == ("db", "migrate"), "what airflow-init does before the services start"


def test_every_setting_of_the_compose_file_is_the_suites_or_a_stated_difference(compose_env):
    same, different = ui_airflow.COMPOSE_SETTINGS, ui_airflow.DIFFERENT_FROM_COMPOSE
    assert not set(same) & set(different)
    unaccounted = set(compose_env) - set(same) - set(different) - set(ui_airflow.PASSED_THROUGH)
    assert not unaccounted, f"docker-compose.yaml sets {sorted(unaccounted)}: add them to tests/ui/ui_airflow.py"
    assert set(same) | set(different) <= set(compose_env), "ui_airflow.py names settings compose does not set"
    disagree = {k: (v, compose_env[k]) for k, v in same.items() if compose_env[k] != v}
    assert not disagree, f"the suite and docker-compose.yaml disagree (suite, compose): {disagree}"
    assert all(reason.strip() for reason in different.values())


def test_the_suites_components_get_those_settings(suite_env):
    wrong = {k: suite_env.get(k) for k, v in ui_airflow.COMPOSE_SETTINGS.items() if suite_env.get(k) != v}
    assert not wrong, f"ui_airflow.airflow_environment does not apply COMPOSE_SETTINGS: {wrong}"
    for name in ui_airflow.DIFFERENT_FROM_COMPOSE:
        assert suite_env.get(name), f"the suite does not set {name}, which it says it sets differently"


def test_the_suite_reads_dags_plugins_and_jobs_from_the_folders_compose_mounts(compose, suite_env):
    mounts = dict(_expand_default(v).split(":")[:2][::-1] for v in compose["x-airflow-common"]["volumes"]
                  if v.startswith("./"))
    assert suite_env["AIRFLOW__CORE__DAGS_FOLDER"] == str(REPO_ROOT / mounts["/opt/airflow/dags"].removeprefix("./"))
    assert suite_env["AIRFLOW__CORE__PLUGINS_FOLDER"] == str(
        REPO_ROOT / mounts["/opt/airflow/plugins"].removeprefix("./"))
    assert suite_env["FRUITS_JOBS_DIR"] == str(REPO_ROOT / mounts["/opt/airflow/spark_jobs"].removeprefix("./"))
    bundles = json.loads(suite_env["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"])
    assert bundles[0]["kwargs"]["path"] == str(REPO_ROOT / "dags"), "the real dags/ is the first bundle"


def test_both_api_servers_load_the_run_report_plugin_from_the_plugins_folder(compose, suite_env):
    """The "Run report" tab (plugins/fruits_run_report_plugin.py) comes from the folder compose mounts at
    /opt/airflow/plugins (the image's plugins folder) and the suite gives as AIRFLOW__CORE__PLUGINS_FOLDER,
    loaded here by Airflow's own loader; the api-server also reads the lake through the DAG's connection."""
    from airflow._shared.module_loading import find_path_from_directory
    from airflow._shared.plugins_manager.plugins_manager import _load_plugins_from_plugin_directory

    api_server = compose["services"]["airflow-apiserver"]
    assert "./plugins:/opt/airflow/plugins" in api_server["volumes"]
    assert {"AWS_CONN_ID", "AIRFLOW_CONN_AWS_DEFAULT", "FRUITS_LAKE_URI"} <= set(api_server["environment"])
    plugins, errors = _load_plugins_from_plugin_directory(suite_env["AIRFLOW__CORE__PLUGINS_FOLDER"])
    assert errors == {}
    assert [(p.name, p.source.path) for p in plugins] == [
        ("fruits_run_report", "fruits_run_report_plugin.py")]  # relative to the plugins folder
    # plugins/.airflowignore: every Airflow process (each task's too) loads the folder's files as
    # top-level modules; the package's own modules stay out of that scan
    folder = suite_env["AIRFLOW__CORE__PLUGINS_FOLDER"]
    assert list(find_path_from_directory(folder, ".airflowignore", "glob")) == [f"{folder}/fruits_run_report_plugin.py"]
    (view,), (app,) = plugins[0].external_views, plugins[0].fastapi_apps
    assert view["destination"] == "dag_run" and {"{DAG_ID}", "{RUN_ID}"} <= set(re.findall(r"\{[A-Z_]+\}", view["href"]))
    assert view["href"].startswith(app["url_prefix"] + "/")
