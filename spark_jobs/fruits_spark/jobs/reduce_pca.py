"""Centered PCA of the image features: ``--features`` (all batches) -> ``--output``.

    spark-submit spark_jobs/reduce_pca.py --features URI --output URI (--k N | --variance F) [--current URI]

Output: Parquet path, label, pca_features array<float>[k]; ``_pca_report.json``;
``_model/`` (centering + PCA, one Spark PipelineModel); ``_preview/`` (a small sample of
the first two components, for the run's picture); ``_moments.npz`` (the feature moments the fit solved,
and of which batches: with ``--current``, the pointer to the published PCA, the next fit reads only the
batches committed since, and merges); ``_job_result.json``. The last
stderr line on success is ``FRUITS_RESULT {...}`` (docs/design.md, "The jobs").
Its entry script, spark_jobs/reduce_pca.py, runs from the checkout and from an S3 copy with
``--py-files fruits_spark.zip``.
"""
from __future__ import annotations

import argparse
import json
import time

from fruits_contract.lake import (JOB_RESULT_FILE, PCA_MODEL_FOLDER, PCA_MOMENTS_FILE, PCA_PREVIEW_FOLDER,
                                  PCA_REPORT_FILE, REDUCE_PCA, BatchStates, join_uri)
from fruits_spark.io import exists, read_bytes, write_bytes, write_text
from fruits_spark.job_runner import get_logger, run_job
from fruits_spark.retention import thin_superseded
from fruits_spark.pca import (KeptMoments, batch_commits, batch_name, feature_batches, feature_moments, fit_pca,
                              moments_plan, preview, read_features)

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
    parser.add_argument("--current", default=None,
                        help="the published PCA's pointer (pca/current.json): its moments are merged with the new batches'")
    return parser.parse_args(argv)


def published_pca(spark, pointer_uri: str | None) -> str | None:
    """The PCA output folder ``pointer_uri`` (pca/current.json) names, or None."""
    if not pointer_uri or not exists(spark, pointer_uri):
        return None
    return json.loads(read_bytes(spark, pointer_uri)).get("pca_uri")


def remove_superseded_copies(spark, output: str, published: str | None, logger) -> list[str]:
    """Thin out superseded pca/<run_key>/ copies beside ``output`` (fruits_spark.retention): their rows,
    model, preview and moments go, their report and job result stay."""
    return thin_superseded(spark, output, published, marker=PCA_REPORT_FILE,
                           drops=lambda name: name not in (PCA_REPORT_FILE, JOB_RESULT_FILE), what="PCA copies",
                           logger=logger)


def kept_moments(spark, pca_uri: str | None, logger) -> KeptMoments | None:
    """The moments of the PCA output ``pca_uri``, or None (none given, no moments file, unreadable: said)."""
    moments_uri = join_uri(pca_uri, PCA_MOMENTS_FILE) if pca_uri else None
    if not moments_uri or not exists(spark, moments_uri):
        return None
    try:
        return KeptMoments.from_npz_bytes(read_bytes(spark, moments_uri))
    except (ValueError, KeyError, OSError) as error:
        logger.warning("%s cannot be read (%s): one pass over every batch", moments_uri, error)
        return None


def moments_for(spark, features: str, batches: BatchStates, commits: dict, kept: KeptMoments | None,
                logger) -> tuple[object, dict[str, int], dict]:
    """(merged moments or None for a full pass, the committed batches -> commit time, the report's ``moments``)."""
    committed = {batch_name(uri): commits[uri] for uri in batches.committed}
    reused, new, why = moments_plan(kept, committed)
    logger.info("feature moments: %s", why)
    summary = {"kept_batches": len(reused), "read_batches": len(new), "why": why}
    if not reused:
        return None, committed, summary
    new_uris = tuple(uri for uri in batches.committed if batch_name(uri) in set(new))
    if not new_uris:
        return kept.moments, committed, summary
    # Kept first, then the new batches': a fixed order, so the same rows give the same fit.
    return kept.moments.merge(feature_moments(read_features(spark, features, BatchStates(new_uris, ())))), \
        committed, summary


def run(spark, args: argparse.Namespace) -> dict:
    """Fit, write Parquet + model + report + job result under ``args.output``; return the job result."""
    logger = get_logger(JOB)
    features, output = args.features, args.output
    started = time.monotonic()
    commits = batch_commits(spark, features)
    batches = feature_batches(spark, features, commits)
    for partial in batches.partial:
        logger.warning("ignoring %s: no %s, a feature job died before committing it (its images are taken "
                       "again by the next run)", partial, JOB_RESULT_FILE)
    published = published_pca(spark, args.current)
    moments, committed, moments_summary = moments_for(spark, features, batches, commits,
                                                      kept_moments(spark, published, logger), logger)
    result = fit_pca(read_features(spark, features, batches), features, k=args.k, variance=args.variance,
                     logger=logger, moments=moments)
    report = result.report
    if report.get("capped"):
        logger.warning("--k %s is more than min(rows, dims) = %d: using k=%d", report["k_requested"],
                       report["max_k"], report["k"])
    # The Parquet write replaces the whole output folder, so it goes first.
    result.reduced.write.mode("overwrite").parquet(output)
    result.model.write().overwrite().save(join_uri(output, PCA_MODEL_FOLDER))
    preview(spark.read.parquet(output)).coalesce(1).write.mode("overwrite").parquet(join_uri(output, PCA_PREVIEW_FOLDER))
    if result.moments_recomputed:
        moments_summary = {"kept_batches": 0, "read_batches": len(committed),
                           "why": "a photo of a new batch was in a kept one too (taken again): one pass over every batch"}
    write_bytes(spark, join_uri(output, PCA_MOMENTS_FILE), KeptMoments(result.moments, committed).to_npz_bytes())
    report = {**report, "features_uri": features, "output_uri": output, "batches_read": len(batches.committed),
              "partial_batches_ignored": list(batches.partial), "moments": moments_summary}
    write_text(spark, join_uri(output, PCA_REPORT_FILE), json.dumps(report, indent=2) + "\n")
    job_result = {
        "job": JOB,
        "n_images": report["n_images"],
        "k": report["k"],
        "variance_kept": report["cumulative"],
        "partial_batches_ignored": report["partial_batches_ignored"],
        "superseded_copies_removed": remove_superseded_copies(spark, output, published, logger),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_text(spark, join_uri(output, JOB_RESULT_FILE), json.dumps(job_result) + "\n")
    logger.info("reduced %d images from %d to %d dims keeping %.4f of the variance -> %s",
                report["n_images"], report["input_dim"], report["k"], report["cumulative"], output)
    return job_result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
