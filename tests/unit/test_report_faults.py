"""The report tells the truth about the faults a run met: `faults` is a list of {"kind", "detail"}
(the run page in the UI renders exactly that), and the summary line names them."""
from __future__ import annotations

from fruits_contract.lake import Lake
from fruits_pipeline.report import build_report, faults_met, summary_text

VALIDATION = {"listed": 4, "valid": 4, "rejected": 0, "route": "features_and_pca",
              "partial_batches_ignored": ["s3://b/features/batch=day1"],
              "s3_faults": [{"kind": "s3_retried", "detail": "ListObjectsV2: SlowDown x2 (retried with backoff)"}]}


def test_each_fault_met_is_listed_once_with_its_kind_and_detail():
    faults = faults_met(
        validation=VALIDATION,
        feature_result={"featurized": 4, "rejected": 0, "executors_lost": [
            {"id": "2", "host": "10.0.0.7:35001", "reason": "Worker shutting down"}],
            "s3_retried": {"GetObject": {"SlowDown": 3, "ReadTimeoutError": 1}}},
        pca_result={"n_images": 4, "partial_batches_ignored": ["s3://b/features/batch=day1"]},
        s3_faults=[{"kind": "s3_retried", "detail": "GetObject: ConnectionClosedError x1 (retried with backoff)"}])

    assert [f["kind"] for f in faults] == ["s3_retried"] * 3 + ["partial_batch_ignored", "executor_lost"]
    assert all(set(f) == {"kind", "detail"} and isinstance(f["detail"], str) for f in faults)
    assert faults[2]["detail"] == ("feature job's reads of the photos, GetObject: ReadTimeoutError x1, SlowDown x3 "
                                   "(retried with backoff)")
    assert "s3://b/features/batch=day1" in faults[3]["detail"]  # named once, though both steps saw it
    assert "executor 2 on 10.0.0.7:35001: Worker shutting down" in faults[4]["detail"]


def test_the_report_and_its_summary_carry_the_faults():
    faults = faults_met(validation=VALIDATION)
    report = build_report(Lake("s3://b"), run_key="day2", status="success", compute="emr", validation=VALIDATION,
                          faults=faults)
    assert report["faults"] == faults
    line = next(l for l in summary_text(report).splitlines() if "faults met" in l)
    assert "faults met (2)" in line and "SlowDown x2" in line and "batch=day1" in line


def test_a_run_without_faults_says_nothing_of_them():
    report = build_report(Lake("s3://b"), run_key="day3", status="success", compute="emr",
                          validation={**VALIDATION, "partial_batches_ignored": [], "s3_faults": []},
                          faults=faults_met(validation={}))
    assert report["faults"] == [] and "faults" not in summary_text(report)
