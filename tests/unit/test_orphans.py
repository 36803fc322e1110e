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
