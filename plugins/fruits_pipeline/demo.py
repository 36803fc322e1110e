"""`make demo`: the whole DAG once on local Spark, on a local lake, with no AWS account and no network.

    python -m fruits_pipeline.demo [--images DIR] [--lake DIR] [--airflow-home DIR] [--pca-k N | --pca-variance V]

Copies the images of --images (default $FRUITS_SAMPLE_DIR, else the Fruits-360 sample shipped in
demo_data/) that are not in the lake yet into <lake>/raw/<label>/, and the app photos of --uploads
(default the five shipped in demo_uploads/: four fruit the demo never trains on, one temple) into
<lake>/uploads/ at the same depth, runs `airflow dags test
fruits_pipeline` with FRUITS_COMPUTE=local and a throwaway Airflow home on SQLite, and prints one
line per task as it starts and ends, the Spark jobs' progress, the run summary and the answer to each
app photo (its fruit, or "unsure"). Airflow's own
records go to a log file whose path is printed. The feature job runs the model the repository
ships (spark_jobs/models/), or FRUITS_MODEL.

Run it again: with no new images the DAG has nothing to do and says so; with new ones it
featurizes only those and refits the PCA on everything; with another --pca-k / --pca-variance it
refits the PCA alone (the PCA-only route), without extracting features again.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fruits_pipeline.settings import REPO_ROOT, SHIPPED_MODEL
from fruits_contract.headers import PHOTO_SUFFIXES

DAG_ID = "fruits_pipeline"
# A few labels of Fruits-360 (CC BY-SA 4.0, Mihai Oltean), about 0.7 MB: see demo_data/ATTRIBUTION.md.
DEMO_IMAGES = Path(__file__).resolve().parent / "demo_data"

# Unlabelled app photos (demo_uploads/ATTRIBUTION.md); tests/make_demo_uploads.py made them.
DEMO_UPLOADS = Path(__file__).resolve().parent / "demo_uploads"

# A photo of the shipped sample, for the command the demo ends with.
CLASSIFY_EXAMPLE = (DEMO_IMAGES / "Pepino" / "50_100.jpg").relative_to(REPO_ROOT)

NO_IMAGES_HELP = """\
make demo: no images to process{detail}.
  IMAGES= (or FRUITS_SAMPLE_DIR) must be a folder of <label>/<image>.jpg folders, for example
      make demo IMAGES=/path/to/fruits-360-100x100/Test
  Without either, the demo runs on the Fruits-360 sample shipped in {shipped}."""

NO_MODEL_HELP = """\
make demo: the model file {model} is missing.
  The repository ships the converted MobileNetV2 in spark_jobs/models/ (`make model` regenerates it);
  or point FRUITS_MODEL at a TFLite flatbuffer of MobileNetV2 1.0 224, no top, average pooling."""


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
        if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES
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
    return _copy_new([(image, raw_dir / raw_name(images_dir, image)) for image in find_images(images_dir)])


def copy_new_uploads(uploads_dir: Path, lake_uploads: Path) -> CopyResult:
    """Copy the app photos that are not in uploads/ yet, at the depth they have under uploads_dir."""
    return _copy_new([(photo, lake_uploads / photo.relative_to(uploads_dir)) for photo in find_images(uploads_dir)])


def _copy_new(copies: list[tuple[Path, Path]]) -> CopyResult:
    copied = already = 0
    for image, target in copies:
        if target.exists():
            already += 1
            if not filecmp.cmp(image, target, shallow=False):
                print(f"make demo: {target} already exists with other content; kept it, skipped {image}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(image, target)
        copied += 1
    return CopyResult(copied, already)


def choose_images(given: str | None) -> Path:
    """The folder to upload from: --images / IMAGES=, else FRUITS_SAMPLE_DIR, else the shipped sample."""
    images_dir = Path(given).resolve() if given else DEMO_IMAGES
    if not images_dir.is_dir():
        raise DemoError(NO_IMAGES_HELP.format(detail=f": {given} is not a folder", shipped=DEMO_IMAGES))
    if not find_images(images_dir):
        raise DemoError(NO_IMAGES_HELP.format(detail=f": {given} holds no photo ({', '.join(PHOTO_SUFFIXES)})",
                                              shipped=DEMO_IMAGES))
    return images_dir


def check_model(model: str | None, jobs_dir: Path = REPO_ROOT / "spark_jobs") -> Path:
    """The model file the feature job will read: FRUITS_MODEL, else the shipped one. Checked here so
    that a missing file is said at once, not minutes later inside Spark."""
    path = Path(model) if model else jobs_dir / SHIPPED_MODEL
    if not path.is_file():
        raise DemoError(NO_MODEL_HELP.format(model=path))
    return path


def airflow_env(lake_root: Path | None, airflow_home: Path, model: str | None = None,
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
    })
    if lake_root is not None:
        env["FRUITS_LAKE_URI"] = f"file://{lake_root}"
    if model:
        env["FRUITS_MODEL"] = str(model)
    else:
        env.pop("FRUITS_MODEL", None)
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


# What `airflow dags test` prints: structlog records, "<time> [<level>] <message> [<logger>] key=value...".
_RECORD = re.compile(r"^(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z?) \[(?P<level>\w+)\s*\] (?P<rest>.*)$")
_LOGGER_TAIL = re.compile(r"\s+\[(?P<logger>[\w.]+)\](?: \S+=.*)?$")
_TASK_START = re.compile(r"\[DAG TEST\] starting task_id=(?P<task>\S+)")
_TASK_END = re.compile(r"\[DAG TEST\] end task task_id=(?P<task>\S+)")
_NEW_STATE = re.compile(r"new_state=(?P<state>\w+)")
# A Spark job's own progress, as run_step logs it: "[<step>] <date> <time>,<ms> <logger> INFO <message>".
_JOB_PROGRESS = re.compile(r"^\[(?P<step>\w+)\] \d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \S+ (?P<level>INFO|WARNING|ERROR) "
                           r"(?P<message>.*)$")
_STEP_ERROR = re.compile(r"^\[(?P<step>\w+)\] (?P<message>\S*(?:Error|Exception)\b.*|.*: error: .*)$")
# Our own records worth a line: the route and why, the validation counts, step start and end.
_OURS = re.compile(r"^(route \w+: |raw/ holds |validated \d+/\d+ |step \w+ finished in |no run picture: )")


def _seconds(stamp: str) -> float | None:
    from datetime import datetime

    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass
class ProgressFilter:
    """Turns `airflow dags test` output into the few lines a person follows (``feed`` returns them)."""

    started: dict[str, float | None] = field(default_factory=dict)
    state: str | None = None

    def feed(self, line: str) -> list[str]:
        record = _RECORD.match(line.rstrip("\n"))
        if not record:
            return []
        stamp, level, rest = record["time"], record["level"], record["rest"]
        message = _LOGGER_TAIL.sub("", rest)
        clock = stamp[11:19]
        if match := _TASK_START.search(message):
            self.started[match["task"]] = _seconds(stamp)
            self.state = None
            return [f"{clock}  {match['task']}: started"]
        if match := _TASK_END.search(message):
            began, ended = self.started.get(match["task"]), _seconds(stamp)
            took = f" in {ended - began:.1f} s" if began is not None and ended is not None else ""
            state = self.state or "done"
            self.state = None
            return [f"{clock}  {match['task']}: {state}{took}"]
        if "Task instance state updated" in message and (match := _NEW_STATE.search(rest)):
            self.state = match["state"]
            return []
        if match := _JOB_PROGRESS.match(message):
            return [f"{clock}    {match['step']}: {match['message']}"]
        if match := _STEP_ERROR.match(message):
            return [f"{clock}    {match['step']}: {match['message']}"]
        if _OURS.match(message):
            return [f"{clock}    {message}"]
        if level in ("error", "critical") and message.strip():
            return [f"{clock}    ERROR {message.strip()[:300]}"]
        return []


def run_dag(env: dict, airflow_home: Path, conf: dict | None = None) -> tuple[int, Path]:
    """`airflow db migrate` then `airflow dags test`: everything into a log file, the progress on screen."""
    airflow_home.mkdir(parents=True, exist_ok=True)
    log_path = airflow_home / f"demo-{time.strftime('%Y%m%dT%H%M%S')}.log"
    print(f"make demo: Airflow's full log goes to {log_path}")
    with open(log_path, "w") as log:
        print("make demo: preparing Airflow's metadata database (SQLite)", flush=True)
        migrate = subprocess.run([*airflow_command(), "db", "migrate"], env=env, stdout=log,
                                 stderr=subprocess.STDOUT, text=True)
        if migrate.returncode != 0:
            print(f"make demo: `airflow db migrate` failed (exit code {migrate.returncode}); see {log_path}",
                  file=sys.stderr)
            return migrate.returncode, log_path
        command = [*airflow_command(), "dags", "test", DAG_ID] + (["--conf", json.dumps(conf)] if conf else [])
        command_line = ["airflow", *command[command.index("dags"):]]
        print(f"make demo: running `{' '.join(command_line)}` on local Spark", flush=True)
        progress = ProgressFilter()
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            for shown in progress.feed(line):
                print(shown, flush=True)
        return process.wait(), log_path


def photo_answers(report: dict) -> list[str]:
    """One line per app photo the run answered (its predictions/ table): the fruit and how sure, or unsure."""
    uri = (report.get("uris") or {}).get("predictions")
    if not uri or not (report.get("predictions") or {}).get("predicted"):
        return []
    import pyarrow.parquet as pq

    rows = sorted(pq.read_table(uri, columns=["path", "label", "probability", "unsure", "top"]).to_pylist(),
                  key=lambda row: row["path"])
    lines = ["make demo: the app's photos, as the app would answer them:"]
    for row in rows:
        name = row["path"].split("/uploads/", 1)[-1]
        if row["unsure"]:
            closest = ", ".join(f"{t['label']} {t['probability']:.2f}" for t in row["top"][:2])
            lines.append(f"  {name}: unsure (not close to any fruit it knows; closest {closest})")
        else:
            lines.append(f"  {name}: {row['label']} (p {row['probability']:.2f})")
    return lines


def describe(report: dict) -> str:
    """The run summary (the report's own text), each app photo's answer and what to try next."""
    from fruits_pipeline.report import summary_text
    from fruits_pipeline.routes import ROUTE_NOTHING

    lines = ["", summary_text(report)]
    if report.get("route") == ROUTE_NOTHING:
        lines.append("make demo: nothing new to process, and the PCA target is the latest one: no Spark job ran. "
                     "Add images (IMAGES=...) or ask for another PCA (make demo PCA_K=<n> or PCA_VARIANCE=<v>).")
    elif report.get("uris", {}).get("pca") and not report["uris"].get("picture") and report["status"] == "success":
        lines.append("make demo: no picture was drawn (the PCA job wrote no preview); see the report task's log.")
    lines += photo_answers(report)
    classifier = report.get("classifier")
    if classifier and classifier.get("accuracy") is not None:
        lines += [f"make demo: the fruit classifier of this run is right on {classifier['accuracy']:.1%} of the "
                  f"{classifier['n_test']} images it never saw in training (macro F1 {classifier['macro_f1']:.3f}). "
                  "Classify a photo with it (no Spark, no Airflow):",
                  f"  make classify MODEL={classifier['uri']} IMAGES={CLASSIFY_EXAMPLE}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=os.environ.get("FRUITS_SAMPLE_DIR") or None,
                        help="folder of <label>/<image> to upload (default $FRUITS_SAMPLE_DIR, else the shipped sample)")
    parser.add_argument("--uploads", default=str(DEMO_UPLOADS),
                        help="folder of unlabelled app photos to copy into the lake's uploads/ (default the shipped five; "
                             "'' for none)")
    parser.add_argument("--lake", default=str(REPO_ROOT / ".lake"), help="local lake folder (default .lake)")
    parser.add_argument("--airflow-home", default=str(REPO_ROOT / ".airflow"), help="throwaway AIRFLOW_HOME")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--pca-k", type=int, help="trigger param pca_k: number of PCA components (1..1280)")
    target.add_argument("--pca-variance", type=float, help="trigger param pca_variance: fraction kept, 0 < v <= 1")
    args = parser.parse_args(argv)
    conf = {k: v for k, v in (("pca_k", args.pca_k), ("pca_variance", args.pca_variance)) if v is not None}
    try:
        if conf:
            from fruits_pipeline.params import ParamsError, RunParams

            try:
                RunParams.from_params(conf)
            except ParamsError as error:
                raise DemoError(f"make demo: {error}") from None
        images_dir = choose_images(args.images)
        model = os.environ.get("FRUITS_MODEL") or None
        check_model(model)
        lake_root = Path(args.lake).resolve()
        copied = copy_new_images(images_dir, lake_root / "raw")
        uploads = copy_new_uploads(Path(args.uploads), lake_root / "uploads") if args.uploads else CopyResult(0, 0)
    except DemoError as error:
        print(error, file=sys.stderr)
        return 2
    print(f"make demo: lake {lake_root}: copied {copied.copied} new images from {images_dir} into raw/ "
          f"({copied.already_there} were already there)"
          + (f", and {uploads.copied} app photos from {args.uploads} into uploads/ ({uploads.already_there} were "
             "already there)" if args.uploads else ""))

    airflow_home = Path(args.airflow_home).resolve()
    before = reports(lake_root)
    returncode, log_path = run_dag(airflow_env(lake_root, airflow_home, model), airflow_home, conf)
    report_path = newest_report(lake_root, before)
    if report_path is None:
        print(f"make demo: the DAG run wrote no report (exit code {returncode}); see {log_path}", file=sys.stderr)
        return returncode or 1
    print(f"make demo: Airflow's full log: {log_path}")
    print(describe(json.loads(report_path.read_text())))  # last: the summary, ending with the classifier
    if returncode != 0:
        print(f"make demo: the DAG run failed (exit code {returncode}); full log in {log_path}", file=sys.stderr)
    return returncode


if __name__ == "__main__":
    sys.exit(main())
