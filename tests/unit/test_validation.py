"""Validation on real files: good, corrupt and odd uploads; exactly-once selection; manifests."""
import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from generated_images import write_generated_images
from phone_photos import hostile_uploads
from fruits_pipeline import storage
from fruits_contract.lake import Lake
from fruits_contract.lake import JOB_RESULT_FILE
from fruits_contract.names import label_of
from fruits_pipeline.validation import validate_uploads, write_manifests

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
    assert len(result.valid) == 5 and result.listed == 11
    reasons = {row["path"].rsplit("/", 1)[1]: row["reason"] for row in result.rejected}
    # truncated.jpg keeps its header: decoding is the feature job's, which rejects it there.
    assert reasons == {"not_an_image.jpg": "not_an_image", "empty.png": "empty", "notes.txt": "not_an_image",
                       "tiny.jpg": "too_small", "huge.jpg": "too_large", "loose.jpg": "no_label_folder"}
    valid = {row["path"]: row for row in result.valid}
    apple = f"{lake.base_uri}/raw/apple red/img_000.jpg"
    assert apple.startswith("file:///") and apple in valid  # canonical, unencoded, space kept
    assert valid[apple] == {"path": apple, "label": "apple red", "size": valid[apple]["size"], "format": "JPEG",
                            "width": 100, "height": 100}
    assert sorted(__import__("pathlib").Path(lake.local_root, "raw").rglob("*")) == before


def test_manifests_have_the_contract_schemas_and_a_rerun_replaces_them(lake):
    result = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    for _ in range(2):
        uris = write_manifests(lake, result, None)
    valid = pq.read_table(uris["valid"][len("file://"):])
    rejected = pq.read_table(uris["rejected"][len("file://"):])
    assert valid.schema.equals(pa.schema([("path", pa.string()), ("label", pa.string()), ("size", pa.int64()),
                                          ("format", pa.string()), ("width", pa.int32()), ("height", pa.int32())]))
    assert rejected.schema.equals(pa.schema([("path", pa.string()), ("reason", pa.string()), ("detail", pa.string())]))
    assert valid.num_rows == 5 and rejected.num_rows == 6


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
    assert second.rejected == [] and second.previously_rejected == 7 and second.already_featurized == 2

    everything = validate_uploads(lake, "run3", full_refresh=True, **LIMITS)
    assert len(everything.valid) == 5 and len(everything.rejected) == 6


def test_app_photos_under_uploads_are_validated_at_any_depth_without_a_label(lake):
    """uploads/<date>/<user>/<id>: a dated or per-user folder is no label (it was: a class called
    "2026-12-02"); exactly-once, rejects and unsafe names as in raw/."""
    uploads = Path(lake.local_root, "uploads")
    deep, flat = uploads / "2026-12-02" / "user 7" / "8f3c.jpg", uploads / "a1.jpg"
    for path in (deep, flat):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg_bytes())
    (uploads / "2026-12-02" / "broken.jpg").write_bytes(b"not a photo")
    (uploads / "50%41.jpg").write_bytes(jpeg_bytes())
    result = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    assert (result.total_in_raw, result.total_in_uploads, result.listed) == (11, 4, 15)
    valid = {row["path"]: row["label"] for row in result.valid}
    assert valid[f"{lake.base_uri}/uploads/2026-12-02/user 7/8f3c.jpg"] is None
    assert valid[f"{lake.base_uri}/uploads/a1.jpg"] is None
    reasons = {row["path"]: row["reason"] for row in result.rejected}
    assert reasons[f"{lake.base_uri}/uploads/2026-12-02/broken.jpg"] == "not_an_image"
    assert reasons[f"{lake.base_uri}/uploads/50%41.jpg"] == "unsafe_name"
    assert len(result.valid) == 5 + 2

    batch = Path(lake.local_root, "features", "batch=run1")
    batch.mkdir(parents=True)
    pq.write_table(pa.table({"path": [f"{lake.base_uri}/uploads/a1.jpg"], "label": pa.array([None], pa.string())}),
                   batch / "part-0.parquet")
    (batch / JOB_RESULT_FILE).write_text("{}")
    second = validate_uploads(lake, "run2", full_refresh=False, **LIMITS)
    assert f"{lake.base_uri}/uploads/a1.jpg" not in {row["path"] for row in second.valid}
    assert second.already_featurized == 1


def test_label_is_the_parent_folder():
    assert label_of("s3://b/raw", "s3://b/raw/pear/a.jpg") == "pear"
    assert label_of("s3://b/raw", "s3://b/raw/a.jpg") is None


def test_removing_outputs_never_touches_raw_or_uploads(lake):
    from fruits_pipeline import storage

    for target in (lake.raw(), f"{lake.raw()}/kiwi", lake.uploads(), f"{lake.uploads()}/2026-12-02"):
        with pytest.raises(ValueError, match="never modified"):
            storage.remove_tree(target, None, inputs=lake.inputs())


def test_a_folder_the_store_did_not_remove_is_an_error_not_taken_for_removed(lake, monkeypatch):
    """s3fs returns quietly when S3 refuses the keys of a DeleteObjects (AccessDenied): seen as an Airflow
    role without s3:DeleteObject on features/. The removal must say so, not log "removed"."""
    from fruits_pipeline import storage

    target = f"{lake.base_uri}/features/batch=run0"
    storage.write_bytes(f"{target}/part-0.parquet", b"x", None)
    fs = storage.lake_path(target, None).fs
    monkeypatch.setattr(type(fs), "rm", lambda self, path, recursive=False, **kwargs: None)  # refused, silently
    with pytest.raises(OSError, match=r"features/batch=run0: not removed"):
        storage.remove_tree(target, None, inputs=lake.inputs())


@pytest.fixture
def phone_lake(tmp_path, phone_uploads):
    """Each phone-style upload under a name that lies about it (or says nothing), plus the bad input."""
    raw = tmp_path / "lake" / "raw" / "pear"
    raw.mkdir(parents=True)
    names = {"jpeg": "a.JPEG", "jpeg_sideways": "b.png", "heic": "c.HEIC", "webp": "d", "png_alpha": "e.jpg",
             "mpo": "f.mpo"}
    for kind, name in names.items():
        (raw / name).write_bytes(phone_uploads[kind])
    for name, content in hostile_uploads(phone_uploads).items():
        (raw / name).write_bytes(content)
    return Lake(f"file://{tmp_path / 'lake'}"), names


def test_formats_are_read_from_the_bytes_whatever_the_name(phone_lake):
    lake, names = phone_lake
    result = validate_uploads(lake, "run1", full_refresh=False, **{**LIMITS, "max_image_bytes": 10_000_000})
    valid = {row["path"].rsplit("/", 1)[1]: (row["format"], row["width"], row["height"]) for row in result.valid}
    assert valid == {"a.JPEG": ("JPEG", 640, 480), "b.png": ("JPEG", 480, 640),  # as stored: sideways
                     "c.HEIC": ("HEIF", 640, 480), "d": ("WEBP", 640, 480), "e.jpg": ("PNG", 640, 480),
                     "f.mpo": ("JPEG", 640, 480)}


def test_bad_input_is_rejected_with_a_reason_naming_it_and_raw_is_untouched(phone_lake):
    lake, _ = phone_lake
    raw = __import__("pathlib").Path(lake.local_root, "raw")
    before = {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()}
    result = validate_uploads(lake, "run1", full_refresh=False, **{**LIMITS, "max_image_bytes": 10_000_000})
    rejected = {row["path"].rsplit("/", 1)[1]: (row["reason"], row["detail"]) for row in result.rejected}
    assert {name: reason for name, (reason, _) in rejected.items()} == {
        "truncated.heic": "bad_header", "giant.jpg": "decompression_bomb", "ztxt_1gb.png": "bad_header",
        "zeros.heic": "not_an_image"}
    assert "mdat" in rejected["truncated.heic"][1] and "60000x60000" in rejected["giant.jpg"][1]
    assert "zTXt" in rejected["ztxt_1gb.png"][1] and "1073741824" in rejected["ztxt_1gb.png"][1]
    assert rejected["zeros.heic"][1].startswith("content is only zero bytes, not JPEG, PNG, WebP or HEIC/HEIF")
    assert len(result.valid) == 6  # the good uploads beside them
    assert {p: p.read_bytes() for p in raw.rglob("*") if p.is_file()} == before


@pytest.fixture
def counted_reads(monkeypatch):
    """Bytes each upload costs through the storage layer (ranged and whole reads), by URI."""
    counts: dict[str, int] = {}
    real_range, real_bytes = storage.read_range, storage.read_bytes

    def read_range(uri, conn_id, start, end):
        data = real_range(uri, conn_id, start, end)
        counts[uri] = counts.get(uri, 0) + len(data)
        return data

    def read_bytes(uri, conn_id):
        data = real_bytes(uri, conn_id)
        counts[uri] = counts.get(uri, 0) + len(data)
        return data

    monkeypatch.setattr(storage, "read_range", read_range)
    monkeypatch.setattr(storage, "read_bytes", read_bytes)
    return counts


def test_a_12mp_photo_costs_its_first_64_kib_and_a_big_exif_block_a_second_read(tmp_path, phone_photo_12mp,
                                                                                counted_reads):
    """Header-only validation on file:// (tests/dag has the same count on S3 through moto)."""
    raw = tmp_path / "lake" / "raw" / "pear"
    raw.mkdir(parents=True)
    (raw / "photo.jpg").write_bytes(phone_photo_12mp)
    # A phone's maker notes and colour profile can fill more than the first read: the frame header
    # comes after them (APP1 holds at most 64 KiB, APP2 the ICC profile).
    image = Image.open(io.BytesIO(phone_photo_12mp))
    exif = image.getexif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    big = io.BytesIO()
    image.save(big, "JPEG", exif=exif.tobytes(), icc_profile=bytes(20_000), quality=80)
    (raw / "big_exif.jpg").write_bytes(big.getvalue())
    lake = Lake(f"file://{tmp_path / 'lake'}")
    result = validate_uploads(lake, "run1", full_refresh=False, **{**LIMITS, "max_image_bytes": 20_000_000})
    assert sorted((r["width"], r["height"]) for r in result.valid) == [(3024, 4032)] * 2
    reads = {uri.rsplit("/", 1)[1]: n for uri, n in counted_reads.items()}
    assert len(phone_photo_12mp) > 1_000_000 and reads["photo.jpg"] == 64 * 1024
    assert 64 * 1024 < reads["big_exif.jpg"] <= 2 * 64 * 1024


def test_uploads_the_job_left_out_as_duplicates_are_done(lake):
    """The feature job featurizes one of two identical uploads and lists the other in _duplicates:
    the next run must not select it again."""
    first = validate_uploads(lake, "run1", full_refresh=False, **LIMITS)
    kept, twin = sorted(row["path"] for row in first.valid)[:2]
    batch = f"{lake.local_root}/features/batch=run1"
    __import__("os").makedirs(f"{batch}/_duplicates")
    pq.write_table(pa.table({"path": [kept], "label": ["x"]}), f"{batch}/part-0.parquet")
    pq.write_table(pa.table({"path": [twin], "duplicate_of": [kept], "sha256": ["0" * 64]}),
                   f"{batch}/_duplicates/part-0.parquet")
    Path(batch, JOB_RESULT_FILE).write_text("{}")  # the job finished: the batch counts
    second = validate_uploads(lake, "run2", full_refresh=False, **LIMITS)
    assert {kept, twin}.isdisjoint(row["path"] for row in second.valid) and second.already_featurized == 2
