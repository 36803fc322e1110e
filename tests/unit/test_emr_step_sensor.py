"""The step sensor's trigger waits one poll interval before its first poll (the state-mismatch race)."""
from __future__ import annotations

import asyncio

import pytest
from airflow.providers.common.compat.sdk import TaskDeferred

from fruits_pipeline.emr import FruitsStepSensor, StepTriggerPollingAfterOneInterval


def test_the_sensor_defers_to_the_trigger_that_waits_first(monkeypatch):
    sensor = FruitsStepSensor(task_id="watch", step_name="reduce_pca", job_flow_id="j-1", step_id="s-1", deferrable=True,
                              poke_interval=45, max_attempts=7, aws_conn_id=None, region_name="eu-west-3")
    monkeypatch.setattr(FruitsStepSensor, "poke", lambda self, context: False)

    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({})

    trigger = deferred.value.trigger
    assert type(trigger) is StepTriggerPollingAfterOneInterval
    classpath, fields = trigger.serialize()
    assert classpath == "fruits_pipeline.emr.StepTriggerPollingAfterOneInterval"  # what the triggerer imports
    assert fields["job_flow_id"] == "j-1" and fields["step_id"] == "s-1"
    assert fields["waiter_delay"] == 45 and fields["waiter_max_attempts"] == 7


def test_a_step_the_plan_does_not_run_is_skipped_without_asking_emr(monkeypatch):
    from airflow.providers.common.compat.sdk import AirflowSkipException

    # add_steps' step_id_of has no entry for it: the template renders None as the string "None"
    sensor = FruitsStepSensor(task_id="watch_extract_features", step_name="extract_features", job_flow_id="j-1",
                              step_id="None", max_attempts="1", aws_conn_id=None, region_name="eu-west-3")
    monkeypatch.setattr(FruitsStepSensor, "poke", lambda self, context: pytest.fail("asked EMR"))
    with pytest.raises(AirflowSkipException, match="no extract_features step"):
        sensor.execute({})


def test_the_trigger_sleeps_one_interval_before_asking_emr(monkeypatch):
    calls = []

    async def sleep(seconds):
        calls.append(("sleep", seconds))
        raise asyncio.CancelledError  # stop here: what matters is what came first

    def hook(self):
        calls.append(("aws", None))
        raise AssertionError("polled EMR before waiting")

    monkeypatch.setattr(asyncio, "sleep", sleep)
    monkeypatch.setattr(StepTriggerPollingAfterOneInterval, "hook", hook)
    trigger = StepTriggerPollingAfterOneInterval(job_flow_id="j-1", step_id="s-1", waiter_delay=30,
                                                 waiter_max_attempts=3, aws_conn_id=None)

    async def first_event():
        async for event in trigger.run():
            return event

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(first_event())
    assert calls == [("sleep", 30)]
