"""Centered PCA of the image features: ``--features`` (all batches) -> ``--output``.

    spark-submit spark_jobs/reduce_pca.py --features URI --output URI (--k N | --variance F)

Output: Parquet path, label, pca_features array<float>[k]; ``_pca_report.json``;
``_model/`` (centering + PCA, one Spark PipelineModel); ``_preview/`` (a small sample of
the first two components, for the run's picture); ``_job_result.json``. The last
stderr line on success is ``FRUITS_RESULT {...}`` (docs/design.md, "The jobs").
Its entry script, spark_jobs/reduce_pca.py, runs from the checkout and from an S3 copy with
``--py-files fruits_spark.zip``.
"""
from __future__ import annotations

import argparse
import json
import time

from fruits_contract.lake import (JOB_RESULT_FILE, PCA_MODEL_FOLDER, PCA_PREVIEW_FOLDER, PCA_REPORT_FILE, REDUCE_PCA,
                                  join_uri)
from fruits_spark.io import write_text
from fruits_spark.job_runner import get_logger, run_job
from fruits_spark.pca import feature_batches, fit_pca, preview, read_features

JOB = REDUCE_PCA


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in (0, 1]")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a whole number >= 1")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="reduce_pca.py", description=__doc__.splitlines()[0])
    parser.add_argument("--features", required=True, help="feature Parquet: a folder of batch=*/ partitions or one batch")
    parser.add_argument("--output", required=True, help="output folder (replaced on rerun)")
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--k", type=_positive, help="number of components (capped at min(rows, dims))")
    target.add_argument("--variance", type=_fraction, help="keep the smallest k reaching this fraction of the total variance")
    return parser.parse_args(argv)


def run(spark, args: argparse.Namespace) -> dict:
    """Fit, write Parquet + model + report + job result under ``args.output``; return the job result."""
    logger = get_logger(JOB)
    features, output = args.features, args.output
    started = time.monotonic()
    batches = feature_batches(spark, features)
    for partial in batches.partial:
        logger.warning("ignoring %s: no %s, a feature job died before committing it (its images are taken "
                       "again by the next run)", partial, JOB_RESULT_FILE)
    result = fit_pca(read_features(spark, features, batches), features, k=args.k, variance=args.variance,
                     logger=logger)
    report = result.report
    if report.get("capped"):
        logger.warning("--k %s is more than min(rows, dims) = %d: using k=%d", report["k_requested"],
                       report["max_k"], report["k"])
    # The Parquet write replaces the whole output folder, so it goes first.
    result.reduced.write.mode("overwrite").parquet(output)
    result.model.write().overwrite().save(join_uri(output, PCA_MODEL_FOLDER))
    preview(spark.read.parquet(output)).coalesce(1).write.mode("overwrite").parquet(join_uri(output, PCA_PREVIEW_FOLDER))
    report = {**report, "features_uri": features, "output_uri": output, "batches_read": len(batches.committed),
              "partial_batches_ignored": list(batches.partial)}
    write_text(spark, join_uri(output, PCA_REPORT_FILE), json.dumps(report, indent=2) + "\n")
    job_result = {
        "job": JOB,
        "n_images": report["n_images"],
        "k": report["k"],
        "variance_kept": report["cumulative"],
        "partial_batches_ignored": report["partial_batches_ignored"],
        "seconds": round(time.monotonic() - started, 1),
    }
    write_text(spark, join_uri(output, JOB_RESULT_FILE), json.dumps(job_result) + "\n")
    logger.info("reduced %d images from %d to %d dims keeping %.4f of the variance -> %s",
                report["n_images"], report["input_dim"], report["k"], report["cumulative"], output)
    return job_result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
