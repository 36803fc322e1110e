"""Feature job throughput against the single-process ceiling, measured in the same run.

    python bench/bench_features.py [--images DIR] [--scale N] [--weights FILE] [--master local[2]]

1. The job: `spark-submit --master local[2] spark_jobs/extract_features.py` (the real entry
   script and settings), its process tree sampled with psutil for peak RSS.
2. The ceiling: MobileNetV2 alone in this plain Python process, TensorFlow's default threads,
   same decode + resize + preprocess, batches of 64, on the same files.
Writes bench/results/latest.json.
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
from pathlib import Path

from fruits_pipeline.validation import IMAGE_EXTENSIONS  # what the feature job reads

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "spark_jobs"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", default=os.environ.get("FRUITS_SAMPLE_DIR"), help="folder of <label>/<image>")
    parser.add_argument("--scale", type=int, help="replicate the images to this many (in a temp dir)")
    parser.add_argument("--weights", default=os.environ.get("FRUITS_WEIGHTS"), help="MobileNetV2 .weights.h5")
    parser.add_argument("--master", default="local[2]", help="Spark master of the job (the DAG's local default)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default=str(REPO / "bench" / "results" / "latest.json"))
    args = parser.parse_args(argv)
    if not args.images or not Path(args.images).is_dir():
        parser.error(f"--images: not a folder ({args.images!r}); set FRUITS_SAMPLE_DIR or pass --images")
    if not args.weights or not Path(args.weights).is_file():
        parser.error(f"--weights: not a file ({args.weights!r}); set FRUITS_WEIGHTS (there is no network here)")
    return args


def stage_images(source: Path, scale: int | None, target: Path) -> list[Path]:
    """The bench's image set under target/<label>/: the source files, replicated up to `scale`."""
    files = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f"--images {source}: no .jpg/.jpeg/.png files")
    wanted = scale or len(files)
    staged = []
    for i in range(wanted):
        src = files[i % len(files)]
        dst = target / src.parent.name / f"r{i // len(files)}_{src.parent.parent.name}_{src.name}"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        staged.append(dst)
    return staged


class TreeSampler(threading.Thread):
    """Peak RSS of the job's driver (JVM + Python driver) and of its Python workers."""

    def __init__(self, pid: int, every: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.driver_peak = self.workers_peak = 0
        self.stop = threading.Event()

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
                except psutil.Error:
                    continue
                if "pyspark.daemon" in cmd or "pyspark.worker" in cmd or "tf_daemon" in cmd:
                    workers += rss
                elif "java" in cmd or "extract_features.py" in cmd:
                    driver += rss
            self.driver_peak = max(self.driver_peak, driver)
            self.workers_peak = max(self.workers_peak, workers)
            self.stop.wait(self.every)


def run_job(images: Path, output: Path, weights: str, master: str, batch_size: int) -> dict:
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable,
           "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}", "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [str(bin_dir / "spark-submit"), "--master", master, "--conf", "spark.ui.enabled=false",
               str(REPO / "spark_jobs" / "extract_features.py"), "--images", str(images),
               "--output", str(output), "--weights", weights, "--batch-size", str(batch_size)]
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
    # Steady state: each worker logs its rate after its model is built; the last line per worker.
    last_rate = {}
    for line in lines:
        match = re.search(r"worker pid (\d+): \d+ images through the model \(([\d.]+) images/s\)", line)
        if match:
            last_rate[match.group(1)] = float(match.group(2))
    return {**results[-1], "wall_seconds": wall, "steady_images_per_second": sum(last_rate.values()) or None,
            "driver_peak_rss_mb": sampler.driver_peak / 2**20, "workers_peak_rss_mb": sampler.workers_peak / 2**20}


def run_ceiling(files: list[Path], weights: str, batch_size: int) -> dict:
    """MobileNetV2 alone: read + decode + resize + preprocess + predict, one process, default threads."""
    started = time.monotonic()  # like the job's timer, TF's import and the model build count
    import numpy as np
    import tensorflow as tf

    from fruits_spark.features import IMAGE_SIZE, build_model, decode_batch

    model = build_model(weights=None)
    model.load_weights(weights)

    @tf.function(input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE, 3], tf.float32)])
    def predict(x):
        return model(x, training=False)

    done, loop_started = 0, time.monotonic()
    for start in range(0, len(files), batch_size):
        batch = decode_batch([p.read_bytes() for p in files[start:start + batch_size]])
        out = predict(batch.pixels).numpy()
        done += len(out)
    assert out.shape[1] == 1280 and np.isfinite(out).all()
    now = time.monotonic()
    return {"seconds": now - started, "featurized": done, "steady_images_per_second": done / (now - loop_started)}


def main(argv=None) -> int:
    import psutil

    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="fruits-bench-") as tmp:
        tmp = Path(tmp)
        files = stage_images(Path(args.images), args.scale, tmp / "images")
        print(f"bench: {len(files)} images staged under {tmp / 'images'}; load average {os.getloadavg()}", flush=True)
        load_before = os.getloadavg()
        job = run_job(tmp / "images", tmp / "features", args.weights, args.master, args.batch_size)
        print(f"bench: job {job['featurized']} images in {job['seconds']:.1f} s", flush=True)
        ceiling = run_ceiling(files, args.weights, args.batch_size)
        print(f"bench: ceiling {ceiling['featurized']} images in {ceiling['seconds']:.1f} s", flush=True)
    job_rate = job["featurized"] / job["seconds"]
    ceiling_rate = ceiling["featurized"] / ceiling["seconds"]
    result = {
        "images": len(files),
        "job_images_per_second": round(job_rate, 2),
        "ceiling_images_per_second": round(ceiling_rate, 2),
        "ratio": round(job_rate / ceiling_rate, 3),
        "driver_peak_rss_mb": round(job["driver_peak_rss_mb"], 1),
        "workers_peak_rss_mb": round(job["workers_peak_rss_mb"], 1),
        "cores": psutil.cpu_count(logical=True),
        "master": args.master,
        "batch_size": args.batch_size,
        "job_steady_images_per_second": (round(job["steady_images_per_second"], 2)
                                         if job["steady_images_per_second"] else None),
        "ceiling_steady_images_per_second": round(ceiling["steady_images_per_second"], 2),
        "steady_ratio": (round(job["steady_images_per_second"] / ceiling["steady_images_per_second"], 3)
                         if job["steady_images_per_second"] else None),
        "job_seconds": job["seconds"],
        "job_wall_seconds_with_jvm_start": round(job["wall_seconds"], 2),
        "ceiling_seconds": round(ceiling["seconds"], 2),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "timing_note": "end to end: job = FRUITS_RESULT seconds (weights read on the driver, listing, "
                       "workers' TF import and model build, the model over all images, the writes; "
                       "JVM start excluded), ceiling = TF import + model build + loop. steady: job = sum "
                       "of the workers' last logged rates after their model is built, ceiling = the "
                       "decode+predict loop alone",
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"job      {job_rate:7.1f} images/s\nceiling  {ceiling_rate:7.1f} images/s\nratio    {result['ratio']:.3f}\n"
          f"steady state: job {result['job_steady_images_per_second']} images/s, ceiling "
          f"{result['ceiling_steady_images_per_second']} images/s, ratio {result['steady_ratio']}\n"
          f"driver peak RSS {result['driver_peak_rss_mb']:.0f} MB, workers peak RSS (sum) "
          f"{result['workers_peak_rss_mb']:.0f} MB\nwritten to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
