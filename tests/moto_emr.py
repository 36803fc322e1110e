"""EMR and S3 on a moto server in the test process, for tests/dag and tests/ui.

A plain module (not a conftest) so that test files in any folder can import it. moto never runs
EMR steps: ThreadedMotoServer serves moto's in-process backends, so the test process sees the
clusters that the DAG (or Airflow's components) created over HTTP and can end their steps, after
writing the small result files the Spark jobs would have written (the report task reads them).
"""
from __future__ import annotations

import io
import json
import socket
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

REGION = "eu-west-3"
ACCOUNT = "123456789012"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def moto_server(verbose: bool = True):
    """The endpoint of a moto server on a free port of 127.0.0.1, stopped on leaving."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=verbose)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def write_fake_wheelhouse(folder: Path) -> Path:
    """A wheel file name per bootstrap pin and architecture: what staging the code for EMR checks and ships."""
    from fruits_pipeline.job_code import ARCHITECTURES, bootstrap_pins
    from fruits_pipeline.settings import REPO_ROOT

    folder.mkdir(parents=True, exist_ok=True)
    for pin in bootstrap_pins(REPO_ROOT / "spark_jobs"):
        name, version = pin.split("==")
        for arch in ARCHITECTURES:
            (folder / f"{name.replace('-', '_')}-{version}-cp311-cp311-manylinux_2_28_{arch}.whl").write_bytes(b"w")
    return folder


def emr_backends():
    from moto.backends import get_backend

    accounts = get_backend("emr")[ACCOUNT]
    # moto's server files EMR calls under us-east-1 whatever region the client asked for
    return [accounts[region] for region in ("us-east-1", REGION)]


def all_clusters():
    # list(): the server's threads may add a cluster while this one reads
    return [cluster for backend in emr_backends() for cluster in list(backend.clusters.values())]


def cluster_by_id(cluster_id: str):
    return next((c for c in all_clusters() if c.id == cluster_id), None)


def arg_after(args, flag):
    return args[args.index(flag) + 1]


def put(s3, uri: str, body: bytes) -> None:
    bucket, key = uri[len("s3://"):].split("/", 1)
    s3.put_object(Bucket=bucket, Key=key, Body=body)


def write_json(s3, uri: str, payload) -> None:
    put(s3, uri, json.dumps(payload).encode())


# What train_classifier.py writes to <output>/figures.json, for 4 held-out images of 2 labels.
CLASSIFIER_FIGURES = {
    "accuracy": 0.75, "macro_f1": 0.733, "n_train": 12, "n_test": 4, "excluded_labels": {"fig": 2},
    "per_label": {"apple red": {"precision": 1.0, "recall": 0.5, "support": 2},
                  "kiwi": {"precision": 0.667, "recall": 1.0, "support": 2}},
    "confusion_matrix": {"labels": ["apple red", "kiwi"], "matrix": [[1, 1], [0, 2]]},
    "accuracy_by_k": {"2": 0.5, "3": 0.75},
}


def write_step_outputs(s3, step, preview: bool) -> None:
    """What the step's Spark job writes for the report task: its result line (and the PCA report);
    with preview, also the PCA job's <output>/_preview/ (label, pc1, pc2), from which the report
    task draws the run's picture."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    output = arg_after(step.args, "--output")
    if "extract_features" in step.name:
        manifest = arg_after(step.args, "--manifest")
        bucket, key = manifest[len("s3://"):].split("/", 1)
        body = s3.get_object(Bucket=bucket, Key=f"{key}/part-00000.parquet")["Body"].read()
        valid = pq.read_table(io.BytesIO(body)).num_rows
        write_json(s3, f"{output}/_job_result.json",
                   {"job": "extract_features", "read": valid, "featurized": valid, "rejected": 0, "seconds": 1})
        return
    if "predict_uploads" in step.name:
        write_json(s3, f"{output}/_job_result.json",
                   {"job": "predict_uploads", "model": None, "predicted": 0, "unsure": 0, "by_label": {},
                    "reason": "no classifier published yet", "seconds": 1})
        return
    if "train_classifier" in step.name:
        write_json(s3, f"{output}/figures.json", CLASSIFIER_FIGURES)
        write_json(s3, f"{output}/_job_result.json", {"job": "train_classifier", "k": 3, "accuracy": 0.75, "seconds": 1})
        return
    report = {"k": 3, "explained_variance_ratio": [0.5, 0.3, 0.15], "cumulative": 0.95,
              "n_images": 4, "input_dim": 1280}
    write_json(s3, f"{output}/_pca_report.json", report)
    write_json(s3, f"{output}/_job_result.json",
               {"job": "reduce_pca", "n_images": 4, "k": 3, "variance_kept": 0.95, "seconds": 1})
    if preview:
        table = pa.table({"label": ["apple red", "apple red", "kiwi", "kiwi"],
                          "pc1": [1.0, 1.2, -1.0, -0.8], "pc2": [0.1, -0.2, 0.3, 0.0]})
        sink = io.BytesIO()
        pq.write_table(table, sink)
        put(s3, f"{output}/_preview/part-00000.parquet", sink.getvalue())


def end_step(step, state: str) -> None:
    now = datetime.now(timezone.utc)
    step.start_date_time = step.start_date_time or now
    step.end_date_time = now
    step.state = state


def complete_step(s3, step, preview: bool) -> None:
    """Ends a step as its cluster would after a successful job: outputs written, then COMPLETED."""
    write_step_outputs(s3, step, preview)
    end_step(step, "COMPLETED")
