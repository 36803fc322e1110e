"""What each DAG task does, as plain functions of settings and plain values.

The DAG file only wires these; tests call them directly.
"""
from __future__ import annotations

import dataclasses
import logging
from datetime import datetime, timezone

from fruits_pipeline import storage
from fruits_pipeline.cost import classifier_step_seconds, estimate_cluster_cost, load_price_table
from fruits_pipeline.job_flow import build_job_flow
from fruits_contract.lake import run_key_for
from fruits_pipeline.params import RunParams, describe_target
from fruits_pipeline.report import build_report, faults_met, latest_pca_output, step_timings_from_emr, summary_text
from fruits_pipeline.routes import ROUTE_DRY_RUN, ROUTE_NOTHING, ROUTE_PCA_ONLY, ROUTE_RUN, ROUTES_WITH_WORK
from fruits_pipeline.settings import Settings
from fruits_pipeline.steps import pipeline_steps, render_emr_steps, render_local_commands, local_job_env
from fruits_pipeline.validation import validate_uploads, write_manifests

log = logging.getLogger(__name__)

# Which of pipeline_steps() each route runs (the step list itself is defined once, in steps.py).
STEPS_OF_ROUTE = {ROUTE_RUN: ("extract_features", "reduce_pca", "train_classifier"),
                  ROUTE_PCA_ONLY: ("reduce_pca", "train_classifier")}


class PipelineFailed(RuntimeError):
    """The run's work failed; raised by the report task after writing the report."""


# Conservative throughput for sizing sensor timeouts (MobileNetV2 on CPU, per core node) and the
# time a transient cluster needs before the first step starts (provisioning + bootstrap).
IMAGES_PER_SECOND_PER_CORE_NODE = 10
CLUSTER_START_SECONDS = 20 * 60
# A PCA refit reads 1280 floats per image and fits a 1280x1280 covariance: one core node per this many
# featurized images is plenty (the features of 200,000 images are ~1 GB).
PCA_IMAGES_PER_CORE_NODE = 200_000


def sensor_max_polls(valid_images: int, core_instance_count: int, poll: int,
                     featurized_images: int = 0) -> dict[str, int]:
    """Polls each step sensor may spend, sized to the work: 3x the expected time plus cluster start.

    A step that is the first of its cluster (reduce_pca on the PCA-only route) also waits for the cluster."""
    features = CLUSTER_START_SECONDS + 3 * valid_images / (IMAGES_PER_SECOND_PER_CORE_NODE * core_instance_count)
    # a refit over every batch; small next to the features
    pca = CLUSTER_START_SECONDS + 15 * 60 + 3 * (valid_images + featurized_images) / 1000
    # retrains on every featurized image in one task; the same time model as `make cost`
    classifier = 15 * 60 + 3 * classifier_step_seconds(valid_images + featurized_images)
    return {"extract_features": max(1, int(features // poll) + 1), "reduce_pca": max(1, int(pca // poll) + 1),
            "train_classifier": max(1, int(classifier // poll) + 1)}


def cluster_params(route: str, run_params: RunParams, featurized_images: int) -> RunParams:
    """The cluster a route needs: the form's for features + PCA; for PCA only, one core node per
    PCA_IMAGES_PER_CORE_NODE featurized images, never more than the form asks for."""
    if route != ROUTE_PCA_ONLY:
        return run_params
    nodes = max(1, -(-int(featurized_images) // PCA_IMAGES_PER_CORE_NODE))
    return dataclasses.replace(run_params, core_instance_count=min(nodes, run_params.core_instance_count))


def select_steps(route: str, steps: list) -> list:
    """The steps of ``pipeline_steps()`` that ``route`` runs, in their order."""
    names = STEPS_OF_ROUTE.get(route)
    if names is None:
        raise ValueError(f"route {route!r} runs no Spark step")
    return [step for step in steps if step.name in names]


def run_key_from_context(context) -> str:
    dag_run = context["dag_run"]
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    return run_key_for(str(run_type), dag_run.run_id, getattr(dag_run, "data_interval_end", None))


def decide_route(valid_count: int, dry_run: bool, *, pca_target: dict | None = None,
                 latest_pca: dict | None = None, featurized_count: int = 0) -> tuple[str, str]:
    """(route, why) of a run. ``latest_pca``: ``latest_pca_output()`` or None; ``featurized_count``:
    images already featurized by earlier runs (what a PCA-only run would refit on)."""
    if dry_run:
        return ROUTE_DRY_RUN, "dry run asked for: uploads validated and manifests written, no Spark"
    if valid_count > 0:
        return ROUTE_RUN, f"{valid_count} valid new upload(s) to featurize, then a PCA refit on all features"
    if featurized_count == 0:
        return ROUTE_NOTHING, "no valid new upload and no features yet"
    if latest_pca is None:
        return ROUTE_PCA_ONLY, (f"no valid new upload, but no PCA output yet for the {featurized_count} "
                                f"featurized images: PCA {describe_target(pca_target)} without feature extraction")
    if pca_target is not None and latest_pca.get("pca_target") != pca_target:
        return ROUTE_PCA_ONLY, (f"no valid new upload; PCA target {describe_target(pca_target)} differs from the "
                                f"latest PCA output's ({describe_target(latest_pca.get('pca_target'))}, run "
                                f"{latest_pca.get('run_key')}): PCA refit on all features without feature extraction")
    return ROUTE_NOTHING, (f"no valid new upload and the PCA target {describe_target(pca_target)} is the latest "
                           f"PCA output's (run {latest_pca.get('run_key')})")


def _run_params(settings: Settings, params: dict | None) -> RunParams:
    return RunParams.from_params(params, settings.price_table)


def validate(settings: Settings, params: dict, run_key: str) -> dict:
    run_params = _run_params(settings, params)
    storage.take_s3_faults()  # only this task's
    result = validate_uploads(settings.lake, run_key, full_refresh=run_params.full_refresh,
                              conn_id=settings.aws_conn_id, max_image_bytes=settings.max_image_bytes,
                              min_image_side=settings.min_image_side)
    manifests = write_manifests(settings.lake, result, settings.aws_conn_id)
    latest = None
    if not result.valid and not run_params.dry_run:  # only then can the latest PCA decide the route
        latest = latest_pca_output(settings.lake, settings.aws_conn_id, exclude_run_key=run_key)
    route, why = decide_route(len(result.valid), run_params.dry_run, pca_target=run_params.pca_target,
                              latest_pca=latest, featurized_count=result.already_featurized)
    summary = result.summary() | {"manifests": manifests, "route": route, "route_reason": why,
                                  "pca_target": run_params.pca_target,
                                  "latest_pca_run": latest and latest["run_key"], "s3_faults": storage.take_s3_faults()}
    log.info("route %s: %s", route, why)
    log.debug("validation: %s", summary)
    return summary


def stage_and_plan(settings: Settings, params: dict, run_key: str, validation: dict | None = None) -> dict:
    """Guard the bucket, stage code and model, and build the job flow and EMR steps of this run."""
    from fruits_pipeline.staging import stage_code

    validation = validation or {}
    route = validation.get("route", ROUTE_RUN)
    featurized = int(validation.get("already_featurized", 0))
    run_params = cluster_params(route, _run_params(settings, params), featurized)
    if settings.lake.bucket:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits_pipeline.guards import check_bucket

        s3 = S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).get_conn()
        log.info("bucket guard: %s", check_bucket(s3, settings.lake.bucket, settings.region))
    from fruits_pipeline.guards import check_network_settings
    from fruits_pipeline.orphans import clean_up_before_create

    check_network_settings(settings)
    orphans = clean_up_before_create(settings, run_key)  # clusters earlier runs left behind; the report lists them
    code_uri = stage_code(settings.lake, settings.jobs_dir, settings.aws_conn_id, settings.wheelhouse_dir)
    steps, model_name = route_steps(settings, run_params, run_key, route)
    log.info("route %s: steps %s on %d x %s core node(s)", route, [s.name for s in steps],
             run_params.core_instance_count, run_params.instance_type)
    return {
        "max_polls": sensor_max_polls(int(validation.get("valid", 0)), run_params.core_instance_count,
                                      settings.poll_seconds, featurized),
        "code_uri": code_uri,
        "orphans_terminated": orphans,
        "model_name": model_name,
        "job_flow": build_job_flow(settings, run_params, run_key=run_key, code_uri=code_uri),
        "steps": render_emr_steps(steps, code_uri, run_key),
    }


def route_steps(settings: Settings, run_params: RunParams, run_key: str, route: str) -> tuple[list, str | None]:
    """The route's steps of ``pipeline_steps()`` and the staged model's name (None on the PCA-only
    route, which runs no model), for EMR and local runs alike."""
    from fruits_pipeline.staging import stage_model

    model_name = stage_model(settings.lake, settings.model_file, settings.aws_conn_id) \
        if route != ROUTE_PCA_ONLY else None
    steps = pipeline_steps(settings.lake, run_key, model_name=model_name, pca_k=run_params.pca_k,
                           pca_variance=run_params.pca_variance)
    return select_steps(route, steps), model_name


def steps_to_watch(route: str) -> list[str]:
    """Task ids of the step sensors a route follows (the EMR branch after add_steps)."""
    return [f"watch_{name}" for name in STEPS_OF_ROUTE.get(route, ())]


def run_local(settings: Settings, params: dict, run_key: str, validation: dict | None = None) -> list[dict]:
    """FRUITS_COMPUTE=local: the route's steps with spark-submit on this worker."""
    from fruits_pipeline.local_runner import run_step

    route = (validation or {}).get("route", ROUTE_RUN)
    steps, _ = route_steps(settings, _run_params(settings, params), run_key, route)
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
                     local_steps: list[dict] | None = None, orphans_terminated: list[dict] | None = None) -> dict:
    """Write reports/<run_key>.json and log its summary; raise PipelineFailed when the work failed.

    ``orphans_terminated``: clusters of earlier runs this run terminated before creating its own."""
    if validation is None:
        raise PipelineFailed("validation did not finish: see the validate task's log; no report written")
    lake, conn = settings.lake, settings.aws_conn_id
    route = validation["route"]
    run_params = cluster_params(route, _run_params(settings, params), int(validation.get("already_featurized", 0)))
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
    ran = route in ROUTES_WITH_WORK and status == "success"
    featurized = ran and route == ROUTE_RUN
    pca_report = storage.read_json(lake.pca_report(run_key), conn) if ran else None
    classifier_figures = storage.read_json(lake.classifier_figures(run_key), conn) if ran else None
    classifier_result = storage.read_json(lake.job_result(lake.classifier(run_key)), conn) if ran else None
    feature_result = storage.read_json(lake.job_result(lake.features(run_key)), conn) if featurized else None
    pca_result = storage.read_json(lake.job_result(lake.pca(run_key)), conn) if ran else None
    picture_uri = write_picture(lake, run_key, pca_report, conn, classifier_figures) if pca_report else None
    report = build_report(
        lake, run_key=run_key, status=status, compute=settings.compute, validation=validation,
        feature_result=feature_result, pca_result=pca_result,
        pca_report=pca_report, step_timings=timings, cluster_id=cluster_id, cost=cost, message=message,
        pca_target=validation.get("pca_target") or run_params.pca_target, picture_uri=picture_uri,
        classifier_figures=classifier_figures,
        classifier_not_trained=(classifier_result or {}).get("reason") if not classifier_figures else None,
        faults=faults_met(validation=validation, feature_result=feature_result, pca_result=pca_result,
                          s3_faults=storage.take_s3_faults()),
    )
    report["orphan_clusters_terminated"] = orphans_terminated or []
    storage.write_json(lake.report(run_key), report, conn)
    log.info("\n%s", summary_text(report))
    if picture_uri:
        log.info("run picture: %s", picture_uri)
    if status != "success":
        raise PipelineFailed(f"run {run_key} failed: {message}. Report: {lake.report(run_key)}")
    return report


def write_picture(lake, run_key: str, pca_report: dict, conn_id: str | None,
                  classifier_figures: dict | None = None) -> str | None:
    """Draw reports/<run_key>.png from the PCA job's small preview; None (and a warning) when it cannot:
    the picture illustrates the run, it never fails it."""
    from fruits_pipeline.picture import PictureError, write_run_picture

    try:
        return write_run_picture(lake, run_key, conn_id, pca_report=pca_report, classifier_figures=classifier_figures)
    except PictureError as error:
        log.warning("no run picture: %s", error)
        return None


def next_task(route: str, compute: str) -> str:
    """Task id the branch follows: the work of this compute mode, or straight to the report."""
    if route not in ROUTES_WITH_WORK:
        return "report"
    return "run_local_steps" if compute == "local" else "stage_and_plan"
