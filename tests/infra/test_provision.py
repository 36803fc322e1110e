"""Provisioning and audit against moto: from scratch, idempotent rerun, every kind of drift."""
from __future__ import annotations

import json

import boto3
import pytest

from infra_testing import BUCKET, REGION
from fruits_infra.cli import main
from fruits_infra.policies import render
from fruits_infra.provision import InfraConfig, InfraError, audit, provision
from fruits_pipeline.settings import Settings, SettingsError


def _key_arn(clients) -> str:
    alias = next(a for a in clients.kms.list_aliases()["Aliases"] if a["AliasName"] == "alias/fruits-pipeline")
    return clients.kms.describe_key(KeyId=alias["TargetKeyId"])["KeyMetadata"]["Arn"]


def _inline(clients, role: str) -> dict:
    document = clients.iam.get_role_policy(RoleName=role, PolicyName="fruits-pipeline")["PolicyDocument"]
    return json.loads(document) if isinstance(document, str) else document


def test_provision_from_scratch_sets_every_protection(clients, config):
    report = provision(config, clients)
    # everything is created, except the existing subnet and VPC, which get the managed-policy tag
    assert {c.status for c in report.changes if not c.resource.startswith("network")} == {"created"}
    assert {c.status for c in report.changes if c.resource.startswith("network")} == {"created", "updated"}
    s3 = clients.s3
    key_arn = _key_arn(clients)
    assert key_arn.startswith(f"arn:aws:kms:{REGION}:")
    assert clients.kms.get_key_rotation_status(KeyId=key_arn)["KeyRotationEnabled"]

    assert s3.get_bucket_location(Bucket=BUCKET)["LocationConstraint"] == REGION
    (rule,) = s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"]["Rules"]
    assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
    assert s3.get_public_access_block(Bucket=BUCKET)["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
    }
    (deny,) = json.loads(s3.get_bucket_policy(Bucket=BUCKET)["Policy"])["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert s3.get_bucket_versioning(Bucket=BUCKET)["Status"] == "Enabled"
    rules = {r["ID"]: r for r in s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]}
    assert rules["expire-logs"]["Filter"] == {"Prefix": "logs/"}
    assert rules["expire-logs"]["Expiration"] == {"Days": 14}

    security = json.loads(
        clients.emr.describe_security_configuration(Name="fruits-pipeline")["SecurityConfiguration"]
    )
    at_rest = security["EncryptionConfiguration"]["AtRestEncryptionConfiguration"]
    assert at_rest["S3EncryptionConfiguration"] == {"EncryptionMode": "SSE-KMS", "AwsKmsKey": key_arn}
    assert at_rest["LocalDiskEncryptionConfiguration"] == {
        "EncryptionKeyProviderType": "AwsKms", "AwsKmsKey": key_arn, "EnableEbsEncryption": True,
    }
    assert security["EncryptionConfiguration"]["EnableAtRestEncryption"] is True
    assert security["EncryptionConfiguration"]["EnableInTransitEncryption"] is False  # no certificate bundle given
    assert security["InstanceMetadataServiceConfiguration"]["MinimumInstanceMetadataServiceVersion"] == 2

    settings = config.settings
    attached = clients.iam.list_attached_role_policies(RoleName=settings.emr_service_role)["AttachedPolicies"]
    assert [p["PolicyName"] for p in attached] == ["AmazonEMRServicePolicy_v2"]
    instance_policy = json.dumps(_inline(clients, settings.emr_instance_profile))
    assert f"arn:aws:s3:::{BUCKET}/raw/*" in instance_policy and key_arn in instance_policy
    profile = clients.iam.get_instance_profile(InstanceProfileName=settings.emr_instance_profile)["InstanceProfile"]
    assert [r["RoleName"] for r in profile["Roles"]] == [settings.emr_instance_profile]
    airflow_policy = json.dumps(_inline(clients, "fruits-airflow"))
    assert f"arn:aws:iam::123456789012:role/{settings.emr_service_role}" in airflow_policy
    assert "aws:RequestedRegion" in airflow_policy and key_arn in airflow_policy
    assert audit(config, clients) == []


def _state(clients) -> dict:
    s3, iam = clients.s3, clients.iam
    return {
        "keys": [k["KeyId"] for k in clients.kms.list_keys()["Keys"]],
        "encryption": s3.get_bucket_encryption(Bucket=BUCKET)["ServerSideEncryptionConfiguration"],
        "policy": s3.get_bucket_policy(Bucket=BUCKET)["Policy"],
        "lifecycle": s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"],
        "security": clients.emr.describe_security_configuration(Name="fruits-pipeline")["SecurityConfiguration"],
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "inline": [_inline(clients, r) for r in ("fruits-emr-service-role", "fruits-emr-instance-profile", "fruits-airflow")],
    }


def test_second_run_reports_unchanged_and_changes_nothing(clients, config, capsys):
    provision(config, clients)
    before = _state(clients)
    capsys.readouterr()
    report = provision(config, clients)
    assert report.changes and {c.status for c in report.changes} == {"unchanged"}
    assert not report.changed
    assert _state(clients) == before
    assert "created" not in capsys.readouterr().out


def _open_public_access(c):
    c.s3.put_public_access_block(
        Bucket=BUCKET,
        PublicAccessBlockConfiguration={"BlockPublicAcls": True, "IgnorePublicAcls": True,
                                        "BlockPublicPolicy": False, "RestrictPublicBuckets": False},
    )


def _other_key(c):
    other = c.kms.create_key(Description="someone else's key")["KeyMetadata"]["Arn"]
    c.s3.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {
            "SSEAlgorithm": "aws:kms", "KMSMasterKeyID": other}}]},
    )


def _sse_s3(c):
    c.s3.put_bucket_encryption(
        Bucket=BUCKET,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )


def _no_imdsv2(c):
    current = json.loads(c.emr.describe_security_configuration(Name="fruits-pipeline")["SecurityConfiguration"])
    del current["InstanceMetadataServiceConfiguration"]
    c.emr.delete_security_configuration(Name="fruits-pipeline")
    c.emr.create_security_configuration(Name="fruits-pipeline", SecurityConfiguration=json.dumps(current))


def _admin_attached(c):
    c.iam.attach_role_policy(RoleName="fruits-airflow", PolicyArn="arn:aws:iam::aws:policy/AdministratorAccess")


def _extra_inline(c):
    c.iam.put_role_policy(
        RoleName="fruits-emr-instance-profile", PolicyName="debug",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}),
    )


def _broadened_inline(c):
    document = _inline(c, "fruits-emr-instance-profile")
    document["Statement"][1]["Resource"] = "arn:aws:s3:::*"
    c.iam.put_role_policy(RoleName="fruits-emr-instance-profile", PolicyName="fruits-pipeline",
                          PolicyDocument=json.dumps(document))


def _open_trust(c):
    c.iam.update_assume_role_policy(RoleName="fruits-airflow", PolicyDocument=json.dumps({
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::999999999999:root"},
                       "Action": "sts:AssumeRole"}]}))


def _open_queue(clients):
    url = clients.sqs.get_queue_url(QueueName="fruits-uploads")["QueueUrl"]
    clients.sqs.set_queue_attributes(QueueUrl=url, Attributes={"Policy": json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": "*", "Action": "sqs:SendMessage",
                                                "Resource": "*"}]})})


DRIFTS = {
    "public access open": (_open_public_access, "public access is not fully blocked (BlockPublicPolicy, RestrictPublicBuckets off)"),
    "encryption off": (lambda c: c.s3.delete_bucket_encryption(Bucket=BUCKET), "default encryption is off"),
    "encryption SSE-S3": (_sse_s3, "default encryption is AES256"),
    "encryption with another key": (_other_key, "not SSE-KMS with alias/fruits-pipeline"),
    "versioning suspended": (lambda c: c.s3.put_bucket_versioning(
        Bucket=BUCKET, VersioningConfiguration={"Status": "Suspended"}), "versioning is Suspended"),
    "TLS deny removed": (lambda c: c.s3.delete_bucket_policy(Bucket=BUCKET), "does not deny non-TLS requests"),
    "lifecycle removed": (lambda c: c.s3.delete_bucket_lifecycle(Bucket=BUCKET), "is missing"),
    "log retention changed": (lambda c: c.s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={
        "Rules": [{**r, "Expiration": {"Days": 3650}} if r["ID"] == "expire-logs" else r
                  for r in c.s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]]}),
        "lifecycle rule expire-logs differs: Expiration.Days: expected 14, found 3650"),
    "IMDSv2 not required": (_no_imdsv2, "InstanceMetadataServiceConfiguration: expected"),
    "key rotation off": (lambda c: c.kms.disable_key_rotation(KeyId=_key_arn(c)), "automatic rotation is off"),
    "admin policy attached": (_admin_attached, "attached policy arn:aws:iam::aws:policy/AdministratorAccess is not in the documents"),
    "extra inline policy": (_extra_inline, "inline policy debug is not in the documents (grants more)"),
    "inline policy broadened": (_broadened_inline, "inline policy fruits-pipeline differs from the document"),
    "trust opened to another account": (_open_trust, "iam role fruits-airflow: trust policy differs"),
    "upload notifications removed": (lambda c: c.s3.put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={}), "notification fruits-uploads-"),
    "upload queue opened to anyone": (_open_queue, "sqs queue fruits-uploads: Policy is"),
}


def test_new_uploads_notify_the_queue_it_provisions_and_nothing_else_does(clients, config):
    """S3 (moto emulates its notifications) tells the queue of each object created under raw/ and uploads/;
    the queue keeps a message as long as the ledger's redelivery window and hands an unreadable one to
    its dead-letter queue; only the bucket may send to it, and the Airflow role may only drain it."""
    from fruits_contract.lake import Lake, REDELIVERY_WINDOW_DAYS
    from fruits_pipeline.upload_events import arrivals_of

    provision(config, clients)
    sqs, url = clients.sqs, clients.sqs.get_queue_url(QueueName="fruits-uploads")["QueueUrl"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert int(attributes["MessageRetentionPeriod"]) == REDELIVERY_WINDOW_DAYS * 86_400
    assert json.loads(attributes["RedrivePolicy"])["deadLetterTargetArn"].endswith(":fruits-uploads-dead-letter")
    (statement,) = json.loads(attributes["Policy"])["Statement"]
    assert statement["Principal"] == {"Service": "s3.amazonaws.com"}
    assert statement["Condition"]["ArnEquals"] == {"aws:SourceArn": f"arn:aws:s3:::{BUCKET}"}
    drain = [s for s in _inline(clients, "fruits-airflow")["Statement"] if s.get("Sid") == "DrainTheUploadQueue"]
    assert drain[0]["Action"] == ["sqs:ReceiveMessage", "sqs:DeleteMessage"]

    sqs.purge_queue(QueueUrl=url)  # S3's test event
    # moto takes the in-process client's requests for plain HTTP, which the bucket policy denies
    clients.s3.delete_bucket_policy(Bucket=BUCKET)
    for key in ("raw/Kiwi/k 1.jpg", "uploads/2026-12-07/u1/a.heic", "reports/r.json", "ledger/done/x.parquet"):
        clients.s3.put_object(Bucket=BUCKET, Key=key, Body=b"photo")
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    paths = sorted(a.path for m in messages for a in arrivals_of(m["Body"], Lake(f"s3://{BUCKET}"))[0])
    assert paths == [f"s3://{BUCKET}/raw/Kiwi/k 1.jpg", f"s3://{BUCKET}/uploads/2026-12-07/u1/a.heic"]


@pytest.mark.parametrize("drift", sorted(DRIFTS))
def test_audit_lists_each_drift_and_provision_repairs_it(drift, clients, config):
    make_drift, expected = DRIFTS[drift]
    provision(config, clients)
    make_drift(clients)
    deviations = audit(config, clients)
    assert deviations and all(expected in d for d in deviations), deviations
    repaired = provision(config, clients)
    assert repaired.changed
    assert audit(config, clients) == []


def test_audit_changes_nothing(clients, config):
    provision(config, clients)
    _admin_attached(clients)
    clients.s3.delete_bucket_policy(Bucket=BUCKET)
    assert len(audit(config, clients)) == 2
    assert len(audit(config, clients)) == 2  # still there: the audit repaired nothing


def test_bucket_outside_the_eu_is_reported_and_never_adopted(clients, config):
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    assert any("outside the EU" in d for d in audit(config, clients))
    with pytest.raises(InfraError, match=f"s3://{BUCKET} already exists in us-east-1, outside the EU"):
        provision(config, clients)


def test_non_eu_region_is_refused_before_any_aws_call(aws, capsys):
    with pytest.raises(SettingsError, match="us-east-1"):
        InfraConfig(Settings(lake_uri=f"s3://{BUCKET}", region="us-east-1"))
    assert main(["provision", "--lake", f"s3://{BUCKET}", "--region", "us-east-1"]) == 2
    assert "refused" in capsys.readouterr().err
    assert boto3.client("s3", region_name="us-east-1").list_buckets()["Buckets"] == []


def test_tls_certificate_bundle_turns_on_in_transit_encryption(clients):
    config = InfraConfig(Settings(lake_uri=f"s3://{BUCKET}", region=REGION),
                         tls_certificates_uri=f"s3://{BUCKET}/code/certs.zip")
    provision(config, clients)
    security = json.loads(clients.emr.describe_security_configuration(Name="fruits-pipeline")["SecurityConfiguration"])
    encryption = security["EncryptionConfiguration"]
    assert encryption["EnableInTransitEncryption"] is True
    assert encryption["InTransitEncryptionConfiguration"]["TLSCertificateConfiguration"] == {
        "CertificateProviderType": "PEM", "S3Object": f"s3://{BUCKET}/code/certs.zip"}


def test_cli_provision_then_check_exit_codes(subnet, capsys):
    args = ["--lake", f"s3://{BUCKET}", "--region", REGION, "--subnet", subnet]
    assert main(["check", *args]) == 1
    assert "bucket missing" in capsys.readouterr().out
    assert main(["provision", *args]) == 0
    assert main(["provision", *args]) == 0
    assert "Nothing changed" in capsys.readouterr().out
    assert main(["check", *args]) == 0
    boto3.client("s3", region_name=REGION).delete_public_access_block(Bucket=BUCKET)
    assert main(["check", *args]) == 1
    out = capsys.readouterr().out
    assert "DEVIATION s3://fruits-lake-test: public access is not fully blocked" in out


def test_bucket_policy_document_is_what_the_bucket_holds(clients, config):
    provision(config, clients)
    held = json.loads(clients.s3.get_bucket_policy(Bucket=BUCKET)["Policy"])
    assert held == render("bucket_policy", __import__("fruits_infra.provision", fromlist=["x"])._bucket_only_context(config))
