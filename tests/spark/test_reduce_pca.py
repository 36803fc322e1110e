"""reduce_pca: centered PCA equal to scikit-learn's, k choice, inputs, errors, outputs, CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.decomposition import PCA as SklearnPCA

from fruits_contract.lake import JOB_RESULT_FILE
from fruits_spark.errors import PcaInputError
from fruits_spark.jobs import reduce_pca
from fruits_spark.pca import choose_k, fit_pca, read_features
from real_features import assert_same_axes

REPO_ROOT = Path(__file__).resolve().parents[2]
ENTRY_SCRIPT = REPO_ROOT / "spark_jobs" / "reduce_pca.py"
FEATURE_SCHEMA = "path string, label string, features array<float>"

pytestmark = pytest.mark.spark


def feature_matrix(n_rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """Rows with a clear spectrum (distinct variances per direction) and a non-zero mean,
    so an uncentered PCA or a mixed-up component would be caught."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    scales = np.geomspace(10.0, 0.01, dim)
    return (rng.normal(size=(n_rows, dim)) * scales @ basis.T + 3.0).astype(np.float32)


def path_of(i: int) -> str:
    return f"file:///lake/raw/apple red/{i:04d}.jpg"


def feature_frame(spark, matrix: np.ndarray, label: str = "apple red", first: int = 0):
    rows = [(path_of(first + i), label, [float(x) for x in row]) for i, row in enumerate(matrix)]
    return spark.createDataFrame(rows, FEATURE_SCHEMA)


def projected_by_path(frame) -> tuple[list[str], np.ndarray]:
    rows = sorted(frame.collect(), key=lambda row: row["path"])
    return [row["path"] for row in rows], np.array([row["pca_features"] for row in rows], dtype=np.float64)


def test_projection_and_ratios_equal_scikit_learn(spark):
    # More dimensions than rows, as with 1280 features on a small run (real features: test_pca_real_features).
    matrix = feature_matrix(60, 320)
    result = fit_pca(feature_frame(spark, matrix), "memory://equality", k=8)
    paths, spark_projection = projected_by_path(result.reduced)
    sklearn = SklearnPCA(n_components=8, svd_solver="full").fit(matrix.astype(np.float64))
    sklearn_projection = sklearn.transform(matrix.astype(np.float64))[[int(Path(p).stem) for p in paths]]

    np.testing.assert_allclose(result.report["explained_variance_ratio"], sklearn.explained_variance_ratio_, atol=1e-6)
    assert result.report["cumulative"] == pytest.approx(sklearn.explained_variance_ratio_.sum(), abs=1e-6)
    assert result.report["input_dim"] == 320 and result.report["n_images"] == 60
    assert_same_axes(sklearn_projection, spark_projection, "projection")  # each of scikit-learn's 8 components


def test_variance_picks_smallest_k_reaching_fraction_of_total(spark):
    matrix = feature_matrix(50, 40, seed=1)
    all_ratios = SklearnPCA(svd_solver="full").fit(matrix.astype(np.float64)).explained_variance_ratio_
    cumulative = np.cumsum(all_ratios)
    target = 0.95
    expected_k = int(np.argmax(cumulative >= target)) + 1
    assert 1 < expected_k < 40  # the matrix makes the choice non-trivial

    result = fit_pca(feature_frame(spark, matrix), "memory://variance", variance=target)
    assert result.report["k"] == expected_k
    assert result.report["variance_target"] == target
    assert result.report["cumulative"] >= target
    assert result.report["cumulative"] - result.report["explained_variance_ratio"][-1] < target
    np.testing.assert_allclose(result.report["explained_variance_ratio"], all_ratios[:expected_k], atol=1e-6)


def test_moments_merged_from_any_split_equal_the_moments_of_all_rows():
    from fruits_spark.pca import Moments

    matrix = feature_matrix(40, 6, seed=7).astype(np.float64)
    whole = Moments.of_rows(matrix)
    for cuts in ([1], [20], [3, 17, 39]):
        parts = [Moments.of_rows(part) for part in np.split(matrix, cuts)]
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        assert merged.count == 40
        np.testing.assert_allclose(merged.mean, whole.mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(merged.scatter, whole.scatter, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(whole.scatter / 39, np.cov(matrix, rowvar=False), rtol=1e-12)


def test_choose_k_by_variance_uses_ratios_of_all_components():
    assert choose_k(100, 4, variance=0.5, ratios=[0.4, 0.3, 0.2, 0.1]).k == 2
    assert choose_k(100, 4, variance=0.7, ratios=[0.4, 0.3, 0.2, 0.1]).k == 2
    # Rounding may leave the sum of all ratios a hair below 1.0; 1.0 still means "all".
    assert choose_k(100, 4, variance=1.0, ratios=[0.4, 0.3, 0.2, 0.1 - 1e-12]).k == 4
    with pytest.raises(PcaInputError, match="--variance 1.5"):
        choose_k(100, 4, variance=1.5, ratios=[1.0])


def test_k_larger_than_rows_is_capped_and_reported(spark, tmp_path):
    features = tmp_path / "features" / "batch=r1"
    feature_frame(spark, feature_matrix(5, 12, seed=2)).write.parquet(str(features))
    (features / JOB_RESULT_FILE).write_text("{}")

    job_result = reduce_pca.run(spark, reduce_pca.parse_args(["--features", str(tmp_path / "features"),
                                                               "--output", str(tmp_path / "pca"), "--k", "20"]))

    report = json.loads((tmp_path / "pca" / "_pca_report.json").read_text())
    assert report["k"] == 5 and report["k_requested"] == 20 and report["capped"] is True
    assert report["max_k"] == 5
    assert len(report["explained_variance_ratio"]) == 5
    assert job_result["k"] == 5
    reduced = spark.read.parquet(str(tmp_path / "pca"))
    assert {len(row["pca_features"]) for row in reduced.collect()} == {5}


def test_all_batches_are_one_table_and_outputs_follow_the_contract(spark, tmp_path):
    features_root = tmp_path / "features"
    matrix = feature_matrix(30, 16, seed=3)
    feature_frame(spark, matrix[:18]).write.parquet(str(features_root / "batch=2026-11-20T000000Z"))
    (features_root / "batch=2026-11-20T000000Z" / JOB_RESULT_FILE).write_text("{}")
    feature_frame(spark, matrix[18:], label="banana", first=18).write.parquet(
        str(features_root / "batch=manual__2026-11-21")
    )
    # What the feature job leaves beside its Parquet must not be read as features.
    spark.createDataFrame([("file:///lake/raw/x.jpg", "not_an_image", "bad")], "path string, reason string, detail string") \
        .write.parquet(str(features_root / "batch=manual__2026-11-21" / "_rejects"))
    (features_root / "batch=manual__2026-11-21" / "_job_result.json").write_text('{"job": "extract_features"}\n')
    output = tmp_path / "pca" / "run 1"

    args = reduce_pca.parse_args(["--features", f"file://{features_root}", "--output", f"file://{output}", "--k", "3"])
    first = reduce_pca.run(spark, args)
    second = reduce_pca.run(spark, args)  # rerun replaces

    reduced = spark.read.parquet(str(output))
    assert reduced.schema.simpleString() == "struct<path:string,label:string,pca_features:array<float>>"
    rows = reduced.collect()
    assert len(rows) == 30, "a rerun must replace the output, not add to it"
    assert sorted(row["path"] for row in rows) == sorted(path_of(i) for i in range(30))
    assert {row["label"] for row in rows} == {"apple red", "banana"}

    report = json.loads((output / "_pca_report.json").read_text())
    assert report["n_images"] == 30 and report["input_dim"] == 16 and report["k"] == 3
    assert report["capped"] is False and report["k_requested"] == 3
    assert report["cumulative"] == pytest.approx(sum(report["explained_variance_ratio"]))
    assert json.loads((output / "_job_result.json").read_text()) == second
    assert {key: first[key] for key in ("job", "n_images", "k", "variance_kept")} == {
        "job": "reduce_pca", "n_images": 30, "k": 3, "variance_kept": report["cumulative"]
    }

    # The saved model is centering + PCA in one pipeline and reproduces the output.
    from pyspark.ml import PipelineModel

    from fruits_spark.pca import project, to_vectors

    model = PipelineModel.load(str(output / "_model"))
    assert [type(stage).__name__ for stage in model.stages] == ["StandardScalerModel", "PCAModel"]
    again = project(model, to_vectors(read_features(spark, str(features_root))))
    _, saved = projected_by_path(reduced)
    _, recomputed = projected_by_path(again)
    np.testing.assert_allclose(saved, recomputed, rtol=1e-5, atol=1e-5)


def test_an_image_in_two_committed_batches_is_read_once_from_the_later_commit(spark, tmp_path):
    """A full refresh features every upload again into its own batch while the older batches still
    hold them: the PCA must read each image once (the newest features), not twice."""
    features_root = tmp_path / "features"
    old, new = feature_matrix(12, 8, seed=5), feature_matrix(12, 8, seed=6)
    # Named so that the name order is the opposite of the commit order.
    for name, matrix, first in (("batch=z-first", old, 0), ("batch=a-refresh", new[:8], 0),
                                ("batch=m-later-day", new[8:], 12)):
        feature_frame(spark, matrix, first=first).write.parquet(str(features_root / name))
        (features_root / name / JOB_RESULT_FILE).write_text("{}")
        os.utime(features_root / name / JOB_RESULT_FILE, (0, {"z": 1000, "a": 2000, "m": 3000}[name[6]]))

    read = read_features(spark, str(features_root))
    by_path = {row["path"]: row["features"] for row in read.collect()}

    assert sorted(by_path) == sorted(path_of(i) for i in [*range(12), *range(12, 16)]), "each image once"
    for i in range(8):  # in both batches: the refresh, committed last of the two, wins
        np.testing.assert_array_equal(by_path[path_of(i)], new[i])
    for i in range(8, 12):  # only in the first batch
        np.testing.assert_array_equal(by_path[path_of(i)], old[i])


def test_batch_folders_named_one_by_one_are_listed_in_a_few_tasks_not_one_each(spark, tmp_path):
    """The PCA names each committed batch folder; Spark lists named paths (past 32) with one task per
    path, up to 10,000: on a lake of a year's daily batches that is a task per day, every run."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fruits_spark.io import read_job_output
    from fruits_spark.session import LISTING_TASKS_PER_CORE

    batches = []
    for day in range(40):
        folder = tmp_path / "features" / f"batch=2026-01-{day:02d}"
        folder.mkdir(parents=True)
        pq.write_table(pa.table({"path": [path_of(day)]}), folder / "part-0.parquet")
        batches.append(f"file://{folder}")
    sc = spark.sparkContext
    sc.setJobGroup("listing-tasks", "the PCA's batches, named one by one")
    try:
        frame = read_job_output(spark, f"file://{tmp_path / 'features'}", ("path",), flag="--features",
                                made_by="the feature job", error=PcaInputError, partitions=tuple(batches))
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    tracker = sc.statusTracker()
    tasks = [tracker.getStageInfo(stage).numTasks for job in tracker.getJobIdsForGroup("listing-tasks")
             for stage in tracker.getJobInfo(job).stageIds]
    assert tasks, "40 named folders are past Spark's threshold for a listing job"
    assert max(tasks) <= sc.defaultParallelism * LISTING_TASKS_PER_CORE < len(batches), tasks
    assert frame.count() == 40


def test_no_rows_names_the_features_uri(spark, tmp_path):
    empty = tmp_path / "features"
    spark.createDataFrame([], FEATURE_SCHEMA).write.parquet(str(empty / "batch=r1"))
    (empty / "batch=r1" / JOB_RESULT_FILE).write_text("{}")
    with pytest.raises(PcaInputError, match=f"--features {empty}: no rows"):
        fit_pca(read_features(spark, str(empty)), str(empty), k=2)
    missing = tmp_path / "nothing here"
    with pytest.raises(PcaInputError, match="no such folder"):
        read_features(spark, str(missing))


def test_nan_row_is_named(spark):
    matrix = feature_matrix(6, 8, seed=4)
    matrix[4, 3] = np.nan
    with pytest.raises(PcaInputError, match=r"row path=file:///lake/raw/apple red/0004\.jpg has NaN"):
        fit_pca(feature_frame(spark, matrix), "memory://nan", k=2)


def test_wrong_length_row_is_named(spark):
    rows = [(path_of(i), "kiwi", [float(i), 1.0, 2.0, 3.0]) for i in range(5)]
    rows.append(("file:///lake/raw/kiwi/short.jpg", "kiwi", [1.0, 2.0]))
    frame = spark.createDataFrame(rows, FEATURE_SCHEMA)
    with pytest.raises(PcaInputError, match=r"row path=file:///lake/raw/kiwi/short\.jpg has a feature vector of length 2, expected 4"):
        fit_pca(frame, "memory://ragged", k=2)


def test_entry_script_runs_under_spark_submit(tmp_path):
    """The real CLI, once: spark-submit from the checkout, tiny input written without Spark."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    matrix = feature_matrix(12, 10, seed=5)
    batch = tmp_path / "lake" / "features" / "batch=r1"
    batch.mkdir(parents=True)
    table = pa.table(
        {
            "path": [path_of(i) for i in range(12)],
            "label": ["apple red"] * 12,
            "features": pa.array([row.tolist() for row in matrix], type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, batch / "part-0.parquet")
    (batch / JOB_RESULT_FILE).write_text("{}")
    output = tmp_path / "lake" / "pca" / "r1"
    spark_submit = Path(sys.executable).parent / "spark-submit"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    env.pop("PYSPARK_SUBMIT_ARGS", None)

    completed = subprocess.run(
        [str(spark_submit), "--master", "local[1]", "--conf", "spark.ui.enabled=false", str(ENTRY_SCRIPT),
         "--features", f"file://{tmp_path}/lake/features", "--output", f"file://{output}", "--variance", "0.9"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    # spark-submit's PythonRunner merges the driver's stderr into its own stdout.
    last_line = [line for line in completed.stdout.splitlines() if line.strip()][-1]
    assert last_line.startswith("FRUITS_RESULT "), completed.stdout[-3000:]
    result = json.loads(last_line.removeprefix("FRUITS_RESULT "))
    assert result["job"] == "reduce_pca" and result["n_images"] == 12 and result["variance_kept"] >= 0.9
    assert json.loads((output / "_job_result.json").read_text()) == result
    reduced = pq.read_table(output)
    pca_type = reduced.schema.field("pca_features").type
    assert pa.types.is_list(pca_type) and pca_type.value_type == pa.float32()
    assert reduced.num_rows == 12


def test_row_without_features_is_named(spark):
    rows = [(path_of(i), "kiwi", [float(i), 1.0, 2.0]) for i in range(4)]
    rows.append(("file:///lake/raw/kiwi/empty.jpg", "kiwi", None))
    frame = spark.createDataFrame(rows, FEATURE_SCHEMA)
    with pytest.raises(PcaInputError, match=r"row path=file:///lake/raw/kiwi/empty\.jpg has a feature vector of length None"):
        fit_pca(frame, "memory://null", k=2)


@pytest.mark.parametrize(
    "argv",
    [
        ["--features", "f", "--output", "o"],
        ["--features", "f", "--output", "o", "--k", "3", "--variance", "0.9"],
        ["--features", "f", "--output", "o", "--variance", "1.5"],
        ["--features", "f", "--output", "o", "--variance", "0"],
        ["--features", "f", "--output", "o", "--k", "0"],
    ],
)
def test_cli_refuses_a_missing_or_impossible_target(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        reduce_pca.parse_args(argv)
    assert exit_info.value.code == 2
    assert "reduce_pca.py: error:" in capsys.readouterr().err


# ------------------------------------------------------------------ the fit from kept moments (issue 28)

def write_batch(spark, root: Path, name: str, matrix: np.ndarray, first: int, committed_at: int) -> None:
    feature_frame(spark, matrix, first=first).write.parquet(str(root / f"batch={name}"))
    (root / f"batch={name}" / JOB_RESULT_FILE).write_text("{}")
    os.utime(root / f"batch={name}" / JOB_RESULT_FILE, (committed_at, committed_at))


def run_pca(spark, root: Path, output: Path, current: Path | None, k: int = 4) -> dict:
    argv = ["--features", f"file://{root}", "--output", f"file://{output}", "--k", str(k)]
    reduce_pca.run(spark, reduce_pca.parse_args(argv + (["--current", f"file://{current}"] if current else [])))
    return json.loads((output / "_pca_report.json").read_text())


def publish(pointer: Path, output: Path) -> Path:
    pointer.write_text(json.dumps({"pca_uri": f"file://{output}"}))
    return pointer


def rows_by_path(output: Path) -> dict:
    import pyarrow.parquet as pq

    table = pq.read_table(output).to_pylist()
    assert len({row["path"] for row in table}) == len(table), "each path once"
    return {row["path"]: (row["label"], row["pca_features"]) for row in table}


def kept_npz(output: Path):
    from fruits_spark.pca import KeptMoments

    return KeptMoments.from_npz_bytes((output / "_moments.npz").read_bytes())


def mean_and_components(output: Path) -> tuple[np.ndarray, np.ndarray]:
    from pyspark.ml import PipelineModel

    scaler, pca = PipelineModel.load(str(output / "_model")).stages
    return scaler.mean.toArray(), pca.pc.toArray()


def unreadable_features(batch: Path) -> None:
    """The batch's feature vectors replaced by 3 floats, its paths, labels and commit time kept: a fit, check or
    projection that read them would fail (wrong length), a read of its paths alone does not."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(batch, columns=["path", "label"])
    for part in batch.glob("*.parquet"):
        part.unlink()
    pq.write_table(table.append_column("features", pa.array([[9.0, 9.0, 9.0]] * table.num_rows,
                                                            type=pa.list_(pa.float32()))), batch / "part-0.parquet")


def test_an_unmoved_basis_is_kept_and_only_the_new_batch_is_projected(spark, tmp_path):
    """The fit still equals a full refit and scikit-learn (the moments); the projection is the published model's:
    the old rows as published, byte for byte, the new batch's projected with the published model."""
    from fruits_spark.pca import BASIS_ANGLE_THRESHOLD_DEG, Moments, principal_axes

    root, matrix = tmp_path / "features", feature_matrix(45, 12, seed=11)
    write_batch(spark, root, "day1", matrix[:20], 0, 1000)
    write_batch(spark, root, "day2", matrix[20:35], 20, 2000)
    first = run_pca(spark, root, tmp_path / "pca1", None)
    assert first["moments"] == {"kept_batches": 0, "read_batches": 2,
                                "why": "no moments of an earlier PCA: one pass over every batch"}
    assert first["basis"]["reprojected"] == "all" and first["basis"]["fitted_through_ms"] == 2_000_000
    write_batch(spark, root, "day3", matrix[35:], 35, 3000)
    for old in ("day1", "day2"):
        unreadable_features(root / f"batch={old}")

    merged = run_pca(spark, root, tmp_path / "pca2", publish(tmp_path / "current.json", tmp_path / "pca1"))

    assert (merged["moments"]["kept_batches"], merged["moments"]["read_batches"]) == (2, 1)
    basis = merged["basis"]
    assert basis["reprojected"] == "new batches only", basis
    assert basis["weighted_angle_deg"] < basis["threshold_deg"] == BASIS_ANGLE_THRESHOLD_DEG
    assert basis["fitted_through_ms"] == 2_000_000, "the kept basis keeps its age"
    # The fit: the merged moments are those of every row, their eigenproblem scikit-learn's.
    kept, whole = kept_npz(tmp_path / "pca2"), Moments.of_rows(matrix.astype(np.float64))
    assert kept.moments.count == 45 and sorted(kept.batches) == ["batch=day1", "batch=day2", "batch=day3"]
    np.testing.assert_allclose(kept.moments.mean, whole.mean, rtol=0, atol=1e-9)
    np.testing.assert_allclose(kept.moments.scatter, whole.scatter, rtol=1e-9, atol=1e-7)
    reference = SklearnPCA(n_components=4, svd_solver="full").fit(matrix.astype(np.float64))
    np.testing.assert_allclose(principal_axes(kept.moments).ratios[:4], reference.explained_variance_ratio_, rtol=1e-6)
    # The projection: the published model, kept whole; its ratios are the report's.
    assert merged["explained_variance_ratio"] == first["explained_variance_ratio"] and merged["n_images"] == 45
    mean, components = mean_and_components(tmp_path / "pca1")
    again_mean, again_components = mean_and_components(tmp_path / "pca2")
    np.testing.assert_array_equal(again_mean, mean)
    np.testing.assert_array_equal(again_components, components)
    published, today = rows_by_path(tmp_path / "pca1"), rows_by_path(tmp_path / "pca2")
    assert sorted(today) == sorted(path_of(i) for i in range(45))
    assert {path: today[path] for path in published} == published, "old rows exactly as published"
    by_hand = (matrix[35:].astype(np.float64) - mean) @ components
    np.testing.assert_allclose([today[path_of(i)][1] for i in range(35, 45)], by_hand, rtol=0, atol=1e-5)


def test_a_moved_basis_means_every_row_projected_again_equal_to_a_full_refit(spark, tmp_path):
    root, matrix = tmp_path / "features", feature_matrix(35, 12, seed=11)
    write_batch(spark, root, "day1", matrix[:20], 0, 1000)
    write_batch(spark, root, "day2", matrix[20:], 20, 2000)
    run_pca(spark, root, tmp_path / "pca1", None)
    other_kind = feature_matrix(8, 12, seed=99) * 3  # its largest variances along directions new to the lake
    write_batch(spark, root, "day3", other_kind, 35, 3000)

    merged = run_pca(spark, root, tmp_path / "pca2", publish(tmp_path / "current.json", tmp_path / "pca1"))
    full = run_pca(spark, root, tmp_path / "pca3", None)

    assert (merged["moments"]["kept_batches"], merged["moments"]["read_batches"]) == (2, 1)
    assert merged["basis"]["reprojected"] == "all" and "moved" in merged["basis"]["why"]
    assert merged["basis"]["weighted_angle_deg"] >= merged["basis"]["threshold_deg"]
    assert merged["basis"]["fitted_through_ms"] == 3_000_000
    every_row = np.vstack([matrix, other_kind]).astype(np.float64)
    reference = SklearnPCA(n_components=4, svd_solver="full").fit(every_row)
    np.testing.assert_allclose(merged["explained_variance_ratio"], full["explained_variance_ratio"], rtol=1e-9)
    np.testing.assert_allclose(merged["explained_variance_ratio"], reference.explained_variance_ratio_, rtol=1e-6)
    paths, by_merged = projected_by_path(spark.read.parquet(str(tmp_path / "pca2")))
    _, by_full = projected_by_path(spark.read.parquet(str(tmp_path / "pca3")))
    np.testing.assert_allclose(by_merged, by_full, atol=1e-5)
    assert_same_axes(by_merged, reference.transform(every_row)[[int(Path(p).stem) for p in paths]], "projection")


def test_a_changed_k_or_a_refit_due_means_every_row_projected_again(spark, tmp_path):
    from fruits_spark.pca import BASIS_REFIT_AFTER_DAYS

    root, matrix = tmp_path / "features", feature_matrix(45, 12, seed=11)
    write_batch(spark, root, "day1", matrix[:35], 0, 1000)
    run_pca(spark, root, tmp_path / "pca1", None)
    write_batch(spark, root, "day2", matrix[35:], 35, 2000)
    pointer = publish(tmp_path / "current.json", tmp_path / "pca1")

    fewer = run_pca(spark, root, tmp_path / "pca2", pointer, k=3)
    assert fewer["basis"]["reprojected"] == "all" and "k changed" in fewer["basis"]["why"]
    assert fewer["k"] == 3 and fewer["moments"]["kept_batches"] == 1
    full = run_pca(spark, root, tmp_path / "pca3", None, k=3)
    np.testing.assert_allclose(fewer["explained_variance_ratio"], full["explained_variance_ratio"], rtol=1e-9)
    np.testing.assert_allclose(projected_by_path(spark.read.parquet(str(tmp_path / "pca2")))[1],
                               projected_by_path(spark.read.parquet(str(tmp_path / "pca3")))[1], atol=1e-5)

    week_later = 1000 + BASIS_REFIT_AFTER_DAYS * 86_400
    os.utime(root / "batch=day2" / JOB_RESULT_FILE, (week_later, week_later))
    due = run_pca(spark, root, tmp_path / "pca4", pointer)
    assert due["basis"]["reprojected"] == "all" and "refit due" in due["basis"]["why"], due["basis"]
    assert due["basis"]["age_days"] == BASIS_REFIT_AFTER_DAYS and due["basis"]["fitted_through_ms"] == week_later * 1000


def test_the_published_rows_still_in_the_table_are_kept_and_a_path_taken_again_comes_from_its_new_batch(spark):
    from fruits_spark.pca import centered_pca_model, extend_published

    model = centered_pca_model(spark, np.array([1.0, 1.0]), np.eye(2)[:, :1], [0.9])
    published = spark.createDataFrame([("a", "x", [0.5]), ("b", "x", [0.25]), ("gone", "x", [7.0])],
                                      "path string, label string, pca_features array<float>")
    present = spark.createDataFrame([("a",), ("b",), ("c",)], "path string")
    new_rows = spark.createDataFrame([("b", "y", [3.0, 0.0]), ("c", None, [5.0, 2.0])], FEATURE_SCHEMA)

    rows = {row["path"]: (row["label"], row["pca_features"])
            for row in extend_published(published, model, present, new_rows).collect()}

    assert rows == {"a": ("x", [0.5]), "b": ("y", [2.0]), "c": (None, [4.0])}


def test_a_changed_or_retaken_batch_means_one_pass_over_every_batch(spark, tmp_path):
    root, matrix = tmp_path / "features", feature_matrix(40, 10, seed=12)
    write_batch(spark, root, "day1", matrix[:20], 0, 1000)
    write_batch(spark, root, "day2", matrix[20:30], 20, 2000)
    pointer = publish(tmp_path / "current.json", tmp_path / "pca1")
    run_pca(spark, root, tmp_path / "pca1", None)

    os.utime(root / "batch=day2" / JOB_RESULT_FILE, (2500, 2500))  # day2 committed again (a rerun)
    again = run_pca(spark, root, tmp_path / "pca2", pointer)
    assert again["moments"]["kept_batches"] == 0 and "day2" in again["moments"]["why"]

    # A photo of day1 taken again in day3: the kept moments would count it twice; the fit sees that.
    publish(pointer, tmp_path / "pca2")
    retaken = matrix[30:].copy()
    write_batch(spark, root, "day3", retaken, 15, 3000)  # paths 15..24: 15..19 are day1's too
    report = run_pca(spark, root, tmp_path / "pca3", pointer)
    full = run_pca(spark, root, tmp_path / "pca4", None)
    assert report["n_images"] == full["n_images"] == 30
    assert report["moments"]["kept_batches"] == 0 and "taken again" in report["moments"]["why"]
    np.testing.assert_allclose(report["explained_variance_ratio"], full["explained_variance_ratio"], rtol=1e-9)


def test_superseded_copies_are_thinned_to_their_report_and_the_published_one_stays_whole(spark, tmp_path):
    """Each pca/<run>/ holds every image's PCA features: beyond the published copy, this run's and the newest
    three, only their report and job result stay."""
    root, matrix = tmp_path / "features", feature_matrix(20, 6, seed=13)
    write_batch(spark, root, "day1", matrix, 0, 1000)
    (tmp_path / "lake pca").mkdir()
    pointer = publish(tmp_path / "lake pca" / "current.json", tmp_path / "lake pca" / "run0")
    stranger = tmp_path / "lake pca" / "not-a-pca"  # a folder with a job result but no PCA report: not touched
    stranger.mkdir()
    (stranger / JOB_RESULT_FILE).write_text("{}")
    removed = {}
    for day in range(7):
        output = tmp_path / "lake pca" / f"run{day}"
        argv = ["--features", f"file://{root}", "--output", f"file://{output}", "--k", "2", "--current", f"file://{pointer}"]
        removed[day] = reduce_pca.run(spark, reduce_pca.parse_args(argv))["superseded_copies_removed"]
        os.utime(output / JOB_RESULT_FILE, (10_000 + day, 10_000 + day))
    # run0 is the published one all along; run5 finds run2-4 the newest three finished, so run1 goes; run6, run2
    assert [removed[day] for day in range(5)] == [[]] * 5
    assert (removed[5], removed[6]) == ([f"file://{tmp_path}/lake pca/run1"], [f"file://{tmp_path}/lake pca/run2"])
    for day in (1, 2):
        left = sorted(p.name for p in (tmp_path / "lake pca" / f"run{day}").iterdir() if not p.name.endswith(".crc"))
        assert left == [JOB_RESULT_FILE, "_pca_report.json"]
    for day in (0, 3, 4, 5, 6):
        assert (tmp_path / "lake pca" / f"run{day}" / "_model").is_dir() and list((tmp_path / "lake pca" / f"run{day}").glob("*.parquet"))
    assert sorted(p.name for p in stranger.iterdir()) == [JOB_RESULT_FILE]
