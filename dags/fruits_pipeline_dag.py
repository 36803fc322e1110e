"""fruits_pipeline: validate and plan -> transient EMR cluster running the plan's Spark steps -> teardown -> report.

docs/design.md, "The DAG", says why the graph has this shape. In short: the first task decides the run
once (its plan: route, params, cluster, PCA target, steps and their poll budgets) and every later task
reads that plan; a route without Spark work skips the cluster tasks; each step has a sensor that finds
its step by name and skips when the plan does not run it; terminate_cluster is the teardown of
create_cluster and the report a teardown too, so both run whatever failed, also when a person marks the
run failed. Only wiring lives here; every decision is a function of the fruits_pipeline package.
The file is not named fruits_pipeline.py: with dags/ on sys.path that name would shadow the package.
"""
from __future__ import annotations

from datetime import datetime, timezone

from airflow.sdk import DAG, Asset, Param, TriggerRule, chain, task

from fruits_contract.lake import STEP_NAMES
from fruits_pipeline import tasks
from fruits_pipeline.emr import (FruitsAddStepsOperator, FruitsCreateClusterOperator, FruitsStepSensor,
                                 FruitsTerminateClusterOperator)
from fruits_pipeline.params import param_specs
from fruits_pipeline.run_plan import RunPlan
from fruits_pipeline.settings import Settings

# Read when the file is parsed: a FRUITS_REGION outside the EU or a missing FRUITS_LAKE_URI shows as an
# import error of this DAG in the UI, before any AWS call.
SETTINGS = Settings.from_env()
CONFIG = {"aws_conn_id": SETTINGS.aws_conn_id, "region_name": SETTINGS.region}
CLUSTER_ID = "{{ ti.xcom_pull(task_ids='create_cluster') }}"  # a template: None when create_cluster died
# Named by their URI: one asset per lake, so other DAGs can schedule on this lake's outputs.
OUTPUTS = [Asset(uri=SETTINGS.lake.features_root()), Asset(uri=SETTINGS.lake.pca_root()),
           Asset(uri=SETTINGS.lake.classifier_root())]

with DAG(
    dag_id="fruits_pipeline",
    description="New fruit uploads -> MobileNetV2 features, PCA and classifier on a transient EMR cluster in the EU",
    schedule="@daily",
    start_date=datetime(2026, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,
    tags=["fruits", "emr", SETTINGS.region],
    params={name: Param(**spec) for name, spec in
            param_specs(SETTINGS.core_instance_type, SETTINGS.core_instance_count, compute=SETTINGS.compute,
                        price_table=SETTINGS.price_table).items()},
) as dag:

    def plan_of(context) -> RunPlan:
        return RunPlan.from_xcom(context["ti"].xcom_pull(task_ids="validate_and_plan"))

    @task
    def validate_and_plan(params=None, **context):
        return tasks.validate_and_plan(Settings.from_env(), params, tasks.run_key_from_context(context)).to_xcom()

    @task(trigger_rule=TriggerRule.ALL_DONE, outlets=OUTPUTS)
    def report(**context):
        ti, planned = context["ti"], context["ti"].xcom_pull(task_ids="validate_and_plan")
        return tasks.write_run_report(
            Settings.from_env(), RunPlan.from_xcom(planned) if planned else None,
            cluster_id=ti.xcom_pull(task_ids="create_cluster"), step_ids=ti.xcom_pull(task_ids="add_steps"),
            local_steps=ti.xcom_pull(task_ids="run_local_steps"),
            orphans_terminated=ti.xcom_pull(task_ids="clean_up_and_stage", key="orphans_terminated"))

    plan = validate_and_plan()
    # A teardown, so that it still runs, writes the report and fails the run when a person marks the run
    # failed: Airflow then skips every pending task but teardowns.
    run_report = report().as_teardown(on_failure_fail_dagrun=True)
    run_report.operator.trigger_rule = TriggerRule.ALL_DONE

    if SETTINGS.compute == "local":

        @task
        def run_local_steps(**context):
            return tasks.run_local(Settings.from_env(), plan_of(context))

        chain(plan, run_local_steps(), run_report)
    else:

        @task(multiple_outputs=True)
        def clean_up_and_stage(**context):
            return tasks.clean_up_and_stage(Settings.from_env(), plan_of(context))

        staged = clean_up_and_stage()
        create_cluster = FruitsCreateClusterOperator(
            task_id="create_cluster", emr_conn_id=None, job_flow_overrides=staged["job_flow"], **CONFIG)
        add_steps = FruitsAddStepsOperator(
            task_id="add_steps", job_flow_id=create_cluster.output, steps=staged["steps"],
            retries=0,  # a failed add is for a person to look at; a rerun finds the steps already added
            **CONFIG)
        watch_steps = [
            FruitsStepSensor(
                task_id=f"watch_{name}", step_name=name, job_flow_id=CLUSTER_ID,
                step_id=f"{{{{ ti.xcom_pull(task_ids='add_steps', key='step_id_of').get('{name}') }}}}",
                max_attempts=f"{{{{ ti.xcom_pull(task_ids='validate_and_plan')['max_polls'].get('{name}', 1) }}}}",
                deferrable=True, poke_interval=SETTINGS.poll_seconds, **CONFIG)
            for name in STEP_NAMES
        ]
        # ALL_DONE, not the teardown default ALL_DONE_SETUP_SUCCESS: a run marked failed while
        # create_cluster runs fails that setup, and its cluster must still go.
        terminate_cluster = FruitsTerminateClusterOperator(
            task_id="terminate_cluster", job_flow_id=CLUSTER_ID, **CONFIG).as_teardown(setups=create_cluster)
        terminate_cluster.trigger_rule = TriggerRule.ALL_DONE

        chain(plan, staged, create_cluster, add_steps, watch_steps, terminate_cluster, run_report)
