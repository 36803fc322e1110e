"""Centered PCA of the image features (DESIGN.md, "PCA job").

Each step is a function from DataFrame to DataFrame (or a small plain value) so that
tests call it on tiny frames; ``reduce_pca.py`` only parses arguments and chains them.

Why a StandardScaler: Spark's ``PCA`` projects the raw vectors without subtracting the
mean, so its output would differ from scikit-learn's by a constant offset per
component. ``StandardScaler(withMean=True, withStd=False)`` subtracts the mean only;
both stages are saved as one ``PipelineModel`` so whoever reuses the model projects
new images exactly the same way.

Explained variance: for up to 65,535 input dimensions Spark eigen-decomposes the full
covariance matrix and divides each eigenvalue by the sum of ALL of them, so the ratios
are fractions of the total variance whatever k is (``test_reduce_pca`` checks this
against scikit-learn). ``--variance F`` therefore fits once with every component,
picks the smallest k reaching F, and refits with that k.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

FEATURES_COLUMN = "features"
VECTOR_COLUMN = "features_vector"
CENTERED_COLUMN = "features_centered"
PCA_VECTOR_COLUMN = "pca_vector"
OUTPUT_COLUMN = "pca_features"
# Float rounding can leave the cumulative ratio of all components a hair under 1.0.
_VARIANCE_TOLERANCE = 1e-9


class PcaInputError(ValueError):
    """The features cannot be reduced; the message names the input and what is wrong."""


@dataclass(frozen=True)
class ComponentChoice:
    """How many components to keep, and why (goes into ``_pca_report.json``)."""

    k: int
    k_requested: int | None
    capped: bool
    variance_target: float | None
    max_k: int

    def report_fields(self) -> dict:
        fields = {"k_requested": self.k_requested, "capped": self.capped, "max_k": self.max_k}
        if self.variance_target is not None:
            fields["variance_target"] = self.variance_target
        return fields


@dataclass
class PcaResult:
    model: object  # pyspark.ml.PipelineModel: centering + PCA
    reduced: object  # DataFrame path, label, pca_features array<float>
    report: dict = field(default_factory=dict)
    cached: object = None  # the persisted input vectors, released once the output is written

    def release(self) -> None:
        if self.cached is not None:
            self.cached.unpersist()


def read_features(spark, features_uri: str):
    """Every Parquet partition under ``features_uri`` as one table: path, label, features.

    ``batch=<run_key>/`` folders are partitions of one table; Spark skips ``_rejects/``
    and ``_job_result.json`` because their names start with an underscore.
    """
    from pyspark.errors import AnalysisException

    try:
        frame = spark.read.parquet(features_uri)
    except AnalysisException as error:
        message = str(error)
        if "PATH_NOT_FOUND" in message or "Path does not exist" in message:
            raise PcaInputError(f"--features {features_uri}: no such folder") from None
        if "UNABLE_TO_INFER_SCHEMA" in message or "Unable to infer schema" in message:
            raise PcaInputError(f"--features {features_uri}: no Parquet files (no rows to reduce)") from None
        raise
    missing = [name for name in ("path", "label", FEATURES_COLUMN) if name not in frame.columns]
    if missing:
        raise PcaInputError(
            f"--features {features_uri}: columns {missing} are missing (found {frame.columns}); "
            "expected the feature job's output: path, label, features"
        )
    return frame.select("path", "label", FEATURES_COLUMN)


def check_features(frame, features_uri: str) -> tuple[int, int]:
    """Count rows and find the vector length; refuse empty input, NaN and ragged rows.

    The expected length is the most common one (1280 for MobileNetV2), so a single
    damaged row is named rather than taken for the norm. Returns (rows, input_dim).
    """
    from pyspark.sql import functions as F

    # size(null) is -1 on Spark 3.5 and null under Spark 4's ANSI mode: one spelling for both.
    length = F.coalesce(F.size(FEATURES_COLUMN), F.lit(-1))
    lengths = (
        frame.groupBy(length.alias("length"))
        .count()
        .orderBy(F.desc("count"), F.desc("length"))
        .collect()
    )
    n_rows = sum(row["count"] for row in lengths)
    if n_rows == 0:
        raise PcaInputError(f"--features {features_uri}: no rows to reduce")
    input_dim = lengths[0]["length"]
    if input_dim <= 0:
        raise PcaInputError(f"--features {features_uri}: most rows have no feature vector (null or empty)")
    if len(lengths) > 1:
        bad = frame.where(length != input_dim).first()
        bad_length = None if bad[FEATURES_COLUMN] is None else len(bad[FEATURES_COLUMN])
        raise PcaInputError(
            f"--features {features_uri}: row path={bad['path']} has a feature vector of length "
            f"{bad_length}, expected {input_dim} like the other rows"
        )
    not_finite = F.exists(FEATURES_COLUMN, lambda x: F.isnan(x) | x.isNull() | (F.abs(x) == float("inf")))
    bad = frame.where(not_finite).select("path").first()
    if bad is not None:
        raise PcaInputError(
            f"--features {features_uri}: row path={bad['path']} has NaN, infinite or missing values in its features"
        )
    if n_rows < 2:
        raise PcaInputError(f"--features {features_uri}: {n_rows} row; PCA needs at least 2 rows")
    return n_rows, input_dim


def to_vectors(frame):
    """Add the ML vector column the estimators need (JVM-side, no Python UDF)."""
    from pyspark.ml.functions import array_to_vector

    return frame.withColumn(VECTOR_COLUMN, array_to_vector(FEATURES_COLUMN))


def choose_k(
    n_rows: int, input_dim: int, k: int | None = None, variance: float | None = None, ratios=None
) -> ComponentChoice:
    """The number of components: ``k`` capped at min(rows, dim), or the smallest k whose
    cumulative ratio (fractions of the total variance, all components) reaches ``variance``."""
    max_k = min(n_rows, input_dim)
    if (k is None) == (variance is None):
        raise ValueError("give exactly one of k or variance")
    if k is not None:
        if k < 1:
            raise PcaInputError(f"--k {k}: must be at least 1")
        return ComponentChoice(min(k, max_k), k, k > max_k, None, max_k)
    if not 0 < variance <= 1:
        raise PcaInputError(f"--variance {variance}: must be a fraction in (0, 1]")
    if ratios is None:
        raise ValueError("choosing k by variance needs the ratios of all components")
    cumulative = 0.0
    for index, ratio in enumerate(ratios, start=1):
        cumulative += ratio
        if cumulative >= variance - _VARIANCE_TOLERANCE:
            return ComponentChoice(index, None, False, variance, max_k)
    return ComponentChoice(len(ratios), None, False, variance, max_k)


def centered_pca_pipeline(k: int):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import PCA, StandardScaler

    return Pipeline(
        stages=[
            StandardScaler(inputCol=VECTOR_COLUMN, outputCol=CENTERED_COLUMN, withMean=True, withStd=False),
            PCA(k=k, inputCol=CENTERED_COLUMN, outputCol=PCA_VECTOR_COLUMN),
        ]
    )


def explained_variance_ratios(model) -> list[float]:
    return [float(value) for value in model.stages[-1].explainedVariance.toArray()]


def project(model, vectors):
    """path, label, pca_features as array<float> (any Parquet reader can read it, unlike a vector)."""
    from pyspark.ml.functions import vector_to_array

    return model.transform(vectors).select(
        "path", "label", vector_to_array(PCA_VECTOR_COLUMN, dtype="float32").alias(OUTPUT_COLUMN)
    )


def fit_pca(frame, features_uri: str, k: int | None = None, variance: float | None = None, logger=None) -> PcaResult:
    """Validate, fit centering + PCA on every row, project. ``frame``: path, label, features."""
    n_rows, input_dim = check_features(frame, features_uri)
    vectors = to_vectors(frame).persist()
    try:
        ratios_all = None
        if variance is not None:
            if logger:
                logger.info("fitting all %d components of %d rows x %d dims to choose k for %.4f of the variance",
                            min(n_rows, input_dim), n_rows, input_dim, variance)
            full = centered_pca_pipeline(min(n_rows, input_dim)).fit(vectors)
            ratios_all = explained_variance_ratios(full)
        choice = choose_k(n_rows, input_dim, k=k, variance=variance, ratios=ratios_all)
        if logger:
            logger.info("fitting centered PCA: %d rows x %d dims -> k=%d%s", n_rows, input_dim, choice.k,
                        " (capped)" if choice.capped else "")
        model = centered_pca_pipeline(choice.k).fit(vectors)
    except BaseException:
        vectors.unpersist()
        raise
    ratios = explained_variance_ratios(model)
    cumulative = math.fsum(ratios)
    report = {
        "k": choice.k,
        "explained_variance_ratio": ratios,
        "cumulative": cumulative,
        "n_images": n_rows,
        "input_dim": input_dim,
        **choice.report_fields(),
    }
    return PcaResult(model=model, reduced=project(model, vectors), report=report, cached=vectors)
