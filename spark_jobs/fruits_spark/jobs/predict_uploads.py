"""The day's answers: the published classifier on the uploads a run featurized.

    spark-submit spark_jobs/predict_uploads.py --features URI --classifier URI --current URI --output URI

``--features``: the run's feature batch (features/batch=<run_key>/); its rows with no label are the
app's uploads. The model is the one the app answers with once this run is done: the run's own
classifier (``--classifier``, classifier/<run_key>/) when its step decided to publish it, else the
published one (``--current``, classifier/current.json). Output (Parquet, predictions/<run_key>/):
``path``, ``label`` (null when unsure), ``probability``, ``top`` (the three best {label,
probability}), ``unsure``, ``model`` (the classifier's run key), then ``_job_result.json``: counts by
label, unsure, the model. The answers are ``ClassifierExport.answers``, the code ``classify`` runs, so
both give the same answer for the same photo and model. With no classifier published yet, the
output is an empty table and the result says why. The last stderr line on success is
``FRUITS_RESULT {...}``.
"""
from __future__ import annotations

import argparse
import json
import time

from fruits_contract.lake import JOB_RESULT_FILE, PREDICT_UPLOADS, join_uri
from fruits_spark.classify import load_export
from fruits_spark.errors import JobInputError
from fruits_spark.io import exists, read_bytes, read_job_output, write_text
from fruits_spark.job_runner import get_logger, run_job

JOB = PREDICT_UPLOADS
PREDICTIONS_SCHEMA = ("path string, label string, probability double, "
                      "top array<struct<label:string,probability:double>>, unsure boolean, model string")
# What the Python workers return: Spark 3.5 cannot take an array of structs back from Arrow
# (ArrowColumnVector.getArray: UnsupportedOperationException), so ``top`` comes as two arrays.
ANSWER_SCHEMA = ("path string, label string, probability double, top_labels array<string>, "
                 "top_probabilities array<double>, unsure boolean, model string")
TOP_AS_STRUCTS = ("transform(arrays_zip(top_labels, top_probabilities), "
                  "t -> named_struct('label', t.top_labels, 'probability', t.top_probabilities))")


class PredictionInputError(JobInputError):
    """--features, --classifier or --current cannot be used; the message names which and why."""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="predict_uploads.py", description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="the run's feature batch (features/batch=<run_key>/)")
    parser.add_argument("--classifier", required=True, help="the run's classifier output (classifier/<run_key>/)")
    parser.add_argument("--current", required=True, help="the published classifier's pointer (classifier/current.json)")
    parser.add_argument("--output", required=True, help="output folder (predictions/<run_key>/; replaced on rerun)")
    return parser.parse_args(argv)


def answer_batches(export):
    """A mapInArrow function: features batches -> prediction batches (path, answer, model)."""
    def answer(batches):
        import numpy as np
        import pyarrow as pa

        for batch in batches:
            if batch.num_rows == 0:
                continue
            features = batch.column("features")
            matrix = np.asarray(features.flatten().to_numpy(zero_copy_only=False),
                                dtype=np.float32).reshape(batch.num_rows, -1)
            answers = export.answers(matrix)
            yield pa.RecordBatch.from_pylist(
                [{"path": path, "label": answer["label"], "probability": answer["probability"],
                  "top_labels": [t["label"] for t in answer["top"]],
                  "top_probabilities": [t["probability"] for t in answer["top"]],
                  "unsure": answer["unsure"], "model": export.model}
                 for path, answer in zip(batch.column("path").to_pylist(), answers)])
    return answer


def counts(predictions) -> dict:
    """Predicted, unsure, and the sure answers by label, from the written table."""
    from pyspark.sql import functions as F

    rows = predictions.groupBy("label").agg(F.count("*").alias("n"), F.avg("probability").alias("mean")).collect()
    by_label = {row["label"]: int(row["n"]) for row in rows if row["label"] is not None}
    unsure = sum(int(row["n"]) for row in rows if row["label"] is None)
    return {"predicted": sum(by_label.values()) + unsure, "unsure": unsure,
            "by_label": dict(sorted(by_label.items(), key=lambda item: (-item[1], item[0]))),
            "mean_probability_by_label": {row["label"]: round(float(row["mean"]), 4)
                                          for row in rows if row["label"] is not None}}


def _json_or_none(spark, uri: str) -> dict | None:
    return json.loads(read_bytes(spark, uri)) if exists(spark, uri) else None


def model_to_answer_with(spark, classifier_uri: str, current_uri: str) -> tuple[str | None, str]:
    """(the classifier's URI, or None; why that one): the run's own when its step decided to publish
    it, else the published one."""
    trained = _json_or_none(spark, join_uri(classifier_uri, JOB_RESULT_FILE)) or {}
    if trained.get("trained") and trained.get("published"):
        return classifier_uri, f"this run's classifier, to be published ({classifier_uri})"
    pointer = _json_or_none(spark, current_uri)
    if pointer and pointer.get("classifier_uri"):
        return pointer["classifier_uri"], f"the published classifier ({current_uri} -> {pointer['classifier_uri']})"
    return None, f"no classifier published yet ({current_uri} does not exist) and none trained by this run"


def run(spark, args: argparse.Namespace) -> dict:
    logger = get_logger(JOB)
    started = time.monotonic()
    uploads = read_job_output(spark, args.features, ("path", "label", "features"), flag="--features",
                              made_by="the feature job", error=PredictionInputError).where("label IS NULL")
    model_uri, why = model_to_answer_with(spark, args.classifier, args.current)
    if model_uri is None:
        spark.createDataFrame([], PREDICTIONS_SCHEMA).write.mode("overwrite").parquet(args.output)
        result = {"job": JOB, "model": None, "predicted": 0, "unsure": 0, "by_label": {},
                  "uploads_not_predicted": uploads.count(), "reason": why}
    else:
        try:
            export = load_export(model_uri, read=lambda name: read_bytes(spark, join_uri(model_uri, name)))
        except (ValueError, OSError) as error:
            raise PredictionInputError(f"{why}: cannot be used ({error})") from None
        from pyspark.sql import functions as F

        answered = uploads.select("path", "features").mapInArrow(answer_batches(export), ANSWER_SCHEMA)
        answered.select("path", "label", "probability", F.expr(TOP_AS_STRUCTS).alias("top"), "unsure", "model") \
            .write.mode("overwrite").parquet(args.output)
        result = {"job": JOB, "model": export.model, "model_uri": model_uri, "why": why,
                  **counts(spark.read.parquet(args.output))}
    result["seconds"] = round(time.monotonic() - started, 1)
    write_text(spark, join_uri(args.output, JOB_RESULT_FILE), json.dumps(result) + "\n")
    logger.info("%d upload(s) answered by classifier %s: %d unsure, by label %s -> %s", result["predicted"],
                result["model"], result["unsure"], result["by_label"], args.output)
    return result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
