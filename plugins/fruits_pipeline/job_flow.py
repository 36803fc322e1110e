"""The EMR job flow (RunJobFlow request) of one run, built by one pure function."""
from __future__ import annotations

from fruits_contract.lake import BOOTSTRAP_SCRIPT, WHEELHOUSE  # the bootstrap installs from code/<v>/wheelhouse
from fruits_pipeline.params import ClusterShape
from fruits_pipeline.settings import Settings

PROJECT_TAG = "fruits-pipeline"
# AmazonEMRServicePolicy_v2 acts only on clusters, subnets, VPCs and security groups with this tag.
MANAGED_POLICY_TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}

# Spark settings the jobs rely on: Arrow for the pandas UDFs (the feature job sizes its batches
# itself, from --batch-size), executor Python = 3.11.
SPARK_DEFAULTS = {
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.compression.codec": "snappy",
    "spark.dynamicAllocation.enabled": "false",
    "spark.executorEnv.PYSPARK_PYTHON": "python3.11",
    "spark.yarn.appMasterEnv.PYSPARK_PYTHON": "python3.11",
}


def photo_reader_env(settings: Settings) -> dict[str, str]:
    """The feature job's Python code reads the photos through boto3 (fruits_spark.photo_reader), which
    takes its region from the environment, not from EMRFS: the lake's region, so that no request
    goes through another region's endpoint (GDPR). Credentials: the nodes' instance profile."""
    return {f"spark.{where}.AWS_REGION": settings.region for where in ("executorEnv", "yarn.appMasterEnv")}


def cluster_name(run_key: str) -> str:
    return f"{PROJECT_TAG}-{run_key}"


def cluster_tags(settings: Settings, run_key: str) -> list[dict]:
    """The cluster's tags: the Airflow role drives only project-tagged clusters, and the orphan
    cleanup and the teardown find a run's cluster by project + run_key."""
    return [
        {"Key": "project", "Value": PROJECT_TAG},
        {"Key": "run_key", "Value": run_key},
        {"Key": "data-residency", "Value": settings.region},
        dict(MANAGED_POLICY_TAG),
    ]


def network(settings: Settings) -> dict:
    """The Instances keys that place the cluster: the tagged subnet and, when given, its security groups."""
    placed = {}
    if settings.emr_subnet_id:
        placed["Ec2SubnetId"] = settings.emr_subnet_id
    if settings.emr_master_security_group:
        placed["EmrManagedMasterSecurityGroup"] = settings.emr_master_security_group
        placed["EmrManagedSlaveSecurityGroup"] = settings.emr_core_security_group
    if settings.emr_service_access_security_group:
        placed["ServiceAccessSecurityGroup"] = settings.emr_service_access_security_group
    return placed


def build_job_flow(settings: Settings, cluster: ClusterShape, *, run_key: str, code_uri: str) -> dict:
    code_uri = code_uri.rstrip("/")
    core_group = {
        "Name": "core",
        "InstanceRole": "CORE",
        "Market": "SPOT" if cluster.use_spot else "ON_DEMAND",
        "InstanceType": cluster.instance_type,
        "InstanceCount": int(cluster.core_instance_count),
    }
    return {
        "Name": cluster_name(run_key),
        "ReleaseLabel": settings.emr_release_label,
        "Applications": [{"Name": "Spark"}],
        "LogUri": settings.lake.emr_logs(),
        "Instances": {
            "InstanceGroups": [
                {"Name": "master", "InstanceRole": "MASTER", "Market": "ON_DEMAND",
                 "InstanceType": cluster.instance_type, "InstanceCount": 1},
                core_group,
            ],
            # Kept alive so all the run's steps run on one cluster; the teardown task terminates it.
            "KeepJobFlowAliveWhenNoSteps": True,
            "TerminationProtected": False,
            **network(settings),
        },
        "BootstrapActions": [
            {"Name": "install python deps",
             "ScriptBootstrapAction": {"Path": f"{code_uri}/{BOOTSTRAP_SCRIPT}", "Args": [f"{code_uri}/{WHEELHOUSE}"]}},
        ],
        "Configurations": [
            {"Classification": "spark-env",
             "Configurations": [{"Classification": "export",
                                 "Properties": {"PYSPARK_PYTHON": "python3.11",
                                                "PYSPARK_DRIVER_PYTHON": "python3.11"}}]},
            {"Classification": "spark-defaults", "Properties": {**SPARK_DEFAULTS, **photo_reader_env(settings)}},
        ],
        "SecurityConfiguration": settings.emr_security_configuration,
        # Backstop if the teardown task itself never runs.
        "AutoTerminationPolicy": {"IdleTimeout": int(settings.emr_idle_timeout_seconds)},
        "ServiceRole": settings.emr_service_role,
        "JobFlowRole": settings.emr_instance_profile,
        "VisibleToAllUsers": True,
        "Tags": cluster_tags(settings, run_key),
    }
