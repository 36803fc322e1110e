"""The bucket guard against moto S3: EU region and default encryption, else a message with the fix."""
import boto3
import pytest
from moto import mock_aws

from fruits_pipeline.guards import BucketGuardError, check_bucket
from fruits_pipeline.settings import SettingsError


@pytest.fixture
def s3(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.client("s3", region_name="eu-west-3")


def make_bucket(s3, name, region, encrypted):
    boto3.client("s3", region_name=region).create_bucket(
        Bucket=name, **({} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}))
    if encrypted:
        s3.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "k"}}]})


def test_encrypted_bucket_in_the_region_passes(s3):
    make_bucket(s3, "fruits-ok", "eu-west-3", encrypted=True)
    assert check_bucket(s3, "fruits-ok", "eu-west-3")["encryption"] == ["aws:kms"]


def test_bucket_outside_the_region_is_refused(s3):
    make_bucket(s3, "fruits-us", "us-east-1", encrypted=True)
    with pytest.raises(BucketGuardError, match=r"'fruits-us' is in us-east-1.*Fix"):
        check_bucket(s3, "fruits-us", "eu-west-3")


def test_bucket_without_default_encryption_is_refused(s3):
    # moto applies AES256 by default like AWS does now; remove it to model an old bucket
    make_bucket(s3, "fruits-plain", "eu-west-3", encrypted=False)
    s3.delete_bucket_encryption(Bucket="fruits-plain")
    with pytest.raises(BucketGuardError, match=r"'fruits-plain' has no default encryption.*Fix"):
        check_bucket(s3, "fruits-plain", "eu-west-3")


def test_non_eu_region_is_refused_before_any_call(s3):
    with pytest.raises(SettingsError, match="us-east-1"):
        check_bucket(None, "any", "us-east-1")
