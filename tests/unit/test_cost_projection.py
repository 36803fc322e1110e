"""make cost: projections from a bench result and the repository's price table."""
from __future__ import annotations

import json

import pytest

from fruits_pipeline import cost_projection as cp
from fruits_pipeline.cost import load_price_table
from fruits_pipeline.settings import DEFAULT_PRICE_TABLE

BENCH = {"images": 512, "job_images_per_second": 64.0, "ceiling_images_per_second": 75.0, "ratio": 0.85,
         "driver_peak_rss_mb": 900, "workers_peak_rss_mb": 1500, "cores": 2}


@pytest.fixture
def prices():
    return load_price_table(DEFAULT_PRICE_TABLE)


@pytest.fixture
def bench_file(tmp_path):
    path = tmp_path / "latest.json"
    path.write_text(json.dumps(BENCH))
    return path


def test_throughput_scales_with_cluster_vcpus(prices):
    small = cp.project(BENCH, prices, images=147_691, workload="w", instance_type="m5.xlarge", core_nodes=2,
                       spot=False)
    big = cp.project(BENCH, prices, images=147_691, workload="w", instance_type="m5.xlarge", core_nodes=4,
                     spot=False)
    assert small.cores == 2 * prices["instances"]["m5.xlarge"]["vcpu"]
    assert small.images_per_second == pytest.approx(32.0 * small.cores)
    assert big.images_per_second == pytest.approx(2 * small.images_per_second)
    fixed = cp.CLUSTER_STARTUP_SECONDS + 3 * cp.STEP_OVERHEAD_SECONDS + cp.PCA_STEP_SECONDS + cp.classifier_step_seconds(cp.FULL_DATASET_IMAGES)
    assert small.seconds == pytest.approx(fixed + 147_691 / small.images_per_second)


def test_cost_is_master_plus_core_nodes_per_second(prices):
    row = cp.project(BENCH, prices, images=5_000, workload="w", instance_type="m5.2xlarge", core_nodes=4,
                     spot=False)
    m52x = prices["instances"]["m5.2xlarge"]
    hours = row.seconds / 3600
    # one master + 4 core nodes, all m5.2xlarge, EC2 + EMR uplift each
    expected = hours * 5 * (m52x["ec2_on_demand_hourly"] + m52x["emr_hourly"])
    assert row.cost == pytest.approx(expected, abs=1e-3)
    spot = cp.project(BENCH, prices, images=5_000, workload="w", instance_type="m5.2xlarge", core_nodes=4,
                      spot=True)
    assert spot.seconds == row.seconds
    # only the core nodes go to spot: the master stays on demand
    saving = hours * 4 * (m52x["ec2_on_demand_hourly"] - m52x["spot_hourly_typical"])
    assert row.cost - spot.cost == pytest.approx(saving, abs=1e-3)


def test_every_shape_is_projected_for_both_workloads_and_recommended(prices):
    rows = cp.project_all(BENCH, prices, daily_images=5_000)
    assert {r.workload for r in rows} == {"full Fruits-360", "typical day"}
    assert len(rows) == 2 * 2 * len(cp.SHAPES)
    assert {r.images for r in rows} == {147_691, 5_000}
    for workload in ("full Fruits-360", "typical day"):
        best = cp.recommend(rows, workload)
        cheapest = min(r.cost for r in rows if r.workload == workload)
        assert best.workload == workload and best.cost <= cheapest * 1.10


def test_markdown_output_states_inputs_assumptions_and_a_recommendation(bench_file, capsys):
    assert cp.main(["--bench", str(bench_file), "--daily-images", "3000"]) == 0
    out = capsys.readouterr().out
    assert "Produced by `make cost` on " in out
    assert "147,691" in out and "3,000" in out
    assert "64.0 images/s on 2 cores" in out
    assert "8 min of cluster startup" in out
    assert "Recommendation:" in out and "Daily runs:" in out and "Backfill" in out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    assert len(table) == 1 + 2 * 2 * len(cp.SHAPES)
    assert all(line.count("|") == table[0].count("|") for line in table)


def test_missing_bench_says_to_run_make_bench(tmp_path, capsys):
    assert cp.main(["--bench", str(tmp_path / "none.json")]) == 2
    assert "run `make bench` first" in capsys.readouterr().err


def test_incomplete_bench_names_the_missing_keys(tmp_path):
    path = tmp_path / "latest.json"
    path.write_text(json.dumps({"images": 10}))
    with pytest.raises(cp.CostInputError, match="job_images_per_second, cores"):
        cp.load_bench(path)


def test_the_classifier_step_grows_with_the_lake_not_with_the_day(prices):
    """It retrains on every featurized image: a typical day pays for the whole lake's classifier."""
    day = cp.project(BENCH, prices, images=5_000, workload="w", instance_type="m5.xlarge", core_nodes=2, spot=False)
    assert cp.classifier_step_seconds(cp.FULL_DATASET_IMAGES) == pytest.approx(6 * 147_691 * 131 / 76_000)
    assert day.seconds > cp.CLUSTER_STARTUP_SECONDS + cp.classifier_step_seconds(cp.FULL_DATASET_IMAGES)
    assert cp.classifier_step_seconds(2 * 147_691) == pytest.approx(2 * cp.classifier_step_seconds(cp.FULL_DATASET_IMAGES))
