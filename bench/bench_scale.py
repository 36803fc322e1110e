"""The PCA and classifier steps at scale: time against rows and against task slots, in one run.

    python bench/bench_scale.py [--rows 50000,200000] [--slots-rows 200000] [--output FILE]

The feature rows are made directly (no images), in the layout the feature job writes
(``features/batch=<run_key>/``, committed by a ``_job_result.json``): LABELS fruit-like clusters in a
LATENT-dimensional subspace of the 1280 dims, plus a little isotropic noise, so that ``--variance 0.95``
keeps a few dozen components as on real features. Then the real entry scripts, as a run submits them:
``reduce_pca.py --variance 0.95`` and ``train_classifier.py`` on its output.

- Against rows: each size of ``--rows`` on ``local[2]``; the ratio is time / time of the smallest.
- Against task slots: ``--slots-rows`` rows on ``local[1]``, ``local[2]`` and a Spark standalone cluster
  (one master, two workers of one core, each executor a JVM of its own, as on YARN); the ratio is
  local[1]'s time / the master's time (2.0 would be a perfect use of the second core).
The classifier's time is reported whole (day one of a lake: every k of the accuracy by k is fitted) and
for the fit of the run's k alone (what a normal day does: accuracy_by_k_plan). Writes bench/results/scale.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
JOBS = REPO / "spark_jobs"
sys.path.insert(0, str(JOBS))

from fruits_contract.lake import BATCH_FOLDER_PREFIX, JOB_RESULT_FILE  # noqa: E402

DIMS = 1280
LABELS = 131  # as the full Fruits-360
LATENT = 48
NOISE = 0.03
BATCHES = 20
SET_ROOT = REPO / "bench" / ".scale-set"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", default="50000,200000", help="sizes measured on local[2], comma-separated")
    parser.add_argument("--slots-rows", type=int, default=200_000, help="the size measured on each master")
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "scale.json"))
    return parser.parse_args(argv)


def make_features(rows: int, root: Path, seed: int = 0) -> Path:
    """``rows`` feature rows in BATCHES committed batches under ``root/features`` (kept: made once per size)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = root / "features"
    if (features / ".complete").is_file():
        return features
    shutil.rmtree(features, ignore_errors=True)
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(DIMS, LATENT)))
    centres = rng.normal(size=(LABELS, LATENT))
    per_batch = -(-rows // BATCHES)
    for batch in range(BATCHES):
        n = min(per_batch, rows - batch * per_batch)
        labels = rng.integers(0, LABELS, size=n)
        latent = centres[labels] + 0.35 * rng.normal(size=(n, LATENT))
        values = (latent @ basis.T + NOISE * rng.normal(size=(n, DIMS))).astype(np.float32)
        folder = features / f"{BATCH_FOLDER_PREFIX}day{batch:03d}"
        folder.mkdir(parents=True)
        offsets = pa.array(np.arange(0, (n + 1) * DIMS, DIMS, dtype=np.int32))
        table = pa.table({
            "path": [f"file:///lake/raw/fruit_{label:03d}/b{batch:03d}_{i:07d}.jpg" for i, label in enumerate(labels)],
            "label": [f"fruit_{label:03d}" for label in labels],
            "features": pa.ListArray.from_arrays(offsets, pa.array(values.ravel())),
            "model": ["mobilenet_v2/tflite-sha256-bench000000000000"] * n,
        })
        pq.write_table(table, folder / "part-00000.parquet")
        (folder / JOB_RESULT_FILE).write_text(json.dumps({"job": "bench", "n_images": n}) + "\n")
    (features / ".complete").write_text("")
    return features


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandaloneCluster:
    """One master and two one-core workers of pyspark's own distribution, stopped on exit."""

    def __init__(self, logs: Path, workers: int = 2):
        import pyspark

        self.home = Path(pyspark.__file__).resolve().parent
        self.logs, self.workers, self.processes = logs, workers, []
        port, self.ui_port = _free_port(), _free_port()
        self.url = f"spark://127.0.0.1:{port}"
        self.env = {**os.environ, "SPARK_HOME": str(self.home), "SPARK_LOCAL_IP": "127.0.0.1",
                    "SPARK_NO_DAEMONIZE": "1", "SPARK_LOG_DIR": str(logs)}
        self.env.pop("PYSPARK_SUBMIT_ARGS", None)
        self.master_args = ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
                            "--webui-port", str(self.ui_port)]

    def _start(self, args: list[str], log: str) -> None:
        handle = (self.logs / log).open("w")
        self.processes.append(subprocess.Popen([str(self.home / "bin" / "spark-class"), *args], stdout=handle,
                                               stderr=subprocess.STDOUT, env=self.env, start_new_session=True))

    def __enter__(self):
        self.logs.mkdir(parents=True, exist_ok=True)
        self._start(self.master_args, "master.log")
        for index in range(self.workers):
            self._start(["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--cores", "1", "--memory",
                         "4g", "--webui-port", str(_free_port()), "--work-dir", str(self.logs / f"work{index}"),
                         self.url], f"worker{index}.log")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
                    if sum(w.get("state") == "ALIVE" for w in json.load(response).get("workers", [])) == self.workers:
                        return self
            except OSError:
                pass
            time.sleep(1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"the standalone cluster did not start; see {self.logs}")

    def __exit__(self, *exc):
        for process in self.processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def submit(master: str, script: str, args: list[str], driver_memory: str) -> dict:
    """spark-submit one entry script; its FRUITS_RESULT and the wall time."""
    python = sys.executable
    env = {**os.environ, "PYSPARK_PYTHON": python, "PYSPARK_DRIVER_PYTHON": python}
    env.pop("PYSPARK_SUBMIT_ARGS", None)
    command = [str(Path(python).parent / "spark-submit"), "--master", master, "--driver-memory", driver_memory,
               "--conf", "spark.ui.enabled=false", "--conf", "spark.executor.memory=3g", str(JOBS / script), *args]
    started, cpu_before = time.monotonic(), _children_cpu_seconds()
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    wall, cpu = time.monotonic() - started, _children_cpu_seconds() - cpu_before
    output = completed.stdout + completed.stderr
    lines = [line for line in output.splitlines() if line.startswith("FRUITS_RESULT ")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"{script} on {master} failed ({completed.returncode}):\n{output[-4000:]}")
    return json.loads(lines[-1].removeprefix("FRUITS_RESULT ")) | {"wall_seconds": round(wall, 1),
                                                                  "cpu_seconds": round(cpu, 1)}


def _children_cpu_seconds() -> float:
    """CPU of the finished child process trees (spark-submit's JVM and, on local masters, its Python workers;
    a standalone cluster's executors belong to its workers and are not counted)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(features: Path, work: Path, master: str, driver_memory: str) -> dict:
    """The two steps on ``master``: the PCA job, then the classifier on its output."""
    shutil.rmtree(work, ignore_errors=True)
    pca = submit(master, "reduce_pca.py", ["--features", features.as_uri(), "--output", (work / "pca").as_uri(),
                                           "--variance", "0.95"], driver_memory)
    classifier = submit(master, "train_classifier.py", ["--pca", (work / "pca").as_uri(),
                                                        "--output", (work / "classifier").as_uri()], driver_memory)
    figures = json.loads((work / "classifier" / "figures.json").read_text())
    k = str(classifier["k"])
    return {"master": master, "rows": pca["n_images"], "k": pca["k"], "labels": classifier["labels"],
            "pca_seconds": pca["wall_seconds"], "classifier_seconds": classifier["wall_seconds"],
            # CPU seconds per wall second of the job: above 1 on local[1] means one task slot kept more than a core busy
            "pca_cores_busy": round(pca["cpu_seconds"] / pca["wall_seconds"], 2),
            "classifier_cores_busy": round(classifier["cpu_seconds"] / classifier["wall_seconds"], 2),
            "fit_seconds_run_k": classifier["fit_seconds"][k], "fit_seconds": classifier["fit_seconds"],
            "evaluations_run_k": figures["fits"][k]["evaluations"], "accuracy": classifier["accuracy"]}


def main(argv=None) -> int:
    args = parse_args(argv)
    sizes = sorted({int(n) for n in args.rows.split(",")} | {args.slots_rows})
    runs = []
    for rows in sizes:
        print(f"making {rows:,} feature rows ...", flush=True)
        features = make_features(rows, SET_ROOT / f"rows-{rows}")
        masters = ["local[2]"] + (["local[1]", "standalone"] if rows == args.slots_rows else [])
        for master in masters:
            work = SET_ROOT / "work"
            if master == "standalone":
                with StandaloneCluster(SET_ROOT / "standalone-logs") as cluster:
                    run = measure(features, work, cluster.url, args.driver_memory) | {"master": "standalone (2 x 1 core)"}
            else:
                run = measure(features, work, master, args.driver_memory)
            print(json.dumps(run), flush=True)
            runs.append(run)
    by = {(run["rows"], run["master"]): run for run in runs}
    smallest, largest = sizes[0], args.slots_rows
    reference = by[(largest, "local[1]")]
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpu_count": os.cpu_count(),
        "set": {"dims": DIMS, "labels": LABELS, "latent_dims": LATENT, "noise": NOISE, "batches": BATCHES},
        "runs": runs,
        "against_rows": {str(rows): {step: round(by[(rows, "local[2]")][step] / by[(smallest, "local[2]")][step], 2)
                                     for step in ("pca_seconds", "classifier_seconds", "fit_seconds_run_k")}
                         | {"rows_ratio": round(rows / smallest, 2)} for rows in sizes},
        "against_slots": {run["master"]: {step: round(reference[step] / run[step], 2)
                                          for step in ("pca_seconds", "classifier_seconds", "fit_seconds_run_k")}
                          for run in runs if run["rows"] == largest},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"against_rows": result["against_rows"], "against_slots": result["against_slots"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
