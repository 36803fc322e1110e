"""A feature job that died after some of its tasks committed (docs/design.md, "The lake"): on S3 with EMR's
S3-optimized committer the committed tasks' files are visible, with neither _SUCCESS nor the job's
_job_result.json. The next day's run must take those images again, and the PCA must read each image once."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fruits_contract.lake import Lake
from fruits_pipeline.validation import validate_uploads, write_manifests
from fruits_spark.jobs import extract_features, reduce_pca
from generated_images import write_generated_images

pytestmark = pytest.mark.spark
LIMITS = dict(conn_id=None, max_image_bytes=1_000_000, min_image_side=32)


def featurize_run(spark, lake: Lake, run_key: str) -> dict:
    """One day's validation and feature job, as the DAG runs them."""
    validation = validate_uploads(lake, run_key, full_refresh=False, **LIMITS)
    manifests = write_manifests(lake, validation, None)
    if validation.valid:
        extract_features.run(spark, extract_features.parse_args(["--images", lake.raw(), "--manifest", manifests["valid"],
                                                                 "--output", lake.features(run_key)]))
    return validation.summary()


def plant_partial_batch(batch: Path, paths: list[str]) -> None:
    """What EMR leaves of a feature job that died with one of its tasks committed: that task's data file
    (``paths``, in the job's schema), and no _SUCCESS, no _rejects/, no job result."""
    batch.mkdir(parents=True)
    pq.write_table(pa.table({
        "path": paths, "label": [p.split("/")[-2] for p in paths],
        "features": pa.array([[float(i)] * 1280 for i in range(len(paths))], type=pa.list_(pa.float32())),
        "model": ["mobilenet_v2"] * len(paths),
    }), batch / "part-00000-5c1d-attempt_202612010000_0001_m_000000_0.c000.snappy.parquet")


def test_a_partial_batch_is_ignored_and_its_images_are_taken_again_the_next_day(spark, tmp_path):
    lake = Lake(f"file://{tmp_path}/lake")
    images = write_generated_images(tmp_path / "lake" / "raw", per_label=3, labels=("apple red", "kiwi"))
    everything = sorted(f"file://{p}" for p in images)

    partial = Path(tmp_path, "lake", "features", "batch=day1")
    plant_partial_batch(partial, everything[::2])

    day2 = featurize_run(spark, lake, "day2")
    assert day2["listed"] == len(everything) and day2["already_featurized"] == 0
    assert day2["partial_batches_ignored"] == [lake.features("day1")]

    result = reduce_pca.run(spark, reduce_pca.parse_args(["--features", lake.features_root(),
                                                          "--output", lake.pca("day2"), "--k", "2"]))
    assert result["n_images"] == len(everything)
    assert result["partial_batches_ignored"] == [lake.features("day1")]
    reduced = pq.read_table(Path(tmp_path, "lake", "pca", "day2")).column("path").to_pylist()
    assert sorted(reduced) == everything, "each image exactly once in what the PCA reads"
    assert json.loads(Path(tmp_path, "lake", "pca", "day2", "_pca_report.json").read_text())["batches_read"] == 1

    day3 = validate_uploads(lake, "day3", full_refresh=False, **LIMITS)
    assert day3.listed == 0 and day3.already_featurized == len(everything), "nothing featurized twice"
    assert not partial.exists() and day3.partial_batches_ignored == [], \
        "replaced by day2's batch, the partial batch is removed, not met again every day"
