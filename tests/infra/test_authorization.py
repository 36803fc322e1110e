"""The IAM documents allow what the pipeline's AWS calls need, evaluated request by request.

The evaluator itself is tested first on cases whose answer IAM's documentation fixes; then the
instance profile against what EMR nodes do for one run, derived from the job flow and steps the
code builds (the Airflow role is checked against the calls of a whole moto DAG run, in
tests/dag/test_dag_emr_moto.py)."""
from __future__ import annotations

import dataclasses

import pytest

from fruits_infra.authorization import Account, Request, UnmappedCall, denied, evaluate, requests_for_call
from fruits_infra.policies import render
from fruits_pipeline.job_flow import build_job_flow
from fruits_pipeline.params import RunParams
from fruits_pipeline.settings import Settings
from fruits_pipeline.steps import pipeline_steps, render_emr_steps
from test_policies import CONTEXT, _list

REGION = CONTEXT.region
ACCOUNT = Account(CONTEXT.account, REGION, CONTEXT.key_arn,
                  cluster_tags=lambda cluster_id: {"project": "fruits-pipeline"} if cluster_id == "j-OURS" else {})


def _policy(name):
    return [render(name, CONTEXT)]


def test_evaluator_follows_iam_rules():
    policy = {"Statement": [
        {"Sid": "A", "Effect": "Allow", "Action": "s3:Get*", "Resource": "arn:aws:s3:::b/*",
         "Condition": {"StringEquals": {"aws:RequestedRegion": ["eu-west-3"]}}},
        {"Sid": "D", "Effect": "Deny", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::b/secret/*"},
        {"Sid": "L", "Effect": "Allow", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b",
         "Condition": {"StringLike": {"s3:prefix": ["raw/*", "raw"]}}},
    ]}
    here = {"aws:RequestedRegion": "eu-west-3"}
    assert evaluate([policy], Request("s3:GetObject", "arn:aws:s3:::b/raw/x", here)) == (True, "allowed by A")
    assert evaluate([policy], Request("s3:GetObject", "arn:aws:s3:::b/secret/x", here))[1].startswith("explicitly denied")
    assert not evaluate([policy], Request("s3:GetObject", "arn:aws:s3:::b/raw/x", {"aws:RequestedRegion": "us-east-1"}))[0]
    assert not evaluate([policy], Request("s3:GetObject", "arn:aws:s3:::b/raw/x", {}))[0]  # a missing key fails
    assert evaluate([policy], Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "raw/a/"}))[0]
    assert not evaluate([policy], Request("s3:ListBucket", "arn:aws:s3:::b", {"s3:prefix": "pca/"}))[0]
    assert not evaluate([policy], Request("s3:PutObject", "arn:aws:s3:::b/raw/x", here))[0]
    with pytest.raises(ValueError, match="NumericLessThan"):
        evaluate([{"Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*",
                                  "Condition": {"NumericLessThan": {"k": "1"}}}]}], Request("s3:GetObject", "x", {"k": "0"}))


def test_run_job_flow_needs_resource_star_and_both_pass_roles():
    requests = requests_for_call("emr", "RunJobFlow", {
        "ServiceRole": "fruits-emr-service-role", "JobFlowRole": "fruits-emr-instance-profile",
        "Tags": [{"Key": "project", "Value": "fruits-pipeline"}]}, ACCOUNT)
    assert [str(r) for r in requests] == [
        "elasticmapreduce:RunJobFlow on *",
        "iam:PassRole on arn:aws:iam::111122223333:role/fruits-emr-service-role",
        "iam:PassRole on arn:aws:iam::111122223333:role/fruits-emr-instance-profile"]
    assert denied(_policy("airflow_inline"), requests) == []
    untagged = requests_for_call("emr", "RunJobFlow", {"ServiceRole": "fruits-emr-service-role",
                                                       "JobFlowRole": "fruits-emr-instance-profile"}, ACCOUNT)
    assert denied(_policy("airflow_inline"), untagged)[0].startswith("elasticmapreduce:RunJobFlow on *")
    # The document before this change: RunJobFlow on a cluster ARN, which a real RunJobFlow never matches.
    old = {"Statement": [{"Effect": "Allow", "Action": "elasticmapreduce:RunJobFlow",
                          "Resource": "arn:aws:elasticmapreduce:*:111122223333:cluster/*"}]}
    assert not evaluate([old], requests[0])[0]


def test_the_airflow_role_drives_only_project_clusters():
    ours = requests_for_call("emr", "TerminateJobFlows", {"JobFlowIds": ["j-OURS"]}, ACCOUNT)
    theirs = requests_for_call("emr", "TerminateJobFlows", {"JobFlowIds": ["j-THEIRS"]}, ACCOUNT)
    assert denied(_policy("airflow_inline"), ours) == []
    assert denied(_policy("airflow_inline"), theirs)
    with pytest.raises(UnmappedCall, match="emr:SetTerminationProtection"):
        requests_for_call("emr", "SetTerminationProtection", {}, ACCOUNT)


def _s3_parts(uri: str) -> tuple[str, str]:
    bucket, _, key = uri[len("s3://"):].partition("/")
    return bucket, key


def node_requests(job_flow: dict, steps: list[dict]) -> list[Request]:
    """What EMR nodes do with the instance profile for this run: fetch the bootstrap script, copy the
    wheelhouse (aws s3 cp --recursive: list + get), read the code, inputs and model, write outputs
    (EMRFS: list, multipart put, delete on overwrite), push logs, and use the lake key (S3 SSE-KMS
    through S3, local disk encryption directly)."""
    calls = []
    action = job_flow["BootstrapActions"][0]["ScriptBootstrapAction"]
    bucket, key = _s3_parts(action["Path"])
    calls.append(("GetObject", {"Bucket": bucket, "Key": key}))
    bucket, prefix = _s3_parts(action["Args"][0])
    calls += [("ListObjectsV2", {"Bucket": bucket, "Prefix": prefix + "/"}),
              ("GetObject", {"Bucket": bucket, "Key": f"{prefix}/numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"})]
    for step in steps:
        args = step["HadoopJarStep"]["Args"]
        for index, arg in enumerate(args):
            if not arg.startswith("s3://"):
                continue
            bucket, key = _s3_parts(arg)
            flag = args[index - 1]
            calls += [("HeadObject", {"Bucket": bucket, "Key": key}),
                      ("ListObjectsV2", {"Bucket": bucket, "Prefix": key + "/"}),
                      ("ListObjectsV2", {"Bucket": bucket, "Prefix": key})]
            if flag == "--output":
                calls += [(op, {"Bucket": bucket, "Key": f"{key}/part-00000.parquet"})
                          for op in ("CreateMultipartUpload", "UploadPart", "CompleteMultipartUpload",
                                     "AbortMultipartUpload", "ListParts", "PutObject", "DeleteObject")]
            else:
                calls.append(("GetObject", {"Bucket": bucket, "Key": f"{key}/part-00000.parquet" if flag != "--model"
                                            and not key.endswith(".py") and not key.endswith(".zip") else key}))
    bucket, logs = _s3_parts(job_flow["LogUri"])
    calls += [("PutObject", {"Bucket": bucket, "Key": f"{logs.rstrip('/')}/j-OURS/node/i-1/bootstrap-actions/1/stderr.gz"}),
              ("ListObjectsV2", {"Bucket": bucket, "Prefix": f"{logs.rstrip('/')}/j-OURS/"})]
    requests = [r for op, params in calls for r in requests_for_call("s3", op, params, ACCOUNT)]
    local_disk = {"aws:RequestedRegion": REGION}
    requests += [Request("kms:GenerateDataKey", CONTEXT.key_arn, local_disk),
                 Request("kms:Decrypt", CONTEXT.key_arn, local_disk)]
    return requests


@pytest.mark.parametrize("route_steps", [("extract_features", "reduce_pca", "train_classifier"),
                                         ("reduce_pca", "train_classifier")])
def test_the_instance_profile_allows_what_the_nodes_do(route_steps):
    settings = Settings(lake_uri="s3://fruits-lake", region=REGION, emr_subnet_id="subnet-0abc")
    run_key = "2026-11-30T000000Z"
    code_uri = settings.lake.code("0123456789ab")
    job_flow = build_job_flow(settings, RunParams().cluster, run_key=run_key, code_uri=code_uri)
    steps = [s for s in pipeline_steps(settings.lake, run_key, model_name="mobilenet-0123/mobilenet.tflite",
                                       pca_target=RunParams().pca_target) if s.name in route_steps]
    requests = node_requests(job_flow, render_emr_steps(steps, code_uri, run_key))
    assert len(requests) > 20
    assert denied(_policy("ec2_instance_inline"), requests) == []


def test_the_instance_profile_never_writes_uploads_or_code_nor_moves_the_current_pointers():
    # The pointers name the outputs the next run and the app use: only the report task, once the run
    # succeeded, moves them (docs/design.md, "The lake"); the nodes still write the outputs beside them.
    writable = requests_for_call("s3", "PutObject", {"Bucket": "fruits-lake", "Key": "pca/2026-12-02T000000Z/x"},
                                 ACCOUNT)
    assert not denied(_policy("ec2_instance_inline"), writable[:1])
    for key in ("predictions/2026-12-02T000000Z/part-0.parquet", "classifier/2026-12-02T000000Z/x"):
        put = requests_for_call("s3", "PutObject", {"Bucket": "fruits-lake", "Key": key}, ACCOUNT)
        assert not denied(_policy("ec2_instance_inline"), put[:1]), key
    # The feature job reads the app's photos itself (issue 26): without this grant it failed on EMR.
    photo = requests_for_call("s3", "GetObject", {"Bucket": "fruits-lake", "Key": "uploads/2026-12-02/u1/a.heic"},
                              ACCOUNT)
    assert not denied(_policy("ec2_instance_inline"), photo[:1])
    for key in ("raw/Kiwi/k.jpg", "uploads/2026-12-02/u1/a.heic", "code/0123456789ab/reduce_pca.py",
                "models/m/m.tflite", "pca/current.json", "classifier/current.json", "labels/2026-12-02.csv"):
        put = requests_for_call("s3", "PutObject", {"Bucket": "fruits-lake", "Key": key}, ACCOUNT)
        assert denied(_policy("ec2_instance_inline"), put[:1]), key
    other_bucket = requests_for_call("s3", "GetObject", {"Bucket": "someone-else", "Key": "raw/x"}, ACCOUNT)
    assert denied(_policy("ec2_instance_inline"), other_bucket[:1])


def test_moto_enforcing_iam_agrees_with_the_evaluator_where_it_is_faithful(aws):
    """moto enforces IAM for signed requests with S3 object ARNs, but only for statements without
    conditions (its condition support is StringEquals on request values, and a failed condition turns
    into an explicit deny). On the instance profile's unconditional statements, its answers and the
    evaluator's must agree, call by call."""
    import json

    import boto3
    from botocore.exceptions import ClientError
    from moto.core.authorization import enable_iam_authentication

    from infra_testing import BUCKET

    context = dataclasses.replace(CONTEXT, bucket=BUCKET)
    document = render("ec2_instance_inline", context)
    unconditional = {"Version": "2012-10-17", "Statement": [s for s in document["Statement"] if "Condition" not in s]}
    assert {a for s in unconditional["Statement"] for a in _list(s["Action"])} >= {"s3:GetObject", "s3:PutObject",
                                                                                    "s3:DeleteObject"}
    iam = boto3.client("iam", region_name=REGION)
    iam.create_user(UserName="node")
    iam.put_user_policy(UserName="node", PolicyName="p", PolicyDocument=json.dumps(unconditional))
    key = iam.create_access_key(UserName="node")["AccessKey"]
    admin = boto3.client("s3", region_name=REGION)
    admin.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    keys = ["raw/Kiwi/k.jpg", "features/batch=r1/part-0.parquet", "pca/r1/part-0.parquet", "reports/r1.json",
            "code/v1/reduce_pca.py", "models/m/m.tflite", "manifests/r1/valid/part-0.parquet", "logs/emr/j-1/x.gz",
            "raw", "features", "elsewhere/x"]
    for name in keys:
        admin.put_object(Bucket=BUCKET, Key=name, Body=b"x")
    node = boto3.client("s3", region_name=REGION, aws_access_key_id=key["AccessKeyId"],
                        aws_secret_access_key=key["SecretAccessKey"], aws_session_token=None)
    operations = {"GetObject": ("s3:GetObject", lambda k: node.get_object(Bucket=BUCKET, Key=k)),
                  "PutObject": ("s3:PutObject", lambda k: node.put_object(Bucket=BUCKET, Key=k, Body=b"y")),
                  "DeleteObject": ("s3:DeleteObject", lambda k: node.delete_object(Bucket=BUCKET, Key=k))}
    disagreements, allowed_somewhere, denied_somewhere = [], 0, 0
    with enable_iam_authentication():
        for name in keys:
            for operation, (action, call) in operations.items():
                try:
                    call(name)
                    moto_allows = True
                except ClientError as error:
                    assert error.response["Error"]["Code"] == "AccessDenied", error
                    moto_allows = False
                ours, _ = evaluate([unconditional], Request(action, f"arn:aws:s3:::{BUCKET}/{name}", {}))
                allowed_somewhere += ours
                denied_somewhere += not ours
                if moto_allows != ours:
                    disagreements.append(f"{operation} {name}: moto {moto_allows}, evaluator {ours}")
    assert disagreements == []
    assert allowed_somewhere and denied_somewhere  # both answers were exercised


@pytest.mark.parametrize("prefix", ["", "lake/"])
def test_the_airflow_role_removes_a_replaced_partial_feature_batch_and_nothing_else_under_features(prefix):
    """Validation removes a partial feature batch (no _job_result.json) whose photos later runs settled
    (validation.remove_replaced_partial_batches: storage.remove_tree, one DeleteObjects of the folder's
    keys). Without s3:DeleteObject there, S3 refuses each key in the response's errors, which s3fs does
    not raise: the folder stayed, reported removed, and was met again the next day. The role writes no feature."""
    from fruits_contract.lake import Lake

    context = dataclasses.replace(CONTEXT, prefix=prefix)
    policy = [render("airflow_inline", context)]
    lake = Lake(f"s3://{context.bucket}/{prefix}".rstrip("/"))
    bucket, folder = _s3_parts(lake.features("2026-12-02T000000Z"))
    keys = [folder, f"{folder}/part-00000-abc.snappy.parquet", f"{folder}/_rejects/part-00000.parquet",
            f"{folder}/_duplicates/part-00000.parquet", f"{folder}/_SUCCESS"]
    removal = requests_for_call("s3", "DeleteObjects", {"Bucket": bucket, "Delete": {"Objects": [
        {"Key": key} for key in keys]}}, ACCOUNT)
    assert len(removal) == len(keys) and denied(policy, removal) == []
    for operation, key in [("PutObject", f"{folder}/part-00000.parquet"),  # the cluster writes features
                           ("DeleteObject", f"{prefix}features/_other/x"),  # only batch folders
                           ("DeleteObject", f"{prefix}raw/Kiwi/k.jpg"), ("DeleteObject", f"{prefix}uploads/u/a.jpg"),
                           ("DeleteObject", f"{prefix}pca/current.json"),
                           ("DeleteObject", f"elsewhere/features/batch=2026-12-02T000000Z/x")]:  # outside the lake
        request = requests_for_call("s3", operation, {"Bucket": bucket, "Key": key}, ACCOUNT)[:1]
        assert denied(policy, request), f"{operation} {key}"
