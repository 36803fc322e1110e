"""The fruit classifier on the PCA features: ``--pca`` (a PCA job's output) -> ``--output``.

    spark-submit spark_jobs/train_classifier.py --pca URI --output URI

Output (docs/classifier.md): ``model/`` (Spark ML LogisticRegressionModel), ``labels.json``,
``export/`` (classifier.json + classifier.npz: NumPy only, what ``python -m fruits_spark.classify``
reads), ``figures.json`` (held-out accuracy, macro F1, per label, confusion matrix, accuracy by
number of components, labels left out), ``held_out/`` (Parquet: path, label, prediction,
probability of each held-out image) and ``_job_result.json``. The last stderr line on success is
``FRUITS_RESULT {...}``. Its entry script, spark_jobs/train_classifier.py, runs from the checkout and
from ``--py-files fruits_spark.zip``.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from fruits_contract.lake import (CLASSIFIER_EXPORT_FOLDER, CLASSIFIER_FIGURES_FILE, CLASSIFIER_HELD_OUT_FOLDER,
                                  CLASSIFIER_LABELS_FILE, CLASSIFIER_MODEL_FOLDER, JOB_RESULT_FILE, PCA_MODEL_FOLDER,
                                  PCA_REPORT_FILE, TRAIN_CLASSIFIER, join_uri)
from fruits_spark.classifier_training import NotEnoughImages, pca_mean_and_components, read_pca_output, train
from fruits_spark.classify import write_export
from fruits_spark.errors import ClassifierInputError
from fruits_spark.images import IMAGE_SIZE
from fruits_spark.io import copy_from_local, delete_tree, read_bytes, write_text
from fruits_spark.job_runner import get_logger, run_job

JOB = TRAIN_CLASSIFIER
# What decode_image and preprocess do (fruits_spark.features): recorded so that a reader of the export
# knows how its features were made; the classify command calls those functions themselves.
DECODE_SETTINGS = {
    "function": "fruits_spark.features.decode_image",
    "image_size": IMAGE_SIZE,
    "orientation": "EXIF applied first (fruits_spark.images)",
    "framing": "largest centred square, bicubic resize; JPEG decoded at the smallest libjpeg scale >= 2x",
    "channels": "RGB, transparent pixels on white",
    "scaling": "x / 127.5 - 1 (fruits_spark.features.preprocess)",
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="train_classifier.py", description=__doc__.splitlines()[0])
    parser.add_argument("--pca", required=True, help="the PCA job's output folder (pca/<run_key>/)")
    parser.add_argument("--output", required=True, help="output folder (classifier/<run_key>/; replaced on rerun)")
    return parser.parse_args(argv)


def feature_model(spark, pca_uri: str) -> dict:
    """Which feature model made the features the PCA was fitted on: the feature job's ``model``
    column (``<family>/tflite-sha256-<first 16 hex digits>``), read through the PCA report's features_uri."""
    report = json.loads(read_bytes(spark, join_uri(pca_uri, PCA_REPORT_FILE)))
    names = sorted(row["model"] for row in spark.read.parquet(report["features_uri"]).select("model").distinct()
                   .collect() if row["model"])
    if len(names) != 1:
        raise ClassifierInputError(f"--pca {pca_uri}: its features were made by {len(names)} models ({names}); "
                                   "a classifier needs features of one model")
    return {"name": names[0], "sha256_prefix": names[0].rsplit("sha256-", 1)[1] if "sha256-" in names[0] else None}


def run(spark, args: argparse.Namespace) -> dict:
    """Train, measure, write everything under ``args.output``; return the job result."""
    from pyspark.ml import PipelineModel

    logger = get_logger(JOB)
    pca, output = args.pca, args.output
    started = time.monotonic()
    try:
        trained = train(read_pca_output(spark, pca), pca, logger=logger)
    except NotEnoughImages as why:
        # Not a failure: a young lake has too few labelled images; the run reports why and goes on.
        delete_tree(spark, output)  # no classifier of an earlier attempt may pass for this run's
        job_result = {"job": JOB, "trained": False, "reason": str(why), "seconds": round(time.monotonic() - started, 1)}
        write_text(spark, join_uri(output, JOB_RESULT_FILE), json.dumps(job_result) + "\n")
        logger.warning("no classifier trained: %s", why)
        return job_result
    mean, components = pca_mean_and_components(PipelineModel.load(join_uri(pca, PCA_MODEL_FOLDER)))
    # The held-out Parquet write replaces its folder; the model and small files go beside it.
    trained.held_out.write.mode("overwrite").parquet(join_uri(output, CLASSIFIER_HELD_OUT_FOLDER))
    trained.model.write().overwrite().save(join_uri(output, CLASSIFIER_MODEL_FOLDER))
    write_text(spark, join_uri(output, CLASSIFIER_LABELS_FILE), json.dumps(trained.labels) + "\n")
    write_text(spark, join_uri(output, CLASSIFIER_FIGURES_FILE), json.dumps(trained.figures, indent=2) + "\n")
    metadata = {"labels": trained.labels, "k": trained.k, "input_dim": int(mean.shape[0]), "pca_uri": pca,
                "feature_model": feature_model(spark, pca), "decode": DECODE_SETTINGS, "figures": trained.figures}
    arrays = {"pca_mean": mean, "pca_components": components[:, : trained.k],
              "coefficients": trained.model.coefficientMatrix.toArray(),
              "intercepts": trained.model.interceptVector.toArray()}
    with tempfile.TemporaryDirectory(prefix="fruits-export-") as tmp:
        for file in write_export(Path(tmp), metadata, arrays):
            copy_from_local(spark, file, join_uri(output, CLASSIFIER_EXPORT_FOLDER, file.name))
    figures = trained.figures
    job_result = {"job": JOB, "trained": True, "k": trained.k, "labels": len(trained.labels), "n_train": figures["n_train"],
                  "n_test": figures["n_test"], "accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"],
                  "seconds": round(time.monotonic() - started, 1)}
    write_text(spark, join_uri(output, JOB_RESULT_FILE), json.dumps(job_result) + "\n")
    logger.info("classifier on %d labels, k=%d: held-out accuracy %.4f, macro F1 %.4f on %d images -> %s",
                len(trained.labels), trained.k, figures["accuracy"], figures["macro_f1"], figures["n_test"], output)
    return job_result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
