"""``python -m fruits_infra provision|check|erase``: see docs/data-protection.md."""
from __future__ import annotations

import argparse
import os
import sys

import boto3

from fruits_pipeline.settings import Settings, SettingsError

from fruits_infra.erase import ErasureError, erase, select, store_for
from fruits_infra.provision import (
    DEFAULT_AIRFLOW_ROLE,
    DEFAULT_KEY_ALIAS,
    Clients,
    InfraConfig,
    InfraError,
    audit,
    provision,
)


def _settings(args) -> Settings:
    env = dict(os.environ)
    if args.lake:
        env["FRUITS_LAKE_URI"] = args.lake
    if args.region:
        env["FRUITS_REGION"] = args.region
    if getattr(args, "subnet", None):
        env["FRUITS_EMR_SUBNET_ID"] = args.subnet
    return Settings.from_env(env)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m fruits_infra", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--lake", help="lake base URI (default: FRUITS_LAKE_URI)")
        p.add_argument("--region", help="EU region (default: FRUITS_REGION, eu-west-3)")
        p.add_argument("--endpoint-url", help="AWS endpoint override (tests, moto server)")

    for name, text in (
        ("provision", "create or correct bucket, key, EMR security configuration and roles; idempotent"),
        ("check", "audit the account against the documents; changes nothing; exit 1 on deviations"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        common(p)
        p.add_argument("--log-retention-days", type=int, default=30, help="days before logs/ expire (default 30)")
        p.add_argument("--noncurrent-version-days", type=int, default=30,
                       help="days old object versions are kept (default 30)")
        p.add_argument("--tls-certificates", help="s3:// URI of a PEM zip bundle: enables in-transit TLS on EMR")
        p.add_argument("--key-alias", default=DEFAULT_KEY_ALIAS, help=f"KMS alias (default {DEFAULT_KEY_ALIAS})")
        p.add_argument("--airflow-role", default=DEFAULT_AIRFLOW_ROLE, help=f"Airflow role name (default {DEFAULT_AIRFLOW_ROLE})")
        p.add_argument("--airflow-principal", help="ARN allowed to assume the Airflow role (default: this account)")
        p.add_argument("--subnet", help="the clusters' subnet (default: FRUITS_EMR_SUBNET_ID): tagged with its VPC "
                                        "and security groups for EMR's managed policy; S3 gateway endpoint added")

    p = sub.add_parser("erase", help="right to erasure: delete images and every row derived from them",
                       description="Delete images of raw/ and the app's photos of uploads/ (all S3 versions), their rows "
                                   "in manifests/, features/, pca/, classifier/, predictions/ and the app's label files "
                                   "in labels/ (CSV or Parquet). Without --yes, only prints what it would remove.")
    common(p)
    p.add_argument("paths", nargs="*", help="image URIs or absolute local paths, keys relative to the lake "
                                            "(uploads/2026-12-02/u1/x.jpg, raw/Apple/img_1.jpg), or keys relative "
                                            "to raw/ (Apple/img_1.jpg)")
    p.add_argument("--label", action="append", default=[], help="erase every image of this label folder of raw/")
    p.add_argument("--prefix", action="append", default=[],
                   help="erase every image under this prefix: uploads/<...> (uploads/2026-12-02/u1/: one user's "
                        "folder), raw/<...>, or a prefix relative to raw/ (Banana/user-42-); never all of "
                        "raw/ or uploads/")
    p.add_argument("--drop-pca-models", action="store_true", help="also delete pca/<run>/_model/ and classifier/<run>/ fitted on erased images")
    p.add_argument("--yes", action="store_true", help="really erase (default: dry run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        session = boto3.Session()
        if args.command == "erase":
            s3 = None
            if settings.lake.scheme == "s3":
                s3 = session.client("s3", region_name=settings.region, endpoint_url=args.endpoint_url)
            selection = select(settings.lake, args.paths, args.label, args.prefix)
            erase(store_for(settings.lake, s3), selection, confirm=args.yes, drop_pca_models=args.drop_pca_models)
            return 0
        config = InfraConfig(
            settings=settings,
            log_retention_days=args.log_retention_days,
            noncurrent_version_days=args.noncurrent_version_days,
            tls_certificates_uri=args.tls_certificates,
            key_alias=args.key_alias,
            airflow_role=args.airflow_role,
            airflow_principal=args.airflow_principal,
        )
        clients = Clients.for_region(settings.region, session, endpoint_url=args.endpoint_url)
        if args.command == "provision":
            report = provision(config, clients)
            print("Changed: " + ", ".join(c.resource for c in report.changes if c.status != "unchanged")
                  if report.changed else "Nothing changed: everything already matches the documents.")
            return 0
        deviations = audit(config, clients)
        for line in deviations:
            print(f"DEVIATION {line}")
        print(f"{len(deviations)} deviation(s) found." if deviations else "No deviation: the account matches the documents.")
        return 1 if deviations else 0
    except (SettingsError, InfraError, ErasureError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
