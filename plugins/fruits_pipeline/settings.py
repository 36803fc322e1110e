"""The pipeline's settings: one object, read from the environment (DESIGN.md, "DAG").

Reading settings makes no AWS call; the GDPR region rule is enforced here so that a
region outside the EU is refused before anything talks to AWS.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from fruits_pipeline.lake import Lake

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
    poll_seconds: int = 60  # between EMR step polls; tests make it small
    master_instance_type: str = "m5.xlarge"
    core_instance_type: str = "m5.xlarge"
    core_instance_count: int = 2
    weights_path: str | None = None  # a local .weights.h5 to stage into models/ once
    spark_master: str = "local[2]"  # FRUITS_COMPUTE=local only
    max_image_bytes: int = 20 * 1024 * 1024
    min_image_side: int = 32
    price_table: Path = field(default=DEFAULT_PRICE_TABLE)
    jobs_dir: Path = field(default=REPO_ROOT / "spark_jobs")

    def __post_init__(self):
        check_eu_region(self.region)
        if self.compute not in COMPUTE_MODES:
            raise SettingsError(f"FRUITS_COMPUTE={self.compute!r} is not one of {', '.join(COMPUTE_MODES)}")
        Lake(self.lake_uri)  # validates the URI

    @property
    def lake(self) -> Lake:
        return Lake(self.lake_uri)

    @classmethod
    def from_env(cls, env: dict | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
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
            poll_seconds=_int(env, "FRUITS_POLL_SECONDS", defaults.poll_seconds),
            master_instance_type=env.get("FRUITS_MASTER_INSTANCE_TYPE", defaults.master_instance_type),
            core_instance_type=env.get("FRUITS_CORE_INSTANCE_TYPE", defaults.core_instance_type),
            core_instance_count=_int(env, "FRUITS_CORE_INSTANCE_COUNT", defaults.core_instance_count),
            weights_path=env.get("FRUITS_WEIGHTS") or None,
            spark_master=env.get("FRUITS_SPARK_MASTER", defaults.spark_master),
            max_image_bytes=_int(env, "FRUITS_MAX_IMAGE_BYTES", defaults.max_image_bytes),
            min_image_side=_int(env, "FRUITS_MIN_IMAGE_SIDE", defaults.min_image_side),
            price_table=Path(env.get("FRUITS_PRICE_TABLE", defaults.price_table)),
            jobs_dir=Path(env.get("FRUITS_JOBS_DIR", defaults.jobs_dir)),
        )
