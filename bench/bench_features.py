"""The feature job against two single-process baselines, all measured in the same run.

    python bench/bench_features.py [--images DIR] [--scale 4000] [--weights FILE] [--model FILE]
                                   [--master local[2]]

1. The job: `spark-submit --master local[2] spark_jobs/extract_features.py` (the real entry
   script and settings), its process tree sampled with psutil for peak RSS.
2. The naive TensorFlow loop (the issue's end-to-end baseline): Keras' MobileNetV2 with the source
   weights in this plain Python process, TensorFlow's default threads, a traced predict, read +
   decode + resize + preprocess + predict in batches of 64. Needs TensorFlow (dev) and --weights.
3. One LiteRT process (the steady-state baseline): the same flatbuffer as the job, one interpreter
   with two threads, decoding in the same process, the same loop.
4. The job's arrangement without Spark: as many one-thread LiteRT processes as the job had task
   slots, at once, each running the same loop on its share of the images; on a local[N] master
   measured before the job and after the other baselines, the job compared with their mean.
Each baseline's end-to-end time counts its imports and model build, as the job's counts its start.
Writes bench/results/latest.json (`make cost` reads it).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "spark_jobs"))

from fruits_contract.model import SHIPPED_MODEL_PATH  # noqa: E402

BENCH_IMAGES = 4000  # the sample has 2,714: stage_images replicates it up to this
# Steady state starts after each process's first images: in the job's first ~10 s the JVM compiles
# its hot code (C2 threads took 0.2-0.5 of a core then) on the cores the workers need.
WARMUP_IMAGES = 1024


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=os.environ.get("FRUITS_SAMPLE_DIR"), help="folder of <label>/<image>")
    parser.add_argument("--scale", type=int, default=BENCH_IMAGES, help="replicate the images to this many (in a temp dir)")
    parser.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS"),
                        help="the model's source .weights.h5, for the TensorFlow baseline")
    parser.add_argument("--model", default=str(SHIPPED_MODEL_PATH), help="TFLite flatbuffer the job and LiteRT run")
    parser.add_argument("--master", default="local[2]", help="Spark master of the job (the DAG's local default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--litert-threads", type=int, default=2, help="threads of the LiteRT baseline's interpreter")
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    if not args.images or not Path(args.images).is_dir():
        parser.error(f"--images: not a folder ({args.images!r}); set FRUITS_SAMPLE_DIR or pass --images")
    if not args.weights or not Path(args.weights).is_file():
        parser.error(f"--weights: not a file ({args.weights!r}); set FRUITS_WEIGHTS (there is no network here)")
    if not Path(args.model).is_file():
        parser.error(f"--model: not a file ({args.model!r}); `make model` writes the default")
    return args


def stage_images(source: Path, scale: int | None, target: Path) -> list[Path]:
    """The bench's image set under target/<label>/: the source files, replicated up to `scale`, each
    file's bytes distinct."""
    files = sorted(p for p in source.rglob("*") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise SystemExit(f"--images {source}: no files")
    wanted = scale or len(files)
    staged = []
    for i in range(wanted):
        src = files[i % len(files)]
        dst = target / src.parent.name / f"r{i // len(files)}_{src.parent.parent.name}_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        # A replica gets a few bytes of its own after the image (decoders stop before them): the job
        # featurizes equal bytes once per run, and the bench must give it as many images as the baselines.
        dst.write_bytes(src.read_bytes() + (b"" if i < len(files) else f"\0replica {i}".encode()))
        staged.append(dst)
    return staged


class TreeSampler(threading.Thread):
    """Peak RSS of the job's driver (JVM + Python driver) and of its Python workers, and the CPU
    seconds of the JVM, the Python driver and the Python workers (each process's last sample)."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.driver_peak = self.workers_peak = 0
        self.cpu_by_pid: dict[int, tuple[str, float]] = {}
        self.stop = threading.Event()

    @property
    def cpu_seconds(self) -> dict[str, float]:
        totals = {"jvm": 0.0, "python_driver": 0.0, "python_workers": 0.0}
        for kind, seconds in self.cpu_by_pid.values():
            totals[kind] += seconds
        return {kind: round(seconds, 1) for kind, seconds in totals.items()}

    def run(self):
        import psutil

        root = psutil.Process(self.pid)
        while not self.stop.is_set():
            driver = workers = 0
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    cmd = " ".join(proc.cmdline())
                    rss = proc.memory_info().rss
                    cpu = proc.cpu_times()
                except psutil.Error:
                    continue
                if "pyspark.daemon" in cmd or "pyspark.worker" in cmd:
                    workers += rss
                    kind = "python_workers"
                elif "java" in cmd or "extract_features.py" in cmd:
                    driver += rss
                    kind = "jvm" if "java" in cmd else "python_driver"
                else:
                    continue
                self.cpu_by_pid[proc.pid] = (kind, cpu.user + cpu.system)
            self.driver_peak = max(self.driver_peak, driver)
            self.workers_peak = max(self.workers_peak, workers)
            self.stop.wait(self.every)


def run_job(images: Path, output: Path, model: str, master: str, batch_size: int) -> dict:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}
    command = [str(bin_dir / "spark-submit"), "--master", master, "--conf", "spark.ui.enabled=false",
               str(REPO / "spark_jobs" / "extract_features.py"), "--images", str(images),
               "--output", str(output), "--model", model, "--batch-size", str(batch_size)]
    started = time.monotonic()
    log_path = output.parent / "job.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid)
        sampler.start()
        code = proc.wait()
        sampler.stop.set()
        sampler.join()
    wall = time.monotonic() - started
    lines = log_path.read_text().splitlines()
    results = [json.loads(line.split("FRUITS_RESULT ", 1)[1]) for line in lines if "FRUITS_RESULT " in line]
    if code != 0 or not results:
        print("\n".join(lines[-40:]), file=sys.stderr)
        raise SystemExit(f"bench: the feature job failed (exit {code}); log above")
    return {**results[-1], "wall_seconds": wall, "steady_images_per_second": steady_rate(lines),
            "rate_from_model_build": rate_from_model_build(lines),
            "task_slots": int(next(m.group(1) for m in map(TASK_SLOTS_LOG.search, lines) if m)),
            "driver_peak_rss_mb": sampler.driver_peak / 2**20, "workers_peak_rss_mb": sampler.workers_peak / 2**20,
            "cpu_seconds": sampler.cpu_seconds}


TASK_SLOTS_LOG = re.compile(r"; (\d+) task slots, ")
WORKER_LOG = re.compile(r"^(\S+ \S+) \S+ INFO worker pid (\d+): (\d+) images through the model "
                        r"\(([\d.]+) images/s\)(, partition done)?")


def worker_progress(log_lines: list[str]) -> dict[str, list[tuple[datetime, int, float]]]:
    """Each Python worker's log lines (every 512 images and at the end of each partition) as (time,
    images so far over all its partitions, seconds since its model build so far), by pid. A worker
    counts each partition from zero and times it from the partition's first batch: the pauses between
    its tasks (Spark's task start and commit) fall in no partition's time, so they are measured
    here, between one partition's last line and the next one's."""
    progress: dict[str, list[tuple[datetime, int, float]]] = {}
    finished: dict[str, tuple[int, float]] = {}  # pid -> images and busy seconds of its finished partitions
    for line in log_lines:
        match = WORKER_LOG.search(line)
        if not match:
            continue
        at = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        pid, done, rate = match.group(2), int(match.group(3)), float(match.group(4))
        images_before, seconds_before = finished.get(pid, (0, 0.0))
        points = progress.setdefault(pid, [])
        if points and images_before:  # a later partition: the wall time since the last one counts
            seconds = points[-1][2] + (at - points[-1][0]).total_seconds()
        else:
            seconds = seconds_before + (done / rate if rate else 0.0)
        points.append((at, images_before + done, seconds))
        if match.group(5):
            finished[pid] = (images_before + done, seconds)
    return progress


def steady_rate(log_lines: list[str], warmup: int = WARMUP_IMAGES) -> float | None:
    """The job's steady state: the sum over workers of each one's rate after its first ``warmup``
    images, pauses between its partitions included. A worker with no line after ``warmup`` counts
    at its rate since its model build."""
    total = 0.0
    for points in worker_progress(log_lines).values():
        end_at, end_done, end_seconds = points[-1]
        start_at, start_done, _ = next(point for point in points if point[1] >= warmup or point is points[-1])
        seconds = (end_at - start_at).total_seconds()
        total += ((end_done - start_done) / seconds if end_done > start_done and seconds > 0
                  else end_done / max(end_seconds, 1e-9))
    return total or None


def rate_from_model_build(log_lines: list[str]) -> float | None:
    """The sum over workers of each one's rate over all its images, warm-up included."""
    return sum(points[-1][1] / max(points[-1][2], 1e-9) for points in worker_progress(log_lines).values()) or None


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.is_file() and not p.name.startswith("."))


def run_loop(folder: str, batch_size: int, predict, warmup: int = WARMUP_IMAGES, shard: int = 0,
             shards: int = 1) -> tuple[int, float]:
    """read + decode + resize + preprocess + predict, batch after batch, in this one thread, on
    every ``shards``-th image from the ``shard``-th. Returns the images done and the rate after
    the first ``warmup`` (over all when fewer)."""
    import numpy as np

    from fruits_contract.model import FEATURE_DIM
    from fruits_spark.features import decode_batch

    files = image_files(Path(folder))[shard::shards]
    done, started = 0, time.monotonic()
    steady_from = (0, started)
    for start in range(0, len(files), batch_size):
        batch = decode_batch([Path(p).read_bytes() for p in files[start:start + batch_size]])
        out = predict(batch.pixels)
        done += len(out)
        if steady_from[0] < warmup <= done and done < len(files):
            steady_from = (done, time.monotonic())
    assert out.shape[1] == FEATURE_DIM and np.isfinite(out).all()
    return done, (done - steady_from[0]) / (time.monotonic() - steady_from[1])


def run_tensorflow_loop(folder: str, weights: str, batch_size: int) -> dict:
    """The naive single-process TensorFlow loop: TF's default threads, traced predict."""
    started = time.monotonic()  # like the job's timer, TF's import and the model build count
    import tensorflow as tf

    from fruits_spark.images import IMAGE_SIZE
    from fruits_spark.model_conversion import keras_model

    model = keras_model(weights)

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
    def predict(x):
        return model(x, training=False)

    done, steady = run_loop(folder, batch_size, lambda pixels: predict(pixels).numpy())
    return {"seconds": time.monotonic() - started, "featurized": done, "steady_images_per_second": steady}


def run_litert_process(folder: str, model: str, batch_size: int, threads: int, shard: int = 0,
                       shards: int = 1) -> dict:
    """One process, one LiteRT interpreter with ``threads`` threads on the job's flatbuffer."""
    started = time.monotonic()
    from fruits_spark.feature_model import LiteRTModel

    interpreter = LiteRTModel(Path(model).read_bytes(), threads=threads)
    done, steady = run_loop(folder, batch_size, interpreter.predict, shard=shard, shards=shards)
    return {"seconds": time.monotonic() - started, "featurized": done, "steady_images_per_second": steady}


def run_litert_processes(folder: str, model: str, batch_size: int, processes: int) -> dict:
    """The job's arrangement without Spark: ``processes`` one-thread LiteRT processes at once,
    each on its share of the images."""
    with ThreadPoolExecutor(processes) as pool:
        results = list(pool.map(lambda shard: in_subprocess("run_litert_process", folder, model, batch_size, 1,
                                                            shard, processes), range(processes)))
    return {"seconds": max(r["seconds"] for r in results), "featurized": sum(r["featurized"] for r in results),
            "steady_images_per_second": sum(r["steady_images_per_second"] for r in results)}


def in_subprocess(function: str, *args, module: str = "bench_features") -> dict:
    """Run one baseline in a fresh Python, so that neither inherits the other's imports or threads."""
    code = (f"import json, sys; sys.path.insert(0, {str(REPO / 'bench')!r}); import {module} as b; "
            f"print('RESULT ' + json.dumps(b.{function}(*json.loads(sys.argv[1]))))")
    encoded = json.dumps([str(arg) if isinstance(arg, Path) else arg for arg in args])
    done = subprocess.run([sys.executable, "-c", code, encoded], capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"bench: {function} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def local_slots(master: str) -> int | None:
    """The task slots of a ``local[N]`` master, known before the job runs (None for any other)."""
    match = re.fullmatch(r"local\[(\d+)\]", master)
    return int(match.group(1)) if match else None


def bracketing(before: dict | None, after: dict) -> dict:
    """The one-thread processes' result measured before and after the job: their mean steady rate.
    Measured after the job alone, a machine that slowed down in between flattered the job (runs 21
    and 22: 1.03x and 1.08x against baselines 10-20% slower than the run before)."""
    if before is None:
        return {**after, "steady_before_job": None, "steady_after_job": after["steady_images_per_second"]}
    return {**after, "steady_images_per_second": (before["steady_images_per_second"]
                                                  + after["steady_images_per_second"]) / 2,
            "steady_before_job": before["steady_images_per_second"],
            "steady_after_job": after["steady_images_per_second"]}


def summarize(images: int, job: dict, tf_loop: dict, litert: dict, litert_processes: dict) -> dict:
    """Rates and the ratios between them, all from this one run."""
    def rate(result):
        return result["featurized"] / result["seconds"]

    def rounded(value):
        return round(value, 2) if value is not None else None

    job_steady = job["steady_images_per_second"]
    return {
        "images": images,
        "job_images_per_second": round(rate(job), 2),
        "tf_loop_images_per_second": round(rate(tf_loop), 2),
        "litert_process_images_per_second": round(rate(litert), 2),
        "ratio_job_to_tf_loop": round(rate(job) / rate(tf_loop), 3),
        "ratio_job_to_litert_process": round(rate(job) / rate(litert), 3),
        "job_steady_images_per_second": round(job_steady, 2) if job_steady else None,
        "job_images_per_second_from_model_build": (round(job["rate_from_model_build"], 2)
                                                   if job["rate_from_model_build"] else None),
        "tf_loop_steady_images_per_second": round(tf_loop["steady_images_per_second"], 2),
        "litert_process_steady_images_per_second": round(litert["steady_images_per_second"], 2),
        "steady_ratio_job_to_litert_process": (round(job_steady / litert["steady_images_per_second"], 3)
                                               if job_steady else None),
        "steady_ratio_job_to_tf_loop": (round(job_steady / tf_loop["steady_images_per_second"], 3)
                                        if job_steady else None),
        "litert_1_thread_processes_steady_images_per_second": round(litert_processes["steady_images_per_second"], 2),
        "litert_1_thread_processes_steady_before_job": rounded(litert_processes.get("steady_before_job")),
        "litert_1_thread_processes_steady_after_job": rounded(litert_processes.get("steady_after_job")),
        "steady_ratio_job_to_litert_1_thread_processes": (
            round(job_steady / litert_processes["steady_images_per_second"], 3) if job_steady else None),
        "job_seconds": job["seconds"],
        "job_wall_seconds_with_jvm_start": round(job["wall_seconds"], 2),
        "tf_loop_seconds": round(tf_loop["seconds"], 2),
        "litert_process_seconds": round(litert["seconds"], 2),
        "driver_peak_rss_mb": round(job["driver_peak_rss_mb"], 1),
        "workers_peak_rss_mb": round(job["workers_peak_rss_mb"], 1),
    }


def main(argv=None) -> int:
    import psutil

    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="fruits-bench-") as tmp:
        tmp = Path(tmp)
        files = stage_images(Path(args.images), args.scale, tmp / "images")
        load_before = os.getloadavg()
        print(f"bench: {len(files)} images staged under {tmp / 'images'}; load average {load_before}", flush=True)
        slots = local_slots(args.master)
        before = run_litert_processes(tmp / "images", args.model, args.batch_size, slots) if slots else None
        job = run_job(tmp / "images", tmp / "features", args.model, args.master, args.batch_size)
        print(f"bench: job {job['featurized']} images in {job['seconds']:.1f} s", flush=True)
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / "job.log", Path(args.output).with_suffix(".job.log"))  # where its seconds went
        tf_loop = in_subprocess("run_tensorflow_loop", tmp / "images", args.weights, args.batch_size)
        print(f"bench: TensorFlow loop {tf_loop['featurized']} images in {tf_loop['seconds']:.1f} s", flush=True)
        litert = in_subprocess("run_litert_process", tmp / "images", args.model, args.batch_size, args.litert_threads)
        print(f"bench: LiteRT process {litert['featurized']} images in {litert['seconds']:.1f} s", flush=True)
        slots = job["task_slots"]  # as many one-thread processes as the job had workers
        litert_processes = bracketing(before, run_litert_processes(tmp / "images", args.model, args.batch_size, slots))
        print(f"bench: {slots} one-thread LiteRT processes {litert_processes['featurized']} images in "
              f"{litert_processes['seconds']:.1f} s; steady {litert_processes['steady_before_job']} before the job, "
              f"{litert_processes['steady_after_job']} after", flush=True)
    result = summarize(len(files), job, tf_loop, litert, litert_processes) | {
        "cores": psutil.cpu_count(logical=True),
        "master": args.master,
        "batch_size": args.batch_size,
        "litert_process_threads": args.litert_threads,
        "model": Path(args.model).name,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "timing_note": "end to end: job = FRUITS_RESULT seconds (model read and broadcast, listing, workers' "
                       "start and interpreter build, all images, the writes; JVM start excluded); each "
                       "baseline = its imports + model build + loop, in a fresh process. steady: after each "
                       f"process's first {WARMUP_IMAGES} images; job = sum of its workers' rates then, from "
                       "their log lines; baselines = their decode+predict loop then. from_model_build: the "
                       "workers' rates over all their images",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"job             {result['job_images_per_second']:7.1f} images/s end to end, "
          f"steady {result['job_steady_images_per_second']}\n"
          f"TF loop         {result['tf_loop_images_per_second']:7.1f} images/s end to end, "
          f"steady {result['tf_loop_steady_images_per_second']}\n"
          f"LiteRT process  {result['litert_process_images_per_second']:7.1f} images/s end to end, "
          f"steady {result['litert_process_steady_images_per_second']} ({args.litert_threads} threads)\n"
          f"job / TF loop (end to end) {result['ratio_job_to_tf_loop']:.3f}; job / LiteRT process (steady) "
          f"{result['steady_ratio_job_to_litert_process']}; job / {slots} one-thread LiteRT processes (steady) "
          f"{result['steady_ratio_job_to_litert_1_thread_processes']}\n"
          f"driver peak RSS {result['driver_peak_rss_mb']:.0f} MB, workers peak RSS (sum) "
          f"{result['workers_peak_rss_mb']:.0f} MB; load average {result['load_average_before']} -> "
          f"{result['load_average_after']}\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
