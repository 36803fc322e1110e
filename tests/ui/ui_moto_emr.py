"""EMR on a moto server in the test process, with steps that end because this module ends them.

moto never runs EMR steps. ThreadedMotoServer serves moto's in-process backends, so the test
process sees the clusters the Airflow components created over HTTP and can move their steps to
COMPLETED, after writing the small result files the Spark jobs would have written (the report task
reads them).
"""
from __future__ import annotations

import io
import json
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq

REGION = "eu-west-3"
ACCOUNT = "123456789012"
FAKE_PCA_K = 3


def emr_backends():
    from moto.backends import get_backend

    accounts = get_backend("emr")[ACCOUNT]
    # moto's server files EMR calls under us-east-1 whatever region the client asked for
    return [accounts[region] for region in ("us-east-1", REGION)]


def all_clusters():
    return [cluster for backend in emr_backends() for cluster in list(backend.clusters.values())]


def cluster_by_id(cluster_id: str):
    return next((c for c in all_clusters() if c.id == cluster_id), None)


def _arg_after(args, flag):
    return args[args.index(flag) + 1] if flag in args else None


def _put(s3, uri: str, body: bytes) -> None:
    bucket, key = uri[len("s3://"):].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=body)


class StepFinisher:
    """Plays the cluster: ends a step when the test says so (the test waits until its sensor has
    deferred, so that the trigger, in the triggerer, is what sees the step end)."""

    def __init__(self, s3):
        self.s3 = s3

    def complete(self, cluster_id: str, step_id: str) -> None:
        cluster = cluster_by_id(cluster_id)
        (step,) = [s for s in cluster.steps if s.id == step_id]
        self.write_outputs(step)
        now = datetime.now(timezone.utc)
        step.start_date_time = step.start_date_time or now
        step.end_date_time = now
        step.state = "COMPLETED"

    def write_outputs(self, step) -> None:
        args = list(step.args)
        output = _arg_after(args, "--output")
        if "extract_features" in step.name:
            manifest = _arg_after(args, "--manifest")
            bucket, key = manifest[len("s3://"):].split("/", 1)
            listed = self.s3.list_objects_v2(Bucket=bucket, Prefix=key.rstrip("/") + "/").get("Contents", [])
            rows = sum(pq.read_table(io.BytesIO(self.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()))
                       .num_rows for o in listed if o["Key"].endswith(".parquet"))
            _put(self.s3, f"{output}/_job_result.json", json.dumps(
                {"job": "extract_features", "read": rows, "featurized": rows, "rejected": 0, "seconds": 1}).encode())
        else:  # reduce_pca
            ratios = [0.5, 0.3, 0.15][:FAKE_PCA_K]
            report = {"k": FAKE_PCA_K, "explained_variance_ratio": ratios, "cumulative": sum(ratios),
                      "n_images": 4, "input_dim": 1280}
            _put(self.s3, f"{output}/_pca_report.json", json.dumps(report).encode())
            _put(self.s3, f"{output}/_job_result.json", json.dumps(
                {"job": "reduce_pca", "n_images": 4, "k": FAKE_PCA_K, "variance_kept": sum(ratios),
                 "seconds": 1}).encode())
            preview = pa.table({"label": ["apple", "apple", "kiwi", "kiwi"],
                                "pc1": [0.1, 0.2, -0.1, -0.2], "pc2": [0.3, 0.1, -0.2, 0.0]})
            buffer = io.BytesIO()
            pq.write_table(preview, buffer)
            _put(self.s3, f"{output}/_preview/part-00000.parquet", buffer.getvalue())
