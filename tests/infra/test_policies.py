"""The IAM documents in infra/fruits_infra/policies: valid JSON, least privilege."""
from __future__ import annotations

import json

import pytest

from fruits_infra.policies import POLICY_DIR, PolicyContext, policy_names, render, role_specs
from infra_testing import action_resource_types, parliament_findings
from fruits_pipeline.settings import EU_REGIONS

CONTEXT = PolicyContext(
    account="111122223333",
    region="eu-west-3",
    bucket="fruits-lake",
    prefix="",
    key_arn="arn:aws:kms:eu-west-3:111122223333:key/abcd",
    service_role="fruits-emr-service-role",
    instance_role="fruits-emr-instance-profile",
    airflow_role="fruits-airflow",
    airflow_principal="arn:aws:iam::111122223333:root",
)
BUCKET_ARN = "arn:aws:s3:::fruits-lake"


def _list(value):
    return [value] if isinstance(value, str) else list(value)


def allow_statements(name: str, context=CONTEXT) -> list[dict]:
    return [s for s in render(name, context)["Statement"] if s["Effect"] == "Allow"]


@pytest.mark.parametrize("name", policy_names())
def test_every_document_renders_to_valid_json_with_no_placeholder_left(name):
    raw = (POLICY_DIR / f"{name}.json").read_text()
    document = render(name, CONTEXT)
    assert document["Version"] == "2012-10-17" and document["Statement"]
    assert "${" not in json.dumps(document), f"{name}: unrendered placeholder"
    assert "${" in raw or name.endswith("trust"), f"{name} is not parameterised by bucket/key/account"


@pytest.mark.parametrize("name", [n for n in policy_names() if not n.endswith("trust")])
def test_no_wildcard_action_or_resource_in_any_allow(name):
    for statement in allow_statements(name):
        for action in _list(statement["Action"]):
            assert action != "*" and not action.endswith(":*"), f"{name} {statement.get('Sid')}: action {action}"
        for resource in _list(statement.get("Resource", [])):
            if resource == "*":  # only actions that have no resource type (RunJobFlow, ListClusters), in the EU
                assert all(action_resource_types(a) == [""] for a in _list(statement["Action"])), statement
                assert sorted(statement["Condition"]["StringEquals"]["aws:RequestedRegion"]) == sorted(EU_REGIONS)
            if resource.startswith("arn:aws:s3:::"):
                assert resource == BUCKET_ARN or resource.startswith(BUCKET_ARN + "/"), resource
            if resource.startswith("arn:aws:kms"):
                assert resource == CONTEXT.key_arn


def test_instance_role_reads_inputs_and_writes_only_derived_prefixes():
    statements = allow_statements("ec2_instance_inline")
    writes = [r for s in statements if "s3:PutObject" in _list(s["Action"]) for r in _list(s["Resource"])]
    reads = [r for s in statements if "s3:GetObject" in _list(s["Action"]) for r in _list(s["Resource"])]
    assert sorted(writes) == sorted(
        f"{BUCKET_ARN}/{p}/*" for p in ("manifests", "features", "pca", "classifier", "predictions", "reports", "logs")
    )
    for prefix in ("raw", "uploads", "code", "models"):
        assert f"{BUCKET_ARN}/{prefix}/*" in reads
    assert not any("/raw/" in r or "/uploads/" in r for r in writes), "the cluster must never modify uploads"
    kms = [s for s in statements if any(a.startswith("kms:") for a in _list(s["Action"]))]
    assert kms and all(s["Resource"] == CONTEXT.key_arn for s in kms)


def test_lake_prefix_scopes_the_instance_role_inside_the_bucket():
    context = PolicyContext(**{**CONTEXT.__dict__, "prefix": "lake/"})
    resources = [r for s in allow_statements("ec2_instance_inline", context) for r in _list(s.get("Resource", []))]
    assert f"{BUCKET_ARN}/lake/raw/*" in resources and f"{BUCKET_ARN}/raw/*" not in resources


def test_airflow_role_only_drives_project_clusters_in_the_eu():
    statements = allow_statements("airflow_inline")
    emr_actions = {a for s in statements for a in _list(s["Action"]) if a.startswith("elasticmapreduce:")}
    assert emr_actions == {
        "elasticmapreduce:RunJobFlow", "elasticmapreduce:AddJobFlowSteps", "elasticmapreduce:ListClusters",
        "elasticmapreduce:DescribeCluster", "elasticmapreduce:DescribeStep", "elasticmapreduce:ListSteps",
        "elasticmapreduce:CancelSteps", "elasticmapreduce:TerminateJobFlows",
    }  # no AddTags: tags go on with RunJobFlow, and AddTags would let the role adopt any cluster
    for statement in statements:
        if any(a.startswith("elasticmapreduce:") for a in _list(statement["Action"])):
            condition = statement["Condition"]["StringEquals"]
            assert sorted(condition["aws:RequestedRegion"]) == sorted(EU_REGIONS)
            if statement["Action"] != "elasticmapreduce:ListClusters":  # lists ids only; describing needs the tag
                tag = condition.get("aws:RequestTag/project") or condition.get("aws:ResourceTag/project")
                assert tag == "fruits-pipeline"
    pass_role = {s["Resource"]: s["Condition"]["StringLike"]["iam:PassedToService"]
                 for s in statements if "iam:PassRole" in _list(s["Action"])}
    assert pass_role == {  # each role only to the service that uses it (as AmazonEMRFullAccessPolicy_v2 does)
        "arn:aws:iam::111122223333:role/fruits-emr-service-role": "elasticmapreduce.amazonaws.com*",
        "arn:aws:iam::111122223333:role/fruits-emr-instance-profile": "ec2.amazonaws.com*",
    }


def test_bucket_policy_denies_every_non_tls_request():
    (statement,) = render("bucket_policy", CONTEXT)["Statement"]
    assert statement["Effect"] == "Deny" and statement["Principal"] == "*"
    assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert sorted(statement["Resource"]) == [BUCKET_ARN, BUCKET_ARN + "/*"]


def test_service_role_uses_the_current_managed_policy_and_passes_only_the_instance_role():
    service, instance, airflow = role_specs(CONTEXT)
    assert service.managed == {"arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"}
    assert service.trust["Statement"][0]["Principal"] == {"Service": "elasticmapreduce.amazonaws.com"}
    (inline,) = service.inline.values()
    pass_role = [s for s in inline["Statement"] if s["Action"] == "iam:PassRole"]
    assert pass_role[0]["Resource"] == "arn:aws:iam::111122223333:role/fruits-emr-instance-profile"
    assert instance.instance_profile == "fruits-emr-instance-profile"
    assert instance.trust["Statement"][0]["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert airflow.managed == frozenset()


@pytest.mark.parametrize("name", policy_names())
def test_every_document_passes_parliament(name):
    """AWS's authorization reference, as parliament ships it: every action exists, every resource matches
    a resource type of its action (RunJobFlow on a cluster ARN was a RESOURCE_MISMATCH: it has none)."""
    assert parliament_findings(render(name, CONTEXT), trust=name.endswith("trust")) == []


def test_parliament_catches_what_it_is_here_for():
    bad = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "elasticmapreduce:RunJobFlow", "Resource": "arn:aws:elasticmapreduce:*:111122223333:cluster/*"},
        {"Effect": "Allow", "Action": "elasticmapreduce:LaunchCluster", "Resource": "*"}]}
    issues = {finding.split(":")[0] for finding in parliament_findings(bad, trust=False)}
    assert {"RESOURCE_MISMATCH", "UNKNOWN_ACTION"} <= issues
