"""moto-backed AWS for the infra tests: in-process ``mock_aws``, fake credentials, one EU region."""
from __future__ import annotations

import pytest

REGION = "eu-west-3"
BUCKET = "fruits-lake-test"


@pytest.fixture
def aws(monkeypatch):
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        # AmazonEMRServicePolicy_v2 is an AWS managed policy; moto only knows it when asked to load them.
        "MOTO_IAM_LOAD_MANAGED_POLICIES": "true",
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    with mock_aws():
        yield


@pytest.fixture
def clients(aws):
    from fruits_infra.provision import Clients

    return Clients.for_region(REGION)


@pytest.fixture
def config():
    from fruits_infra.provision import InfraConfig
    from fruits_pipeline.settings import Settings

    return InfraConfig(Settings(lake_uri=f"s3://{BUCKET}", region=REGION), log_retention_days=14)
