"""The pipeline's settings: one object, read from the environment (docs/design.md, "The DAG").

Reading settings makes no AWS call; the GDPR region rule is enforced here so that a
region outside the EU is refused before anything talks to AWS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fruits_contract.lake import Lake
from fruits_contract.model import SHIPPED_MODEL_PATH

# Commercial AWS regions inside the European Union (GDPR: the data never leaves the EU).
EU_REGIONS = frozenset(
    {
        "eu-west-1",  # Ireland
        "eu-west-3",  # Paris
        "eu-central-1",  # Frankfurt
        "eu-north-1",  # Stockholm
        "eu-south-1",  # Milan
        "eu-south-2",  # Spain
    }
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PRICE_TABLE = Path(__file__).resolve().parent / "prices_eu_west_3.json"
# The converted model, relative to the jobs folder (FRUITS_JOBS_DIR may point at another copy of it).
SHIPPED_MODEL = SHIPPED_MODEL_PATH.relative_to(SHIPPED_MODEL_PATH.parents[1])
COMPUTE_MODES = ("emr", "local")


class SettingsError(ValueError):
    """A setting is missing or not allowed; the message names the variable and the rule."""


def check_eu_region(region: str) -> str:
    if region not in EU_REGIONS:
        raise SettingsError(
            f"FRUITS_REGION={region!r} is refused: images and everything derived from them must stay "
            f"in the EU (GDPR). Use one of: {', '.join(sorted(EU_REGIONS))} (default eu-west-3)."
        )
    return region


def _int(env: dict, name: str, default: int) -> int:
    raw = env.get(name, str(default))
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None


# AWS's range for an EMR cluster's AutoTerminationPolicy.IdleTimeout (RunJobFlow API reference).
IDLE_TIMEOUT_RANGE = (60, 604_800)


def check_emr_settings(settings) -> None:
    """The EMR settings' rules, each refused with the variable's name and the rule."""
    low, high = IDLE_TIMEOUT_RANGE
    if not low <= settings.emr_idle_timeout_seconds <= high:
        raise SettingsError(
            f"FRUITS_EMR_IDLE_TIMEOUT_SECONDS={settings.emr_idle_timeout_seconds} is outside AWS's range for an "
            f"EMR idle timeout, {low}..{high} seconds (1 minute to 7 days)"
        )
    for name, value, prefix in (
        ("FRUITS_EMR_SUBNET_ID", settings.emr_subnet_id, "subnet-"),
        ("FRUITS_EMR_MASTER_SECURITY_GROUP", settings.emr_master_security_group, "sg-"),
        ("FRUITS_EMR_CORE_SECURITY_GROUP", settings.emr_core_security_group, "sg-"),
        ("FRUITS_EMR_SERVICE_ACCESS_SECURITY_GROUP", settings.emr_service_access_security_group, "sg-"),
    ):
        if value is not None and not value.startswith(prefix):
            raise SettingsError(f"{name}={value!r} is not a {prefix[:-1]} id (it starts with {prefix!r})")
    if bool(settings.emr_master_security_group) != bool(settings.emr_core_security_group):
        raise SettingsError(
            "FRUITS_EMR_MASTER_SECURITY_GROUP and FRUITS_EMR_CORE_SECURITY_GROUP go together: EMR takes both "
            "managed security groups or neither (then it creates them in the subnet's VPC)"
        )
    if any((settings.emr_master_security_group, settings.emr_service_access_security_group)) and not settings.emr_subnet_id:
        raise SettingsError("FRUITS_EMR_*_SECURITY_GROUP needs FRUITS_EMR_SUBNET_ID: security groups belong to the subnet's VPC")
    if settings.poll_seconds < 1:
        raise SettingsError(f"FRUITS_POLL_SECONDS={settings.poll_seconds} must be at least 1")
    if settings.core_instance_count < 1:
        raise SettingsError(f"FRUITS_CORE_INSTANCE_COUNT={settings.core_instance_count} must be at least 1")
    if settings.orphan_min_age_seconds < 0:
        raise SettingsError(f"FRUITS_ORPHAN_MIN_AGE_SECONDS={settings.orphan_min_age_seconds} must be 0 or more")


@dataclass(frozen=True)
class Settings:
    lake_uri: str
    region: str = "eu-west-3"
    compute: str = "emr"
    aws_conn_id: str = "aws_default"
    emr_release_label: str = "emr-7.10.0"
    emr_service_role: str = "fruits-emr-service-role"
    emr_instance_profile: str = "fruits-emr-instance-profile"
    emr_security_configuration: str = "fruits-pipeline"
    emr_idle_timeout_seconds: int = 3600
    # The subnet the cluster runs in, tagged for-use-with-amazon-emr-managed-policies=true (make infra);
    # optional managed security groups (master and core together; service access for a private subnet).
    emr_subnet_id: str | None = None
    emr_master_security_group: str | None = None
    emr_core_security_group: str | None = None
    emr_service_access_security_group: str | None = None
    orphan_min_age_seconds: int = 3600  # another run's cluster older than this is terminated
    wheelhouse_dir: Path = field(default=REPO_ROOT / "dist" / "wheelhouse")  # make package; nodes install from it
    poll_seconds: int = 60  # between EMR step polls; tests make it small
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    model_path: Path | None = None  # FRUITS_MODEL: a .tflite to stage into models/ instead of the shipped one
    spark_master: str = "local[2]"  # FRUITS_COMPUTE=local only
    # The SQS queue S3 notifies of new uploads (make infra: its URL); without it every run lists the lake.
    upload_queue_url: str | None = None
    reconcile_every_days: int = 7  # a lake with a queue is listed against the ledger this often
    max_image_bytes: int = 20 * 1024 * 1024
    min_image_side: int = 32
    price_table: Path = field(default=DEFAULT_PRICE_TABLE)
    jobs_dir: Path = field(default=REPO_ROOT / "spark_jobs")

    def __post_init__(self):
        check_eu_region(self.region)
        if self.compute not in COMPUTE_MODES:
            raise SettingsError(f"FRUITS_COMPUTE={self.compute!r} is not one of {', '.join(COMPUTE_MODES)}")
        lake = Lake(self.lake_uri)  # validates the URI
        if self.upload_queue_url and not lake.bucket:
            raise SettingsError("FRUITS_UPLOAD_QUEUE_URL is for an s3:// lake (S3 notifies the queue); a file:// lake "
                                "is listed every run: unset it")
        if self.reconcile_every_days < 1:
            raise SettingsError(f"FRUITS_RECONCILE_EVERY_DAYS={self.reconcile_every_days} must be at least 1")
        check_emr_settings(self)

    @property
    def lake(self) -> Lake:
        return Lake(self.lake_uri)

    @property
    def model_file(self) -> Path:
        """The model the feature job runs: FRUITS_MODEL, else the one shipped beside the jobs."""
        return self.model_path or self.jobs_dir / SHIPPED_MODEL

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        if env.get("FRUITS_MASTER_INSTANCE_TYPE"):
            raise SettingsError(
                "FRUITS_MASTER_INSTANCE_TYPE is no longer read: the master and core nodes use the trigger "
                "form's instance_type (default FRUITS_CORE_INSTANCE_TYPE); unset it"
            )
        lake_uri = env.get("FRUITS_LAKE_URI")
        if not lake_uri:
            raise SettingsError(
                "FRUITS_LAKE_URI is not set: give the lake's base URI, s3://bucket or file:///absolute/path"
            )
        defaults = cls(lake_uri=lake_uri)
        return cls(
            lake_uri=lake_uri,
            region=env.get("FRUITS_REGION", defaults.region),
            compute=env.get("FRUITS_COMPUTE", defaults.compute),
            aws_conn_id=env.get("AWS_CONN_ID", defaults.aws_conn_id),
            emr_release_label=env.get("FRUITS_EMR_RELEASE", defaults.emr_release_label),
            emr_service_role=env.get("FRUITS_EMR_SERVICE_ROLE", defaults.emr_service_role),
            emr_instance_profile=env.get("FRUITS_EMR_INSTANCE_PROFILE", defaults.emr_instance_profile),
            emr_security_configuration=env.get(
                "FRUITS_EMR_SECURITY_CONFIGURATION", defaults.emr_security_configuration
            ),
            emr_idle_timeout_seconds=_int(env, "FRUITS_EMR_IDLE_TIMEOUT_SECONDS", defaults.emr_idle_timeout_seconds),
            emr_subnet_id=env.get("FRUITS_EMR_SUBNET_ID") or None,
            emr_master_security_group=env.get("FRUITS_EMR_MASTER_SECURITY_GROUP") or None,
            emr_core_security_group=env.get("FRUITS_EMR_CORE_SECURITY_GROUP") or None,
            emr_service_access_security_group=env.get("FRUITS_EMR_SERVICE_ACCESS_SECURITY_GROUP") or None,
            orphan_min_age_seconds=_int(env, "FRUITS_ORPHAN_MIN_AGE_SECONDS", defaults.orphan_min_age_seconds),
            wheelhouse_dir=Path(env.get("FRUITS_WHEELHOUSE") or defaults.wheelhouse_dir),
            poll_seconds=_int(env, "FRUITS_POLL_SECONDS", defaults.poll_seconds),
            core_instance_type=env.get("FRUITS_CORE_INSTANCE_TYPE", defaults.core_instance_type),
            core_instance_count=_int(env, "FRUITS_CORE_INSTANCE_COUNT", defaults.core_instance_count),
            model_path=Path(env["FRUITS_MODEL"]) if env.get("FRUITS_MODEL") else None,
            spark_master=env.get("FRUITS_SPARK_MASTER", defaults.spark_master),
            upload_queue_url=env.get("FRUITS_UPLOAD_QUEUE_URL") or None,
            reconcile_every_days=_int(env, "FRUITS_RECONCILE_EVERY_DAYS", defaults.reconcile_every_days),
            max_image_bytes=_int(env, "FRUITS_MAX_IMAGE_BYTES", defaults.max_image_bytes),
            min_image_side=_int(env, "FRUITS_MIN_IMAGE_SIDE", defaults.min_image_side),
            price_table=Path(env.get("FRUITS_PRICE_TABLE", defaults.price_table)),
            jobs_dir=Path(env.get("FRUITS_JOBS_DIR", defaults.jobs_dir)),
        )
