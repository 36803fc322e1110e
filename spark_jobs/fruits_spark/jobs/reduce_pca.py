"""Centered PCA of the image features: ``--features`` (all batches) -> ``--output``.

    spark-submit spark_jobs/reduce_pca.py --features URI --output URI (--k N | --variance F) [--current URI]

Output: Parquet path, label, pca_features array<float>[k]; ``_pca_report.json``;
``_model/`` (centering + PCA, one Spark PipelineModel); ``_preview/`` (a small sample of
the first two components, for the run's picture); ``_moments.npz`` (the feature moments the fit solved,
and of which batches: with ``--current``, the pointer to the published PCA, the next fit reads only the
batches committed since, and merges); ``_job_result.json``. When today's fit has the published PCA's k
and its basis has not moved (fruits_spark.pca, ``basis_decision``), the published model is kept: the
output is the published rows plus the new batches' rows projected with it, the old features unread. The last
stderr line on success is ``FRUITS_RESULT {...}`` (docs/design.md, "The jobs").
Its entry script, spark_jobs/reduce_pca.py, runs from the checkout and from an S3 copy with
``--py-files fruits_spark.zip``.
"""
from __future__ import annotations

import argparse
import json
import time

from fruits_contract.lake import (JOB_RESULT_FILE, PCA_MODEL_FOLDER, PCA_MOMENTS_FILE, PCA_PREVIEW_FOLDER,
                                  PCA_REPORT_FILE, REDUCE_PCA, BatchStates, canonical_uri, join_uri)
from fruits_spark.io import exists, read_bytes, write_bytes, write_text
from fruits_spark.job_runner import get_logger, run_job
from fruits_spark.retention import thin_superseded
from fruits_spark.pca import (OUTPUT_COLUMN, BasisDecision, KeptMoments, PcaResult, PublishedPca, basis_decision,
                              batch_commits, batch_name, check_feature_rows, extend_published, feature_batches,
                              feature_moments, fit_pca, moments_plan, pca_report, preview, project, read_features,
                              refit_decision, solve, to_vectors)

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


def published_model(spark, pca_uri: str | None, output: str, logger) -> tuple[PublishedPca | None, str]:
    """The published PCA whose basis today's fit may keep, or (None, why not)."""
    from pyspark.ml import PipelineModel

    if not pca_uri:
        return None, "no published PCA (no --current)"
    if canonical_uri(pca_uri).rstrip("/") == canonical_uri(output).rstrip("/"):
        return None, "the output is the published PCA itself (a rerun of its run): it is replaced, not extended"
    model_uri, report_uri = join_uri(pca_uri, PCA_MODEL_FOLDER), join_uri(pca_uri, PCA_REPORT_FILE)
    if not (exists(spark, model_uri) and exists(spark, report_uri)):
        return None, f"the published PCA {pca_uri} has no {PCA_MODEL_FOLDER}/ or {PCA_REPORT_FILE}"
    try:
        return PublishedPca(pca_uri, PipelineModel.load(model_uri), json.loads(read_bytes(spark, report_uri))), ""
    except (ValueError, OSError) as error:
        logger.warning("the published PCA %s cannot be read (%s): everything is projected again", pca_uri, error)
        return None, f"the published PCA {pca_uri} cannot be read"


def moments_for(spark, features: str, batches: BatchStates, commits: dict, kept: KeptMoments | None,
                logger) -> tuple[object, dict[str, int], dict, object]:
    """(merged moments or None for a full pass, the committed batches -> commit time, the report's ``moments``,
    the new batches' rows: path, label, features, checked; None for a full pass)."""
    committed = {batch_name(uri): commits[uri] for uri in batches.committed}
    reused, new, why = moments_plan(kept, committed)
    logger.info("feature moments: %s", why)
    summary = {"kept_batches": len(reused), "read_batches": len(new), "why": why}
    if not reused:
        return None, committed, summary, None
    new_uris = tuple(uri for uri in batches.committed if batch_name(uri) in set(new))
    new_rows = read_features(spark, features, BatchStates(new_uris, ())) if new_uris else \
        spark.createDataFrame([], "path string, label string, features array<float>")
    n_new, dim = check_feature_rows(new_rows, features)
    if not n_new:
        return kept.moments, committed, summary, new_rows
    if dim != len(kept.moments.mean):
        logger.warning("the new batches' features have %d dims, the kept moments %d: one pass over every batch",
                       dim, len(kept.moments.mean))
        return None, committed, {**summary, "kept_batches": 0, "read_batches": len(committed),
                                 "why": "the new batches' features have another length: one pass over every batch"}, None
    # Kept first, then the new batches': a fixed order, so the same rows give the same fit.
    return kept.moments.merge(feature_moments(new_rows)), committed, summary, new_rows


def reduce(spark, args, table, moments, new_rows, published: PublishedPca | None, why_not: str,
           newest_commit_ms: int | None, logger) -> tuple[PcaResult, BasisDecision]:
    """Today's PCA of ``table`` (every committed row) and what became of the published basis.

    Without merged moments, or when they do not count the table's rows, one pass as ever. Otherwise the
    eigenproblem of the merged moments is solved and compared with the published basis: kept, the output is
    the published rows plus ``new_rows`` projected with the published model (only the table's paths are read
    of the old batches); else every row is projected with today's fit."""
    def full(why: str) -> tuple[PcaResult, BasisDecision]:
        return (fit_pca(table, args.features, k=args.k, variance=args.variance, logger=logger, moments=moments),
                refit_decision(why, newest_commit_ms))

    if moments is None:
        return full("no kept moments: one pass over every batch")
    n_rows = table.count()  # the path column alone
    if moments.count != n_rows:
        return full("the moments were recomputed (a photo taken again)")
    fit = solve(moments, n_rows, len(moments.mean), k=args.k, variance=args.variance, logger=logger,
                published_k=published.components.shape[1] if published else None)
    decision = basis_decision(published, fit, newest_commit_ms) if published else refit_decision(why_not,
                                                                                                  newest_commit_ms)
    logger.info("basis: %s", decision.why)
    if not decision.keep:
        model = fit.model(spark)
        return PcaResult(model, project(model, to_vectors(table)), fit.report(), moments), decision
    published_rows = spark.read.parquet(published.uri).select("path", "label", OUTPUT_COLUMN)
    reduced = extend_published(published_rows, published.model, table.select("path"), new_rows)
    report = pca_report(fit.choice, published.ratios, n_rows, fit.input_dim)
    return PcaResult(published.model, reduced, report, moments), decision


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
    published_uri = published_pca(spark, args.current)
    moments, committed, moments_summary, new_rows = moments_for(spark, features, batches, commits,
                                                                kept_moments(spark, published_uri, logger), logger)
    published, why_not = published_model(spark, published_uri, output, logger) if moments is not None else (None, "")
    result, basis = reduce(spark, args, read_features(spark, features, batches), moments, new_rows, published,
                           why_not, max(committed.values(), default=None), logger)
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
              "partial_batches_ignored": list(batches.partial), "moments": moments_summary,
              "basis": basis.report_fields()}
    write_text(spark, join_uri(output, PCA_REPORT_FILE), json.dumps(report, indent=2) + "\n")
    job_result = {
        "job": JOB,
        "n_images": report["n_images"],
        "k": report["k"],
        "variance_kept": report["cumulative"],
        "basis": report["basis"],
        "partial_batches_ignored": report["partial_batches_ignored"],
        "superseded_copies_removed": remove_superseded_copies(spark, output, published_uri, logger),
        "seconds": round(time.monotonic() - started, 1),
    }
    write_text(spark, join_uri(output, JOB_RESULT_FILE), json.dumps(job_result) + "\n")
    logger.info("reduced %d images from %d to %d dims keeping %.4f of the variance (%s reprojected) -> %s",
                report["n_images"], report["input_dim"], report["k"], report["cumulative"],
                basis.report_fields()["reprojected"], output)
    return job_result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
