"""Centered PCA of the image features (docs/design.md, "PCA job").

Each step is a function from DataFrame to DataFrame (or a small plain value) so that
tests call it on tiny frames; the job (fruits_spark.jobs.reduce_pca) only chains them.

How it fits: one pass over the rows computes, per partition, the row count, the mean and
the centred scatter matrix (float64, NumPy); the partials are merged pairwise with Chan's
formula, and the driver eigen-decomposes the covariance with NumPy's symmetric solver
(``eigh``). Every component and ratio of ``--variance F`` comes from that one fit.

Why not Spark ML's ``PCA``: its covariance is right, but it takes the SVD of the
1280 x 1280 covariance with Breeze on netlib's F2J LAPACK (``dgesdd`` translated to Java,
used when no native LAPACK is configured, as with pyspark from PyPI). Image features give a
covariance of rank at most rows - 1 (220 of 1280 on 221 sample images: 1,060 zero
eigenvalues). Of two such covariances that differ by at most 1e-15, F2J's dgesdd got one
right and returned for the other the right leading value but a sum of singular values ten
times too large (2,782 instead of 285), so every ratio was divided by it (0.027 instead of
0.265, hence k=82 instead of 18). NumPy's LAPACK is right on both. Which of the two a fit
gets depends on the order in which partition summaries reach the driver (their merge is not
bitwise commutative): right on ``local[1]``, wrong in some fits on ``local[2]`` or a cluster.

The saved model is still Spark's own ``PipelineModel`` (``StandardScalerModel`` that
subtracts the mean, then ``PCAModel``), built from the fitted mean and components, and the
output is that model's projection: whoever loads ``_model/`` projects new images exactly as
the job did.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from fruits_contract.lake import (BATCH_FOLDER_PREFIX, JOB_RESULT_FILE, PCA_PREVIEW_MAX_ROWS, BatchStates, batch_states,
                                  join_uri)
from fruits_spark.errors import PcaInputError

FEATURES_COLUMN = "features"
VECTOR_COLUMN = "features_vector"
CENTERED_COLUMN = "features_centered"
PCA_VECTOR_COLUMN = "pca_vector"
OUTPUT_COLUMN = "pca_features"
# The published PCA's k is kept while it keeps at least the variance target less this (solve): half a point,
# about what the one or two components around the cut-off carry on real features.
VARIANCE_TOLERANCE_FOR_PUBLISHED_K = 0.005
# Float rounding can leave the cumulative ratio of all components a hair under 1.0.
_VARIANCE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class ComponentChoice:
    """How many components to keep, and why (goes into ``_pca_report.json``)."""

    k: int
    k_requested: int | None
    capped: bool
    variance_target: float | None
    max_k: int
    smallest_k: int | None = None  # set when the published k was kept instead of the smallest k reaching the target

    def report_fields(self) -> dict:
        fields = {"k_requested": self.k_requested, "capped": self.capped, "max_k": self.max_k}
        if self.variance_target is not None:
            fields["variance_target"] = self.variance_target
        if self.smallest_k is not None:
            fields["smallest_k_for_target"] = self.smallest_k
        return fields


@dataclass
class PcaResult:
    model: object  # pyspark.ml.PipelineModel: centering + PCA
    reduced: object  # DataFrame path, label, pca_features array<float>
    report: dict = field(default_factory=dict)
    moments: "Moments | None" = None  # what the fit solved
    moments_recomputed: bool = False  # the moments given were not of these rows: one pass was made


BATCH_COLUMN = "batch"  # the partition column Spark reads from the batch=<run_key> folders


def batch_name(uri: str) -> str:
    """``batch=<run_key>``: the folder's own name."""
    return uri.rstrip("/").rsplit("/", 1)[-1]


def batch_commits(spark, features_uri: str) -> dict[str, int | None]:
    """Each ``batch=<run_key>/`` folder of a features root -> when its JOB_RESULT_FILE was written (ms),
    None when it has none (a partial batch)."""
    from fruits_spark.io import list_folders, modified_ms

    folders = [uri for uri in list_folders(spark, features_uri) if batch_name(uri).startswith(BATCH_FOLDER_PREFIX)]
    return {uri: modified_ms(spark, join_uri(uri, JOB_RESULT_FILE)) for uri in folders}


def feature_batches(spark, features_uri: str, commits: dict[str, int | None] | None = None) -> BatchStates:
    """The ``batch=<run_key>/`` folders of a features root by the committed-batch rule (their URIs,
    committed ones oldest commit first). Empty when the root holds no batch folder (one batch, or a
    plain table, is read as it is)."""
    return batch_states(batch_commits(spark, features_uri) if commits is None else commits)


def read_features(spark, features_uri: str, batches: BatchStates | None = None):
    """The committed rows under ``features_uri`` as one table: path, label, features.

    ``batch=<run_key>/`` folders are partitions of one table, of which only the committed ones are
    read (``batches``, else listed here); Spark skips ``_rejects/`` and ``_job_result.json`` because
    their names start with an underscore.
    """
    from fruits_spark.io import read_job_output

    batches = feature_batches(spark, features_uri) if batches is None else batches
    if batches.partial and not batches.committed:
        raise PcaInputError(f"--features {features_uri}: no committed batch (partial, without {JOB_RESULT_FILE}: "
                            f"{', '.join(batches.partial)})")
    columns = ("path", "label", FEATURES_COLUMN)
    if len(batches.committed) < 2:
        return read_job_output(spark, features_uri, columns, flag="--features", made_by="the feature job",
                               error=PcaInputError, partitions=batches.committed)
    frame = read_job_output(spark, features_uri, (*columns, BATCH_COLUMN), flag="--features",
                            made_by="the feature job", error=PcaInputError, partitions=batches.committed)
    return latest_row_per_path(frame, [batch_name(uri)[len(BATCH_FOLDER_PREFIX):]
                                       for uri in batches.committed]).select(*columns)


def latest_row_per_path(frame, batches_oldest_first: list[str]):
    """Each path once, from the last committed of the batches that hold it: a full refresh (or a
    photo taken again after its batch was ignored) features an image in a second batch while the
    first still holds it. Only path and batch are grouped; the features are not shuffled, the few
    superseded (path, batch) pairs are broadcast to leave their rows out."""
    from pyspark.sql import functions as F

    order = F.create_map(*[F.lit(x) for pair in enumerate(batches_oldest_first) for x in pair[::-1]])
    ranked = frame.select("path", BATCH_COLUMN).withColumn("commit_order", order[F.col(BATCH_COLUMN)])
    newest = ranked.groupBy("path").agg(F.max("commit_order").alias("newest"), F.count("*").alias("copies"))
    superseded = (ranked.join(newest.where("copies > 1"), "path")
                  .where(F.col("commit_order") < F.col("newest")).select("path", BATCH_COLUMN))
    return frame.join(F.broadcast(superseded), ["path", BATCH_COLUMN], "left_anti")


def check_features(frame, features_uri: str) -> tuple[int, int]:
    """Count rows and find the vector length; refuse empty input, NaN and ragged rows.

    The expected length is the most common one (1280 for MobileNetV2), so a single
    damaged row is named rather than taken for the norm. Returns (rows, input_dim).
    """
    n_rows, input_dim = check_feature_rows(frame, features_uri)
    if n_rows == 0:
        raise PcaInputError(f"--features {features_uri}: no rows to reduce")
    if n_rows < 2:
        raise PcaInputError(f"--features {features_uri}: {n_rows} row; PCA needs at least 2 rows")
    return n_rows, input_dim


def check_feature_rows(frame, features_uri: str) -> tuple[int, int | None]:
    """(rows, vector length or None when there are no rows) of ``frame``; refuses NaN and ragged rows,
    whatever their number (a new batch may hold one image, or none)."""
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
        return 0, None
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
    return n_rows, input_dim


def to_vectors(frame):
    """Add the ML vector column the saved model reads (JVM-side, no Python UDF)."""
    from pyspark.ml.functions import array_to_vector

    return frame.withColumn(VECTOR_COLUMN, array_to_vector(FEATURES_COLUMN))


@dataclass
class Moments:
    """Row count, mean and centred scatter matrix sum((x - mean)(x - mean)^T) of some rows."""

    count: int
    mean: object  # np.ndarray[dim], float64
    scatter: object  # np.ndarray[dim, dim], float64

    @classmethod
    def of_rows(cls, rows) -> "Moments":
        import numpy as np

        rows = np.asarray(rows, dtype=np.float64)
        mean = rows.mean(axis=0)
        centred = rows - mean
        return cls(len(rows), mean, centred.T @ centred)

    def merge(self, other: "Moments") -> "Moments":
        """Chan et al.'s pairwise update: exact in real arithmetic, stable in floating point."""
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.count / count)
        scatter = self.scatter + other.scatter + (self.count * other.count / count) * (delta[:, None] * delta[None, :])
        return Moments(count, mean, scatter)

    def to_bytes(self) -> tuple[int, bytes, bytes]:
        return self.count, self.mean.tobytes(), self.scatter.tobytes()

    @classmethod
    def from_bytes(cls, count: int, mean: bytes, scatter: bytes) -> "Moments":
        import numpy as np

        mean_array = np.frombuffer(mean, dtype=np.float64)
        dim = len(mean_array)
        return cls(count, mean_array, np.frombuffer(scatter, dtype=np.float64).reshape(dim, dim))


def _partition_moments(batches, column: str = FEATURES_COLUMN):
    """mapInArrow body: one row (count, mean, scatter) per partition that has rows."""
    import pyarrow as pa

    total = None
    for batch in batches:
        if batch.num_rows == 0:
            continue
        lists = batch.column(column)
        rows = lists.flatten().to_numpy(zero_copy_only=False).reshape(batch.num_rows, -1)
        moments = Moments.of_rows(rows)
        total = moments if total is None else total.merge(moments)
    if total is not None:
        count, mean, scatter = total.to_bytes()
        yield pa.RecordBatch.from_pydict({"count": [count], "mean": [mean], "scatter": [scatter]})


def feature_moments(frame) -> Moments:
    """Count, mean and scatter of every row's features: ONE pass over the data.

    Partitions are reduced in a tree on the executors, so the driver receives one
    dim x dim matrix, not one per partition.
    """
    partials = frame.select(FEATURES_COLUMN).mapInArrow(
        _partition_moments, "count long, mean binary, scatter binary"
    )
    merged = partials.rdd.map(lambda row: Moments.from_bytes(row[0], bytes(row[1]), bytes(row[2]))).treeReduce(
        lambda a, b: a.merge(b)
    )
    return merged


@dataclass(frozen=True)
class KeptMoments:
    """The moments a PCA solved, and the batches (folder name -> commit time, ms) they are of."""

    moments: Moments
    batches: dict[str, int]

    def to_npz_bytes(self) -> bytes:
        import io

        import numpy as np

        buffer = io.BytesIO()
        names = sorted(self.batches)
        np.savez(buffer, count=np.int64(self.moments.count), mean=self.moments.mean, scatter=self.moments.scatter,
                 batches=np.array(names), committed_ms=np.array([self.batches[n] for n in names], dtype=np.int64))
        return buffer.getvalue()

    @classmethod
    def from_npz_bytes(cls, data: bytes) -> "KeptMoments":
        import io

        import numpy as np

        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            return cls(Moments(int(npz["count"]), npz["mean"], npz["scatter"]),
                       dict(zip((str(n) for n in npz["batches"]), (int(t) for t in npz["committed_ms"]))))


def moments_plan(kept: KeptMoments | None, committed: dict[str, int]) -> tuple[list[str], list[str], str]:
    """(batches whose moments ``kept`` holds, batches to read, why) given today's committed batches
    (folder name -> commit time). The kept moments are used only when every batch they are of is still
    committed, at the same time: a batch taken again, removed or rewritten (erasure removes every
    pca/*/_moments.npz) means one pass over every batch."""
    if kept is None:
        return [], sorted(committed), "no moments of an earlier PCA: one pass over every batch"
    changed = sorted(name for name, at in kept.batches.items() if committed.get(name) != at)
    if changed:
        return [], sorted(committed), (f"{len(changed)} batch(es) of the earlier PCA changed or went "
                                       f"({', '.join(changed[:3])}): one pass over every batch")
    new = sorted(set(committed) - set(kept.batches))
    return sorted(kept.batches), new, f"moments of {len(kept.batches)} batch(es) kept, {len(new)} new batch(es) read"


@dataclass(frozen=True)
class Eigen:
    """Principal axes of a covariance: variances descending, components as columns."""

    variances: object  # np.ndarray[dim]
    components: object  # np.ndarray[dim, dim]

    @property
    def ratios(self) -> list[float]:
        total = float(self.variances.sum())
        return [float(v / total) for v in self.variances]


def principal_axes(moments: Moments) -> Eigen:
    """Eigen-decomposition of the sample covariance, in scikit-learn's conventions.

    ``eigh`` (LAPACK's symmetric solver) is backward stable on rank-deficient input, which
    image features always are when rows < dims. Signs follow scikit-learn's ``svd_flip``
    (``u_based_decision=False``): each component's largest absolute entry is positive, so the
    same data gives the same components whatever the partitioning.
    """
    import numpy as np

    if moments.count < 2:
        raise PcaInputError(f"{moments.count} row; PCA needs at least 2 rows")
    covariance = moments.scatter / (moments.count - 1)
    variances, components = np.linalg.eigh(covariance)
    order = np.argsort(variances)[::-1]
    variances = np.clip(variances[order], 0.0, None)
    components = components[:, order]
    largest = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[largest, np.arange(components.shape[1])])
    signs[signs == 0] = 1.0
    return Eigen(variances, components * signs)


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
    for index, ratio in enumerate(ratios[:max_k], start=1):
        cumulative += ratio
        if cumulative >= variance - _VARIANCE_TOLERANCE:
            return ComponentChoice(index, None, False, variance, max_k)
    return ComponentChoice(max_k, None, False, variance, max_k)


def centered_pca_model(spark, mean, components, ratios):
    """Spark's own PipelineModel (mean subtraction, then PCA) holding the fitted values.

    Spark has no public constructor for fitted models, so they are built on the JVM from the
    values, exactly as ``StandardScaler.fit`` and ``PCA.fit`` build them, and wrapped for Python.
    """
    from pyspark.ml import PipelineModel
    from pyspark.ml.feature import PCAModel, StandardScalerModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector
    from pyspark.ml.common import _py2java

    jvm = spark.sparkContext._jvm
    sc = spark.sparkContext
    dim, k = components.shape
    java_mean = _py2java(sc, DenseVector(mean))
    java_std = _py2java(sc, DenseVector([1.0] * dim))  # unused: withStd is false
    scaler = StandardScalerModel(
        jvm.org.apache.spark.ml.feature.StandardScalerModel("fruits_centering", java_std, java_mean)
    )
    scaler._set(inputCol=VECTOR_COLUMN, outputCol=CENTERED_COLUMN, withMean=True, withStd=False)
    pc = DenseMatrix(dim, k, components.flatten(order="F").tolist())
    pca = PCAModel(
        jvm.org.apache.spark.ml.feature.PCAModel("fruits_pca", _py2java(sc, pc), _py2java(sc, DenseVector(ratios)))
    )
    pca._set(k=k, inputCol=CENTERED_COLUMN, outputCol=PCA_VECTOR_COLUMN)
    return PipelineModel([scaler, pca])


def project(model, vectors):
    """path, label, pca_features as array<float> (any Parquet reader can read it, unlike a vector)."""
    from pyspark.ml.functions import vector_to_array

    return model.transform(vectors).select(
        "path", "label", vector_to_array(PCA_VECTOR_COLUMN, dtype="float32").alias(OUTPUT_COLUMN)
    )




def preview(reduced, rows: int = PCA_PREVIEW_MAX_ROWS):
    """label, pc1, pc2 of at most ``rows`` images, chosen by a hash of the path (the same
    images every run): what the run's picture is drawn from on the Airflow worker."""
    from pyspark.sql import functions as F

    return (
        reduced.orderBy(F.xxhash64("path"), "path")
        .limit(rows)
        .select(
            "path",
            "label",
            F.col(OUTPUT_COLUMN)[0].alias("pc1"),
            F.when(F.size(OUTPUT_COLUMN) > 1, F.col(OUTPUT_COLUMN)[1]).alias("pc2"),
        )
    )


@dataclass
class Fit:
    """The solved eigenproblem of some moments and the components kept: everything but the projection."""

    moments: Moments
    choice: ComponentChoice
    variances: object  # np.ndarray[k]: the kept components' variances
    components: object  # np.ndarray[dim, k], columns orthonormal
    ratios: list[float]  # of the kept components, fractions of the total variance
    n_rows: int
    input_dim: int

    def model(self, spark):
        return centered_pca_model(spark, self.moments.mean, self.components, self.ratios)

    def report(self) -> dict:
        return pca_report(self.choice, self.ratios, self.n_rows, self.input_dim)


def pca_report(choice: ComponentChoice, ratios: list[float], n_rows: int, input_dim: int) -> dict:
    """The fields of ``_pca_report.json`` that describe the model used."""
    return {"k": len(ratios), "explained_variance_ratio": list(ratios), "cumulative": math.fsum(ratios),
            "n_images": n_rows, "input_dim": input_dim, **choice.report_fields()}


def solve(moments: Moments, n_rows: int, input_dim: int, k: int | None = None, variance: float | None = None,
          logger=None, published_k: int | None = None) -> Fit:
    """The principal axes of ``moments`` (those of ``n_rows`` rows) and the components to keep.

    With ``variance`` and ``published_k`` (the published PCA's k), that k is kept while it still reaches the
    target within VARIANCE_TOLERANCE_FOR_PUBLISHED_K: the smallest k reaching 0.95 moved by one on about half
    of the days that only added more of the same fruits, and a changed k reprojects every row."""
    axes = principal_axes(moments)
    ratios_all = axes.ratios
    choice = choose_k(n_rows, input_dim, k=k, variance=variance, ratios=ratios_all)
    if (variance is not None and published_k is not None and published_k != choice.k
            and published_k <= choice.max_k
            and math.fsum(ratios_all[:published_k]) >= variance - VARIANCE_TOLERANCE_FOR_PUBLISHED_K):
        choice = ComponentChoice(published_k, None, False, variance, choice.max_k, smallest_k=choice.k)
    if logger:
        logger.info("centered PCA: %d rows x %d dims -> k=%d%s", n_rows, input_dim, choice.k,
                    " (capped)" if choice.capped else "")
    return Fit(moments, choice, axes.variances[: choice.k], axes.components[:, : choice.k], ratios_all[: choice.k],
               n_rows, input_dim)


def fit_pca(frame, features_uri: str, k: int | None = None, variance: float | None = None, logger=None,
            moments: Moments | None = None) -> PcaResult:
    """Validate, fit centering + PCA on every row in one pass (or on ``moments``, those of every row of
    ``frame`` merged from kept and new batches), project. ``frame``: path, label, features."""
    n_rows, input_dim = check_features(frame, features_uri)
    recomputed = moments is not None and moments.count != n_rows
    if recomputed and logger:  # a photo of a new batch was in a kept one too (taken again): superseded
        logger.warning("the kept and new moments are of %d rows, the features have %d (a photo taken again): "
                       "one pass over every batch", moments.count, n_rows)
    if moments is None or recomputed:
        if logger:
            logger.info("computing the covariance of %d rows x %d dims (one pass)", n_rows, input_dim)
        moments = feature_moments(frame)
    fit = solve(moments, n_rows, input_dim, k=k, variance=variance, logger=logger)
    model = fit.model(frame.sparkSession)
    return PcaResult(model=model, reduced=project(model, to_vectors(frame)), report=fit.report(), moments=moments,
                     moments_recomputed=recomputed)


# ------------------------------------------------------------------ keeping the published basis (issue 28)
#
# Measured on the sample's real MobileNetV2 features (2,714 images; see tests/spark/test_pca_basis.py):
# the LARGEST principal angle between yesterday's and today's top-k subspaces is 10-85 degrees even when
# a day adds 5-10% more images of the same fruits, because the components near the cut-off (nearly equal
# variances) trade places with those just outside it; it says nothing. Weighted by the variance of
# today's components it separates: sin^2 of the weighted angle is the share of the variance today's
# top-k keep that lies outside the published basis. A day of 5-10% more rows of the same kind: at most
# 4.9 degrees on a lake of 300 images, 2.9 on 1,000 (k = 8..97); a new fruit at 5% of the rows: at least
# 7.3 degrees; 17 photos of no fruit on 1,000 images: 3.8-9.1.
BASIS_ANGLE_THRESHOLD_DEG = 5.0  # keep the published basis while less than sin^2(5 deg) = 0.76% is outside it
# A full refit at least weekly (daily runs: one pass over every feature in seven instead of seven): bounds
# how long a drift under the threshold is kept, and how stale the published ratios and components' order are.
BASIS_REFIT_AFTER_DAYS = 7
_DAY_MS = 86_400_000
REPROJECTED_ALL = "all"
REPROJECTED_NEW = "new batches only"


@dataclass(frozen=True)
class PublishedPca:
    """The published PCA output: its folder, its saved model and its report."""

    uri: str
    model: object  # pyspark.ml.PipelineModel: centering + PCA
    report: dict

    @property
    def mean(self):
        import numpy as np

        return np.asarray(self.model.stages[0].mean.toArray(), dtype=np.float64)

    @property
    def components(self):
        import numpy as np

        return np.asarray(self.model.stages[-1].pc.toArray(), dtype=np.float64)

    @property
    def ratios(self) -> list[float]:
        return [float(r) for r in self.model.stages[-1].explainedVariance.toArray()]

    @property
    def fitted_through_ms(self) -> int | None:
        """The newest commit (ms) of the batches its basis was fitted on; None in a report made before."""
        return (self.report.get("basis") or {}).get("fitted_through_ms")


def basis_angles(published_components, components, variances) -> tuple[float, float]:
    """(largest principal angle, variance-weighted angle), degrees, between the published basis (columns)
    and today's top components (columns, with their ``variances``): from the SVD of U_old^T U_new and
    the share of each new component that lies outside the published subspace."""
    import numpy as np

    overlap = published_components.T @ components
    largest = math.degrees(math.acos(min(1.0, float(np.linalg.svd(overlap, compute_uv=False).min()))))
    outside = np.clip(1.0 - (overlap ** 2).sum(axis=0), 0.0, 1.0)  # sin^2 of each new component's angle
    total = float(np.sum(variances))
    share = float(np.dot(variances, outside)) / total if total > 0 else float(outside.max())
    return largest, math.degrees(math.asin(math.sqrt(min(1.0, share))))


@dataclass(frozen=True)
class BasisDecision:
    """Whether the published basis is kept (only the new batches projected) or everything is projected
    with today's fit, and why: ``_pca_report.json``'s and the job result's ``basis``."""

    keep: bool
    why: str
    fitted_through_ms: int | None  # the newest commit of the batches the basis used was fitted on
    max_principal_angle_deg: float | None = None
    weighted_angle_deg: float | None = None
    age_days: float | None = None

    def report_fields(self) -> dict:
        def rounded(value):
            return None if value is None else round(value, 4)

        return {"reprojected": REPROJECTED_NEW if self.keep else REPROJECTED_ALL, "why": self.why,
                "weighted_angle_deg": rounded(self.weighted_angle_deg), "threshold_deg": BASIS_ANGLE_THRESHOLD_DEG,
                "max_principal_angle_deg": rounded(self.max_principal_angle_deg), "age_days": rounded(self.age_days),
                "refit_after_days": BASIS_REFIT_AFTER_DAYS, "fitted_through_ms": self.fitted_through_ms}


def refit_decision(why: str, newest_commit_ms: int | None) -> BasisDecision:
    """Everything projected with today's fit, whose basis is then fitted through ``newest_commit_ms``."""
    return BasisDecision(False, why, newest_commit_ms)


def basis_decision(published: PublishedPca | None, fit: Fit, newest_commit_ms: int | None) -> BasisDecision:
    """Keep the published basis when it has today's k and dimension, is younger than
    BASIS_REFIT_AFTER_DAYS, and today's fit moved less than BASIS_ANGLE_THRESHOLD_DEG from it."""
    if published is None:
        return refit_decision("no published PCA to keep", newest_commit_ms)
    components = published.components
    if components.shape != fit.components.shape:
        return refit_decision(f"k changed: the published PCA has {components.shape[1]} components of "
                              f"{components.shape[0]} dims, today's fit {fit.components.shape[1]} of "
                              f"{fit.components.shape[0]}", newest_commit_ms)
    largest, weighted = basis_angles(components, fit.components, fit.variances)
    fitted_through = published.fitted_through_ms
    age = None if fitted_through is None or newest_commit_ms is None else (newest_commit_ms - fitted_through) / _DAY_MS
    measured = dict(max_principal_angle_deg=largest, weighted_angle_deg=weighted, age_days=age)
    if age is None:
        return BasisDecision(False, "the published PCA does not say when its basis was fitted", newest_commit_ms,
                             **measured)
    if age >= BASIS_REFIT_AFTER_DAYS:
        return BasisDecision(False, f"refit due: the basis is {age:.1f} days old (refit every "
                                    f"{BASIS_REFIT_AFTER_DAYS})", newest_commit_ms, **measured)
    if weighted >= BASIS_ANGLE_THRESHOLD_DEG:
        return BasisDecision(False, f"the basis moved: weighted angle {weighted:.2f} >= "
                                    f"{BASIS_ANGLE_THRESHOLD_DEG} degrees", newest_commit_ms, **measured)
    return BasisDecision(True, f"the basis did not move: weighted angle {weighted:.2f} < {BASIS_ANGLE_THRESHOLD_DEG} "
                               f"degrees, {age:.1f} days old", fitted_through, **measured)


def extend_published(published_rows, model, present_paths, new_rows):
    """The published rows (path, label, pca_features) of the paths still in the features table
    (``present_paths``), less those a new batch holds again, plus ``new_rows`` (path, label, features: the
    new batches' rows) projected with the published ``model``. No published row is projected again."""
    kept = published_rows.join(present_paths, "path", "left_semi").join(new_rows.select("path"), "path", "left_anti")
    return kept.unionByName(project(model, to_vectors(new_rows)))
