"""What each DAG task does, as plain functions of settings and plain values (docs/design.md, "The run plan").

The DAG file only wires these; tests call them directly. The first task makes the run's plan;
every other task reads it.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from fruits_contract.lake import EXTRACT_FEATURES, run_key_for
from fruits_pipeline import ledger, storage
from fruits_pipeline.confirmed_labels import confirmed_labels, write_labels_manifest
from fruits_pipeline.cost import estimate_cluster_cost, load_price_table
from fruits_pipeline.job_flow import build_job_flow
from fruits_pipeline.params import RunParams
from fruits_pipeline.report import (build_report, current_pca, faults_met, step_timings_from_emr, summary_text,
                                    write_current_pointers)
from fruits_pipeline.routes import ROUTE_DRY_RUN, ROUTE_NOTHING, ROUTE_PCA_ONLY, ROUTE_RUN
from fruits_pipeline.run_plan import RunPlan, make_plan
from fruits_pipeline.settings import Settings
from fruits_pipeline.steps import local_job_env, pipeline_steps, render_emr_steps, render_local_commands
from fruits_pipeline.upload_events import UploadQueue
from fruits_pipeline.validation import known_uploads, validate_uploads, write_manifests

log = logging.getLogger(__name__)


class PipelineFailed(RuntimeError):
    """The run's work failed; raised by the report task after writing the report."""


def run_key_from_context(context) -> str:
    dag_run = context["dag_run"]
    run_type = getattr(dag_run.run_type, "value", dag_run.run_type)
    return run_key_for(str(run_type), dag_run.run_id, getattr(dag_run, "data_interval_end", None))


def validate_and_plan(settings: Settings, params: dict | None, run_key: str) -> RunPlan:
    """Validate the new uploads (headers only), write the run's manifests, and decide the run."""
    run_params = RunParams.from_params(params, settings.price_table)  # the one place the form is read
    storage.take_s3_faults()  # only this task's
    queue = UploadQueue(settings.upload_queue_url, settings.lake, settings.aws_conn_id, settings.region) \
        if settings.upload_queue_url else None
    result = validate_uploads(settings.lake, run_key, full_refresh=run_params.full_refresh,
                              conn_id=settings.aws_conn_id, max_image_bytes=settings.max_image_bytes,
                              min_image_side=settings.min_image_side, queue=queue,
                              reconcile_every_days=settings.reconcile_every_days)
    manifests = write_manifests(settings.lake, result, settings.aws_conn_id)
    labels = confirmed_labels(settings.lake, settings.aws_conn_id, known_uploads(settings.lake, result,
                                                                                 settings.aws_conn_id))
    manifests["labels"] = write_labels_manifest(settings.lake, run_key, labels.accepted, settings.aws_conn_id)
    # No confirmed label: no digest, so that a lake without labels (and pointers written before labels
    # existed) never counts as "labels changed".
    result.labels = labels.summary() | ({} if labels.accepted else {"digest": None})
    latest = None
    if not result.valid and not run_params.dry_run:  # only then can the current PCA decide the route
        latest = current_pca(settings.lake, settings.aws_conn_id, exclude_run_key=run_key)
    validation = result.summary() | {"manifests": manifests, "s3_faults": storage.take_s3_faults()}
    plan = make_plan(run_key, run_params, validation, latest_pca=latest, poll_seconds=settings.poll_seconds)
    log.info("route %s: %s", plan.route, plan.reason)
    if plan.has_work and settings.compute == "emr":
        log.info("steps %s on %d x %s core node(s)%s", list(plan.steps), plan.cluster.core_instance_count,
                 plan.cluster.instance_type, " (spot)" if plan.cluster.use_spot else "")
    return plan


def skip_unless_work(plan: RunPlan) -> None:
    """Skip the calling task (and, through the graph, the cluster's tasks) on a route without Spark work."""
    if not plan.has_work:
        from airflow.providers.common.compat.sdk import AirflowSkipException

        raise AirflowSkipException(f"route {plan.route}: {plan.reason}")


def route_steps(settings: Settings, plan: RunPlan) -> tuple[list, str | None]:
    """The plan's steps of ``pipeline_steps()`` and the staged model's name (None when the route runs
    no feature step), for EMR and local runs alike."""
    from fruits_pipeline.staging import stage_model

    model_name = stage_model(settings.lake, settings.model_file, settings.aws_conn_id) \
        if EXTRACT_FEATURES in plan.steps else None
    steps = pipeline_steps(settings.lake, plan.run_key, model_name=model_name, pca_target=plan.pca_target)
    return [step for step in steps if step.name in plan.steps], model_name


def clean_up_and_stage(settings: Settings, plan: RunPlan) -> dict:
    """Before the run's cluster: check the bucket and network guards, terminate the clusters earlier
    runs left behind (the report lists them), stage code and model, and build the job flow and EMR steps."""
    from fruits_pipeline.guards import check_network_settings
    from fruits_pipeline.orphans import clean_up_before_create
    from fruits_pipeline.staging import stage_code

    skip_unless_work(plan)
    if settings.lake.bucket:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from fruits_pipeline.guards import check_bucket

        s3 = S3Hook(aws_conn_id=settings.aws_conn_id, region_name=settings.region).get_conn()
        log.info("bucket guard: %s", check_bucket(s3, settings.lake.bucket, settings.region))
    check_network_settings(settings)
    orphans = clean_up_before_create(settings, plan.run_key)
    code_uri = stage_code(settings.lake, settings.jobs_dir, settings.aws_conn_id, settings.wheelhouse_dir)
    steps, model_name = route_steps(settings, plan)
    return {
        "code_uri": code_uri,
        "orphans_terminated": orphans,
        "model_name": model_name,
        "job_flow": build_job_flow(settings, plan.cluster, run_key=plan.run_key, code_uri=code_uri),
        "steps": render_emr_steps(steps, code_uri, plan.run_key),
    }


def run_local(settings: Settings, plan: RunPlan) -> list[dict]:
    """FRUITS_COMPUTE=local: the plan's steps with spark-submit on this worker."""
    from fruits_pipeline.local_runner import run_step

    skip_unless_work(plan)
    steps, _ = route_steps(settings, plan)
    for step in steps:  # a rerun replaces its own outputs
        storage.remove_tree(step.output_uri, settings.aws_conn_id, inputs=settings.lake.inputs())
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


def write_run_report(settings: Settings, plan: RunPlan | None, *, cluster_id: str | None = None,
                     step_ids: list[str] | None = None, local_steps: list[dict] | None = None,
                     orphans_terminated: list[dict] | None = None) -> dict:
    """Write reports/<run_key>.json, move the current PCA and classifier pointers when the run
    succeeded, and log the summary; raise PipelineFailed when the work failed.

    ``orphans_terminated``: clusters of earlier runs this run terminated before creating its own."""
    if plan is None:
        raise PipelineFailed("validation did not finish: see the validate_and_plan task's log; no report written")
    lake, conn = settings.lake, settings.aws_conn_id
    run_key, route, cluster = plan.run_key, plan.route, plan.cluster
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
                                         instance_type=cluster.instance_type,
                                         core_instance_count=cluster.core_instance_count,
                                         use_spot=cluster.use_spot, seconds=seconds)
            failed = [t for t in timings if t["state"] != "COMPLETED"]
            if failed:
                status = "failed"
                message = "steps not completed: " + ", ".join(f"{t['name']}={t['state']}" for t in failed)
    ran = plan.has_work and status == "success"
    featurized = ran and route == ROUTE_RUN
    pca_report = storage.read_json(lake.pca_report(run_key), conn) if ran else None
    classifier_figures = storage.read_json(lake.classifier_figures(run_key), conn) if ran else None
    classifier_result = storage.read_json(lake.job_result(lake.classifier(run_key)), conn) if ran else None
    feature_result = storage.read_json(lake.job_result(lake.features(run_key)), conn) if featurized else None
    pca_result = storage.read_json(lake.job_result(lake.pca(run_key)), conn) if ran else None
    predictions = storage.read_json(lake.job_result(lake.predictions(run_key)), conn) if featurized else None
    picture_uri = write_picture(lake, run_key, pca_report, conn, classifier_figures, predictions) if pca_report else None
    validation = plan.report_validation()
    report = build_report(
        lake, run_key=run_key, status=status, compute=settings.compute, validation=validation,
        feature_result=feature_result, pca_result=pca_result,
        pca_report=pca_report, step_timings=timings, cluster_id=cluster_id, cost=cost, message=message,
        pca_target=plan.pca_target.as_dict(), picture_uri=picture_uri,
        classifier_figures=classifier_figures,
        classifier_not_trained=(classifier_result or {}).get("reason") if not classifier_figures else None,
        predictions=predictions,
        faults=faults_met(validation=validation, feature_result=feature_result, pca_result=pca_result,
                          s3_faults=storage.take_s3_faults()),
    )
    report["orphan_clusters_terminated"] = orphans_terminated or []
    if featurized or route in (ROUTE_NOTHING, ROUTE_PCA_ONLY):
        # What the run settled. A run whose feature step failed records nothing: its uploads stay arrivals
        # for the next run (which records its batch itself if the job had committed it: validation.catch_up).
        report["ledger"] = ledger.record_run(lake, run_key, conn, committed=featurized)
    storage.write_json(lake.report(run_key), report, conn)
    write_current_pointers(lake, report, conn)
    log.info("\n%s", summary_text(report))
    if picture_uri:
        log.info("run picture: %s", picture_uri)
    if status != "success":
        raise PipelineFailed(f"run {run_key} failed: {message}. Report: {lake.report(run_key)}")
    return report


def write_picture(lake, run_key: str, pca_report: dict, conn_id: str | None,
                  classifier_figures: dict | None = None, predictions: dict | None = None) -> str | None:
    """Draw reports/<run_key>.png from the PCA job's small preview; None (and a warning) when it cannot:
    the picture illustrates the run, it never fails it."""
    from fruits_pipeline.picture import PictureError, write_run_picture

    try:
        return write_run_picture(lake, run_key, conn_id, pca_report=pca_report, classifier_figures=classifier_figures,
                                 predictions=predictions)
    except PictureError as error:
        log.warning("no run picture: %s", error)
        return None
