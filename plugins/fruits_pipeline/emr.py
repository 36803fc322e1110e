"""EMR pieces the provider does not give: steps added at most once per cluster, a step sensor
whose failure names the reason and the logs, and the provider's cluster and logs links on the task
pages where the provider's own code would not store them (steps found already added, the teardown)."""
from __future__ import annotations

import ast
import asyncio
from typing import Any

from airflow.providers.amazon.aws.links.emr import EmrClusterLink, EmrLogsLink, get_log_uri
from airflow.providers.amazon.aws.operators.emr import (EmrAddStepsOperator, EmrCreateJobFlowOperator,
                                                       EmrTerminateJobFlowOperator)
from airflow.providers.amazon.aws.sensors.emr import EmrStepSensor
from airflow.providers.amazon.aws.triggers.emr import EmrStepSensorTrigger

from fruits_pipeline.steps import step_name_of


def step_log_location(log_uri: str | None, cluster_id: str, step_id: str) -> str | None:
    if not log_uri:
        return None
    return f"{log_uri.rstrip('/')}/{cluster_id}/steps/{step_id}/"


def persist_cluster_links(operator, context, cluster_id: str) -> None:
    """Store the provider's EMR cluster and logs links of ``cluster_id`` for this task try, as the provider's
    operators do (in the try's XCom: the UI reads them from there, also once the try has failed)."""
    hook = operator.hook
    where = {"context": context, "operator": operator, "region_name": hook.conn_region_name,
             "aws_partition": hook.conn_partition, "job_flow_id": cluster_id}
    EmrClusterLink.persist(**where)
    EmrLogsLink.persist(**where, log_uri=get_log_uri(emr_client=hook.conn, job_flow_id=cluster_id))


def step_failure_message(describe_step_response: dict, *, cluster_id: str, log_uri: str | None) -> str:
    step = describe_step_response["Step"]
    status = step["Status"]
    details = status.get("FailureDetails") or {}
    location = details.get("LogFile") or step_log_location(log_uri, cluster_id, step["Id"])
    reason = details.get("Reason") or status.get("StateChangeReason", {}).get("Message") or "no reason given by EMR"
    message = f" ({details['Message']})" if details.get("Message") else ""
    return (f"EMR step {step['Name']!r} ({step['Id']}) on cluster {cluster_id} ended {status['State']}: "
            f"{reason}{message}. Logs: {location or 'no LogUri on the cluster'} (stderr.gz, stdout.gz)")


class StepTriggerPollingAfterOneInterval(EmrStepSensorTrigger):
    """EmrStepSensorTrigger whose first poll comes one interval after the deferral, not at once.

    The sensor defers right after seeing the step unfinished, so an immediate poll only repeats that
    check, and it races the worker's report that the deferred attempt ended: a step that finishes in
    between fires the trigger before the scheduler knows the task deferred, and Airflow 3.3 then fails
    the resumed task as a "state mismatch" (apache/airflow #71580, #72716).
    """

    async def run(self):
        await asyncio.sleep(self.waiter_delay)
        async for event in super().run():
            yield event


class FruitsStepSensor(EmrStepSensor):
    """EmrStepSensor of one named step of the run's plan, failing with the step's failure reason and log
    location, also when deferred.

    ``step_id`` and ``max_attempts`` are templates read from the run's XComs (add_steps' ``step_id_of``
    and the plan's ``max_polls``); a step the plan does not run (the features step of a PCA-only run)
    renders as "None", and the sensor skips."""

    template_fields = (*EmrStepSensor.template_fields, "max_attempts")

    def __init__(self, *, step_name: str, **kwargs):
        super().__init__(**kwargs)
        self.step_name = step_name

    def execute(self, context) -> None:
        if self.step_id in (None, "", "None"):
            from airflow.providers.common.compat.sdk import AirflowSkipException

            raise AirflowSkipException(f"this run's plan has no {self.step_name} step")
        self.max_attempts = int(self.max_attempts)
        super().execute(context)

    def _fail_with_details(self, response: dict) -> None:
        from airflow.providers.common.compat.sdk import AirflowException

        log_uri = self.hook.conn.describe_cluster(ClusterId=self.job_flow_id)["Cluster"].get("LogUri")
        raise AirflowException(step_failure_message(response, cluster_id=self.job_flow_id, log_uri=log_uri))

    def poke(self, context) -> bool:
        response = self.get_emr_response(context)
        state = self.state_from_response(response)
        self.log.info("step %s is %s", self.step_id, state)
        if state in self.failed_states:
            self._fail_with_details(response)
        return state in self.target_states

    def defer(self, *, trigger, method_name, kwargs=None, timeout=None):
        if type(trigger) is EmrStepSensorTrigger:
            trigger = StepTriggerPollingAfterOneInterval(**trigger.serialize()[1])
        super().defer(trigger=trigger, method_name=method_name, kwargs=kwargs, timeout=timeout)

    def execute_complete(self, context, event: dict[str, Any] | None = None) -> None:
        if not event or event.get("status") != "success":
            response = self.hook.conn.describe_step(ClusterId=self.job_flow_id, StepId=self.step_id)
            if self.state_from_response(response) in self.failed_states:
                self._fail_with_details(response)
        super().execute_complete(context, event)


def steps_already_added(emr_client, cluster_id: str, names: list[str]) -> list[str] | None:
    """Ids of the steps called ``names`` on the cluster, in that order, or None unless all are there.

    Step names carry the run key, so they identify this run's steps on its cluster.
    """
    ids: dict[str, str] = {}
    for page in emr_client.get_paginator("list_steps").paginate(ClusterId=cluster_id):
        for step in page["Steps"]:
            ids.setdefault(step["Name"], step["Id"])
    return [ids[name] for name in names] if all(name in ids for name in names) else None


class FruitsAddStepsOperator(EmrAddStepsOperator):
    """EmrAddStepsOperator that never adds the run's steps twice: when the task runs again on the
    same cluster (cleared in the UI, or retried), it returns the ids of the steps already there.
    Besides the ids in order (its return value, as the provider's), it pushes ``step_id_of``: pipeline
    step name -> id, which the step sensors read."""

    def execute(self, context) -> list[str]:
        steps = self.steps if isinstance(self.steps, list) else ast.literal_eval(self.steps)
        names = [step["Name"] for step in steps]
        ids = steps_already_added(self.hook.conn, self.job_flow_id, names)
        if ids is not None:
            self.log.info("cluster %s already has this run's steps %s: not adding them again",
                          self.job_flow_id, ids)
            persist_cluster_links(self, context, self.job_flow_id)
        else:
            ids = super().execute(context)
        context["ti"].xcom_push(key="step_id_of", value={step_name_of(name): id_ for name, id_ in zip(names, ids)})
        return ids


class FruitsCreateClusterOperator(EmrCreateJobFlowOperator):
    """EmrCreateJobFlowOperator that never creates a run's cluster twice. RunJobFlow takes no
    idempotency token, so a task killed after RunJobFlow and run again (a retry, a clear, a worker
    lost) looks first for an active cluster tagged with the run's key, and returns its id if there is one."""

    def execute(self, context) -> str | None:
        from fruits_pipeline.orphans import run_clusters

        overrides = self.job_flow_overrides
        if isinstance(overrides, str):
            overrides = ast.literal_eval(overrides)
        run_key = {tag["Key"]: tag["Value"] for tag in overrides.get("Tags", [])}.get("run_key")
        existing = run_clusters(self.hook.conn, run_key) if run_key else []
        if existing:
            self.log.warning("cluster %s tagged run_key=%s is already up (an earlier attempt created it): "
                             "using it instead of creating another", existing[0], run_key)
            persist_cluster_links(self, context, existing[0])  # what super().execute stores for a new one
            return existing[0]
        return super().execute(context)


class FruitsTerminateClusterOperator(EmrTerminateJobFlowOperator):
    """Teardown that terminates the run's cluster even when create_cluster left no id.

    ``job_flow_id`` is a template of create_cluster's XCom: None when create_cluster died after
    RunJobFlow (killed because the run was marked failed, a lost worker). The clusters tagged with
    the run's tags (project + run_key, from the job flow clean_up_and_stage built) are terminated then.
    When it built no job flow, no cluster can have been requested: the task skips without
    an AWS call (nothing-to-do and dry runs)."""

    def __init__(self, *, staging_task_id: str = "clean_up_and_stage", **kwargs):
        super().__init__(**kwargs)
        self.staging_task_id = staging_task_id

    def execute(self, context) -> list[str]:
        from airflow.providers.common.compat.sdk import AirflowSkipException

        from fruits_pipeline.orphans import clusters_to_terminate, run_clusters

        job_flow = context["ti"].xcom_pull(task_ids=self.staging_task_id, key="job_flow")
        if not job_flow:
            raise AirflowSkipException("no job flow was planned in this run: no cluster to terminate")
        run_key = {tag["Key"]: tag["Value"] for tag in job_flow["Tags"]}["run_key"]
        emr = self.hook.conn
        ids = clusters_to_terminate(self.job_flow_id, lambda: run_clusters(emr, run_key))
        if not ids:
            self.log.info("no active cluster is tagged run_key=%s: nothing to terminate", run_key)
            return []
        persist_cluster_links(self, context, ids[0])  # the run's cluster (one per run)
        if ids != [self.job_flow_id]:
            self.log.warning("create_cluster left no cluster id: terminating the clusters tagged run_key=%s: %s",
                             run_key, ids)
        emr.terminate_job_flows(JobFlowIds=ids)
        self.log.info("terminating %s", ids)
        return ids
