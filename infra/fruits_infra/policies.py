"""IAM and bucket policy documents: JSON files in ``policies/``, rendered with the account,
region, bucket, key and role names. The files are the source of truth; provisioning applies
them and the audit compares what AWS holds against them."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from string import Template

from fruits_pipeline.job_flow import PROJECT_TAG  # clusters carry project=<this>; the Airflow role drives only those
from fruits_pipeline.settings import EU_REGIONS

POLICY_DIR = Path(__file__).resolve().parent / "policies"
EMR_SERVICE_MANAGED_POLICY = "arn:aws:iam::aws:policy/service-role/AmazonEMRServicePolicy_v2"
INLINE_POLICY_NAME = "fruits-pipeline"


@dataclass(frozen=True)
class PolicyContext:
    account: str
    region: str
    bucket: str
    prefix: str  # the lake's key prefix inside the bucket, "" or "some/prefix/"
    key_arn: str
    service_role: str
    instance_role: str
    airflow_role: str
    airflow_principal: str  # who may assume the Airflow role, e.g. arn:aws:iam::<account>:root
    upload_queue: str = "fruits-uploads"  # the SQS queue S3 notifies of new uploads

    def values(self) -> dict[str, str]:
        return {
            "account": self.account,
            "region": self.region,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "key_arn": self.key_arn,
            "service_role": self.service_role,
            "instance_role": self.instance_role,
            "airflow_role": self.airflow_role,
            "airflow_principal": self.airflow_principal,
            "upload_queue": self.upload_queue,
            "project_tag": PROJECT_TAG,
            "eu_regions": json.dumps(sorted(EU_REGIONS)),
        }


def policy_names() -> list[str]:
    return sorted(p.stem for p in POLICY_DIR.glob("*.json"))


def render(name: str, context: PolicyContext) -> dict:
    """The document ``policies/<name>.json`` with every ``${placeholder}`` filled in."""
    text = (POLICY_DIR / f"{name}.json").read_text()
    try:
        return json.loads(Template(text).substitute(context.values()))
    except KeyError as missing:
        raise ValueError(f"policies/{name}.json uses an unknown placeholder {missing}") from None


@dataclass(frozen=True)
class RoleSpec:
    name: str
    trust: dict
    inline: dict[str, dict]  # policy name -> document
    managed: frozenset[str]  # managed policy ARNs
    instance_profile: str | None = None


def role_specs(context: PolicyContext) -> list[RoleSpec]:
    """The three roles of the pipeline, exactly as the documents define them."""
    return [
        RoleSpec(
            name=context.service_role,
            trust=render("emr_service_trust", context),
            inline={INLINE_POLICY_NAME: render("emr_service_inline", context)},
            managed=frozenset({EMR_SERVICE_MANAGED_POLICY}),
        ),
        RoleSpec(
            name=context.instance_role,
            trust=render("ec2_trust", context),
            inline={INLINE_POLICY_NAME: render("ec2_instance_inline", context)},
            managed=frozenset(),
            instance_profile=context.instance_role,
        ),
        RoleSpec(
            name=context.airflow_role,
            trust=render("airflow_trust", context),
            inline={INLINE_POLICY_NAME: render("airflow_inline", context)},
            managed=frozenset(),
        ),
    ]


def canonical(document) -> str:
    """A comparable spelling of a policy: key order and single-item lists do not matter."""
    if isinstance(document, str):
        from urllib.parse import unquote

        document = json.loads(unquote(document)) if document.lstrip().startswith("%") else json.loads(document)
    return json.dumps(_normalise(document), sort_keys=True)


def _normalise(value):
    if isinstance(value, dict):
        return {k: _normalise(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normalise(v) for v in value]
        if len(items) == 1 and not isinstance(items[0], dict):
            return items[0]
        if all(isinstance(v, str) for v in items):
            return sorted(items)
        return items
    return value
