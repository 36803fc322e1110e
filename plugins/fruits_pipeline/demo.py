"""`make demo`: the whole DAG once on local Spark, on a local lake, with no AWS account.

    python -m fruits_pipeline.demo [--images DIR] [--lake DIR] [--airflow-home DIR]

Copies the images of --images (default $FRUITS_SAMPLE_DIR) that are not in the lake yet
into <lake>/raw/<label>/, runs `airflow dags test fruits_pipeline` with FRUITS_COMPUTE=local
and a throwaway Airflow home on SQLite, then prints the run summary and writes the run's
picture next to its report. Run it again: with no new images the DAG has nothing to do and
says so; with new ones it featurizes only those and refits the PCA on everything.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from fruits_pipeline.lake import Lake
from fruits_pipeline.settings import REPO_ROOT
from fruits_pipeline.validation import IMAGE_EXTENSIONS

DAG_ID = "fruits_pipeline"
# What Keras' MobileNetV2(weights="imagenet", include_top=False) downloads (alpha 1.0, 224).
IMAGENET_WEIGHTS_FILE = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
IMAGENET_WEIGHTS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/" + IMAGENET_WEIGHTS_FILE
DOWNLOAD_TIMEOUT_SECONDS = 20

NO_IMAGES_HELP = """\
make demo: no images to process{detail}.
  The demo runs on Fruits-360 (CC BY-SA 4.0, Mihai Oltean): download it from
  https://github.com/fruits-360/fruits-360-100x100 (or Kaggle, "moltean/fruits"), unpack it, and point IMAGES= at
  a folder of <label>/<image>.jpg, for example:
      make demo IMAGES=/path/to/fruits-360-100x100/Test
  A few folders of your own JPEGs named after the fruit work too. Setting FRUITS_SAMPLE_DIR makes it the default."""

NO_WEIGHTS_HELP = """\
make demo: the MobileNetV2 ImageNet weights could not be downloaded ({error}).
  Keras fetches them once from {url}
  into {cache}; this machine cannot reach it. Give a local file instead:
      make demo FRUITS_WEIGHTS=/path/to/mobilenet_v2_1.0_224_no_top.weights.h5
  (a Keras .weights.h5 of MobileNetV2, alpha 1.0, 224x224, no top), or copy Keras' file
  {name} into {cache}/."""


class DemoError(Exception):
    """The demo cannot start; the message says what is missing and how to provide it."""


@dataclass(frozen=True)
class CopyResult:
    copied: int
    already_there: int


def find_images(images_dir: Path) -> list[Path]:
    """Image files under images_dir, at any depth, in a stable order (hidden files skipped)."""
    return sorted(
        p for p in images_dir.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        and not any(part.startswith(".") for part in p.relative_to(images_dir).parts)
    )


def raw_name(images_dir: Path, image: Path) -> Path:
    """Where an image lands under raw/: <label>/<file>, label = its parent folder.

    Folders above the label (Fruits-360's Training/ and Test/) become a file-name prefix,
    so that same-named files of two splits do not collide and a second copy finds them.
    """
    relative = image.relative_to(images_dir)
    if len(relative.parts) < 2:
        raise DemoError(f"{image} is not in a label folder: IMAGES= must hold <label>/<image> folders")
    prefix = "__".join(relative.parts[:-2])
    return Path(image.parent.name) / (f"{prefix}__{image.name}" if prefix else image.name)


def copy_new_images(images_dir: Path, raw_dir: Path) -> CopyResult:
    """Copy the images that are not in raw/ yet; never overwrite or delete what is there."""
    copied = already = 0
    for image in find_images(images_dir):
        target = raw_dir / raw_name(images_dir, image)
        if target.exists():
            already += 1
            if not filecmp.cmp(image, target, shallow=False):
                print(f"make demo: {target} already exists with other content; kept it, skipped {image}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
        copied += 1
    return CopyResult(copied, already)


def keras_weights_cache() -> Path:
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "models"


def ensure_weights(weights: str | None, *, url: str = IMAGENET_WEIGHTS_URL,
                   timeout: float = DOWNLOAD_TIMEOUT_SECONDS) -> Path:
    """The weights the feature job will load: the given file, or Keras' cached ImageNet file.

    Downloads Keras' file into its cache when missing, so that the DAG does not fail
    minutes later inside Spark when the network is not there.
    """
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise DemoError(f"make demo: FRUITS_WEIGHTS={weights} is not a file: give a MobileNetV2 .weights.h5")
        return path
    cache = keras_weights_cache()
    cached = cache / IMAGENET_WEIGHTS_FILE
    if cached.is_file() and cached.stat().st_size > 0:
        return cached
    partial = cached.with_suffix(".part")
    try:
        cache.mkdir(parents=True, exist_ok=True)
        print(f"make demo: downloading the MobileNetV2 ImageNet weights into {cache} (once)")
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out)
        partial.replace(cached)
    except OSError as error:  # URLError, timeouts and refused connections are all OSErrors
        partial.unlink(missing_ok=True)
        raise DemoError(NO_WEIGHTS_HELP.format(error=getattr(error, "reason", error), url=url, cache=cache,
                                               name=IMAGENET_WEIGHTS_FILE)) from None
    return cached


def airflow_env(lake_root: Path | None, airflow_home: Path, weights: str | None,
                base: dict | None = None) -> dict:
    """The environment of a local-mode Airflow on a throwaway SQLite home (``base``: os.environ)."""
    env = dict(os.environ if base is None else base)
    env.update({
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "FRUITS_COMPUTE": "local",
        "PYSPARK_PYTHON": env.get("PYSPARK_PYTHON", sys.executable),
        "PYSPARK_DRIVER_PYTHON": env.get("PYSPARK_DRIVER_PYTHON", sys.executable),
        "TF_CPP_MIN_LOG_LEVEL": env.get("TF_CPP_MIN_LOG_LEVEL", "2"),
    })
    if lake_root is not None:
        env["FRUITS_LAKE_URI"] = f"file://{lake_root}"
    if weights:
        env["FRUITS_WEIGHTS"] = str(weights)
    else:
        env.pop("FRUITS_WEIGHTS", None)
    return env


def airflow_command() -> list[str]:
    executable = Path(sys.executable).parent / "airflow"
    return [str(executable)] if executable.exists() else [sys.executable, "-m", "airflow"]


def reports(lake_root: Path) -> dict[Path, float]:
    folder = lake_root / "reports"
    return {p: p.stat().st_mtime for p in folder.glob("*.json")} if folder.is_dir() else {}


def newest_report(lake_root: Path, before: dict[Path, float]) -> Path | None:
    """The report the run just wrote: new or rewritten since ``before``, newest first."""
    changed = {p: m for p, m in reports(lake_root).items() if before.get(p) != m}
    return max(changed, key=changed.get) if changed else None


def run_dag(env: dict, airflow_home: Path) -> tuple[int, Path]:
    """`airflow db migrate` then `airflow dags test`; output goes to the terminal and a log file."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    log_path = airflow_home / f"demo-{time.strftime('%Y%m%dT%H%M%S')}.log"
    with open(log_path, "w") as log:
        print(f"make demo: preparing Airflow's metadata database in {airflow_home} (SQLite)")
        migrate = subprocess.run([*airflow_command(), "db", "migrate"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, text=True)
        if migrate.returncode != 0:
            return migrate.returncode, log_path
        print(f"make demo: running `airflow dags test {DAG_ID}` (local Spark; full output in {log_path})")
        process = subprocess.Popen([*airflow_command(), "dags", "test", DAG_ID], env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1)
        for line in process.stdout:
            log.write(line)
            sys.stdout.write(line)
        return process.wait(), log_path


def describe(report: dict, report_path: Path, picture: Path | None) -> str:
    from fruits_pipeline.report import summary_text

    lines = ["", summary_text(report)]
    counts, uris = report["counts"], report["uris"]
    if counts.get("featurized") is None:
        lines.append(f"make demo: nothing new to process ({counts.get('already_featurized', 0)} images already "
                     f"featurized, {counts.get('previously_rejected', 0)} rejected before); no Spark job ran. "
                     "Add images to IMAGES= and run `make demo` again.")
        return "\n".join(lines)
    lines += [  # the summary above has the counts, k, variance kept, step timings and the report's URI
        f"  features:   {uris['features']}",
        f"  PCA output: {uris['pca']}",
    ]
    if picture:
        lines.append(f"  picture:    {picture}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=os.environ.get("FRUITS_SAMPLE_DIR") or None,
                        help="folder of <label>/<image> to upload (default $FRUITS_SAMPLE_DIR)")
    parser.add_argument("--lake", default=str(REPO_ROOT / ".lake"), help="local lake folder (default .lake)")
    parser.add_argument("--airflow-home", default=str(REPO_ROOT / ".airflow"), help="throwaway AIRFLOW_HOME")
    args = parser.parse_args(argv)
    try:
        images_dir = Path(args.images).resolve() if args.images else None
        if images_dir is None:
            raise DemoError(NO_IMAGES_HELP.format(detail=": IMAGES= is not set and neither is FRUITS_SAMPLE_DIR"))
        if not images_dir.is_dir():
            raise DemoError(NO_IMAGES_HELP.format(detail=f": IMAGES={args.images} is not a folder"))
        if not find_images(images_dir):
            raise DemoError(NO_IMAGES_HELP.format(detail=f": IMAGES={args.images} holds no .jpg/.jpeg/.png file"))
        weights = os.environ.get("FRUITS_WEIGHTS") or None
        ensure_weights(weights)
        lake_root = Path(args.lake).resolve()
        copied = copy_new_images(images_dir, lake_root / "raw")
    except DemoError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"make demo: lake {lake_root}: copied {copied.copied} new images into raw/ "
          f"({copied.already_there} were already there)")

    airflow_home = Path(args.airflow_home).resolve()
    before = reports(lake_root)
    returncode, log_path = run_dag(airflow_env(lake_root, airflow_home, weights), airflow_home)
    report_path = newest_report(lake_root, before)
    if report_path is None:
        print(f"make demo: the DAG run wrote no report (exit code {returncode}); see {log_path}", file=sys.stderr)
        return returncode or 1
    report = json.loads(report_path.read_text())
    picture = None
    if report["counts"].get("featurized") is not None and report["uris"].get("pca"):
        from fruits_pipeline.picture import write_run_picture

        picture = write_run_picture(Lake(f"file://{lake_root}"), report["run_key"])
    print(describe(report, report_path, picture))
    if returncode != 0:
        print(f"make demo: the DAG run failed (exit code {returncode}); full log in {log_path}", file=sys.stderr)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
