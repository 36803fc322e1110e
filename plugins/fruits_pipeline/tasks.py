"""What each DAG task does, as plain functions of settings and plain values.

The DAG file only wires these; tests call them directly.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from fruits_pipeline import storage
from fruits_pipeline.cost import estimate_cluster_cost, load_price_table
from fruits_pipeline.job_flow import build_job_flow
from fruits_pipeline.lake import run_key_for
from fruits_pipeline.params import RunParams
from fruits_pipeline.report import build_report, step_timings_from_emr, summary_text
from fruits_pipeline.settings import Settings
from fruits_pipeline.steps import pipeline_steps, render_emr_steps, render_local_commands, local_job_env
from fruits_pipeline.validation import validate_uploads, write_manifests

log = logging.getLogger(__name__)

ROUTE_NOTHING = "nothing_to_do"
ROUTE_DRY_RUN = "dry_run"
ROUTE_RUN = "run"
JOB_RESULT_FILE = "_job_result.json"


class PipelineFailed(RuntimeError):
    """The run's work failed; raised by the report task after writing the report."""


# Conservative throughput for sizing sensor timeouts (MobileNetV2 on CPU, per core node) and the
# time a transient cluster needs before the first step starts (provisioning + bootstrap).
IMAGES_PER_SECOND_PER_CORE_NODE = 10
CLUSTER_START_SECONDS = 20 * 60


def sensor_max_polls(valid_images: int, core_instance_count: int, poll: int) -> dict[str, int]:
    """Polls each step sensor may spend, sized to the work: 3x the expected time plus cluster start."""
    features = CLUSTER_START_SECONDS + 3 * valid_images / (IMAGES_PER_SECOND_PER_CORE_NODE * core_instance_count)
    pca = 15 * 60 + 3 * valid_images / 1000  # a refit over every batch; small next to the features
    return {"extract_features": max(1, int(features // poll) + 1), "reduce_pca": max(1, int(pca // poll) + 1)}


def run_key_from_context(context) -> str:
    dag_run = context["dag_run"]
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    return run_key_for(str(run_type), dag_run.run_id, getattr(dag_run, "data_interval_end", None))


def decide_route(valid_count: int, dry_run: bool) -> str:
    if dry_run:
        return ROUTE_DRY_RUN
    return ROUTE_RUN if valid_count > 0 else ROUTE_NOTHING


def validate(settings: Settings, params: dict, run_key: str) -> dict:
    run_params = RunParams.from_params(params)
    result = validate_uploads(settings.lake, run_key, full_refresh=run_params.full_refresh,
                              conn_id=settings.aws_conn_id, max_image_bytes=settings.max_image_bytes,
                              min_image_side=settings.min_image_side)
    manifests = write_manifests(settings.lake, result, settings.aws_conn_id)
    summary = result.summary() | {"manifests": manifests,
                                  "route": decide_route(len(result.valid), run_params.dry_run)}
    log.info("validation: %s", summary)
    return summary


def stage_and_plan(settings: Settings, params: dict, run_key: str, validation: dict | None = None) -> dict:
    """Guard the bucket, stage code and weights, and build the job flow and EMR steps of this run."""
    from fruits_pipeline.staging import stage_code, stage_weights

    run_params = RunParams.from_params(params)
    if settings.lake.bucket:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits_pipeline.guards import check_bucket

        s3 = S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).get_conn()
        log.info("bucket guard: %s", check_bucket(s3, settings.lake.bucket, settings.region))
    code_uri = stage_code(settings.lake, settings.jobs_dir, settings.aws_conn_id)
    weights_name = stage_weights(settings.lake, settings.weights_path, settings.aws_conn_id)
    steps = pipeline_steps(settings.lake, run_key, weights_name=weights_name, pca_k=run_params.pca_k,
                           pca_variance=run_params.pca_variance)
    validation = validation or {}
    return {
        "max_polls": sensor_max_polls(int(validation.get("valid", 0)), run_params.core_instance_count,
                                      settings.poll_seconds),
        "code_uri": code_uri,
        "weights_name": weights_name,
        "job_flow": build_job_flow(settings, run_params, run_key=run_key, code_uri=code_uri),
        "steps": render_emr_steps(steps, code_uri, run_key),
    }


def run_local(settings: Settings, params: dict, run_key: str) -> list[dict]:
    """FRUITS_COMPUTE=local: the same steps with spark-submit on this worker."""
    from fruits_pipeline.local_runner import run_step
    from fruits_pipeline.staging import stage_weights

    run_params = RunParams.from_params(params)
    weights_name = stage_weights(settings.lake, settings.weights_path, settings.aws_conn_id)
    steps = pipeline_steps(settings.lake, run_key, weights_name=weights_name, pca_k=run_params.pca_k,
                           pca_variance=run_params.pca_variance)
    for step in steps:  # a rerun replaces its own outputs
        storage.remove_tree(step.output_uri, settings.aws_conn_id, raw_uri=settings.lake.raw())
    commands = render_local_commands(steps, settings.jobs_dir, settings.spark_master)
    env = local_job_env()
    return [run_step(command, name=step.name, env=env) | {"state": "COMPLETED"}
            for step, command in zip(steps, commands)]


def _emr_facts(settings: Settings, cluster_id: str, step_ids: list[str]) -> tuple[list[dict], float]:
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    emr = EmrHook(aws_conn_id=settings.aws_conn_id, emr_conn_id=None, region_name=settings.region).conn
    steps = [emr.describe_step(ClusterId=cluster_id, StepId=step_id) for step_id in step_ids]
    timeline = emr.describe_cluster(ClusterId=cluster_id)["Cluster"]["Status"].get("Timeline", {})
    created = timeline.get("CreationDateTime")
    ended = timeline.get("EndDateTime") or datetime.now(timezone.utc)
    seconds = (ended - created).total_seconds() if created else 0.0
    return step_timings_from_emr(steps), seconds


def write_run_report(settings: Settings, params: dict, run_key: str, *, validation: dict | None,
                     cluster_id: str | None = None, step_ids: list[str] | None = None,
                     local_steps: list[dict] | None = None) -> dict:
    """Write reports/<run_key>.json and log its summary; raise PipelineFailed when the work failed."""
    if validation is None:
        raise PipelineFailed("validation did not finish: see the validate task's log; no report written")
    run_params = RunParams.from_params(params)
    lake, conn = settings.lake, settings.aws_conn_id
    route = validation["route"]
    status, message, timings, cost = "success", None, None, None
    if route == ROUTE_NOTHING:
        message = "nothing to do: no valid new upload, no cluster created"
    elif route == ROUTE_DRY_RUN:
        message = "dry run: uploads validated and manifests written, no cluster, no Spark"
    elif settings.compute == "local":
        timings = local_steps
        if not local_steps:
            status, message = "failed", "local steps failed: see the run_local_steps task's log"
    else:
        if not cluster_id or not step_ids:
            status, message = "failed", "the cluster or its steps were not created: see create_cluster/add_steps"
        else:
            timings, seconds = _emr_facts(settings, cluster_id, step_ids)
            cost = estimate_cluster_cost(load_price_table(settings.price_table),
                                         instance_type=run_params.instance_type,
                                         core_instance_count=run_params.core_instance_count,
                                         use_spot=run_params.use_spot, seconds=seconds)
            failed = [t for t in timings if t["state"] != "COMPLETED"]
            if failed:
                status = "failed"
                message = "steps not completed: " + ", ".join(f"{t['name']}={t['state']}" for t in failed)
    ran = route == ROUTE_RUN and status == "success"
    report = build_report(
        lake, run_key=run_key, status=status, compute=settings.compute, validation=validation,
        feature_result=storage.read_json(f"{lake.features(run_key)}/{JOB_RESULT_FILE}", conn) if ran else None,
        pca_result=storage.read_json(f"{lake.pca(run_key)}/{JOB_RESULT_FILE}", conn) if ran else None,
        pca_report=storage.read_json(lake.pca_report(run_key), conn) if ran else None,
        step_timings=timings, cluster_id=cluster_id, cost=cost, message=message,
    )
    storage.write_json(lake.report(run_key), report, conn)
    log.info("\n%s", summary_text(report))
    if status != "success":
        raise PipelineFailed(f"run {run_key} failed: {message}. Report: {lake.report(run_key)}")
    return report


def next_task(route: str, compute: str) -> str:
    """Task id the branch follows: the work of this compute mode, or straight to the report."""
    if route != ROUTE_RUN:
        return "report"
    return "run_local_steps" if compute == "local" else "stage_and_plan"
