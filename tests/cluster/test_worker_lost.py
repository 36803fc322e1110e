"""A node lost in the middle of the feature job (a spot node reclaimed): a third worker joins the
session's standalone cluster, and once its executor runs a task of the job, the worker and its
executor are SIGKILLed. The job must finish on the other executors with every image featurized once,
and features equal to an undisturbed computation (docs/reliability.md).

Runs after test_standalone_cluster.py (file order): the dead worker stays listed ALIVE by the master
for spark.worker.timeout, which that module's worker count would see.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from fruits_contract.model import SHIPPED_MODEL_PATH
from moto_emr import free_port  # tests/ (a plain module)

pytestmark = pytest.mark.cluster
EXECUTOR_RUNNING_A_TASK = "Running task"


@pytest.fixture
def third_worker(standalone_cluster, tmp_path):
    """A one-core worker of the session's cluster, in a process group of its own (with its executors)."""
    import pyspark

    home = Path(pyspark.__file__).resolve().parent
    env = {**os.environ, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1", "SPARK_NO_DAEMONIZE": "1",
           "SPARK_LOG_DIR": str(tmp_path)}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    before = standalone_cluster.alive_workers()
    work = tmp_path / "work"
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen([str(home / "bin" / "spark-class"), "org.apache.spark.deploy.worker.Worker",
                                   "--host", "127.0.0.1", "--cores", "1", "--memory", "2g", "--webui-port",
                                   str(free_port()), "--work-dir", str(work), standalone_cluster.master_url],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while standalone_cluster.alive_workers() <= before:
            assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(1)
        yield worker, work, standalone_cluster.alive_workers()
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _images(real_keras_features, root: Path) -> list[Path]:
    import shutil

    paths = []
    for path in real_keras_features[0]:
        target = root / Path(path).parent.name / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target)
        paths.append(target)
    return paths


def undisturbed_features(paths: list[Path]) -> np.ndarray:
    """The job's own decode and model, in this process, one batch: what an undisturbed run computes."""
    from fruits_spark.feature_model import LiteRTModel
    from fruits_spark.features import decode_batch

    batch = decode_batch([p.read_bytes() for p in paths])
    assert len(batch.ok_rows) == len(paths)
    return LiteRTModel(SHIPPED_MODEL_PATH.read_bytes()).predict(batch.pixels)


def test_a_worker_lost_mid_job_loses_no_image_and_duplicates_none(submit_to_cluster, third_worker, real_keras_features,
                                                                  tmp_path, monkeypatch):
    worker, work, cores = third_worker
    # The job sizes its partitions to the task slots it sees at start: it must see the third worker's
    # executor too, or the job may never give it a task (the driver waits for every core; system
    # properties of spark-submit's JVM are Spark settings).
    monkeypatch.setenv("SPARK_SUBMIT_OPTS", f"-Dspark.cores.max={cores} -Dspark.scheduler.minRegisteredResourcesRatio=1.0"
                                            " -Dspark.scheduler.maxRegisteredResourcesWaitingTime=120s")
    images = _images(real_keras_features, tmp_path / "raw")
    output = tmp_path / "lake" / "features" / "batch=lost-worker"
    submitted = {}

    def submit():
        submitted["completed"] = submit_to_cluster(
            "extract_features.py", "--images", f"file://{tmp_path / 'raw'}", "--output", f"file://{output}",
            "--model", f"file://{SHIPPED_MODEL_PATH}")

    job = threading.Thread(target=submit)
    job.start()
    deadline = time.monotonic() + 600
    while not any(EXECUTOR_RUNNING_A_TASK in log.read_text(errors="replace") for log in work.glob("app-*/*/stderr")):
        assert job.is_alive(), "the job ended before the third worker's executor ran a task"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)  # inside the task: the model built, images going through it
    os.killpg(worker.pid, signal.SIGKILL)  # the node is gone: worker, executor and its Python workers
    job.join(timeout=900)

    completed = submitted["completed"]
    output_text = completed.stdout + completed.stderr
    assert completed.returncode == 0, output_text[-4000:]
    result = json.loads([l for l in output_text.splitlines() if l.startswith("FRUITS_RESULT ")][-1].split(" ", 1)[1])
    assert result["featurized"] == len(images) and result["rejected"] == 0, result
    assert len(result["executors_lost"]) == 1, result  # what the run report lists as a fault

    import pyarrow.parquet as pq

    table = pq.read_table(output, columns=["path", "features"]).to_pydict()
    assert sorted(table["path"]) == sorted(f"file://{p}" for p in images), "each image exactly once"
    by_path = dict(zip(table["path"], table["features"]))
    ours = np.array([by_path[f"file://{p}"] for p in images], dtype=np.float32)
    np.testing.assert_allclose(ours, undisturbed_features(images), rtol=1e-5, atol=1e-5)
