"""Which IAM requests an AWS API call makes, and whether identity policies allow them.

moto can enforce IAM, but it evaluates no resource ARN outside S3 and no condition operator but
StringEquals (a statement with aws:RequestedRegion denies there), so the pipeline's documents are
checked here instead: ``requests_for_call`` turns a recorded call (service, operation, parameters)
into IAM requests (action, resource ARN, condition context) after AWS's Service Authorization
Reference, and ``evaluate`` applies identity policies the way IAM does for one account (explicit
deny wins, then any allow; no allow is an implicit deny). An operation it does not know raises
``UnmappedCall``: a new call must be mapped, never passed silently.
"""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field


class UnmappedCall(LookupError):
    pass


@dataclass(frozen=True)
class Request:
    action: str
    resource: str
    context: dict = field(default_factory=dict, hash=False, compare=False)

    def __str__(self) -> str:
        return f"{self.action} on {self.resource}"


# ---------------------------------------------------------------- calls -> requests

S3_OBJECT_ACTIONS = {
    "GetObject": "s3:GetObject", "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject", "CreateMultipartUpload": "s3:PutObject", "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject", "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "DeleteObject": "s3:DeleteObject", "ListParts": "s3:ListMultipartUploadParts",
}
S3_BUCKET_ACTIONS = {
    "GetBucketLocation": "s3:GetBucketLocation", "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "ListObjectsV2": "s3:ListBucket", "ListObjects": "s3:ListBucket", "HeadBucket": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions", "ListMultipartUploads": "s3:ListBucketMultipartUploads",
}
# EMR actions on one cluster (resource type cluster*), and the parameter naming it.
EMR_CLUSTER_ACTIONS = {
    "DescribeCluster": "ClusterId", "AddJobFlowSteps": "JobFlowId", "ListSteps": "ClusterId",
    "DescribeStep": "ClusterId", "CancelSteps": "ClusterId", "TerminateJobFlows": "JobFlowIds",
    "AddTags": "ResourceId", "ListInstances": "ClusterId", "ListBootstrapActions": "ClusterId",
}
EMR_ACCOUNT_ACTIONS = ("ListClusters", "DescribeSecurityConfiguration", "ListSecurityConfigurations")
NO_PERMISSION_NEEDED = {("sts", "GetCallerIdentity")}


@dataclass(frozen=True)
class Account:
    account: str
    region: str
    key_arn: str | None = None  # the bucket's SSE-KMS key: object reads/writes also use it
    cluster_tags: object = None  # callable(cluster_id) -> {tag: value}


def _kms_for_s3(action: str, account: Account) -> list[Request]:
    if not account.key_arn:
        return []
    via = {"kms:ViaService": f"s3.{account.region}.amazonaws.com", "aws:RequestedRegion": account.region}
    if action == "s3:GetObject":
        return [Request("kms:Decrypt", account.key_arn, via)]
    if action == "s3:PutObject":  # multipart uploads also decrypt the data key of earlier parts
        return [Request("kms:GenerateDataKey", account.key_arn, via), Request("kms:Decrypt", account.key_arn, via)]
    return []


def requests_for_call(service: str, operation: str, params: dict, account: Account) -> list[Request]:
    region = {"aws:RequestedRegion": account.region}
    if (service, operation) in NO_PERMISSION_NEEDED:
        return []
    if service == "s3":
        bucket = params.get("Bucket")
        if operation in S3_BUCKET_ACTIONS:
            context = dict(region)
            if operation.startswith("ListObject"):
                context["s3:prefix"] = params.get("Prefix", "")
            return [Request(S3_BUCKET_ACTIONS[operation], f"arn:aws:s3:::{bucket}", context)]
        if operation in S3_OBJECT_ACTIONS:
            action = S3_OBJECT_ACTIONS[operation]
            head = [Request(action, f"arn:aws:s3:::{bucket}/{params['Key']}", dict(region))]
            if operation == "HeadObject":  # a missing key answers 404 only with s3:ListBucket, else 403
                head.append(Request("s3:ListBucket", f"arn:aws:s3:::{bucket}", {**region, "s3:prefix": params["Key"]}))
            return head + _kms_for_s3(action, account)
        if operation == "DeleteObjects":
            return [Request("s3:DeleteObject", f"arn:aws:s3:::{bucket}/{o['Key']}", dict(region))
                    for o in params["Delete"]["Objects"]]
        if operation == "CopyObject":
            source = params["CopySource"]
            source = source if isinstance(source, str) else f"{source['Bucket']}/{source['Key']}"
            return [Request("s3:GetObject", f"arn:aws:s3:::{source.lstrip('/')}", dict(region)),
                    Request("s3:PutObject", f"arn:aws:s3:::{bucket}/{params['Key']}", dict(region)),
                    *_kms_for_s3("s3:GetObject", account), *_kms_for_s3("s3:PutObject", account)]
    if service == "emr":
        if operation == "RunJobFlow":
            tags = {t["Key"]: t.get("Value", "") for t in params.get("Tags", [])}
            context = {**region, **{f"aws:RequestTag/{k}": v for k, v in tags.items()}, "aws:TagKeys": list(tags)}
            # Dependent action iam:PassRole for both roles (Service Authorization Reference, RunJobFlow).
            # The instance profile carries the role of the same name (provision creates them so).
            instance_role = params["JobFlowRole"]
            return [Request("elasticmapreduce:RunJobFlow", "*", context),
                    Request("iam:PassRole", f"arn:aws:iam::{account.account}:role/{params['ServiceRole']}",
                            {"iam:PassedToService": "elasticmapreduce.amazonaws.com"}),
                    Request("iam:PassRole", f"arn:aws:iam::{account.account}:role/{instance_role}",
                            {"iam:PassedToService": "ec2.amazonaws.com"})]
        if operation in EMR_CLUSTER_ACTIONS:
            ids = params[EMR_CLUSTER_ACTIONS[operation]]
            requests = []
            for cluster_id in [ids] if isinstance(ids, str) else ids:
                tags = account.cluster_tags(cluster_id) if account.cluster_tags else {}
                context = {**region, **{f"aws:ResourceTag/{k}": v for k, v in tags.items()}}
                arn = f"arn:aws:elasticmapreduce:{account.region}:{account.account}:cluster/{cluster_id}"
                requests.append(Request(f"elasticmapreduce:{operation}", arn, context))
            return requests
        if operation in EMR_ACCOUNT_ACTIONS:
            return [Request(f"elasticmapreduce:{operation}", "*", dict(region))]
    raise UnmappedCall(f"{service}:{operation} is not mapped to IAM requests: add it to fruits_infra.authorization")


# ---------------------------------------------------------------- evaluation

def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _glob(pattern: str, value: str, case_sensitive: bool = True) -> bool:
    if not case_sensitive:
        pattern, value = pattern.lower(), value.lower()
    return fnmatch.fnmatchcase(value, pattern.replace("[", "[[]"))


def _matches_action(statement: dict, action: str) -> bool:
    if "NotAction" in statement:
        return not any(_glob(p, action, False) for p in _as_list(statement["NotAction"]))
    return any(_glob(p, action, False) for p in _as_list(statement.get("Action", [])))


def _matches_resource(statement: dict, resource: str) -> bool:
    if "NotResource" in statement:
        return not any(_glob(p, resource) for p in _as_list(statement["NotResource"]))
    return any(_glob(p, resource) for p in _as_list(statement.get("Resource", [])))


def _compare(operator: str, expected: list, actual: str) -> bool:
    if operator in ("StringEquals", "ArnEquals"):
        return actual in expected
    if operator == "StringEqualsIgnoreCase":
        return actual.lower() in [e.lower() for e in expected]
    if operator in ("StringLike", "ArnLike"):
        return any(_glob(e, actual) for e in expected)
    if operator == "Bool":
        return str(actual).lower() in [str(e).lower() for e in expected]
    raise ValueError(f"condition operator {operator} is not supported by this evaluator")


NEGATED = {"StringNotEquals": "StringEquals", "StringNotLike": "StringLike", "ArnNotLike": "ArnLike",
           "ArnNotEquals": "ArnEquals"}


def _condition_holds(operator: str, key: str, expected, context: dict) -> bool:
    context_lower = {k.lower(): v for k, v in context.items()}
    expected = [str(e) if not isinstance(e, bool) else str(e).lower() for e in _as_list(expected)]
    qualifier, _, base = operator.rpartition(":")
    if_exists = base.endswith("IfExists")
    base = base[: -len("IfExists")] if if_exists else base
    if base == "Null":
        return (key.lower() not in context_lower) == (expected[0].lower() == "true")
    if key.lower() not in context_lower:
        return if_exists or base in NEGATED  # a negated operator holds for a missing key
    values = _as_list(context_lower[key.lower()])
    negated = base in NEGATED
    base = NEGATED.get(base, base)
    results = [_compare(base, expected, str(v)) for v in values]
    if qualifier == "ForAllValues":
        held = all(results)
    else:  # ForAnyValue, and a single-valued key
        held = any(results)
    return not held if negated else held


def _conditions_hold(statement: dict, context: dict) -> bool:
    return all(_condition_holds(operator, key, expected, context)
               for operator, block in statement.get("Condition", {}).items()
               for key, expected in block.items())


def evaluate(policies: list[dict], request: Request) -> tuple[bool, str]:
    """(allowed, why) for ``request`` under identity ``policies``; why names the deciding statement."""
    allowed_by = None
    for policy in policies:
        for index, statement in enumerate(_as_list(policy["Statement"])):
            if not (_matches_action(statement, request.action) and _matches_resource(statement, request.resource)
                    and _conditions_hold(statement, request.context)):
                continue
            name = statement.get("Sid") or f"statement {index}"
            if statement["Effect"] == "Deny":
                return False, f"explicitly denied by {name}"
            allowed_by = allowed_by or name
    if allowed_by:
        return True, f"allowed by {allowed_by}"
    return False, "no statement allows it (implicit deny)"


def denied(policies: list[dict], requests: list[Request]) -> list[str]:
    """One line per request the policies do not allow."""
    return [f"{request} ({why}; context {request.context})"
            for request in requests for allowed, why in [evaluate(policies, request)] if not allowed]
