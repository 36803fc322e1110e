"""Idempotent provisioning and read-only audit of the lake's AWS resources.

Every function takes boto3 clients made for one explicit EU region. ``provision`` reports
each resource as created / updated / unchanged; ``audit`` changes nothing and returns the
deviations from what ``provision`` would set.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import boto3
from botocore.exceptions import ClientError

from fruits_pipeline.settings import EU_REGIONS, Settings, check_eu_region

from fruits_infra.network import NetworkError, describe_network, ensure_network, network_deviations
from fruits_infra.upload_queue import ensure_upload_queue, upload_queue_deviations
from fruits_infra.policies import PROJECT_TAG, PolicyContext, RoleSpec, canonical, render, role_specs

DEFAULT_KEY_ALIAS = "alias/fruits-pipeline"
DEFAULT_AIRFLOW_ROLE = "fruits-airflow"
LOGS_RULE_ID = "expire-logs"
NONCURRENT_RULE_ID = "expire-noncurrent-versions"
PUBLIC_ACCESS_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}


class InfraError(RuntimeError):
    """Provisioning cannot go on; the message names the resource and the fix."""


@dataclass(frozen=True)
class InfraConfig:
    settings: Settings
    log_retention_days: int = 30
    noncurrent_version_days: int = 30
    tls_certificates_uri: str | None = None  # s3://.../certs.zip (PEM bundle) enables in-transit TLS
    key_alias: str = DEFAULT_KEY_ALIAS
    airflow_role: str = DEFAULT_AIRFLOW_ROLE
    airflow_principal: str | None = None  # default: the account root (any IAM principal it allows)

    def __post_init__(self):
        check_eu_region(self.settings.region)
        if self.settings.lake.scheme != "s3":
            raise InfraError(
                f"FRUITS_LAKE_URI={self.settings.lake_uri!r} is not an S3 lake: provisioning needs s3://bucket[/prefix]"
            )
        for name in ("log_retention_days", "noncurrent_version_days"):
            if getattr(self, name) < 1:
                raise InfraError(f"{name}={getattr(self, name)} must be at least 1 day")
        if self.tls_certificates_uri and not self.tls_certificates_uri.startswith("s3://"):
            raise InfraError(f"--tls-certificates {self.tls_certificates_uri!r} must be an s3:// URI of a PEM zip bundle")
        if not self.key_alias.startswith("alias/"):
            raise InfraError(f"--key-alias {self.key_alias!r} must start with alias/")

    @property
    def region(self) -> str:
        return self.settings.region

    @property
    def bucket(self) -> str:
        return self.settings.lake.bucket

    @property
    def prefix(self) -> str:
        """The lake's key prefix inside the bucket ("" for a whole-bucket lake)."""
        path = self.settings.lake_uri.split("://", 1)[1].partition("/")[2].strip("/")
        return f"{path}/" if path else ""

    @property
    def security_groups(self) -> list[str]:
        s = self.settings
        return [g for g in (s.emr_master_security_group, s.emr_core_security_group,
                            s.emr_service_access_security_group) if g]


@dataclass
class Clients:
    s3: object
    kms: object
    iam: object
    emr: object
    sts: object
    ec2: object
    sqs: object = None

    @classmethod
    def for_region(cls, region: str, session: boto3.Session | None = None, endpoint_url: str | None = None) -> "Clients":
        session = session or boto3.Session()
        return cls(
            **{
                name: session.client(name, region_name=region, endpoint_url=endpoint_url)
                for name in ("s3", "kms", "iam", "emr", "sts", "ec2", "sqs")
            }
        )


@dataclass
class Change:
    resource: str
    status: str  # created | updated | unchanged
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.resource}: {self.status}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class Report:
    changes: list[Change] = field(default_factory=list)

    def add(self, resource: str, status: str, detail: str = "") -> None:
        change = Change(resource, status, detail)
        self.changes.append(change)
        print(change, flush=True)

    @property
    def changed(self) -> bool:
        return any(c.status != "unchanged" for c in self.changes)


def _code(error: ClientError) -> str:
    return error.response.get("Error", {}).get("Code", "")


# ---------------------------------------------------------------- desired state

def desired_encryption(key_arn: str) -> dict:
    return {
        "Rules": [
            {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
                "BucketKeyEnabled": True,
            }
        ]
    }


def desired_lifecycle_rules(config: InfraConfig) -> list[dict]:
    return [
        {
            "ID": LOGS_RULE_ID,
            "Filter": {"Prefix": f"{config.prefix}logs/"},
            "Status": "Enabled",
            "Expiration": {"Days": config.log_retention_days},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        },
        {
            # Overwritten outputs keep old versions; they must not outlive the retention period.
            "ID": NONCURRENT_RULE_ID,
            "Filter": {"Prefix": config.prefix},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": config.noncurrent_version_days},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 7},
        },
    ]


def desired_security_configuration(config: InfraConfig, key_arn: str) -> dict:
    encryption = {
        "EnableAtRestEncryption": True,
        "EnableInTransitEncryption": bool(config.tls_certificates_uri),
        "AtRestEncryptionConfiguration": {
            "S3EncryptionConfiguration": {"EncryptionMode": "SSE-KMS", "AwsKmsKey": key_arn},
            "LocalDiskEncryptionConfiguration": {
                "EncryptionKeyProviderType": "AwsKms",
                "AwsKmsKey": key_arn,
                "EnableEbsEncryption": True,
            },
        },
    }
    if config.tls_certificates_uri:
        encryption["InTransitEncryptionConfiguration"] = {
            "TLSCertificateConfiguration": {"CertificateProviderType": "PEM", "S3Object": config.tls_certificates_uri}
        }
    return {
        "EncryptionConfiguration": encryption,
        "InstanceMetadataServiceConfiguration": {"MinimumInstanceMetadataServiceVersion": 2, "HttpPutResponseHopLimit": 1},
    }


def policy_context(config: InfraConfig, account: str, key_arn: str) -> PolicyContext:
    return PolicyContext(
        account=account,
        region=config.region,
        bucket=config.bucket,
        prefix=config.prefix,
        key_arn=key_arn,
        service_role=config.settings.emr_service_role,
        instance_role=config.settings.emr_instance_profile,
        airflow_role=config.airflow_role,
        airflow_principal=config.airflow_principal or f"arn:aws:iam::{account}:root",
    )


# ---------------------------------------------------------------- reading current state

def bucket_region(s3, bucket: str) -> str | None:
    """The bucket's region, or None when it does not exist (or is not ours)."""
    try:
        location = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint")
    except ClientError as error:
        if _code(error) in ("NoSuchBucket", "404", "AccessDenied", "403"):
            return None
        raise
    return location or "us-east-1"


def find_key(kms, alias: str) -> dict | None:
    """The key behind ``alias`` in this client's region (KeyMetadata), or None."""
    for page in kms.get_paginator("list_aliases").paginate():
        for entry in page["Aliases"]:
            if entry["AliasName"] == alias and entry.get("TargetKeyId"):
                return kms.describe_key(KeyId=entry["TargetKeyId"])["KeyMetadata"]
    return None


def current_encryption(s3, bucket: str) -> dict | None:
    try:
        return s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]
    except ClientError as error:
        if _code(error) == "ServerSideEncryptionConfigurationNotFoundError":
            return None
        raise


def _encryption_matches(current: dict | None, key: dict) -> bool:
    if not current or not current.get("Rules"):
        return False
    default = current["Rules"][0].get("ApplyServerSideEncryptionByDefault", {})
    return default.get("SSEAlgorithm") == "aws:kms" and default.get("KMSMasterKeyID") in (key["Arn"], key["KeyId"])


def current_public_access_block(s3, bucket: str) -> dict:
    try:
        return s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]
    except ClientError as error:
        if _code(error) == "NoSuchPublicAccessBlockConfiguration":
            return {}
        raise


def current_bucket_policy(s3, bucket: str) -> dict | None:
    try:
        return json.loads(s3.get_bucket_policy(Bucket=bucket)["Policy"])
    except ClientError as error:
        if _code(error) == "NoSuchBucketPolicy":
            return None
        raise


def denies_insecure_transport(policy: dict | None, bucket: str) -> bool:
    for statement in (policy or {}).get("Statement", []):
        condition = statement.get("Condition", {}).get("Bool", {})
        resources = statement.get("Resource", [])
        resources = [resources] if isinstance(resources, str) else resources
        if (
            statement.get("Effect") == "Deny"
            and statement.get("Principal") in ("*", {"AWS": "*"})
            and str(condition.get("aws:SecureTransport", "")).lower() == "false"
            and f"arn:aws:s3:::{bucket}/*" in resources
        ):
            return True
    return False


def current_lifecycle_rules(s3, bucket: str) -> list[dict]:
    try:
        return s3.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    except ClientError as error:
        if _code(error) == "NoSuchLifecycleConfiguration":
            return []
        raise


def _rule_matches(current: dict | None, desired: dict) -> bool:
    if current is None:
        return False
    current = dict(current)
    if current.get("Filter") in ({}, None) and "Prefix" in current:  # the older spelling of the same filter
        current["Filter"] = {"Prefix": current["Prefix"]}
    if current.get("Filter") == {}:  # S3 may return an empty filter for the whole bucket
        current["Filter"] = {"Prefix": ""}
    return all(current.get(k) == v for k, v in desired.items())


def current_security_configuration(emr, name: str) -> dict | None:
    try:
        return json.loads(emr.describe_security_configuration(Name=name)["SecurityConfiguration"])
    except ClientError as error:
        if _code(error) in ("InvalidRequestException", "ResourceNotFoundException"):
            return None
        raise


def differences(desired, current, path: str = "") -> list[str]:
    """Where ``current`` differs from ``desired``, one line per leaf."""
    if isinstance(desired, dict) and isinstance(current, dict):
        found = []
        for key in sorted(set(desired) | set(current)):
            found += differences(desired.get(key), current.get(key), f"{path}.{key}" if path else key)
        return found
    if desired != current:
        return [f"{path}: expected {json.dumps(desired)}, found {json.dumps(current)}"]
    return []


# ---------------------------------------------------------------- provisioning

def ensure_bucket(clients: Clients, config: InfraConfig, report: Report) -> None:
    region = bucket_region(clients.s3, config.bucket)
    if region is None:
        try:
            clients.s3.create_bucket(
                Bucket=config.bucket, CreateBucketConfiguration={"LocationConstraint": config.region}
            )
        except ClientError as error:
            if _code(error) == "BucketAlreadyExists":
                raise InfraError(
                    f"bucket name {config.bucket!r} is taken by another AWS account: choose another name in FRUITS_LAKE_URI"
                ) from None
            raise
        clients.s3.put_bucket_tagging(Bucket=config.bucket, Tagging={"TagSet": [{"Key": "project", "Value": PROJECT_TAG}]})
        report.add(f"bucket s3://{config.bucket}", "created", config.region)
    elif region != config.region:
        where = "outside the EU" if region not in EU_REGIONS else f"not in FRUITS_REGION={config.region}"
        raise InfraError(
            f"bucket s3://{config.bucket} already exists in {region}, {where}: a bucket cannot move. "
            f"Create a new bucket in {config.region}, copy the data, and point FRUITS_LAKE_URI at it."
        )
    else:
        report.add(f"bucket s3://{config.bucket}", "unchanged", region)


def ensure_key(clients: Clients, config: InfraConfig, report: Report) -> dict:
    key = find_key(clients.kms, config.key_alias)
    name = f"kms key {config.key_alias}"
    if key is None:
        key = clients.kms.create_key(
            Description=f"Fruits pipeline lake s3://{config.bucket} (images and derived data)",
            KeyUsage="ENCRYPT_DECRYPT",
            Tags=[{"TagKey": "project", "TagValue": PROJECT_TAG}],
        )["KeyMetadata"]
        clients.kms.create_alias(AliasName=config.key_alias, TargetKeyId=key["KeyId"])
        clients.kms.enable_key_rotation(KeyId=key["KeyId"])
        report.add(name, "created", key["Arn"])
        return key
    if key.get("KeyState") != "Enabled":
        raise InfraError(
            f"{name} ({key['Arn']}) is {key.get('KeyState')}: enable it (kms enable-key / cancel-key-deletion) "
            "or give another --key-alias; data encrypted with it is unreadable until then"
        )
    if not clients.kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]:
        clients.kms.enable_key_rotation(KeyId=key["KeyId"])
        report.add(name, "updated", "rotation enabled")
    else:
        report.add(name, "unchanged", key["Arn"])
    return key


def ensure_bucket_settings(clients: Clients, config: InfraConfig, key: dict, report: Report) -> None:
    s3, bucket = clients.s3, config.bucket
    res = f"s3://{bucket}"

    encryption = current_encryption(s3, bucket)
    if _encryption_matches(encryption, key):
        report.add(f"{res} default encryption", "unchanged", "SSE-KMS with the lake key")
    else:
        s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration=desired_encryption(key["Arn"]))
        report.add(f"{res} default encryption", "created" if encryption is None else "updated", "SSE-KMS with the lake key")

    block = current_public_access_block(s3, bucket)
    if block == PUBLIC_ACCESS_BLOCK:
        report.add(f"{res} block public access", "unchanged", "all four on")
    else:
        s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration=PUBLIC_ACCESS_BLOCK)
        report.add(f"{res} block public access", "created" if not block else "updated", "all four on")

    policy = current_bucket_policy(s3, bucket)
    desired_policy = render("bucket_policy", _bucket_only_context(config))
    if policy is not None and canonical(policy) == canonical(desired_policy):
        report.add(f"{res} bucket policy", "unchanged", "denies non-TLS requests")
    else:
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(desired_policy))
        report.add(f"{res} bucket policy", "created" if policy is None else "updated", "denies non-TLS requests")

    versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
    if versioning == "Enabled":
        report.add(f"{res} versioning", "unchanged", "Enabled")
    else:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        report.add(f"{res} versioning", "created" if versioning is None else "updated", "Enabled")

    rules = current_lifecycle_rules(s3, bucket)
    by_id = {rule.get("ID"): rule for rule in rules}
    desired_rules = desired_lifecycle_rules(config)
    if all(_rule_matches(by_id.get(rule["ID"]), rule) for rule in desired_rules):
        report.add(f"{res} lifecycle", "unchanged", f"logs/ expire after {config.log_retention_days} days")
    else:
        ours = {rule["ID"] for rule in desired_rules}
        kept = [rule for rule in rules if rule.get("ID") not in ours]
        s3.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": kept + desired_rules})
        report.add(
            f"{res} lifecycle", "created" if not rules else "updated", f"logs/ expire after {config.log_retention_days} days"
        )


def _bucket_only_context(config: InfraConfig) -> PolicyContext:
    return PolicyContext("", config.region, config.bucket, config.prefix, "", "", "", "", "")


def ensure_security_configuration(clients: Clients, config: InfraConfig, key: dict, report: Report) -> None:
    name = config.settings.emr_security_configuration
    desired = desired_security_configuration(config, key["Arn"])
    current = current_security_configuration(clients.emr, name)
    resource = f"emr security configuration {name}"
    if current == desired:
        report.add(resource, "unchanged")
        return
    if current is not None:
        # Security configurations are immutable; clusters keep the copy they started with.
        clients.emr.delete_security_configuration(Name=name)
    clients.emr.create_security_configuration(Name=name, SecurityConfiguration=json.dumps(desired))
    report.add(resource, "created" if current is None else "updated")


def _get_role(iam, name: str) -> dict | None:
    try:
        return iam.get_role(RoleName=name)["Role"]
    except ClientError as error:
        if _code(error) == "NoSuchEntity":
            return None
        raise


def _inline_policies(iam, name: str) -> dict[str, dict]:
    names = [n for page in iam.get_paginator("list_role_policies").paginate(RoleName=name) for n in page["PolicyNames"]]
    return {n: iam.get_role_policy(RoleName=name, PolicyName=n)["PolicyDocument"] for n in names}


def _attached_policies(iam, name: str) -> set[str]:
    pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
    return {p["PolicyArn"] for page in pages for p in page["AttachedPolicies"]}


def _instance_profile_roles(iam, name: str) -> list[str] | None:
    try:
        return [r["RoleName"] for r in iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Roles"]]
    except ClientError as error:
        if _code(error) == "NoSuchEntity":
            return None
        raise


def ensure_role(iam, spec: RoleSpec, report: Report) -> None:
    resource = f"iam role {spec.name}"
    role = _get_role(iam, spec.name)
    if role is None:
        iam.create_role(
            RoleName=spec.name,
            AssumeRolePolicyDocument=json.dumps(spec.trust),
            Tags=[{"Key": "project", "Value": PROJECT_TAG}],
        )
        for policy_name, document in spec.inline.items():
            iam.put_role_policy(RoleName=spec.name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
        for arn in sorted(spec.managed):
            iam.attach_role_policy(RoleName=spec.name, PolicyArn=arn)
        report.add(resource, "created")
    else:
        fixes = []
        if canonical(role["AssumeRolePolicyDocument"]) != canonical(spec.trust):
            iam.update_assume_role_policy(RoleName=spec.name, PolicyDocument=json.dumps(spec.trust))
            fixes.append("trust policy")
        inline = _inline_policies(iam, spec.name)
        for policy_name in sorted(set(inline) - set(spec.inline)):
            iam.delete_role_policy(RoleName=spec.name, PolicyName=policy_name)
            fixes.append(f"removed inline {policy_name}")
        for policy_name, document in spec.inline.items():
            if policy_name not in inline or canonical(inline[policy_name]) != canonical(document):
                iam.put_role_policy(RoleName=spec.name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
                fixes.append(f"inline {policy_name}")
        attached = _attached_policies(iam, spec.name)
        for arn in sorted(attached - spec.managed):
            iam.detach_role_policy(RoleName=spec.name, PolicyArn=arn)
            fixes.append(f"detached {arn}")
        for arn in sorted(spec.managed - attached):
            iam.attach_role_policy(RoleName=spec.name, PolicyArn=arn)
            fixes.append(f"attached {arn}")
        report.add(resource, "updated" if fixes else "unchanged", ", ".join(fixes))

    if spec.instance_profile:
        resource = f"iam instance profile {spec.instance_profile}"
        roles = _instance_profile_roles(iam, spec.instance_profile)
        if roles is None:
            iam.create_instance_profile(InstanceProfileName=spec.instance_profile)
            iam.add_role_to_instance_profile(InstanceProfileName=spec.instance_profile, RoleName=spec.name)
            report.add(resource, "created", f"role {spec.name}")
        elif roles == [spec.name]:
            report.add(resource, "unchanged", f"role {spec.name}")
        else:
            for other in roles:
                if other != spec.name:
                    iam.remove_role_from_instance_profile(InstanceProfileName=spec.instance_profile, RoleName=other)
            if spec.name not in roles:
                iam.add_role_to_instance_profile(InstanceProfileName=spec.instance_profile, RoleName=spec.name)
            report.add(resource, "updated", f"role {spec.name}")


def provision(config: InfraConfig, clients: Clients) -> Report:
    """Create or correct every resource; a second run reports everything unchanged."""
    report = Report()
    ensure_bucket(clients, config, report)
    key = ensure_key(clients, config, report)
    ensure_bucket_settings(clients, config, key, report)
    ensure_security_configuration(clients, config, key, report)
    if config.settings.emr_subnet_id:
        try:
            ensure_network(clients.ec2, config.region, config.settings.emr_subnet_id, config.security_groups, report)
        except NetworkError as error:
            raise InfraError(str(error)) from None
    else:
        print("network: skipped, FRUITS_EMR_SUBNET_ID (--subnet) not given; `check` reports it", flush=True)
    account = clients.sts.get_caller_identity()["Account"]
    context = policy_context(config, account, key["Arn"])
    queue_url = ensure_upload_queue(clients.sqs, clients.s3, context, report)
    print(f"upload queue: set FRUITS_UPLOAD_QUEUE_URL={queue_url} on the Airflow workers", flush=True)
    for spec in role_specs(context):
        ensure_role(clients.iam, spec, report)
    return report


# ---------------------------------------------------------------- audit

def audit(config: InfraConfig, clients: Clients) -> list[str]:
    """Every deviation from what ``provision`` sets, without changing anything."""
    s3, bucket = clients.s3, config.bucket
    res = f"s3://{bucket}"
    deviations: list[str] = []

    key = find_key(clients.kms, config.key_alias)
    if key is None:
        deviations.append(f"kms key {config.key_alias}: missing in {config.region}")
    else:
        if key.get("KeyState") != "Enabled":
            deviations.append(f"kms key {config.key_alias}: state is {key.get('KeyState')}, not Enabled")
        elif not clients.kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]:
            deviations.append(f"kms key {config.key_alias}: automatic rotation is off")

    region = bucket_region(s3, bucket)
    if region is None:
        deviations.append(f"{res}: bucket missing (or not readable by these credentials)")
    else:
        if region not in EU_REGIONS:
            deviations.append(f"{res}: bucket is in {region}, outside the EU (GDPR)")
        elif region != config.region:
            deviations.append(f"{res}: bucket is in {region}, not in FRUITS_REGION={config.region}")

        encryption = current_encryption(s3, bucket)
        if encryption is None:
            deviations.append(f"{res}: default encryption is off")
        elif key is None or not _encryption_matches(encryption, key):
            default = encryption["Rules"][0].get("ApplyServerSideEncryptionByDefault", {})
            deviations.append(
                f"{res}: default encryption is {default.get('SSEAlgorithm')} with key "
                f"{default.get('KMSMasterKeyID')}, not SSE-KMS with {config.key_alias}"
            )

        block = current_public_access_block(s3, bucket)
        open_settings = [name for name, value in PUBLIC_ACCESS_BLOCK.items() if block.get(name) != value]
        if open_settings:
            deviations.append(f"{res}: public access is not fully blocked ({', '.join(open_settings)} off)")

        policy = current_bucket_policy(s3, bucket)
        if not denies_insecure_transport(policy, bucket):
            deviations.append(f"{res}: bucket policy does not deny non-TLS requests (aws:SecureTransport false)")
        elif canonical(policy) != canonical(render("bucket_policy", _bucket_only_context(config))):
            deviations.append(f"{res}: bucket policy has statements beyond policies/bucket_policy.json")

        versioning = s3.get_bucket_versioning(Bucket=bucket).get("Status")
        if versioning != "Enabled":
            deviations.append(f"{res}: versioning is {versioning or 'never enabled'}, not Enabled")

        by_id = {rule.get("ID"): rule for rule in current_lifecycle_rules(s3, bucket)}
        for rule in desired_lifecycle_rules(config):
            if rule["ID"] not in by_id:
                deviations.append(f"{res}: lifecycle rule {rule['ID']} is missing")
            elif not _rule_matches(by_id[rule["ID"]], rule):
                found = "; ".join(differences(rule, {k: by_id[rule["ID"]].get(k) for k in rule}))
                deviations.append(f"{res}: lifecycle rule {rule['ID']} differs: {found}")

    name = config.settings.emr_security_configuration
    current = current_security_configuration(clients.emr, name)
    if current is None:
        deviations.append(f"emr security configuration {name}: missing in {config.region}")
    elif key is not None:
        for line in differences(desired_security_configuration(config, key["Arn"]), current):
            deviations.append(f"emr security configuration {name}: {line}")

    if not config.settings.emr_subnet_id:
        deviations.append("network: FRUITS_EMR_SUBNET_ID (--subnet) is not set: EMR would use the default subnet, "
                          "which AmazonEMRServicePolicy_v2 cannot use (untagged)")
    else:
        try:
            deviations += network_deviations(describe_network(
                clients.ec2, config.region, config.settings.emr_subnet_id, config.security_groups))
        except NetworkError as error:
            deviations.append(f"network: {error}")

    account = clients.sts.get_caller_identity()["Account"]
    key_arn = key["Arn"] if key else f"arn:aws:kms:{config.region}:{account}:key/<missing>"
    context = policy_context(config, account, key_arn)
    if region is not None:
        deviations += upload_queue_deviations(clients.sqs, s3, context)
    for spec in role_specs(context):
        deviations += audit_role(clients.iam, spec)
    return deviations


def audit_role(iam, spec: RoleSpec) -> list[str]:
    resource = f"iam role {spec.name}"
    role = _get_role(iam, spec.name)
    if role is None:
        return [f"{resource}: missing"]
    found = []
    if canonical(role["AssumeRolePolicyDocument"]) != canonical(spec.trust):
        found.append(f"{resource}: trust policy differs from the document (who may assume it)")
    inline = _inline_policies(iam, spec.name)
    for policy_name in sorted(set(inline) - set(spec.inline)):
        found.append(f"{resource}: inline policy {policy_name} is not in the documents (grants more)")
    for policy_name, document in spec.inline.items():
        if policy_name not in inline:
            found.append(f"{resource}: inline policy {policy_name} is missing")
        elif canonical(inline[policy_name]) != canonical(document):
            found.append(f"{resource}: inline policy {policy_name} differs from the document")
    attached = _attached_policies(iam, spec.name)
    for arn in sorted(attached - spec.managed):
        found.append(f"{resource}: attached policy {arn} is not in the documents (grants more)")
    for arn in sorted(spec.managed - attached):
        found.append(f"{resource}: managed policy {arn} is not attached")
    if spec.instance_profile:
        roles = _instance_profile_roles(iam, spec.instance_profile)
        if roles is None:
            found.append(f"iam instance profile {spec.instance_profile}: missing")
        elif roles != [spec.name]:
            found.append(f"iam instance profile {spec.instance_profile}: holds roles {roles}, expected [{spec.name!r}]")
    return found
