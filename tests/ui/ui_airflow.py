"""A real Airflow for the UI suite: the four components of docker-compose.yaml, started as processes.

    migrate   (compose: airflow-init)      airflow db migrate
    api-server, scheduler, dag-processor, triggerer   (compose: the services of the same names)

LocalExecutor, SQLite in a temporary AIRFLOW_HOME, the api-server on a free port of 127.0.0.1, the
simple auth manager with a known admin password written to AIRFLOW_HOME before anything starts.
Every component runs in its own process group; `stop()` ends those groups and every process they
started (task runners, spark-submit JVMs), and nothing else.

The settings that docker-compose.yaml also sets are in COMPOSE_SETTINGS: tests/compose ties them to
the file, so what the suite starts stays what a person starts with `docker compose up`.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from moto_emr import free_port  # tests/ (a plain module shared with tests/dag)

REPO = Path(__file__).resolve().parents[2]
EMR_DAGS = Path(__file__).resolve().parent / "emr_dags"
EMR_ENV_FILE = "fruits_emr_env.json"  # read by emr_dags/fruits_pipeline_emr_dag.py from AIRFLOW_HOME
ADMIN = "admin"
NO_ROLE = "norole"  # signed in, but the simple auth manager grants a user without a role nothing (403s)

# Same commands as the services of docker-compose.yaml (tests/compose/test_ui_suite_matches_compose.py).
COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
INIT_COMMAND = ("db", "migrate")
# Settings docker-compose.yaml gives every Airflow service, with the value the suite uses too.
COMPOSE_SETTINGS = {
    "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
    "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "true",
    "AIRFLOW__CORE__LOAD_EXAMPLES": "false",
    "AIRFLOW__CORE__FERNET_KEY": "",
    "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "true",
    # The deferred-task "state mismatch" (apache/airflow #71580, #72716) workaround; docker-compose.yaml says why.
    "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
    # Tasks outlast an api-server restart (docker-compose.yaml says why; tests/ui/test_ui_faults.py).
    "AIRFLOW__WORKERS__EXECUTION_API_RETRIES": "10",
    "FRUITS_COMPUTE": "local",
    "FRUITS_REGION": "eu-west-3",
    "AWS_CONN_ID": "aws_default",
}
# What the suite sets differently from docker-compose.yaml, and why (checked by the same test).
DIFFERENT_FROM_COMPOSE = {
    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "SQLite in the temporary home: no PostgreSQL server here",
    "AIRFLOW__CORE__AUTH_MANAGER": "the simple auth manager (the FAB provider is not in the project's "
                                   "environment); compose's FAB user is made by the image's entrypoint",
    "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": "the api-server's free port on 127.0.0.1 instead of "
                                               "http://airflow-apiserver:8080",
    "FRUITS_LAKE_URI": "a temporary lake folder instead of the mounted /opt/airflow/lake",
    "FRUITS_JOBS_DIR": "the checkout's spark_jobs/ (the folder compose mounts at /opt/airflow/spark_jobs)",
    "AIRFLOW_CONN_AWS_DEFAULT": "a moto server in the test process instead of AWS",
}
# Given to the components only when the test process has them, as a person's .env would.
PASSED_THROUGH = ("FRUITS_MODEL",)


class AirflowError(RuntimeError):
    """A component did not start or a call failed; the message carries the end of its log."""


@dataclass
class Airflow:
    home: Path
    env: dict
    port: int
    health_port: int
    password: str
    processes: dict = field(default_factory=dict)
    _token: str | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_file(self, component: str) -> Path:
        return self.home / f"{component}.out"

    def log_tail(self, component: str, chars: int = 4000) -> str:
        path = self.log_file(component)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    # --- processes -----------------------------------------------------------------------------
    def run_cli(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        result = subprocess.run([str(_airflow_bin()), *args], env=self.env, cwd=self.home,
                                capture_output=True, text=True, timeout=timeout)
        if result.returncode != 0:
            raise AirflowError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def start(self, timeout: float = 240) -> None:
        self.run_cli(*INIT_COMMAND)
        for component in COMPONENTS:
            self.launch(component)
        self.wait_ready(timeout)

    def launch(self, component: str) -> None:
        """Start one component in a process group of its own, its output appended to its log."""
        out = open(self.log_file(component), "ab")
        self.processes[component] = subprocess.Popen(
            [str(_airflow_bin()), component], env=self.env, cwd=self.home, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True)
        out.close()

    def kill(self, component: str) -> None:
        """SIGKILL one component and its process group (the processes it started), as an orchestrator
        that restarts a container does: no shutdown, no heartbeat after."""
        process = self.processes[component]
        _signal_group(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        last = "nothing tried"
        while time.monotonic() < deadline:
            for component, process in self.processes.items():
                if process.poll() is not None:
                    raise AirflowError(f"{component} exited with {process.returncode}:\n{self.log_tail(component)}")
            try:
                health = self.api("GET", "/api/v2/monitor/health")
                statuses = {k: (v or {}).get("status") for k, v in health.items()}
                scheduler_http = _get(f"http://127.0.0.1:{self.health_port}/health")
                if set(statuses.values()) == {"healthy"} and scheduler_http == 200:
                    return
                last = f"health {statuses}, scheduler health server {scheduler_http}"
            except (OSError, AirflowError) as error:
                last = repr(error)
            time.sleep(1)
        raise AirflowError(f"Airflow not ready after {timeout:.0f}s ({last}); api-server log:\n"
                           + self.log_tail("api-server"))

    def stop(self, grace_seconds: float = 20) -> None:
        """SIGTERM to each component's process group and to every process it started, then SIGKILL."""
        import psutil

        doomed: list[psutil.Process] = []
        for process in self.processes.values():
            try:
                parent = psutil.Process(process.pid)
                doomed += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass

        def send(sig: int, procs: list[psutil.Process]) -> None:
            for process in self.processes.values():
                _signal_group(process.pid, sig)
            for proc in procs:
                try:
                    proc.send_signal(sig)
                except psutil.NoSuchProcess:
                    pass

        send(signal.SIGTERM, doomed)
        _, alive = psutil.wait_procs(doomed, timeout=grace_seconds)
        send(signal.SIGKILL, alive)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass

    # --- REST API --------------------------------------------------------------------------------
    def token(self) -> str:
        if self._token is None:
            status, body = _request("POST", f"{self.base_url}/auth/token",
                                    {"username": ADMIN, "password": self.password}, {})
            if status not in (200, 201):
                raise AirflowError(f"POST /auth/token: {status} {body}")
            self._token = body["access_token"]
        return self._token

    def call(self, method: str, path: str, payload: dict | None = None) -> tuple[int, object]:
        """(status, decoded body) of an /api/v2 call, whatever the status."""
        return _request(method, self.base_url + path, payload, {"Authorization": f"Bearer {self.token()}"})

    def api(self, method: str, path: str, payload: dict | None = None):
        status, body = self.call(method, path, payload)
        if status >= 300:
            raise AirflowError(f"{method} {path}: {status} {body}")
        return body

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}")

    def dag_runs(self, dag_id: str, **query) -> list[dict]:
        """The DAG's runs (the first 100), filtered by query (run_type="manual", ...)."""
        suffix = "&".join(f"{k}={v}" for k, v in {"limit": 100, **query}.items())
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?{suffix}")["dag_runs"]

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, dict]:
        body = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{urllib.request.quote(run_id, safe='')}"
                               "/taskInstances?limit=100")
        return {ti["task_id"]: ti for ti in body["task_instances"]}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 420, states=("success", "failed")) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.dag_run(dag_id, run_id)
            if run["state"] in states:
                return run
            time.sleep(2)
        tis = {k: v["state"] for k, v in self.task_instances(dag_id, run_id).items()}
        raise AirflowError(f"run {run_id} of {dag_id} still {run['state']} after {timeout:.0f}s: {tis}\n"
                           f"scheduler log:\n{self.log_tail('scheduler')}")

    def wait_for(self, predicate, timeout: float, what: str, interval: float = 1.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise AirflowError(f"timed out after {timeout:.0f}s waiting for {what}")


def _airflow_bin() -> Path:
    return Path(sys.executable).parent / "airflow"


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # each component was started in a session of its own: pgid == pid
    except (ProcessLookupError, PermissionError):
        pass


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _request(method: str, url: str, payload: dict | None, headers: dict) -> tuple[int, object]:
    data = None if payload is None else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={**headers, "Content-Type": "application/json",
                                              "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def airflow_environment(home: Path, *, port: int, health_port: int, lake_root: Path, moto_endpoint: str,
                        base: dict | None = None) -> dict:
    """The environment of every component: nothing Airflow- or pipeline-specific from the caller."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items() if not k.startswith(("AIRFLOW", "_AIRFLOW", "FRUITS_", "PYSPARK_", "AWS_"))}
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    bundles = [
        {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(REPO / "dags")}},
        # The same DAG file in EMR mode under another id (see emr_dags/): one Airflow, both modes.
        {"name": "ui-tests-emr", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
         "kwargs": {"path": str(EMR_DAGS)}},
    ]
    env.update(COMPOSE_SETTINGS)
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin,{NO_ROLE}:",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(bundles),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": "127.0.0.1",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(health_port),
        # Free ports for the log servers too: another Airflow on this machine may hold 8793/8794.
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        # Two cores shared by everything: few task processes at once, no periodic re-parsing storm.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
        "FRUITS_LAKE_URI": f"file://{lake_root}",
        "FRUITS_JOBS_DIR": str(REPO / "spark_jobs"),
        "AWS_CONN_ID": "aws_default",
        "AIRFLOW_CONN_AWS_DEFAULT": json.dumps({
            "conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": moto_endpoint, "region_name": "eu-west-3"}}),
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "eu-west-3",
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    })
    env.update({name: base[name] for name in PASSED_THROUGH if base.get(name)})
    return env


def prepare_home(home: Path, emr_env: dict) -> str:
    """Write the admin password (before any component starts) and the EMR DAG's settings; return the password."""
    password = secrets.token_urlsafe(12)
    passwords = {ADMIN: password, NO_ROLE: secrets.token_urlsafe(12)}
    (home / "simple_auth_manager_passwords.json.generated").write_text(json.dumps(passwords) + "\n")
    (home / EMR_ENV_FILE).write_text(json.dumps(emr_env, indent=2) + "\n")
    return password
