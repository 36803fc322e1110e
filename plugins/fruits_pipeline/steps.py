"""The Spark steps, defined once and rendered for EMR and for local spark-submit."""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

from fruits_contract.lake import EXTRACT_FEATURES, PREDICT_UPLOADS, PY_FILES_ZIP, REDUCE_PCA, TRAIN_CLASSIFIER, Lake
from fruits_pipeline.params import PcaTarget


@dataclass(frozen=True)
class JobStep:
    name: str
    script: str  # file name in spark_jobs/ (and in code/<version>/ on EMR)
    args: tuple[str, ...]
    output_uri: str


def pipeline_steps(lake: Lake, run_key: str, *, model_name: str | None, pca_target: PcaTarget) -> list[JobStep]:
    features_args = ["--images", lake.raw(), "--manifest", lake.manifest_valid(run_key),
                     "--output", lake.features(run_key)]
    if model_name:  # staging.stage_model's name; None only where the feature step does not run
        features_args += ["--model", lake.model(model_name)]
    return [
        JobStep(EXTRACT_FEATURES, f"{EXTRACT_FEATURES}.py", tuple(features_args), lake.features(run_key)),
        JobStep(REDUCE_PCA, f"{REDUCE_PCA}.py",
                ("--features", lake.features_root(), "--output", lake.pca(run_key), "--current", lake.pca_current(),
                 *pca_target.job_args()), lake.pca(run_key)),
        JobStep(TRAIN_CLASSIFIER, f"{TRAIN_CLASSIFIER}.py",
                ("--pca", lake.pca(run_key), "--labels", lake.manifest_labels(run_key),
                 "--current", lake.classifier_current(), "--output", lake.classifier(run_key)), lake.classifier(run_key)),
        JobStep(PREDICT_UPLOADS, f"{PREDICT_UPLOADS}.py",
                ("--features", lake.features(run_key), "--classifier", lake.classifier(run_key),
                 "--current", lake.classifier_current(), "--output", lake.predictions(run_key)),
                lake.predictions(run_key)),
    ]


def emr_step_name(step_name: str, run_key: str) -> str:
    """A step's name on the cluster: the run key in it tells this run's steps apart (run keys hold no space)."""
    return f"{step_name} {run_key}"


def step_name_of(emr_step_name: str) -> str:
    """The pipeline step an EMR step name (``emr_step_name``) belongs to."""
    return emr_step_name.split(" ", 1)[0]


def render_emr_steps(steps: list[JobStep], code_uri: str, run_key: str) -> list[dict]:
    """EMR AddJobFlowSteps entries. A failing step cancels the ones after it (CANCEL_AND_WAIT)
    and leaves the cluster up for the teardown task to terminate."""
    code_uri = code_uri.rstrip("/")
    return [
        {
            "Name": emr_step_name(step.name, run_key),
            "ActionOnFailure": "CANCEL_AND_WAIT",
            "HadoopJarStep": {
                "Jar": "command-runner.jar",
                "Args": ["spark-submit", "--deploy-mode", "cluster",
                         "--py-files", f"{code_uri}/{PY_FILES_ZIP}", f"{code_uri}/{step.script}", *step.args],
            },
        }
        for step in steps
    ]


def local_spark_submit() -> str:
    """The spark-submit of this interpreter's environment (the venv's, next to sys.executable)."""
    return str(Path(sys.executable).parent / "spark-submit")


def render_local_commands(steps: list[JobStep], jobs_dir: Path, spark_master: str,
                          py_files: str | None = None, spark_submit: str | None = None) -> list[list[str]]:
    jobs_dir = Path(jobs_dir)
    submit = spark_submit or local_spark_submit()
    py_files_args = ["--py-files", py_files] if py_files else []
    return [[submit, "--master", spark_master, *py_files_args, str(jobs_dir / step.script), *step.args]
            for step in steps]


def local_job_env(base: dict | None = None) -> dict[str, str]:
    env = dict(os.environ if base is None else base)
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    return env
