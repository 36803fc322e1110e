"""Validation on S3 (moto) reads headers, not files: the bytes each upload costs, counted from the
GetObject responses of the storage layer the DAG uses (Airflow's ObjectStoragePath on s3fs)."""
from __future__ import annotations

import pytest

from fruits_contract.lake import Lake
from fruits_pipeline.validation import validate_uploads
from phone_photos import hostile_uploads

HEADER_BYTES = 64 * 1024


@pytest.fixture
def object_bytes_read(aws, monkeypatch):
    """Key -> bytes the S3 responses carried, for every GetObject made by anything but the test's clients."""
    from aiobotocore.client import AioBaseClient

    read: dict[str, int] = {}
    real = AioBaseClient._make_api_call

    async def counted(self, operation, params):
        response = await real(self, operation, params)
        if operation == "GetObject":
            read[params["Key"]] = read.get(params["Key"], 0) + int(response["ContentLength"])
        return response

    monkeypatch.setattr(AioBaseClient, "_make_api_call", counted)
    return read


def test_each_upload_costs_one_ranged_read_of_its_header(aws, lake_bucket, object_bytes_read, phone_photo_12mp,
                                                         phone_uploads):
    s3 = aws["s3"]
    uploads = {"raw/pear/photo.jpg": phone_photo_12mp, "raw/pear/iphone.heic": phone_uploads["heic"],
               "raw/pear/shared.webp": phone_uploads["webp"], "raw/pear/cutout.png": phone_uploads["png_alpha"],
               **{f"raw/pear/{name}": content for name, content in hostile_uploads(phone_uploads).items()}}
    for key, content in uploads.items():
        s3.put_object(Bucket=lake_bucket, Key=key, Body=content)

    result = validate_uploads(Lake(f"s3://{lake_bucket}"), "run1", full_refresh=False, conn_id="aws_default",
                              max_image_bytes=20_000_000, min_image_side=32)

    assert sorted(row["path"].rsplit("/", 1)[1] for row in result.valid) == [
        "cutout.png", "iphone.heic", "photo.jpg", "shared.webp"]
    assert len(result.rejected) == 4
    reads = {key: object_bytes_read.get(key, 0) for key in uploads}
    assert reads["raw/pear/photo.jpg"] == HEADER_BYTES and len(phone_photo_12mp) > 10 * HEADER_BYTES
    assert all(0 < n <= min(HEADER_BYTES, len(uploads[key])) for key, n in reads.items()), reads


@pytest.fixture
def object_reads(aws, monkeypatch):
    """Key -> number of GetObject calls made by anything but the test's clients."""
    from aiobotocore.client import AioBaseClient

    calls: dict[str, int] = {}
    real = AioBaseClient._make_api_call

    async def counted(self, operation, params):
        if operation == "GetObject":
            calls[params["Key"]] = calls.get(params["Key"], 0) + 1
        return await real(self, operation, params)

    monkeypatch.setattr(AioBaseClient, "_make_api_call", counted)
    return calls


def test_what_is_featurized_is_read_from_the_path_column_alone(aws, lake_bucket, object_bytes_read, object_reads):
    """Issue 28: s3fs's 50 MiB read-ahead pulled every feature file whole (1,280 floats a row) to read
    its paths. Now the path column's pages and the footer are all that cross the network."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from fruits_pipeline.ledger import batch_rows

    rows = 2000
    paths = [f"s3://{lake_bucket}/raw/pear/{i}.jpg" for i in range(rows)]
    table = pa.table({"path": paths, "label": ["pear"] * rows,
                      "features": pa.array(list(np.random.default_rng(0).random((rows, 1280), dtype=np.float32)),
                                           type=pa.list_(pa.float32()))})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    data_key = "features/batch=day1/part-00000.parquet"
    aws["s3"].put_object(Bucket=lake_bucket, Key=data_key, Body=sink.getvalue())
    aws["s3"].put_object(Bucket=lake_bucket, Key="features/batch=day1/_job_result.json", Body=b"{}")

    found = {row["path"] for row in batch_rows(Lake(f"s3://{lake_bucket}"), "day1", "aws_default", committed=True)}

    assert found == set(paths)
    size, path_column = len(sink.getvalue()), pq.ParquetFile(io.BytesIO(sink.getvalue())).metadata.row_group(0).column(0)
    assert size > 10_000_000
    assert object_bytes_read[data_key] < path_column.total_compressed_size + 256 * 1024, (object_bytes_read[data_key], size)
    assert object_reads[data_key] <= 3, object_reads
