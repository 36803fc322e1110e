"""Training the fruit classifier on the PCA features, on Spark (docs/design.md, "Classifier job").

Each step is a function from DataFrame to DataFrame (or a small plain value) so that tests call
it on tiny frames; the job (fruits_spark.jobs.train_classifier) only chains them.

- Split: an image is held out when ``pmod(xxhash64(<label>/<file>), 100) < 20``, the last two parts
  of its path (``raw/<label>/<file>``: unique in a lake, and the same when a lake moves from a laptop
  to S3). xxhash64 (seed 42) is part of Spark's SQL semantics, the same on every version and master,
  so an image stays on its side from run to run and new uploads never move old ones.
- Labels with fewer than MIN_IMAGES_PER_LABEL images are left out (train and held-out) and named.
- Model: Spark ML's multinomial ``LogisticRegression`` (L-BFGS, L2). Label i is the i-th label
  in alphabetical order, so the same labels give the same indices on every run.
- Determinism: Spark adds the partitions' gradient sums in the order their tasks finish, and
  floating-point addition is not associative, so the fitted weights would differ in the last bits
  between partitionings and masters. The training rows are therefore one partition sorted by
  path: the same rows give the same sums in the same order, bit for bit. The rows are k floats an
  image (a few MB per 10,000 images), and this single task is a small share of the run.
- Accuracy by number of components: PCA components are orthonormal and ``PCAModel`` computes
  each output coordinate from its own component alone, so the first j coordinates of the run's
  ``pca_features`` ARE the projection on the first j components of the same fit. Accuracy for
  j < k is measured on that slice, with no need to read the 1280-d features again; j > k is not
  available (the fit kept k components).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from fruits_spark.errors import ClassifierInputError

PCA_COLUMN = "pca_features"
VECTOR_COLUMN = "pca_vector"
LABEL_INDEX_COLUMN = "label_index"
HELD_OUT_COLUMN = "held_out"
MIN_IMAGES_PER_LABEL = 5
HELD_OUT_PERCENT = 20
K_CANDIDATES = (8, 16, 32, 64, 128)
# Penalty on the mean log-loss; the features of a fruit are nearly separable, so without one the
# weights grow until L-BFGS gives up. On the sample 1e-4 and 1e-3 score within one held-out image of each
# other, 1e-2 and 1e-1 lower; 1e-3 needs fewer iterations (docs/classifier.md).
REG_PARAM = 1e-3
MAX_ITER = 100  # Spark's defaults; the sample's fits converge in 60-80 iterations
TOLERANCE = 1e-6
TOP = 3
# A new classifier is published when its held-out accuracy on the images the current one also held
# out is at least the current one's less this many points (issue 27: "within 1 point").
PUBLISH_TOLERANCE_POINTS = 1.0


class NotEnoughImages(ClassifierInputError):
    """Too few labelled images for a classifier (a young lake): the run goes on without one."""


def read_pca_output(spark, pca_uri: str):
    """path, label, pca_features of the PCA job's output at ``pca_uri`` (its _model/ and other
    underscore folders are not part of the table)."""
    from fruits_spark.io import read_job_output

    return read_job_output(spark, pca_uri, ("path", "label", PCA_COLUMN), flag="--pca", made_by="the PCA job",
                           error=ClassifierInputError)


def with_confirmed_labels(frame, confirmed):
    """``frame`` with the labels users confirmed for its uploads: ``confirmed`` (path, label) fills the
    label of the rows that have none (an upload); a labelled image keeps its folder's label."""
    from pyspark.sql import functions as F

    confirmed = confirmed.select("path", F.col("label").alias("confirmed_label"))
    return (frame.join(F.broadcast(confirmed), "path", "left")
            .withColumn("label", F.coalesce("label", "confirmed_label")).drop("confirmed_label"))


def publish_decision(shared: int, new_right: int, current_right: int, *, current_run: str | None,
                     tolerance_points: float = PUBLISH_TOLERANCE_POINTS) -> tuple[bool, str]:
    """(publish, why): whether a new classifier replaces the current one. ``shared``: held-out images
    both classifiers held out; ``new_right``/``current_right``: how many of them each answered right."""
    if current_run is None:
        return True, "no classifier published yet"
    if shared == 0:
        return True, f"no held-out image in common with the current classifier ({current_run}) to compare on"
    new, current = 100 * new_right / shared, 100 * current_right / shared
    figures = (f"{new:.2f}% against {current:.2f}% for the current classifier ({current_run}) on the "
               f"{shared} held-out images both held out")
    if new >= current - tolerance_points:
        return True, f"at least as good, within {tolerance_points:g} point: {figures}"
    return False, f"worse by more than {tolerance_points:g} point: {figures}; kept, not published"


def with_split(frame, held_out_percent: int = HELD_OUT_PERCENT):
    """Add ``held_out``: true for about ``held_out_percent``% of the images, by a stable hash of
    ``<label>/<file>`` (the end of the path)."""
    from pyspark.sql import functions as F

    key = F.regexp_extract("path", r"([^/]*/[^/]*)$", 1)
    return frame.withColumn(HELD_OUT_COLUMN, F.pmod(F.xxhash64(key), F.lit(100)) < held_out_percent)


def label_counts(frame) -> dict[str, int]:
    """Images per label (rows with no label are not labelled images and are not counted)."""
    rows = frame.where("label IS NOT NULL").groupBy("label").count().collect()
    return {row["label"]: int(row["count"]) for row in rows}


def choose_labels(counts: dict[str, int], minimum: int = MIN_IMAGES_PER_LABEL) -> tuple[list[str], dict[str, int]]:
    """(labels trained on, alphabetical; labels left out -> their image count)."""
    kept = sorted(label for label, count in counts.items() if count >= minimum)
    excluded = {label: counts[label] for label in sorted(counts) if counts[label] < minimum}
    return kept, excluded


def indexed(frame, labels: list[str]):
    """Rows of the kept labels, with ``label_index`` (double, as Spark ML wants): the label's
    position in ``labels``."""
    from pyspark.sql import functions as F

    index_of = F.create_map(*[F.lit(value) for i, label in enumerate(labels) for value in (label, float(i))])
    return frame.where(F.col("label").isin(labels)).withColumn(LABEL_INDEX_COLUMN, index_of[F.col("label")])


def with_vectors(frame, k: int):
    """The first ``k`` PCA coordinates as the ML vector the model reads (JVM-side, no Python UDF)."""
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    return frame.withColumn(VECTOR_COLUMN, array_to_vector(F.slice(PCA_COLUMN, 1, k)))


def in_fixed_order(frame):
    """One partition sorted by path: the gradient sums come out the same on any partitioning and master."""
    return frame.coalesce(1).sortWithinPartitions("path")


def fit_logistic(train, k: int):
    """Spark ML's multinomial logistic regression on the first ``k`` PCA coordinates."""
    from pyspark.ml.classification import LogisticRegression

    estimator = LogisticRegression(featuresCol=VECTOR_COLUMN, labelCol=LABEL_INDEX_COLUMN, family="multinomial",
                                   regParam=REG_PARAM, elasticNetParam=0.0, maxIter=MAX_ITER, tol=TOLERANCE,
                                   standardization=True)
    return estimator.fit(in_fixed_order(with_vectors(train, k)))


def predict(model, frame, k: int):
    """path, label, label_index, prediction (int) and probability (array<double>) of each row."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    return model.transform(with_vectors(frame, k)).select(
        "path", "label", LABEL_INDEX_COLUMN, F.col("prediction").cast("int").alias("prediction"),
        vector_to_array("probability").alias("probability"),
    )


def confusion_counts(predictions) -> dict[tuple[int, int], int]:
    """(true index, predicted index) -> images."""
    rows = predictions.groupBy(LABEL_INDEX_COLUMN, "prediction").count().collect()
    return {(int(row[LABEL_INDEX_COLUMN]), int(row["prediction"])): int(row["count"]) for row in rows}


def figures(counts: dict[tuple[int, int], int], labels: list[str]) -> dict:
    """Accuracy, macro F1, per-label precision/recall/support and the confusion matrix
    (rows: true label, columns: predicted) from the confusion counts. A label with no held-out
    image has support 0 and is left out of the macro F1; precision with no prediction is 0."""
    size = len(labels)
    matrix = [[counts.get((true, predicted), 0) for predicted in range(size)] for true in range(size)]
    per_label, f1s = {}, []
    for i, label in enumerate(labels):
        support = sum(matrix[i])
        predicted = sum(row[i] for row in matrix)
        precision = matrix[i][i] / predicted if predicted else 0.0
        recall = matrix[i][i] / support if support else 0.0
        per_label[label] = {"precision": precision, "recall": recall, "support": support}
        if support:
            f1s.append(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
    return {
        "accuracy": accuracy(counts),
        "macro_f1": math.fsum(f1s) / len(f1s) if f1s else None,
        "per_label": per_label,
        "confusion_matrix": {"labels": list(labels), "matrix": matrix},
    }


def accuracy(counts: dict[tuple[int, int], int]) -> float | None:
    total = sum(counts.values())
    return sum(n for (true, predicted), n in counts.items() if true == predicted) / total if total else None


def ks_to_compare(k: int, candidates=K_CANDIDATES) -> list[int]:
    """The numbers of components to measure: the candidates up to ``k``, and ``k`` itself."""
    return sorted({c for c in candidates if c <= k} | {k})


@dataclass
class TrainedClassifier:
    model: object  # pyspark.ml.classification.LogisticRegressionModel, on the run's k
    labels: list[str]
    k: int
    figures: dict  # the report's classifier object without its uri
    held_out: object  # DataFrame: predict() of the held-out rows
    rows: object  # DataFrame: every row trained on or held out (path, label_index, held_out, pca_features)


def train(frame, pca_uri: str, logger=None) -> TrainedClassifier:
    """Split, choose labels, fit on the run's k and on each of ks_to_compare, measure on the held-out rows.
    ``frame``: path, label, pca_features."""
    from pyspark.sql import functions as F

    first = frame.select(F.size(PCA_COLUMN).alias("k")).where("k > 0").first()
    if first is None:
        raise ClassifierInputError(f"--pca {pca_uri}: no rows with PCA features to train on")
    k = int(first["k"])
    counts = label_counts(frame)
    labels, excluded = choose_labels(counts)
    if excluded and logger:
        logger.warning("labels with fewer than %d images left out: %s", MIN_IMAGES_PER_LABEL, excluded)
    if len(labels) < 2:
        raise NotEnoughImages(f"--pca {pca_uri}: {len(labels)} label(s) with at least {MIN_IMAGES_PER_LABEL} "
                              f"images ({dict(sorted(counts.items()))}); a classifier needs two")
    rows = with_split(indexed(frame, labels)).cache()
    train_rows, held_out_rows = rows.where(~F.col(HELD_OUT_COLUMN)), rows.where(F.col(HELD_OUT_COLUMN))
    n_train, n_test = train_rows.count(), held_out_rows.count()
    if n_test == 0 or n_train == 0:
        raise NotEnoughImages(f"--pca {pca_uri}: {n_train} training and {n_test} held-out images; "
                              "both sides of the split need images")
    accuracy_by_k, model, held_out = {}, None, None
    for j in ks_to_compare(k):
        fitted = fit_logistic(train_rows, j)
        predictions = predict(fitted, held_out_rows, j)
        counts_j = confusion_counts(predictions)
        accuracy_by_k[str(j)] = accuracy(counts_j)
        if logger:
            logger.info("k=%d: held-out accuracy %.4f (%d iterations)", j, accuracy_by_k[str(j)],
                        fitted.summary.totalIterations)
        if j == k:
            model, held_out, run_counts = fitted, predictions, counts_j
    result = figures(run_counts, labels) | {"accuracy_by_k": accuracy_by_k, "excluded_labels": excluded,
                                            "n_train": n_train, "n_test": n_test}
    return TrainedClassifier(model=model, labels=labels, k=k, figures=result, held_out=held_out, rows=rows)


def _pca_matrix(rows, k: int):
    import numpy as np

    return np.array([row[PCA_COLUMN][:k] for row in rows], dtype=np.float64).reshape(len(rows), k)


def not_sure(trained: TrainedClassifier, pca_of_not_fruit) -> tuple[object, dict]:
    """The "not sure" rule (fruits_spark.unsure) fitted on the training rows, and its figures on the
    held-out rows (right = the Spark model's prediction) and on ``pca_of_not_fruit`` [n, k] (None:
    not measured). The rows are collected on the driver in path order: k floats per labelled image."""
    import numpy as np
    from pyspark.sql import functions as F

    from fruits_spark.unsure import fit_unsure_rule, rule_figures

    k = trained.k
    train_rows = trained.rows.where(~F.col(HELD_OUT_COLUMN)).select("path", LABEL_INDEX_COLUMN, PCA_COLUMN) \
        .orderBy("path").collect()
    rule = fit_unsure_rule(_pca_matrix(train_rows, k), np.array([int(row[LABEL_INDEX_COLUMN]) for row in train_rows]),
                           len(trained.labels))
    held_out = (trained.held_out.select("path", (F.col(LABEL_INDEX_COLUMN) == F.col("prediction")).alias("right"))
                .join(trained.rows.select("path", PCA_COLUMN), "path").orderBy("path").collect())
    return rule, rule_figures(rule, _pca_matrix(held_out, k), np.array([row["right"] for row in held_out], dtype=bool),
                              pca_of_not_fruit)


def held_out_agreement(new_held_out, current_held_out) -> tuple[int, int, int]:
    """(shared, new right, current right) over the images both classifiers held out: each
    ``held_out/`` table's own label_index and prediction (two models may number labels apart)."""
    from pyspark.sql import functions as F

    def right(frame, name):
        return frame.select("path", (F.col(LABEL_INDEX_COLUMN) == F.col("prediction")).cast("int").alias(name))

    row = (right(new_held_out, "new").join(right(current_held_out, "current"), "path")
           .agg(F.count("*").alias("shared"), F.sum("new").alias("new"), F.sum("current").alias("current"))
           .first())
    return int(row["shared"]), int(row["new"] or 0), int(row["current"] or 0)


def pca_mean_and_components(pca_model) -> tuple[object, object]:
    """(mean [dim], components [dim, k]) of the PCA job's saved PipelineModel (centering, then PCA)."""
    import numpy as np

    scaler, pca = pca_model.stages
    return np.asarray(scaler.mean.toArray(), dtype=np.float64), np.asarray(pca.pc.toArray(), dtype=np.float64)
