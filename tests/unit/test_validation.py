"""Validation on real files: good, corrupt and odd uploads; exactly-once selection; manifests."""
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from generated_images import write_generated_images
from fruits_pipeline.lake import Lake
from fruits_spark.common import JOB_RESULT_FILE
from fruits_pipeline.validation import REJECTED_SCHEMA, VALID_SCHEMA, label_of, validate_uploads, write_manifests

LIMITS = dict(conn_id=None, max_image_bytes=200_000, min_image_side=32)


def jpeg_bytes(size=(64, 64)) -> bytes:
    sink = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(sink, format="JPEG")
    return sink.getvalue()


@pytest.fixture
def lake(tmp_path):
    raw = tmp_path / "lake" / "raw"
    good = write_generated_images(raw, per_label=2, labels=("apple red", "kiwi"))
    (raw / "kiwi" / "truncated.jpg").write_bytes(good[0].read_bytes()[:300])
    (raw / "kiwi" / "not_an_image.jpg").write_bytes(b"hello, I am text")
    (raw / "kiwi" / "empty.png").write_bytes(b"")
    (raw / "kiwi" / "notes.txt").write_text("x")
    (raw / "kiwi" / "tiny.jpg").write_bytes(jpeg_bytes((8, 8)))
    (raw / "kiwi" / "huge.jpg").write_bytes(b"\xff" * 300_000)
    (raw / "loose.jpg").write_bytes(jpeg_bytes())
    return Lake(f"file://{tmp_path / 'lake'}")


def test_each_corrupt_upload_is_rejected_with_its_reason_and_nothing_is_deleted(lake):
    before = sorted(p for p in __import__("pathlib").Path(lake.local_root, "raw").rglob("*"))
    result = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    assert len(result.valid) == 4 and result.listed == 11
    reasons = {row["path"].rsplit("/", 1)[1]: row["reason"] for row in result.rejected}
    assert reasons == {"truncated.jpg": "undecodable", "not_an_image.jpg": "undecodable", "empty.png": "empty",
                       "notes.txt": "extension", "tiny.jpg": "too_small", "huge.jpg": "too_large",
                       "loose.jpg": "no_label_folder"}
    valid = {row["path"]: row for row in result.valid}
    apple = f"{lake.base_uri}/raw/apple red/img_000.jpg"
    assert apple.startswith("file:///") and apple in valid  # canonical, unencoded, space kept
    assert valid[apple]["label"] == "apple red" and valid[apple]["width"] == 100 and len(valid[apple]["sha256"]) == 64
    assert sorted(__import__("pathlib").Path(lake.local_root, "raw").rglob("*")) == before


def test_manifests_have_the_contract_schemas_and_a_rerun_replaces_them(lake):
    result = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    for _ in range(2):
        uris = write_manifests(lake, result, None)
    valid = pq.read_table(uris["valid"][len("file://"):])
    rejected = pq.read_table(uris["rejected"][len("file://"):])
    assert valid.schema.equals(VALID_SCHEMA) and rejected.schema.equals(REJECTED_SCHEMA)
    assert valid.num_rows == 4 and rejected.num_rows == 7


def test_exactly_once_selection(lake):
    root = lake.local_root
    first = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    write_manifests(lake, first, None)
    # run1's feature job wrote two of the valid images
    done = sorted(row["path"] for row in first.valid)[:2]
    batch = f"{root}/features/batch=run1"
    __import__("os").makedirs(f"{batch}/_rejects")
    pq.write_table(pa.table({"path": done, "label": ["x", "x"]}), f"{batch}/part-0.parquet")
    job_rejected = sorted(row["path"] for row in first.valid)[2]  # the feature job could not decode it
    pq.write_table(pa.table({"path": [job_rejected], "reason": ["decode"]}), f"{batch}/_rejects/part-0.parquet")
    Path(batch, JOB_RESULT_FILE).write_text("{}")  # the job's last write: the batch is committed

    rerun = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    assert sorted(r["path"] for r in rerun.valid) == sorted(r["path"] for r in first.valid)  # same run, same input

    second = validate_uploads(lake, "run2", full_refresh=False, **LIMITS)
    assert sorted(r["path"] for r in second.valid) == \
        sorted(set(r["path"] for r in first.valid) - set(done) - {job_rejected})
    assert second.rejected == [] and second.previously_rejected == 8 and second.already_featurized == 2

    everything = validate_uploads(lake, "run3", full_refresh=True, **LIMITS)
    assert len(everything.valid) == 4 and len(everything.rejected) == 7


def test_label_is_the_parent_folder():
    assert label_of("s3://b/raw", "s3://b/raw/pear/a.jpg") == "pear"
    assert label_of("s3://b/raw", "s3://b/raw/a.jpg") is None


def test_removing_outputs_never_touches_raw(lake):
    from fruits_pipeline import storage

    for target in (lake.raw(), f"{lake.raw()}/kiwi"):
        with pytest.raises(ValueError, match="never modified"):
            storage.remove_tree(target, None, raw_uri=lake.raw())


def test_validation_accepts_exactly_the_extensions_the_feature_job_reads():
    """An extension valid here but outside the job's glob would be counted valid and never featurized."""
    from fnmatch import fnmatchcase

    from fruits_spark.features import IMAGE_GLOB
    from fruits_pipeline.validation import IMAGE_EXTENSIONS

    def job_reads(name: str) -> bool:  # Hadoop's {a,b} alternatives, expanded for fnmatch
        inner = IMAGE_GLOB[IMAGE_GLOB.index("{") + 1:IMAGE_GLOB.index("}")]
        return any(fnmatchcase(name, "*." + alternative) for alternative in inner.split(","))

    for extension in (".jpg", ".JPG", ".jpeg", ".Jpeg", ".png", ".PNG", ".webp", ".bmp", ".gif", ".txt"):
        name = "img" + extension
        assert name.lower().endswith(IMAGE_EXTENSIONS) == job_reads(name), name
