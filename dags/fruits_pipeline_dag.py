"""fruits_pipeline: validate new uploads -> transient EMR cluster (the route's Spark steps) -> teardown -> report.

Routes (tasks.decide_route, chosen by validate): nothing to do and dry run go straight to the
report; features + PCA runs the three steps (features, PCA, classifier); PCA only (no new upload, a new
PCA target) runs reduce_pca and train_classifier on a cluster sized for them, and choose_steps_to_watch
skips the features sensor.

Failure handling lives in the graph: terminate_cluster is the teardown of create_cluster, with
trigger rule all_done, so it runs after a failed step, a timed-out sensor, a failed create_cluster,
and when the run is marked failed (Airflow leaves teardowns pending then; killed mid-create, create_cluster
leaves no id and the teardown finds the cluster by its tags project + run_key) or a task in between is
cleared (the setup and teardown are cleared with it). Before creating its cluster, stage_and_plan
terminates the clusters earlier runs left behind. The report task (all_done, a teardown failing the run when it fails) writes reports/<run_key>.json
in every case, also when the run is marked failed, and fails the run when a step did not complete.

Only wiring lives here; every decision is a function in plugins/fruits_pipeline (see DESIGN.md).
The file is not named fruits_pipeline.py: with dags/ on sys.path that name would shadow the
fruits_pipeline package it imports. Settings are read when the file is parsed: a FRUITS_REGION outside the EU or a missing
FRUITS_LAKE_URI shows as an import error of this DAG in the UI, before any AWS call.
"""
from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Asset, Param, TriggerRule, chain, task

from fruits_pipeline import tasks
from fruits_pipeline.emr import (FruitsAddStepsOperator, FruitsCreateClusterOperator, FruitsStepSensor,
                                 FruitsTerminateClusterOperator)
from fruits_pipeline.params import param_specs
from fruits_pipeline.settings import Settings

SETTINGS = Settings.from_env()
CONFIG = {
    "aws_conn_id": SETTINGS.aws_conn_id,
    "region_name": SETTINGS.region,
}
# Named by their URI: one asset per lake, so other DAGs can schedule on this lake's outputs.
FEATURES = Asset(uri=SETTINGS.lake.features_root())
PCA = Asset(uri=SETTINGS.lake.uri("pca"))
CLASSIFIER = Asset(uri=SETTINGS.lake.uri("classifier"))

with DAG(
    dag_id="fruits_pipeline",
    description="New fruit uploads -> MobileNetV2 features + PCA on a transient EMR cluster in the EU",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["fruits", "emr", SETTINGS.region],
    params={name: Param(**spec) for name, spec in
            param_specs(SETTINGS.core_instance_type, SETTINGS.core_instance_count, compute=SETTINGS.compute,
                        price_table=SETTINGS.price_table).items()},
) as dag:

    @task
    def validate(params=None, **context):
        return tasks.validate(Settings.from_env(), params, tasks.run_key_from_context(context))

    @task.branch
    def choose_route(validation: dict):
        return tasks.next_task(validation["route"], SETTINGS.compute)

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=[FEATURES, PCA, CLASSIFIER])
    def report(params=None, **context):
        ti = context["ti"]
        return tasks.write_run_report(
            Settings.from_env(), params, tasks.run_key_from_context(context),
            validation=ti.xcom_pull(task_ids="validate"),
            cluster_id=ti.xcom_pull(task_ids="create_cluster"),
            step_ids=ti.xcom_pull(task_ids="add_steps"),
            local_steps=ti.xcom_pull(task_ids="run_local_steps"),
            orphans_terminated=ti.xcom_pull(task_ids="stage_and_plan", key="orphans_terminated"),
        )

    validation = validate()
    route = choose_route(validation)
    # A teardown too, so that it still runs, writes the report and fails the run when a person marks
    # the run failed: Airflow then skips every pending task but teardowns, and a run whose last
    # tasks were all skipped would end "success" once terminate_cluster is done.
    run_report = report().as_teardown(on_failure_fail_dagrun=True)
    run_report.operator.trigger_rule = TriggerRule.ALL_DONE

    if SETTINGS.compute == "local":

        @task
        def run_local_steps(params=None, **context):
            return tasks.run_local(Settings.from_env(), params, tasks.run_key_from_context(context),
                                   context["ti"].xcom_pull(task_ids="validate"))

        chain(route, run_local_steps(), run_report)
    else:

        @task(multiple_outputs=True)
        def stage_and_plan(params=None, **context):
            return tasks.stage_and_plan(Settings.from_env(), params, tasks.run_key_from_context(context),
                                        context["ti"].xcom_pull(task_ids="validate"))

        plan = stage_and_plan()
        create_cluster = FruitsCreateClusterOperator(
            task_id="create_cluster", emr_conn_id=None, job_flow_overrides=plan["job_flow"], **CONFIG
        )
        add_steps = FruitsAddStepsOperator(
            task_id="add_steps", job_flow_id=create_cluster.output, steps=plan["steps"],
            retries=0,  # a failed add is for a person to look at; a rerun finds the steps already added
            **CONFIG,
        )

        @task.branch
        def choose_steps_to_watch(**context):
            # PCA only: add_steps added reduce_pca and train_classifier, so the features sensor is skipped
            return tasks.steps_to_watch(context["ti"].xcom_pull(task_ids="validate")["route"])

        watch_route = choose_steps_to_watch()
        # Step ids are counted from the end: the PCA-only route adds no features step. The cluster id is
        # a template, not create_cluster.output: a direct child of a setup task must be ALL_SUCCESS.
        watch_steps = [
            FruitsStepSensor(
                task_id=f"watch_{name}", job_flow_id="{{ ti.xcom_pull(task_ids='create_cluster') }}",
                step_id=f"{{{{ ti.xcom_pull(task_ids='add_steps')[{index}] }}}}",
                deferrable=True, poke_interval=SETTINGS.poll_seconds,
                max_attempts=f"{{{{ ti.xcom_pull(task_ids='stage_and_plan', key='max_polls')['{name}'] }}}}",
                # reduce_pca also runs when the branch skipped the features sensor
                trigger_rule=TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS if name == "reduce_pca" else TriggerRule.ALL_SUCCESS,
                **CONFIG,
            )
            for index, name in ((-3, "extract_features"), (-2, "reduce_pca"), (-1, "train_classifier"))
        ]
        # The id is a template (None when create_cluster died after RunJobFlow): the operator then finds
        # the run's cluster by its tags. ALL_DONE, not the teardown default ALL_DONE_SETUP_SUCCESS: a run
        # marked failed while create_cluster runs fails that setup, and its cluster must still go.
        terminate_cluster = FruitsTerminateClusterOperator(
            task_id="terminate_cluster", job_flow_id="{{ ti.xcom_pull(task_ids='create_cluster') }}", **CONFIG
        ).as_teardown(setups=create_cluster)
        terminate_cluster.trigger_rule = TriggerRule.ALL_DONE

        chain(route, plan, create_cluster, add_steps, watch_route, *watch_steps, terminate_cluster, run_report)
        watch_route >> watch_steps[1]  # the reduce_pca sensor

    route >> run_report  # nothing to do / dry run: straight to the report
