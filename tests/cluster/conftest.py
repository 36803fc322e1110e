"""A real Spark standalone cluster on 127.0.0.1 and the code package as EMR gets it.

pyspark's own launcher starts one master and two workers of one core each
(``bin/spark-class org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), so every
executor is a JVM of its own with Python workers of its own, as on YARN or Kubernetes. The
jobs run from ``make package``'s output (``--py-files fruits_spark.zip``) with a Python that
has only what the real bootstrap script installs, from a wheelhouse, with no package index.
Everything started here is stopped whatever happens.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
import venv
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
JOBS_DIR = REPO_ROOT / "spark_jobs"
BOOTSTRAP = JOBS_DIR / "bootstrap" / "install_python_deps.sh"
WORKERS = 2
START_TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


@dataclass(frozen=True)
class NodePython:
    """A fresh venv holding only what the bootstrap installs (no pyspark, no project)."""

    python: Path
    bootstrap_log: str


@dataclass(frozen=True)
class StandaloneCluster:
    master_url: str
    ui_url: str
    logs: Path

    def alive_workers(self) -> int:
        with urllib.request.urlopen(self.ui_url + "/json/", timeout=5) as response:
            state = json.load(response)
        return sum(1 for worker in state.get("workers", []) if worker.get("state") == "ALIVE")


@pytest.fixture(scope="session")
def node_python(host_wheelhouse, tmp_path_factory) -> NodePython:
    """Run the real bootstrap script against a fresh venv, from a wheelhouse (tests/conftest.py's
    host_wheelhouse, shared with tests/unit), index unreachable."""
    root = tmp_path_factory.mktemp("node")
    env_dir = root / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    env = {
        "PATH": os.environ["PATH"], "HOME": str(root),
        "FRUITS_PYTHON": str(python),
        # The machine's pip configuration adds indexes and find-links of its own: none here.
        "PIP_CONFIG_FILE": os.devnull, "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
    }
    completed = subprocess.run(["bash", str(BOOTSTRAP), str(host_wheelhouse)], env=env, capture_output=True,
                               text=True, timeout=600)
    assert completed.returncode == 0, f"bootstrap failed:\n{completed.stdout}\n{completed.stderr}"
    return NodePython(python, completed.stdout + completed.stderr)


@pytest.fixture(scope="session")
def code_package(tmp_path_factory):
    """What `make package` ships to code/<version>/ (without the wheelhouse, which node_python used)."""
    from fruits_pipeline.job_code import build_code_package

    out = tmp_path_factory.mktemp("code")
    build_code_package(JOBS_DIR, out)
    return out


def _start(command: list[str], log: Path, env: dict) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="session")
def standalone_cluster(tmp_path_factory) -> StandaloneCluster:
    home = spark_home()
    logs = tmp_path_factory.mktemp("standalone")
    port, ui_port = free_port(), free_port()
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1",
           "SPARK_LOG_DIR": str(logs), "SPARK_WORKER_DIR": str(logs / "work")}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    spark_class = str(home / "bin" / "spark-class")
    master_url = f"spark://127.0.0.1:{port}"
    processes = [_start([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                         "--port", str(port), "--webui-port", str(ui_port)], logs / "master.log", env)]
    try:
        for index in range(WORKERS):
            processes.append(_start(
                [spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1",
                 "--memory", "2g", "--webui-port", str(free_port()), "--work-dir", str(logs / f"work{index}"),
                 master_url], logs / f"worker{index}.log", env))
        cluster = StandaloneCluster(master_url, f"http://127.0.0.1:{ui_port}", logs)
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while True:
            try:
                if cluster.alive_workers() == WORKERS:
                    break
            except OSError:
                pass
            dead = [p.args[1] for p in processes if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                tails = "\n".join(f"--- {f.name}\n{f.read_text()[-2000:]}" for f in sorted(logs.glob("*.log")))
                pytest.fail(f"standalone cluster did not start ({'exited: ' + ', '.join(dead) if dead else 'timeout'}):\n{tails}")
            time.sleep(1)
        yield cluster
    finally:
        _stop(processes)


@pytest.fixture(scope="session")
def submit_to_cluster(standalone_cluster, node_python, code_package):
    """spark-submit a script of the package to the cluster (or ``master``), as an EMR step does;
    a script outside the package is given by its path."""

    def submit(script: str | Path, *args: str, master: str | None = None, timeout: int = 900):
        env = {**os.environ, "SPARK_HOME": str(spark_home()), "SPARK_LOCAL_IP": "127.0.0.1",
               "PYSPARK_PYTHON": str(node_python.python), "PYSPARK_DRIVER_PYTHON": str(node_python.python)}
        for name in ("PYSPARK_SUBMIT_ARGS", "PYTHONPATH"):
            env.pop(name, None)
        command = [str(spark_home() / "bin" / "spark-submit"), "--master", master or standalone_cluster.master_url,
                   "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=1g",
                   "--py-files", str(code_package / "fruits_spark.zip"), str(code_package / script), *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout,
                              cwd=code_package)

    return submit
