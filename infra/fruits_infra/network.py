"""The network an EMR cluster of the pipeline runs in: a subnet (FRUITS_EMR_SUBNET_ID) whose subnet,
VPC and given security groups carry the tag AmazonEMRServicePolicy_v2 requires, and, for a private
subnet, the S3 gateway endpoint the nodes need (logs, bootstrap, wheelhouse, EMRFS, Amazon Linux
repositories: all on S3) and a KMS interface endpoint (the security configuration encrypts local
disks with the lake key: each node asks KMS for a data key when it starts).

Layouts that work (docs/emr.md):
- private subnet (no route to an internet gateway) + S3 gateway endpoint on its route table: the
  GDPR-minded default; nodes reach nothing but S3 and AWS endpoints in the VPC.
- public subnet (route to an internet gateway): S3 over the internet gateway; the endpoint is still
  added by provisioning when missing (traffic to S3 then stays on AWS's network).
A private subnet with a NAT gateway works too; the nodes never need it (no PyPI at bootstrap).
"""
from __future__ import annotations

from dataclasses import dataclass

from fruits_pipeline.job_flow import MANAGED_POLICY_TAG, PROJECT_TAG

TAG_KEY, TAG_VALUE = MANAGED_POLICY_TAG["Key"], MANAGED_POLICY_TAG["Value"]


class NetworkError(RuntimeError):
    """The subnet or a security group cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class Network:
    subnet_id: str
    vpc_id: str
    route_table_id: str
    private: bool  # no 0.0.0.0/0 route to an internet gateway
    tagged: dict[str, bool]  # resource id -> carries the managed-policy tag
    s3_endpoint_id: str | None  # S3 gateway endpoint on the subnet's route table
    kms_endpoint_id: str | None  # KMS interface endpoint with private DNS in the VPC
    cidr: str = ""


def s3_service_name(region: str) -> str:
    return f"com.amazonaws.{region}.s3"


def kms_service_name(region: str) -> str:
    return f"com.amazonaws.{region}.kms"


KMS_ENDPOINT_GROUP = "fruits-kms-endpoint"
ENDPOINT_TAGS = [{"ResourceType": "vpc-endpoint", "Tags": [{"Key": "project", "Value": PROJECT_TAG}]}]


def _tagged(resource: dict) -> bool:
    return any(t["Key"] == TAG_KEY and t["Value"] == TAG_VALUE for t in resource.get("Tags", []))


def _route_table(ec2, subnet_id: str, vpc_id: str) -> dict:
    """The subnet's route table: its explicit association, else the VPC's main table."""
    explicit = ec2.describe_route_tables(Filters=[{"Name": "association.subnet-id", "Values": [subnet_id]}])["RouteTables"]
    if explicit:
        return explicit[0]
    main = ec2.describe_route_tables(Filters=[{"Name": "vpc-id", "Values": [vpc_id]},
                                              {"Name": "association.main", "Values": ["true"]}])["RouteTables"]
    if not main:
        raise NetworkError(f"VPC {vpc_id} has no main route table: subnet {subnet_id} has no route")
    return main[0]


def is_private(route_table: dict) -> bool:
    return not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" and str(r.get("GatewayId", "")).startswith("igw-")
                   for r in route_table.get("Routes", []))


def describe_network(ec2, region: str, subnet_id: str, security_groups: list[str] = ()) -> Network:
    from botocore.exceptions import ClientError

    try:
        (subnet,) = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    except ClientError as error:
        raise NetworkError(f"FRUITS_EMR_SUBNET_ID={subnet_id}: no such subnet in {region} ({error})") from None
    vpc_id = subnet["VpcId"]
    (vpc,) = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"]
    tagged = {subnet_id: _tagged(subnet), vpc_id: _tagged(vpc)}
    if security_groups:
        for group in ec2.describe_security_groups(GroupIds=list(security_groups))["SecurityGroups"]:
            if group["VpcId"] != vpc_id:
                raise NetworkError(f"security group {group['GroupId']} is in {group['VpcId']}, not in the subnet's VPC {vpc_id}")
            tagged[group["GroupId"]] = _tagged(group)
    table = _route_table(ec2, subnet_id, vpc_id)
    endpoints = [e for e in ec2.describe_vpc_endpoints(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["VpcEndpoints"]
                 if e.get("State", "available").lower() not in ("deleted", "deleting", "failed", "rejected")]
    s3_endpoint = next((e["VpcEndpointId"] for e in endpoints
                        if e["ServiceName"] == s3_service_name(region)
                        and e.get("VpcEndpointType", "Gateway") == "Gateway"
                        and table["RouteTableId"] in e.get("RouteTableIds", [])), None)
    kms_endpoint = next((e["VpcEndpointId"] for e in endpoints
                         if e["ServiceName"] == kms_service_name(region) and e.get("VpcEndpointType") == "Interface"
                         and e.get("PrivateDnsEnabled")), None)
    return Network(subnet_id, vpc_id, table["RouteTableId"], is_private(table), tagged, s3_endpoint, kms_endpoint,
                   vpc.get("CidrBlock", ""))


def network_deviations(network: Network) -> list[str]:
    """What AWS would refuse, one line per resource (the audit's wording)."""
    found = [f"network {resource}: not tagged {TAG_KEY}={TAG_VALUE} (AmazonEMRServicePolicy_v2 cannot use it)"
             for resource, ok in network.tagged.items() if not ok]
    if network.s3_endpoint_id is None:
        need = ("private subnet: the nodes cannot reach S3 (logs, bootstrap, wheelhouse, EMRFS) without it"
                if network.private else "recommended: S3 traffic stays on AWS's network")
        found.append(f"network {network.subnet_id}: no S3 gateway endpoint on route table "
                     f"{network.route_table_id} ({need})")
    if network.private and network.kms_endpoint_id is None:
        found.append(f"network {network.vpc_id}: private subnet without a KMS interface endpoint (private DNS): "
                     "nodes cannot get the local-disk encryption key and the cluster fails to start")
    return found


def ensure_network(ec2, region: str, subnet_id: str, security_groups: list[str], report) -> None:
    """Tag the subnet, its VPC and the given security groups; add the S3 gateway endpoint when missing."""
    network = describe_network(ec2, region, subnet_id, security_groups)
    untagged = [resource for resource, ok in network.tagged.items() if not ok]
    if untagged:
        ec2.create_tags(Resources=untagged, Tags=[dict(MANAGED_POLICY_TAG)])
    for resource in network.tagged:
        report.add(f"network {resource}", "updated" if resource in untagged else "unchanged", f"{TAG_KEY}={TAG_VALUE}")
    if network.s3_endpoint_id is None:
        endpoint = ec2.create_vpc_endpoint(
            VpcEndpointType="Gateway", VpcId=network.vpc_id, ServiceName=s3_service_name(region),
            RouteTableIds=[network.route_table_id],
            TagSpecifications=ENDPOINT_TAGS,
        )["VpcEndpoint"]
        report.add(f"network {network.vpc_id} S3 gateway endpoint", "created",
                   f"{endpoint['VpcEndpointId']} on {network.route_table_id}")
    else:
        report.add(f"network {network.vpc_id} S3 gateway endpoint", "unchanged", network.s3_endpoint_id)
    if network.private and network.kms_endpoint_id is None:
        group = _kms_endpoint_group(ec2, network)
        endpoint = ec2.create_vpc_endpoint(
            VpcEndpointType="Interface", VpcId=network.vpc_id, ServiceName=kms_service_name(region),
            SubnetIds=[network.subnet_id], SecurityGroupIds=[group], PrivateDnsEnabled=True,
            TagSpecifications=ENDPOINT_TAGS,
        )["VpcEndpoint"]
        report.add(f"network {network.vpc_id} KMS interface endpoint", "created", endpoint["VpcEndpointId"])
    elif network.private:
        report.add(f"network {network.vpc_id} KMS interface endpoint", "unchanged", network.kms_endpoint_id)


def _kms_endpoint_group(ec2, network: Network) -> str:
    """A security group letting the VPC reach the KMS endpoint on 443 (created once)."""
    found = ec2.describe_security_groups(Filters=[{"Name": "vpc-id", "Values": [network.vpc_id]},
                                                  {"Name": "group-name", "Values": [KMS_ENDPOINT_GROUP]}])
    if found["SecurityGroups"]:
        return found["SecurityGroups"][0]["GroupId"]
    group = ec2.create_security_group(GroupName=KMS_ENDPOINT_GROUP, VpcId=network.vpc_id,
                                      Description="HTTPS from the VPC to the KMS endpoint (EMR local disk encryption)")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
        "IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": network.cidr}]}])
    return group
