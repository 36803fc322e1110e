"""Which clusters a run terminates before creating its own, and the teardown's fallback to tags."""
from datetime import datetime, timedelta, timezone

from fruits_pipeline.orphans import clusters_to_terminate, select_orphans

NOW = datetime(2026, 11, 30, 6, 0, tzinfo=timezone.utc)


def _cluster(cluster_id, run_key, age_seconds, naive=False):
    created = NOW - timedelta(seconds=age_seconds)
    return {"cluster_id": cluster_id, "created": created.replace(tzinfo=None) if naive else created,
            "tags": {"project": "fruits-pipeline", **({"run_key": run_key} if run_key else {})}}


def test_orphans_are_other_runs_clusters_older_than_the_margin():
    clusters = [_cluster("j-OLD", "2026-11-28T000000Z", 7200), _cluster("j-YOUNG", "2026-11-29T000000Z", 600),
                _cluster("j-MINE", "2026-11-30T000000Z", 9000), _cluster("j-NOKEY", None, 7200, naive=True)]
    chosen = select_orphans(clusters, run_key="2026-11-30T000000Z", min_age_seconds=3600, now=NOW)
    assert [c["cluster_id"] for c in chosen] == ["j-OLD", "j-NOKEY"]  # never this run's own cluster
    assert [c["cluster_id"] for c in select_orphans(clusters, run_key="2026-11-30T000000Z", min_age_seconds=0,
                                                    now=NOW)] == ["j-OLD", "j-YOUNG", "j-NOKEY"]


def test_the_teardown_uses_the_id_and_falls_back_to_tags_only_without_one():
    def never():
        raise AssertionError("looked up by tags although create_cluster returned an id")

    assert clusters_to_terminate("j-1", never) == ["j-1"]
    for missing in (None, "", "None"):  # what the template renders when create_cluster pushed nothing
        assert clusters_to_terminate(missing, lambda: ["j-2", "j-3"]) == ["j-2", "j-3"]
    assert clusters_to_terminate(None, lambda: []) == []


def test_a_lookalike_the_role_may_not_describe_is_left_alone():
    import boto3
    from botocore.stub import Stubber

    from fruits_pipeline.orphans import terminate_orphan_clusters

    emr = boto3.client("emr", region_name="eu-west-3", aws_access_key_id="x", aws_secret_access_key="x")
    old = NOW - timedelta(hours=5)
    with Stubber(emr) as stub:
        stub.add_response("list_clusters", {"Clusters": [
            {"Id": "j-LOOK", "Name": "fruits-pipeline-lookalike", "Status": {"State": "WAITING"}},
            {"Id": "j-OLD", "Name": "fruits-pipeline-2026-11-28T000000Z", "Status": {"State": "WAITING"}},
            {"Id": "j-ANALYTICS", "Name": "analytics", "Status": {"State": "RUNNING"}}]})
        stub.add_client_error("describe_cluster", "AccessDeniedException", "not authorized",
                              expected_params={"ClusterId": "j-LOOK"})
        stub.add_response("describe_cluster", {"Cluster": {
            "Id": "j-OLD", "Name": "fruits-pipeline-2026-11-28T000000Z",
            "Status": {"State": "WAITING", "Timeline": {"CreationDateTime": old}},
            "Tags": [{"Key": "project", "Value": "fruits-pipeline"}, {"Key": "run_key", "Value": "2026-11-28T000000Z"}]}},
            expected_params={"ClusterId": "j-OLD"})
        stub.add_response("terminate_job_flows", {}, expected_params={"JobFlowIds": ["j-OLD"]})
        listed = terminate_orphan_clusters(emr, run_key="2026-11-30T000000Z", min_age_seconds=3600, now=NOW)
        stub.assert_no_pending_responses()
    assert listed == [{"cluster_id": "j-OLD", "run_key": "2026-11-28T000000Z", "state": "WAITING",
                       "age_seconds": 5 * 3600}]
