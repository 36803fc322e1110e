"""Multinomial logistic regression trained over every task slot, bit for bit the same on any cluster.

Spark ML's ``LogisticRegression`` adds the partitions' gradients with ``treeAggregate``, whose last
level merges task results on the driver in the order the tasks finish (and whose shuffle levels merge
in fetch order): floating-point addition is not associative, so the same rows gave other weights on
another partitioning or cluster, and the only way to fix the order was one task for every row (one
core of the cluster, 1.1-2.9 h a day at 1M images). Here the order is fixed by the data instead:

- each training row goes to one of BUCKETS buckets by a hash of its path (xxhash64, part of Spark's
  SQL semantics), and each bucket becomes one packed block (its rows in path order, float64) once per
  fit, cached on the executors;
- every evaluation of the loss runs one Spark job over the blocks, as many in parallel as there are
  task slots; each block's loss and gradient depend only on the block, and the driver adds the
  BUCKETS partial sums in bucket order.

The same rows therefore give the same sums, bit for bit, whatever the partitioning, the master or the
number of executors (tests/spark/test_train_classifier.py, tests/cluster/test_standalone_cluster.py).
The driver minimises with SciPy's L-BFGS-B. The objective is Spark ML's (``standardization=True``):
mean log-loss plus ``reg / 2 * ||W * std||^2``, intercepts not penalised, so the regularisation
measured for Spark ML (docs/classifier.md) still holds. The fitted model is handed back as Spark's own
``LogisticRegressionModel``, so ``model/``, ``transform`` and the export are what they were.
"""
from __future__ import annotations

from dataclasses import dataclass

BUCKETS = 64
BUCKET_COLUMN = "training_bucket"
_BLOCK_SCHEMA = "bucket int, rows long, labels binary, features binary"
_PARTIAL_SCHEMA = "bucket int, loss double, gradient binary"


@dataclass
class FittedLogistic:
    """Coefficients [labels, k] and intercepts [labels] in the features' own scale, and how the fit went."""

    coefficients: object  # np.ndarray float64
    intercepts: object  # np.ndarray float64
    iterations: int
    evaluations: int
    converged: bool
    message: str


def _pack_bucket(frame):
    """applyInPandas body: one bucket's rows -> one block (its rows in path order)."""
    import numpy as np
    import pandas as pd

    frame = frame.sort_values("path", kind="mergesort")
    features = np.stack(frame["features"].to_numpy()).astype(np.float64)  # a group is never empty
    return pd.DataFrame({"bucket": [int(frame["bucket"].iloc[0])], "rows": [len(frame)],
                         "labels": [frame["label_index"].to_numpy(dtype=np.int32).tobytes()],
                         "features": [np.ascontiguousarray(features).tobytes()]})


def training_blocks(rows, features_column: str, label_column: str, k: int, partitions: int):
    """One cached row per non-empty bucket: (bucket, rows, labels int32 bytes, features float64 [rows, k] bytes),
    spread over ``partitions`` partitions (the task slots)."""
    from pyspark.sql import functions as F

    bucket = F.pmod(F.xxhash64("path"), F.lit(BUCKETS)).cast("int")
    slim = rows.select("path", bucket.alias("bucket"), F.col(label_column).cast("int").alias("label_index"),
                       F.slice(features_column, 1, k).alias("features"))
    blocks = slim.groupBy("bucket").applyInPandas(_pack_bucket, _BLOCK_SCHEMA)
    return blocks.repartition(partitions, "bucket").cache()


def _block_arrays(row):
    """(labels [rows], features [rows, k]) of one packed block."""
    import numpy as np

    labels = np.frombuffer(row["labels"], dtype=np.int32)
    return labels, np.frombuffer(row["features"], dtype=np.float64).reshape(len(labels), -1)


def _partials(weights, intercepts, k: int):
    """mapInArrow body for one evaluation: each block's summed log-loss and gradient [labels, k + 1]."""
    import numpy as np
    import pyarrow as pa

    n_labels = len(intercepts)

    def evaluate(batches):
        for batch in batches:
            for row in batch.to_pylist():
                labels, features = _block_arrays(row)
                logits = features @ weights.T + intercepts
                shifted = logits - logits.max(axis=1, keepdims=True)
                exp = np.exp(shifted)
                total = exp.sum(axis=1)
                loss = float(np.sum(np.log(total) - shifted[np.arange(len(labels)), labels]))
                residual = exp / total[:, None]
                residual[np.arange(len(labels)), labels] -= 1.0
                gradient = np.empty((n_labels, k + 1))
                gradient[:, :k] = residual.T @ features
                gradient[:, k] = residual.sum(axis=0)
                yield pa.RecordBatch.from_pydict({"bucket": [row["bucket"]], "loss": [loss],
                                                  "gradient": [gradient.tobytes()]},
                                                 schema=pa.schema([("bucket", pa.int32()), ("loss", pa.float64()),
                                                                   ("gradient", pa.binary())]))

    return evaluate


def _moments(batches):
    """mapInArrow body: each block's row count, feature sums and sums of squares about its mean, label counts."""
    import numpy as np
    import pyarrow as pa

    for batch in batches:
        for row in batch.to_pylist():
            labels, features = _block_arrays(row)
            mean = features.mean(axis=0)
            yield pa.RecordBatch.from_pydict({"bucket": [row["bucket"]], "rows": [len(labels)],
                                              "mean": [mean.tobytes()],
                                              "m2": [((features - mean) ** 2).sum(axis=0).tobytes()],
                                              "labels": [labels.tobytes()]},
                                             schema=pa.schema([("bucket", pa.int32()), ("rows", pa.int64()),
                                                               ("mean", pa.binary()), ("m2", pa.binary()),
                                                               ("labels", pa.binary())]))


def _in_bucket_order(rows):
    return sorted(rows, key=lambda row: row["bucket"])


def standard_deviations_and_counts(blocks, n_labels: int) -> tuple[object, object, int]:
    """(sample standard deviation of each feature, rows per label, rows): merged in bucket order (Chan)."""
    import numpy as np

    count, mean, m2 = 0, None, None
    per_label = np.zeros(n_labels, dtype=np.int64)
    for row in _in_bucket_order(blocks.mapInArrow(_moments, "bucket int, rows long, mean binary, m2 binary, "
                                                             "labels binary").collect()):
        n, block_mean, block_m2 = row["rows"], np.frombuffer(row["mean"]), np.frombuffer(row["m2"])
        per_label += np.bincount(np.frombuffer(row["labels"], dtype=np.int32), minlength=n_labels)
        if mean is None:
            count, mean, m2 = n, block_mean.copy(), block_m2.copy()
            continue
        total = count + n
        delta = block_mean - mean
        mean = mean + delta * (n / total)
        m2 = m2 + block_m2 + delta ** 2 * (count * n / total)
        count = total
    return np.sqrt(m2 / max(count - 1, 1)), per_label, count


def fit(rows, *, features_column: str, label_column: str, k: int, n_labels: int, reg: float, max_iter: int,
        tolerance: float, start=None, logger=None) -> FittedLogistic:
    """Minimise Spark ML's multinomial objective on ``rows`` (path, label index, features array) over the
    cluster's task slots. ``start``: (coefficients, intercepts) to warm-start from, else Spark's start
    (zero weights, intercepts from the label counts)."""
    import numpy as np
    from scipy.optimize import minimize

    spark = rows.sparkSession
    blocks = training_blocks(rows, features_column, label_column, k, spark.sparkContext.defaultParallelism)
    try:
        std, per_label, n_rows = standard_deviations_and_counts(blocks, n_labels)
        # A constant feature carries nothing; Spark ML gives it a zero coefficient, and so does this.
        inverse_std = np.divide(1.0, std, out=np.zeros_like(std), where=std > 0)
        evaluations = 0

        def objective(theta):
            nonlocal evaluations
            evaluations += 1
            scaled = theta.reshape(n_labels, k + 1)
            weights = scaled[:, :k] * inverse_std  # in the features' own scale
            partials = _in_bucket_order(blocks.mapInArrow(_partials(weights, scaled[:, k].copy(), k),
                                                          _PARTIAL_SCHEMA).collect())
            loss, gradient = 0.0, np.zeros((n_labels, k + 1))
            for row in partials:  # the fixed order that makes the sum the same everywhere
                loss += row["loss"]
                gradient += np.frombuffer(row["gradient"]).reshape(n_labels, k + 1)
            gradient /= n_rows
            gradient[:, :k] = gradient[:, :k] * inverse_std + reg * scaled[:, :k]
            value = loss / n_rows + 0.5 * reg * float(np.sum(scaled[:, :k] ** 2))
            if logger and evaluations % 20 == 0:
                logger.info("k=%d: evaluation %d, objective %.6f", k, evaluations, value)
            return value, gradient.ravel()

        theta = np.zeros((n_labels, k + 1))
        if start is not None:
            coefficients, intercepts = start
            theta[:, :k], theta[:, k] = np.asarray(coefficients) * std, intercepts
        else:
            log_counts = np.log1p(per_label.astype(np.float64))
            theta[:, k] = log_counts - log_counts.mean()
        result = minimize(objective, theta.ravel(), jac=True, method="L-BFGS-B",
                          options={"maxiter": max_iter, "ftol": tolerance, "gtol": 1e-9, "maxcor": 10})
        scaled = result.x.reshape(n_labels, k + 1)
        return FittedLogistic(scaled[:, :k] * inverse_std, scaled[:, k].copy(), int(result.nit), evaluations,
                              bool(result.success), str(result.message))
    finally:
        blocks.unpersist()


def spark_model(spark, fitted: FittedLogistic, *, features_column: str, label_column: str):
    """Spark ML's own LogisticRegressionModel holding ``fitted``'s weights (multinomial), as ``fit`` builds it."""
    from pyspark.ml.classification import LogisticRegressionModel
    from pyspark.ml.common import _py2java
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    sc = spark.sparkContext
    n_labels, k = fitted.coefficients.shape
    matrix = DenseMatrix(n_labels, k, fitted.coefficients.flatten(order="F").tolist())
    java = sc._jvm.org.apache.spark.ml.classification.LogisticRegressionModel(
        "fruits_classifier", _py2java(sc, matrix), _py2java(sc, DenseVector(fitted.intercepts)), n_labels, True)
    model = LogisticRegressionModel(java)
    model._set(featuresCol=features_column, labelCol=label_column, family="multinomial")
    return model
