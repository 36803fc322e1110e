"""The fruit classifier on the PCA features: ``--pca`` (a PCA job's output) -> ``--output``.

    spark-submit spark_jobs/train_classifier.py --pca URI --output URI [--labels URI] [--current URI]

Output (docs/classifier.md): ``model/`` (Spark ML LogisticRegressionModel), ``labels.json``,
``export/`` (classifier.json + classifier.npz: NumPy only, what ``python -m fruits_spark.classify``
reads), ``figures.json`` (held-out accuracy, macro F1, per label, confusion matrix, accuracy by
number of components, labels left out), ``held_out/`` (Parquet: path, label, prediction,
probability of each held-out image) and ``_job_result.json``. ``--labels``: the users' confirmed
labels (manifests/<run_key>/labels/: path, label), under which their uploads are trained on.
``--current``: the pointer to the published classifier (classifier/current.json): this classifier is
to replace the one it names only when it is at least as good on the held-out images both held out
(``classifier_training.publish_decision``). The decision is in ``figures.json`` and the job result;
the report task moves the pointer (the nodes may not). The last stderr line on success is
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
from fruits_spark.classifier_training import (CurrentClassifier, NotEnoughImages, held_out_agreement, not_sure, pca_mean_and_components,
                                              publish_decision, read_pca_output, train, with_confirmed_labels)
from fruits_spark.classify import ClassifierExport, ExportError, load_export, write_export
from fruits_spark.errors import ClassifierInputError
from fruits_spark.images import IMAGE_SIZE
from fruits_spark.io import copy_from_local, delete_tree, exists, read_bytes, read_job_output, write_text
from fruits_spark.job_runner import get_logger, run_job
from fruits_spark.not_fruit import shipped_features
from fruits_spark.retention import thin_superseded

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
    parser.add_argument("--labels", default=None,
                        help="confirmed labels of uploads (Parquet path, label: manifests/<run_key>/labels/)")
    parser.add_argument("--current", default=None,
                        help="the published classifier's pointer (classifier/current.json), to compare with")
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


def with_labels(spark, frame, labels_uri: str | None) -> tuple[object, int]:
    """The PCA rows with the users' confirmed labels, and how many uploads those labels name."""
    if not labels_uri or not exists(spark, labels_uri):
        return frame, 0
    confirmed = read_job_output(spark, labels_uri, ("path", "label"), flag="--labels", made_by="validation",
                                error=ClassifierInputError)
    labelled_uploads = frame.where("label IS NULL").join(confirmed.select("path"), "path").count()
    return with_confirmed_labels(frame, confirmed), labelled_uploads


def current_classifier(spark, pointer_uri: str | None, run_key: str) -> dict | None:
    """The published classifier's pointer, or None (none yet, or it names this run's own earlier attempt)."""
    if not pointer_uri or not exists(spark, pointer_uri):
        return None
    pointer = json.loads(read_bytes(spark, pointer_uri))
    return None if pointer.get("run_key") == run_key else pointer


def pca_basis(spark, pca_uri: str) -> tuple[object, object]:
    """(mean, components) of the PCA output's saved model."""
    from pyspark.ml import PipelineModel

    return pca_mean_and_components(PipelineModel.load(join_uri(pca_uri, PCA_MODEL_FOLDER)))


def published_classifier(spark, pointer: dict | None, logger) -> CurrentClassifier | None:
    """What the published classifier (``pointer``) lends this run: its figures and export, or None (none,
    or its export cannot be read: said, and this run measures everything itself)."""
    if pointer is None:
        return None
    try:
        uri = pointer["classifier_uri"]
        export = load_export(uri, read=lambda name: read_bytes(spark, join_uri(uri, name)))
    except (ExportError, OSError, KeyError) as error:
        logger.warning("the published classifier %s cannot be read (%s): nothing carried from it",
                       pointer.get("classifier_uri"), error)
        return None
    return CurrentClassifier(figures=export.metadata.get("figures") or {}, labels=export.labels, k=int(export.coefficients.shape[1]),
                             coefficients=export.coefficients, intercepts=export.intercepts,
                             pca_mean=export.pca_mean, pca_components=export.pca_components)


def publication(spark, held_out, current: dict | None) -> dict:
    """Whether this classifier is published (publish_decision), and why."""
    if current is None:
        shared, new_right, current_right = 0, 0, 0
    else:
        current_held_out = join_uri(current["classifier_uri"], CLASSIFIER_HELD_OUT_FOLDER)
        shared, new_right, current_right = held_out_agreement(held_out, spark.read.parquet(current_held_out))
    published, why = publish_decision(shared, new_right, current_right, current_run=(current or {}).get("run_key"))
    return {"published": published, "why": why, "compared_with": (current or {}).get("run_key"),
            "shared_held_out": shared, "new_right": new_right, "current_right": current_right}


def not_fruit_pca(export: ClassifierExport, logger) -> object | None:
    """The shipped photos of no fruit in this classifier's PCA space, or None when their features were
    made by another feature model than this run's (they would not be comparable)."""
    features, made_by = shipped_features()
    expected = (export.metadata["feature_model"] or {}).get("sha256_prefix")
    if not expected or not made_by.startswith(expected):
        logger.warning("photos of no fruit not measured: their features are of the feature model with sha256 %s..., "
                       "this run's of %s", made_by[:16], expected)
        return None
    return export.pca_features(features)


def run(spark, args: argparse.Namespace) -> dict:
    """Train, measure, decide whether to publish, write everything under ``args.output``; return the job result."""
    logger = get_logger(JOB)
    pca, output = args.pca, args.output
    run_key = output.rstrip("/").rsplit("/", 1)[-1]  # classifier/<run_key>
    started = time.monotonic()
    frame, labelled_uploads = with_labels(spark, read_pca_output(spark, pca), args.labels)
    current = current_classifier(spark, args.current, run_key)
    published = published_classifier(spark, current, logger)
    basis = pca_basis(spark, pca) if published else None  # only a warm start needs it before training
    try:
        trained = train(frame, pca, logger=logger, current=published, basis=basis, run_key=run_key)
    except NotEnoughImages as why:
        # Not a failure: a young lake has too few labelled images; the run reports why and goes on.
        delete_tree(spark, output)  # no classifier of an earlier attempt may pass for this run's
        job_result = {"job": JOB, "trained": False, "reason": str(why), "seconds": round(time.monotonic() - started, 1)}
        write_text(spark, join_uri(output, JOB_RESULT_FILE), json.dumps(job_result) + "\n")
        logger.warning("no classifier trained: %s", why)
        return job_result
    decision = publication(spark, trained.held_out, current)  # before this run's held_out/ replaces anything
    mean, components = basis or pca_basis(spark, pca)
    metadata = {"run_key": run_key, "labels": trained.labels, "k": trained.k, "input_dim": int(mean.shape[0]),
                "pca_uri": pca, "feature_model": feature_model(spark, pca), "decode": DECODE_SETTINGS}
    arrays = {"pca_mean": mean, "pca_components": components[:, : trained.k],
              "coefficients": trained.model.coefficientMatrix.toArray(),
              "intercepts": trained.model.interceptVector.toArray()}
    rule, unsure = not_sure(trained, not_fruit_pca(ClassifierExport(metadata, **arrays), logger))
    arrays |= rule.arrays()
    figures = trained.figures | {"labelled_uploads": labelled_uploads, "publication": decision, "unsure": unsure}
    metadata |= {"figures": figures, "unsure": unsure}
    # The held-out Parquet write replaces its folder; the model and small files go beside it.
    trained.held_out.write.mode("overwrite").parquet(join_uri(output, CLASSIFIER_HELD_OUT_FOLDER))
    trained.model.write().overwrite().save(join_uri(output, CLASSIFIER_MODEL_FOLDER))
    write_text(spark, join_uri(output, CLASSIFIER_LABELS_FILE), json.dumps(trained.labels) + "\n")
    write_text(spark, join_uri(output, CLASSIFIER_FIGURES_FILE), json.dumps(figures, indent=2) + "\n")
    with tempfile.TemporaryDirectory(prefix="fruits-export-") as tmp:
        for file in write_export(Path(tmp), metadata, arrays):
            copy_from_local(spark, file, join_uri(output, CLASSIFIER_EXPORT_FOLDER, file.name))
    job_result = {"job": JOB, "trained": True, "k": trained.k, "labels": len(trained.labels), "n_train": figures["n_train"],
                  "n_test": figures["n_test"], "accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"],
                  "published": decision["published"],
                  "held_out_sure_and_right": unsure["held_out_sure_and_right"],
                  "not_fruit_unsure": unsure["not_fruit_unsure"],
                  # The held-out rows of other runs' classifiers: only the published one's are compared with.
                  "superseded_held_out_removed": thin_superseded(
                      spark, output, (current or {}).get("classifier_uri"), marker=CLASSIFIER_FIGURES_FILE,
                      drops=lambda name: name == CLASSIFIER_HELD_OUT_FOLDER, what="classifiers' held_out/", logger=logger),
                  "fit_seconds": trained.fit_seconds, "seconds": round(time.monotonic() - started, 1)}
    write_text(spark, join_uri(output, JOB_RESULT_FILE), json.dumps(job_result) + "\n")
    logger.info("classifier on %d labels, k=%d: held-out accuracy %.4f, macro F1 %.4f on %d images -> %s; %s: %s",
                len(trained.labels), trained.k, figures["accuracy"], figures["macro_f1"], figures["n_test"], output,
                "to publish" if decision["published"] else "NOT to publish", decision["why"])
    logger.info("not sure beyond distance %.2f: held-out images sure and right %s, unsure %s; photos of no fruit "
                "unsure %s of %s", unsure["threshold"], unsure["held_out_sure_and_right"], unsure["held_out_unsure"],
                unsure["not_fruit_unsure"], unsure["not_fruit_photos"])
    return job_result


def main(argv=None) -> int:
    return run_job(JOB, run, parse_args(argv))
