"""The PCA-only route in EMR mode against moto (the EMR fixtures of tests/dag/conftest.py): a new PCA target
with no new upload runs reduce_pca alone on a cluster sized for it; the same target does nothing.

The lake is seeded as a past run leaves it: a feature batch holding every upload, that run's
report, and the pointer naming its PCA as the current one (with its target). The step finisher also writes the PCA job's preview, so the report
task draws the run's picture into the bucket.
"""
from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from moto_emr import all_clusters, arg_after

from .test_dag_emr_moto import run_dag, task_states, upload_images

PAST_RUN = "2026-04-30T000000Z"


def seed_past_run(s3, bucket, tmp_path, pca_target: dict):
    """Uploads, a feature batch holding all of them, and the report of the run that wrote both."""
    upload_images(s3, bucket, tmp_path, corrupt=False)
    paths = sorted(f"s3://{bucket}/{o['Key']}" for o in s3.list_objects_v2(Bucket=bucket, Prefix="raw/")["Contents"])
    features = pa.table({
        "path": paths, "label": [p.split("/")[-2] for p in paths],
        "features": [np.random.default_rng(i).random(1280, dtype=np.float32).tolist() for i in range(len(paths))],
        "model": ["mobilenet_v2"] * len(paths),
    })
    sink = io.BytesIO()
    pq.write_table(features, sink)
    s3.put_object(Bucket=bucket, Key=f"features/batch={PAST_RUN}/part-00000.parquet", Body=sink.getvalue())
    s3.put_object(Bucket=bucket, Key=f"features/batch={PAST_RUN}/_job_result.json", Body=b"{}")  # committed
    report = {"run_key": PAST_RUN, "status": "success", "route": "features_and_pca", "pca_target": pca_target,
              "uris": {"pca": f"s3://{bucket}/pca/{PAST_RUN}"}}
    s3.put_object(Bucket=bucket, Key=f"reports/{PAST_RUN}.json", Body=json.dumps(report).encode())
    pointer = {"run_key": PAST_RUN, "pca_uri": report["uris"]["pca"], "pca_target": pca_target}
    s3.put_object(Bucket=bucket, Key="pca/current.json", Body=json.dumps(pointer).encode())
    return paths


def read_pointer(s3, bucket, key: str) -> dict:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def reports_by_key(s3, bucket) -> dict:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="reports/").get("Contents", [])]
    return {k: s3.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


def test_a_new_pca_target_runs_the_pca_step_alone_on_a_small_cluster(aws, lake_bucket, step_finisher, tmp_path):
    step_finisher(preview=True)  # also writes the PCA job's preview, for the picture
    s3, emr = aws["s3"], aws["emr"]
    paths = seed_past_run(s3, lake_bucket, tmp_path, {"variance": 0.95})
    clusters_before = {c.id for c in all_clusters()}

    dag_run = run_dag({"pca_k": 8, "core_instance_count": 5, "instance_type": "m5.2xlarge"})

    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    assert states["watch_extract_features"] == "skipped" and states["watch_reduce_pca"] == "success"
    assert states["watch_train_classifier"] == "success"
    assert states["terminate_cluster"] == "success"
    (cluster,) = [c for c in all_clusters() if c.id not in clusters_before]
    assert cluster.state == "TERMINATED"
    step, classifier_step = cluster.steps
    assert "reduce_pca" in step.name and arg_after(step.args, "--k") == "8"
    assert "train_classifier" in classifier_step.name
    assert arg_after(classifier_step.args, "--pca") == arg_after(step.args, "--output")
    assert arg_after(step.args, "--features") == f"s3://{lake_bucket}/features"
    groups = {g["InstanceGroupType"]: g for g in emr.list_instance_groups(ClusterId=cluster.id)["InstanceGroups"]}
    assert groups["CORE"]["RequestedInstanceCount"] == 1, "a PCA refit of a few images needs one core node"
    assert groups["CORE"]["InstanceType"] == "m5.2xlarge"

    reports = reports_by_key(s3, lake_bucket)
    (key,) = [k for k in reports if k.endswith(".json") and PAST_RUN not in k]
    report = json.loads(reports[key])
    assert report["status"] == "success" and report["route"] == "pca_only"
    assert "k=8 differs from the latest PCA output's (variance 0.95, run 2026-04-30T000000Z)" in report["route_reason"]
    assert [s["name"] for s in report["steps"]] == [step.name, classifier_step.name]
    assert report["cluster_id"] == cluster.id and report["classifier"]["accuracy"] == 0.75
    assert report["estimated_cost"]["core"]["count"] == 1
    assert report["counts"]["featurized"] is None and report["counts"]["already_featurized"] == len(paths)
    assert report["pca_target"] == {"k": 8}
    picture_key = key.removesuffix(".json") + ".png"
    assert report["uris"]["picture"] == f"s3://{lake_bucket}/{picture_key}"
    assert reports[picture_key].startswith(b"\x89PNG")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=lake_bucket)["Contents"]}
    assert not any(k.startswith("models/") for k in keys), "a PCA-only run stages no model"
    assert not any(k.startswith("features/") and PAST_RUN not in k for k in keys), "no feature extraction"
    assert sum(k.startswith("raw/") for k in keys) == len(paths)  # raw/ untouched
    # The next run builds on this run's PCA, and make classify uses its classifier.
    run_key = key.removeprefix("reports/").removesuffix(".json")
    assert read_pointer(s3, lake_bucket, "pca/current.json") == {
        "run_key": run_key, "pca_uri": f"s3://{lake_bucket}/pca/{run_key}", "pca_target": {"k": 8},
        "labels_digest": None}
    assert read_pointer(s3, lake_bucket, "classifier/current.json")["classifier_uri"] == \
        f"s3://{lake_bucket}/classifier/{run_key}"


def test_the_same_target_with_nothing_new_creates_no_cluster(aws, lake_bucket, step_finisher, tmp_path):
    step_finisher(preview=True)  # also writes the PCA job's preview, for the picture
    s3 = aws["s3"]
    seed_past_run(s3, lake_bucket, tmp_path, {"variance": 0.95})
    clusters_before = len(all_clusters())

    dag_run = run_dag()  # a scheduled-like run: the form's defaults, variance 0.95

    assert str(dag_run.state) == "success", task_states(dag_run)
    assert len(all_clusters()) == clusters_before
    reports = reports_by_key(s3, lake_bucket)
    (key,) = [k for k in reports if PAST_RUN not in k]
    report = json.loads(reports[key])
    assert report["route"] == "nothing_to_do" and report["cluster_id"] is None
    assert "variance 0.95 is the latest PCA output's (run 2026-04-30T000000Z)" in report["route_reason"]
