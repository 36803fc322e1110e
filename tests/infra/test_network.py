"""The clusters' network on moto: provisioning tags what AmazonEMRServicePolicy_v2 acts on and adds the
S3 gateway endpoint; the audit names each missing piece; settings refuse bad ids before any call."""
from __future__ import annotations

import boto3
import pytest

from fruits_infra.network import describe_network, network_deviations
from fruits_infra.provision import InfraConfig, audit, provision
from fruits_pipeline.guards import check_network_settings
from fruits_pipeline.job_flow import build_job_flow
from fruits_pipeline.params import RunParams
from fruits_pipeline.settings import Settings, SettingsError
from infra_testing import BUCKET, REGION, make_subnet

TAG = {"Key": "for-use-with-amazon-emr-managed-policies", "Value": "true"}


def _network_lines(deviations):
    return [d for d in deviations if d.startswith("network")]


def test_provision_tags_subnet_vpc_and_groups_and_adds_the_s3_endpoint(clients, subnet):
    ec2 = clients.ec2
    vpc = ec2.describe_subnets(SubnetIds=[subnet])["Subnets"][0]["VpcId"]
    master = ec2.create_security_group(GroupName="m", Description="m", VpcId=vpc)["GroupId"]
    core = ec2.create_security_group(GroupName="c", Description="c", VpcId=vpc)["GroupId"]
    config = InfraConfig(Settings(lake_uri=f"s3://{BUCKET}", region=REGION, emr_subnet_id=subnet,
                                  emr_master_security_group=master, emr_core_security_group=core))
    before = _network_lines(audit(config, clients))
    assert sorted(before) == sorted([
        *(f"network {r}: not tagged for-use-with-amazon-emr-managed-policies=true (AmazonEMRServicePolicy_v2 "
          f"cannot use it)" for r in (subnet, vpc, master, core)),
        f"network {subnet}: no S3 gateway endpoint on route table "
        f"{describe_network(ec2, REGION, subnet).route_table_id} (private subnet: the nodes cannot reach S3 "
        "(logs, bootstrap, wheelhouse, EMRFS) without it)",
        f"network {vpc}: private subnet without a KMS interface endpoint (private DNS): nodes cannot get the "
        "local-disk encryption key and the cluster fails to start"])

    provision(config, clients)
    assert _network_lines(audit(config, clients)) == []
    for resource in (subnet, vpc, master, core):
        tags = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [resource]}])["Tags"]
        assert TAG in [{"Key": tag["Key"], "Value": tag["Value"]} for tag in tags], resource
    network = describe_network(ec2, REGION, subnet)
    (endpoint,) = ec2.describe_vpc_endpoints(VpcEndpointIds=[network.s3_endpoint_id])["VpcEndpoints"]
    assert endpoint["ServiceName"] == f"com.amazonaws.{REGION}.s3" and endpoint["VpcEndpointType"] == "Gateway"
    assert network.route_table_id in endpoint["RouteTableIds"] and network.private
    (kms,) = ec2.describe_vpc_endpoints(VpcEndpointIds=[network.kms_endpoint_id])["VpcEndpoints"]
    assert kms["ServiceName"] == f"com.amazonaws.{REGION}.kms" and kms["PrivateDnsEnabled"] is True
    (group,) = ec2.describe_security_groups(GroupIds=[g["GroupId"] for g in kms["Groups"]])["SecurityGroups"]
    assert group["IpPermissions"][0]["FromPort"] == 443
    assert group["IpPermissions"][0]["IpRanges"] == [{"CidrIp": "10.20.0.0/16"}]

    again = provision(config, clients)  # idempotent: no second endpoint, nothing re-tagged
    assert not [c for c in again.changes if c.resource.startswith("network") and c.status != "unchanged"]
    assert len(ec2.describe_vpc_endpoints()["VpcEndpoints"]) == 2  # S3 gateway + KMS interface, once each


def test_a_public_subnet_is_told_apart_and_needs_no_kms_endpoint(clients):
    public = describe_network(clients.ec2, REGION, make_subnet(public=True))
    assert public.private is False
    assert not [line for line in network_deviations(public) if "KMS" in line]


def test_audit_names_a_missing_subnet_setting_and_a_removed_tag(clients, config):
    provision(config, clients)
    clients.ec2.delete_tags(Resources=[config.settings.emr_subnet_id], Tags=[TAG])
    assert _network_lines(audit(config, clients)) == [
        f"network {config.settings.emr_subnet_id}: not tagged for-use-with-amazon-emr-managed-policies=true "
        "(AmazonEMRServicePolicy_v2 cannot use it)"]
    no_subnet = InfraConfig(Settings(lake_uri=f"s3://{BUCKET}", region=REGION))
    assert any("FRUITS_EMR_SUBNET_ID (--subnet) is not set" in d for d in audit(no_subnet, clients))
    unknown = InfraConfig(Settings(lake_uri=f"s3://{BUCKET}", region=REGION, emr_subnet_id="subnet-00000000"))
    assert any("no such subnet" in d for d in audit(unknown, clients))


def test_job_flow_places_the_cluster_in_the_subnet_with_the_managed_policy_tag():
    settings = Settings(lake_uri="s3://b", emr_subnet_id="subnet-1", emr_master_security_group="sg-m",
                        emr_core_security_group="sg-c", emr_service_access_security_group="sg-s")
    flow = build_job_flow(settings, RunParams().cluster, run_key="r", code_uri="s3://b/code/v")
    instances = flow["Instances"]
    assert (instances["Ec2SubnetId"], instances["EmrManagedMasterSecurityGroup"],
            instances["EmrManagedSlaveSecurityGroup"], instances["ServiceAccessSecurityGroup"]) == \
        ("subnet-1", "sg-m", "sg-c", "sg-s")
    assert TAG in flow["Tags"]
    bare = build_job_flow(Settings(lake_uri="s3://b", emr_subnet_id="subnet-1"), RunParams().cluster, run_key="r",
                          code_uri="s3://b/code/v")["Instances"]
    assert "EmrManagedMasterSecurityGroup" not in bare and bare["Ec2SubnetId"] == "subnet-1"


@pytest.mark.parametrize("env, message", [
    ({"FRUITS_EMR_IDLE_TIMEOUT_SECONDS": "59"}, r"FRUITS_EMR_IDLE_TIMEOUT_SECONDS=59 is outside AWS's range .* 60\.\.604800"),
    ({"FRUITS_EMR_IDLE_TIMEOUT_SECONDS": "604801"}, r"FRUITS_EMR_IDLE_TIMEOUT_SECONDS=604801"),
    ({"FRUITS_EMR_IDLE_TIMEOUT_SECONDS": "an hour"}, r"FRUITS_EMR_IDLE_TIMEOUT_SECONDS='an hour' is not a whole number"),
    ({"FRUITS_EMR_SUBNET_ID": "vpc-1"}, r"FRUITS_EMR_SUBNET_ID='vpc-1' is not a subnet id"),
    ({"FRUITS_EMR_SUBNET_ID": "subnet-1", "FRUITS_EMR_MASTER_SECURITY_GROUP": "sg-1"},
     r"FRUITS_EMR_MASTER_SECURITY_GROUP and FRUITS_EMR_CORE_SECURITY_GROUP go together"),
    ({"FRUITS_EMR_SERVICE_ACCESS_SECURITY_GROUP": "sg-1"}, r"needs FRUITS_EMR_SUBNET_ID"),
    ({"FRUITS_MASTER_INSTANCE_TYPE": "m5.xlarge"}, r"FRUITS_MASTER_INSTANCE_TYPE is no longer read.*instance_type"),
    ({"FRUITS_POLL_SECONDS": "0"}, r"FRUITS_POLL_SECONDS=0 must be at least 1"),
    ({"FRUITS_ORPHAN_MIN_AGE_SECONDS": "-1"}, r"FRUITS_ORPHAN_MIN_AGE_SECONDS=-1"),
])
def test_settings_refuse_each_bad_value_naming_the_variable_and_the_rule(env, message):
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({"FRUITS_LAKE_URI": "s3://b", **env})


def test_idle_timeout_bounds_are_accepted():
    for seconds in ("60", "604800"):
        assert Settings.from_env({"FRUITS_LAKE_URI": "s3://b", "FRUITS_EMR_IDLE_TIMEOUT_SECONDS": seconds})


def test_no_cluster_is_planned_without_a_subnet():
    with pytest.raises(SettingsError, match="FRUITS_EMR_SUBNET_ID is not set.*default subnet"):
        check_network_settings(Settings(lake_uri="s3://b"))
    check_network_settings(Settings(lake_uri="s3://b", emr_subnet_id="subnet-1"))
