"""moto-backed AWS for the infra tests: in-process ``mock_aws``, fake credentials, one EU region."""
from __future__ import annotations

import json

import pytest

from infra_testing import BUCKET, REGION


# The AWS managed policies the tests attach. moto loads all ~1,400 of them into every fresh
# backend (seconds per test); keeping just these keeps moto's real attach/list behaviour.
MANAGED_POLICIES_USED = ("AmazonEMRServicePolicy_v2", "AdministratorAccess")


@pytest.fixture(scope="session")
def managed_policies_subset() -> str:
    from moto.iam.aws_managed_policies import aws_managed_policies_data

    everything = json.loads(aws_managed_policies_data)
    return json.dumps({name: everything[name] for name in MANAGED_POLICIES_USED})


@pytest.fixture
def aws(monkeypatch, managed_policies_subset):
    import moto.iam.models
    from moto import mock_aws

    monkeypatch.setattr(moto.iam.models, "aws_managed_policies_data", managed_policies_subset)

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
def subnet(aws) -> str:
    """A private subnet (its VPC's main route table has no internet gateway route), untagged."""
    from infra_testing import make_subnet

    return make_subnet()


@pytest.fixture
def config(subnet):
    from fruits_infra.provision import InfraConfig
    from fruits_pipeline.settings import Settings

    return InfraConfig(Settings(lake_uri=f"s3://{BUCKET}", region=REGION, emr_subnet_id=subnet), log_retention_days=14)
