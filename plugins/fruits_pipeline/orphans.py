"""Clusters that outlived their run: found by their tags, terminated before a run creates its own.

A cluster outlives its run when the run dies between RunJobFlow and the teardown (run marked failed
while create_cluster runs, a worker lost, the scheduler down). The DAG has one active run at a time,
so a project cluster of another run_key that is older than a margin (so that a cluster another
Airflow deployment of the same account has just started is left alone) belongs to no running run.

ListClusters returns no tags and the Airflow role may describe only project-tagged clusters, so
clusters are first narrowed by name (``fruits-pipeline-<run_key>``) and the tags then checked with
DescribeCluster. Plain functions of a boto3 EMR client: tests call them on moto.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from fruits_pipeline.job_flow import PROJECT_TAG, cluster_name

log = logging.getLogger(__name__)

# Every state in which a cluster still costs money (TERMINATING is already on its way out).
ACTIVE_STATES = ("STARTING", "BOOTSTRAPPING", "RUNNING", "WAITING")


def project_clusters(emr, states=ACTIVE_STATES, name: str | None = None) -> list[dict]:
    """Active clusters tagged project=fruits-pipeline (and called ``name``, when given): id, name, state,
    created, tags."""
    found = []
    for page in emr.get_paginator("list_clusters").paginate(ClusterStates=list(states)):
        for summary in page["Clusters"]:
            if not summary["Name"].startswith(cluster_name("")) or name not in (None, summary["Name"]):
                continue  # not ours: the Airflow role may not even describe it
            try:
                cluster = emr.describe_cluster(ClusterId=summary["Id"])["Cluster"]
            except emr.exceptions.ClientError as error:
                if error.response.get("Error", {}).get("Code") not in ("AccessDeniedException", "AccessDenied"):
                    raise
                continue  # named like ours but not tagged project=fruits-pipeline: the role may not touch it
            tags = {tag["Key"]: tag["Value"] for tag in cluster.get("Tags", [])}
            if tags.get("project") != PROJECT_TAG:
                continue
            found.append({"cluster_id": cluster["Id"], "name": cluster["Name"], "state": cluster["Status"]["State"],
                          "created": cluster["Status"]["Timeline"]["CreationDateTime"], "tags": tags})
    return found


def _age_seconds(created: datetime, now: datetime) -> float:
    if created.tzinfo is None:
        created = created.replace(tzinfo=timezone.utc)
    return (now - created).total_seconds()


def select_orphans(clusters: list[dict], *, run_key: str, min_age_seconds: float, now: datetime) -> list[dict]:
    """The clusters of ``project_clusters`` that belong to no running run: another run_key (or none),
    older than ``min_age_seconds``."""
    return [c for c in clusters
            if c["tags"].get("run_key") != run_key and _age_seconds(c["created"], now) >= min_age_seconds]


def terminate_orphan_clusters(emr, *, run_key: str, min_age_seconds: float, now: datetime | None = None) -> list[dict]:
    """Terminate the orphans; returns what the run report lists: id, run_key, state, age."""
    now = now or datetime.now(timezone.utc)
    orphans = select_orphans(project_clusters(emr), run_key=run_key, min_age_seconds=min_age_seconds, now=now)
    if not orphans:
        return []
    ids = [c["cluster_id"] for c in orphans]
    emr.terminate_job_flows(JobFlowIds=ids)
    listed = [{"cluster_id": c["cluster_id"], "run_key": c["tags"].get("run_key"), "state": c["state"],
               "age_seconds": int(_age_seconds(c["created"], now))} for c in orphans]
    log.warning("terminated %d cluster(s) left running by earlier runs: %s", len(listed), listed)
    return listed


def run_clusters(emr, run_key: str) -> list[str]:
    """Ids of the active clusters tagged with this run_key (the teardown's fallback)."""
    return [c["cluster_id"] for c in project_clusters(emr, name=cluster_name(run_key))
            if c["tags"].get("run_key") == run_key]


def clusters_to_terminate(job_flow_id: str | None, find_by_tags) -> list[str]:
    """The id create_cluster returned, else what ``find_by_tags()`` finds: create_cluster can die
    after RunJobFlow and before returning the id (a run marked failed kills it)."""
    if job_flow_id and job_flow_id not in ("None", ""):
        return [job_flow_id]
    return list(find_by_tags())


def clean_up_before_create(settings, run_key: str) -> list[dict]:
    """What a run does before creating its cluster: terminate the clusters earlier runs left behind."""
    from airflow.providers.amazon.aws.hooks.emr import EmrHook

    emr = EmrHook(aws_conn_id=settings.aws_conn_id, emr_conn_id=None, region_name=settings.region).conn
    return terminate_orphan_clusters(emr, run_key=run_key, min_age_seconds=settings.orphan_min_age_seconds)
