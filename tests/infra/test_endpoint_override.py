"""The CLI against a moto server through --endpoint-url, as it would run against any S3-compatible endpoint."""
from __future__ import annotations

import io
import socket

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from botocore.exceptions import ClientError

from fruits_infra.cli import main
from infra_testing import REGION, make_subnet


@pytest.fixture
def moto_endpoint(monkeypatch, managed_policies_subset):
    import moto.iam.models
    from moto.core.base_backend import BackendDict
    from moto.server import ThreadedMotoServer

    monkeypatch.setattr(moto.iam.models, "aws_managed_policies_data", managed_policies_subset)
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "MOTO_IAM_LOAD_MANAGED_POLICIES": "true"}.items():
        monkeypatch.setenv(name, value)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # A server shares moto's process-wide backends: start from empty ones, so that IAM is created
    # now, with the managed policies asked for above, whatever another test's server left behind.
    BackendDict.reset()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    BackendDict.reset()


def test_provision_check_and_erase_through_an_endpoint(moto_endpoint, capsys):
    lake = "s3://fruits-endpoint-lake"
    common = ["--lake", lake, "--region", REGION, "--endpoint-url", moto_endpoint]
    network = ["--subnet", make_subnet(endpoint_url=moto_endpoint)]
    assert main(["provision", *common, *network]) == 0
    assert main(["check", *common, *network]) == 0
    assert "No deviation" in capsys.readouterr().out

    s3 = boto3.client("s3", region_name=REGION, endpoint_url=moto_endpoint)
    # The endpoint speaks plain HTTP, so the bucket policy's TLS-only rule refuses object requests.
    with pytest.raises(ClientError, match="AccessDenied|Forbidden"):
        s3.put_object(Bucket="fruits-endpoint-lake", Key="raw/Kiwi/k1.jpg", Body=b"jpeg")
    s3.delete_bucket_policy(Bucket="fruits-endpoint-lake")  # the test endpoint has no TLS
    image = f"{lake}/raw/Kiwi/k1.jpg"
    s3.put_object(Bucket="fruits-endpoint-lake", Key="raw/Kiwi/k1.jpg", Body=b"jpeg")
    buffer = io.BytesIO()
    pq.write_table(pa.table({"path": [image, f"{lake}/raw/Kiwi/k2.jpg"], "label": ["Kiwi", "Kiwi"]}), buffer)
    s3.put_object(Bucket="fruits-endpoint-lake", Key="features/batch=r1/part-0.parquet", Body=buffer.getvalue())
    # Objects written after provisioning are encrypted with the lake key by default.
    head = s3.head_object(Bucket="fruits-endpoint-lake", Key="raw/Kiwi/k1.jpg")
    assert head["ServerSideEncryption"] == "aws:kms"

    assert main(["erase", *common, "Kiwi/k1.jpg", "--yes"]) == 0
    assert "Erased 1 raw objects, 1 derived rows in 1 Parquet files." in capsys.readouterr().out
    data = s3.get_object(Bucket="fruits-endpoint-lake", Key="features/batch=r1/part-0.parquet")["Body"].read()
    assert pq.read_table(io.BytesIO(data)).column("path").to_pylist() == [f"{lake}/raw/Kiwi/k2.jpg"]
    versions = s3.list_object_versions(Bucket="fruits-endpoint-lake", Prefix="raw/Kiwi/k1.jpg")
    assert not versions.get("Versions") and not versions.get("DeleteMarkers")

    assert main(["check", *common, *network]) == 1
    assert "does not deny non-TLS requests" in capsys.readouterr().out
    assert main(["provision", *common, *network]) == 0
    assert "bucket policy: created" in capsys.readouterr().out
