"""docker-compose.yaml, Dockerfile and .env.example, checked without a Docker engine.

The file must keep the official Airflow 3 layout (services, health checks, start order),
agree with the settings module on the FRUITS_* names, mount paths that exist, and build an
image with the same pins as pyproject.toml.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml

from fruits_pipeline.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "docker-compose.yaml"
DOCKERFILE = REPO_ROOT / "Dockerfile"
ENV_EXAMPLE = REPO_ROOT / ".env.example"
AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
# Folders created at run time (gitignored) rather than shipped in the repository.
RUNTIME_MOUNTS = {".lake"}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _expand_default(value: str) -> str:
    """What `${NAME:-default}` becomes when NAME is unset (as docker compose does)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:-([^}]*)\}", r"\1", value)


def test_official_layout_services_and_commands(compose):
    services = compose["services"]
    assert {"postgres", "airflow-init", *AIRFLOW_SERVICES} <= set(services)
    assert "redis" not in services and "airflow-worker" not in services, "LocalExecutor needs no broker or workers"
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://airflow:airflow@postgres/")
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert env["AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK"] == "true", "the scheduler's health check needs its server"


def test_every_long_running_service_has_a_health_check_and_waits_for_init(compose):
    services = compose["services"]
    assert services["postgres"]["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    for name in AIRFLOW_SERVICES:
        service = services[name]
        assert service["healthcheck"]["test"], name
        assert service["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "airflow-init": {"condition": "service_completed_successfully"},
        }, name
    checks = {name: " ".join(services[name]["healthcheck"]["test"]) for name in AIRFLOW_SERVICES}
    assert "8080/api/v2/version" in checks["airflow-apiserver"]
    assert "8974/health" in checks["airflow-scheduler"]
    assert "DagProcessorJob" in checks["airflow-dag-processor"]
    assert "TriggererJob" in checks["airflow-triggerer"]


def test_init_migrates_the_database_and_creates_the_user(compose):
    init = compose["services"]["airflow-init"]
    assert init["environment"]["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["environment"]["_AIRFLOW_WWW_USER_CREATE"] == "true"
    assert init["depends_on"] == {"postgres": {"condition": "service_healthy"}}
    assert "/entrypoint airflow version" in init["command"][-1]


def test_pipeline_settings_in_the_containers_are_valid_and_local_by_default(compose):
    env = {k: _expand_default(str(v)) for k, v in compose["services"]["airflow-scheduler"]["environment"].items()}
    settings = Settings.from_env(env)  # raises SettingsError on a wrong name's value
    assert settings.compute == "local"
    assert settings.region == "eu-west-3"
    assert settings.lake_uri == "file:///opt/airflow/lake"
    assert settings.model_path is None
    assert str(settings.jobs_dir) == "/opt/airflow/spark_jobs"
    assert env["AWS_CONN_ID"] == settings.aws_conn_id
    assert "region_name=eu-west-3" in env["AIRFLOW_CONN_AWS_DEFAULT"]
    fruits_names = {k for k in env if k.startswith("FRUITS_")}
    source = (REPO_ROOT / "plugins/fruits_pipeline/settings.py").read_text()
    unknown = {name for name in fruits_names if f'"{name}"' not in source}
    assert not unknown, f"docker-compose.yaml sets variables the settings module never reads: {unknown}"


def test_mounts_exist_and_land_where_the_settings_look(compose):
    volumes = compose["x-airflow-common"]["volumes"]
    binds = [_expand_default(v).split(":") for v in volumes if v.startswith((".", "$"))]
    targets = {}
    for host, container, *_ in binds:
        targets[container] = host
        relative = host.removeprefix("./")
        if relative not in RUNTIME_MOUNTS:
            assert (REPO_ROOT / relative).is_dir(), f"docker-compose.yaml mounts {host}, which does not exist"
    assert targets["/opt/airflow/dags"] == "./dags"
    assert targets["/opt/airflow/plugins"] == "./plugins"
    assert targets["/opt/airflow/spark_jobs"] == "./spark_jobs"
    assert targets["/opt/airflow/lake"] == "./.lake"
    assert ".lake/" in (REPO_ROOT / ".gitignore").read_text().split()


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s;]+)\s*", requirement)
        if match:
            pins[match.group(1).lower()] = match.group(3)
    return pins


def test_dockerfile_pins_the_versions_of_pyproject():
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    project_pins = _pins(pyproject["project"]["dependencies"])
    text = DOCKERFILE.read_text()
    image_pins = _pins(re.findall(r'"([^"$]+==[^"$]+)"', text))
    for package in ("pyspark", "ai-edge-litert", "pillow", "pillow-heif", "pyvips", "pyvips-binary", "pyarrow", "apache-airflow-providers-amazon"):
        assert package in image_pins, f"Dockerfile does not pin {package}"
    disagree = {p: (v, project_pins.get(p)) for p, v in image_pins.items() if project_pins.get(p) != v}
    assert not disagree, f"Dockerfile pins differ from pyproject.toml (image, pyproject): {disagree}"
    base = re.search(r"^FROM apache/airflow:(\S+)", text, re.M).group(1)
    assert base.split("-")[0] == project_pins["apache-airflow"], "the base image's Airflow differs from pyproject's"
    assert base.endswith("-python3.11"), "EMR 7 runs the jobs on Python 3.11, so does the image"
    assert "openjdk-17-jre-headless" in text
    assert "tensorflow" not in text and "keras" not in text, "the Airflow image needs no TensorFlow (LiteRT runs the model)"


def test_env_example_names_are_read_by_the_settings_and_the_connection_is_eu():
    lines = [l.lstrip("# ").strip() for l in ENV_EXAMPLE.read_text().splitlines()]
    assignments = dict(l.split("=", 1) for l in lines if re.match(r"^[A-Z_][A-Z0-9_]*=", l))
    source = (REPO_ROOT / "plugins/fruits_pipeline/settings.py").read_text()
    for name in assignments:
        if name.startswith("FRUITS_") and name != "FRUITS_LAKE_DIR":  # FRUITS_LAKE_DIR is compose's host folder
            assert f'"{name}"' in source, f".env.example sets {name}, which the settings module never reads"
    from airflow.models.connection import Connection

    connection = Connection.from_json(assignments["AIRFLOW_CONN_AWS_DEFAULT"])
    assert connection.conn_type == "aws"
    assert connection.extra_dejson["region_name"] == "eu-west-3"


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose is not installed (Debian: apt-get install docker-compose)")
def test_docker_compose_config_accepts_the_file():
    # `config` only parses and interpolates: it needs no Docker daemon.
    result = subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config", "--quiet"], capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert result.returncode == 0, result.stderr
