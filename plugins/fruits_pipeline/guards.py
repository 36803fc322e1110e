"""GDPR guard run before a cluster is created: the bucket itself is in the EU region and encrypted."""
from __future__ import annotations

from fruits_pipeline.settings import check_eu_region


class BucketGuardError(RuntimeError):
    """The bucket breaks the data-protection rules; the message names the bucket and the fix."""


def bucket_region(location_constraint: str | None) -> str:
    # GetBucketLocation answers None for us-east-1 and "EU" for old eu-west-1 buckets.
    if not location_constraint:
        return "us-east-1"
    return "eu-west-1" if location_constraint == "EU" else location_constraint


def check_bucket(s3_client, bucket: str, region: str) -> dict:
    """Raise BucketGuardError unless ``bucket`` is in ``region`` (an EU region) with default encryption."""
    check_eu_region(region)
    actual = bucket_region(s3_client.get_bucket_location(Bucket=bucket).get("LocationConstraint"))
    if actual != region:
        raise BucketGuardError(
            f"bucket {bucket!r} is in {actual}, not in FRUITS_REGION={region}: images must stay in the EU "
            f"region the cluster runs in. Fix: use a bucket created in {region} (make infra) and point "
            f"FRUITS_LAKE_URI at it."
        )
    try:
        rules = s3_client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    except s3_client.exceptions.ClientError as error:
        if error.response.get("Error", {}).get("Code") != "ServerSideEncryptionConfigurationNotFoundError":
            raise
        rules = []
    algorithms = [r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules]
    if not any(algorithms):
        raise BucketGuardError(
            f"bucket {bucket!r} has no default encryption: no cluster is created. Fix: run `make infra` "
            f"(default SSE-KMS with the project key) or `aws s3api put-bucket-encryption --bucket {bucket} ...`."
        )
    return {"bucket": bucket, "region": actual, "encryption": algorithms}


def check_network_settings(settings) -> None:
    """Refuse to plan a cluster that EMR could not start: AmazonEMRServicePolicy_v2 acts only on subnets
    (and their VPC's security groups) tagged for-use-with-amazon-emr-managed-policies=true, and without a
    subnet EMR picks the account's default one, which is untagged."""
    from fruits_pipeline.settings import SettingsError

    if not settings.emr_subnet_id:
        raise SettingsError(
            "FRUITS_EMR_SUBNET_ID is not set: EMR would use the default subnet, which AmazonEMRServicePolicy_v2 "
            "may not use (it acts only on subnets tagged for-use-with-amazon-emr-managed-policies=true). "
            "Fix: `make infra INFRA_ARGS=\"provision --subnet subnet-...\"` tags the subnet and its VPC, then set "
            "FRUITS_EMR_SUBNET_ID to it (docs/emr.md)."
        )
