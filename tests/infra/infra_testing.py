"""Constants shared by the infra tests (imported by name: conftest modules are not importable reliably)."""
REGION = "eu-west-3"
BUCKET = "fruits-lake-test"


def make_subnet(public: bool = False, endpoint_url: str | None = None) -> str:
    """A VPC and a subnet in REGION (moto); public: a 0.0.0.0/0 route to an internet gateway."""
    import boto3

    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=endpoint_url)
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24")["Subnet"]["SubnetId"]
    if public:
        gateway = ec2.create_internet_gateway()["InternetGateway"]["InternetGatewayId"]
        ec2.attach_internet_gateway(InternetGatewayId=gateway, VpcId=vpc)
        table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
        ec2.create_route(RouteTableId=table, DestinationCidrBlock="0.0.0.0/0", GatewayId=gateway)
        ec2.associate_route_table(RouteTableId=table, SubnetId=subnet)
    return subnet


def _parliament():
    import warnings

    with warnings.catch_warnings():
        # parliament 1.6.4 imports pkg_resources (setuptools, pinned below 81 in pyproject) to find its data files
        warnings.simplefilter("ignore", UserWarning)
        import parliament

    return parliament


def parliament_findings(document: dict, *, trust: bool) -> list[str]:
    """parliament's findings as "ISSUE: detail". A trust policy has a Principal and no Resource, which
    parliament (identity policies only) reports as MALFORMED; that one finding is expected there."""
    import json

    parliament = _parliament()
    policy = parliament.analyze_policy_string(json.dumps(document), include_community_auditors=False)
    findings = []
    for finding in policy.findings:
        if trust and finding.issue == "MALFORMED" and "neither Resource nor NotResource" in str(finding.detail):
            continue
        findings.append(f"{finding.issue}: {finding.detail}")
    if trust:  # parliament skipped the statement: check its actions exist anyway
        for statement in document["Statement"]:
            actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
            for action in actions:
                if not parliament.expand_action(action, raise_exceptions=False):
                    findings.append(f"UNKNOWN_ACTION: {action}")
    return findings


def action_resource_types(action: str) -> list[str]:
    """The resource types AWS's authorization reference lists for ``action`` ("" = none: only "*")."""
    parliament = _parliament()
    prefix, name = action.split(":")
    (privilege,) = [p for service in parliament.iam_definition if service["prefix"] == prefix
                    for p in service["privileges"] if p["privilege"] == name]
    return [r["resource_type"] for r in privilege["resource_types"] if not r["condition_keys"] or r["resource_type"]] or [""]
