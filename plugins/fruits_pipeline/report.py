"""The run report (``reports/<run_key>.json``): counts that reconcile, timings, cost, URIs."""
from __future__ import annotations

from datetime import datetime

from fruits_pipeline.lake import Lake


def step_timings_from_emr(describe_step_responses: list[dict]) -> list[dict]:
    timings = []
    for response in describe_step_responses:
        step = response["Step"]
        timeline = step["Status"].get("Timeline", {})
        start, end = timeline.get("StartDateTime"), timeline.get("EndDateTime")
        seconds = (end - start).total_seconds() if isinstance(start, datetime) and isinstance(end, datetime) else None
        timings.append({"name": step["Name"], "step_id": step["Id"], "state": step["Status"]["State"],
                        "seconds": seconds})
    return timings


def reconcile(counts: dict) -> list[str]:
    """Broken invariants of the counts, as sentences (empty when they reconcile)."""
    problems = []
    if counts["listed"] != counts["valid"] + counts["rejected"]:
        problems.append(f"listed {counts['listed']} != valid {counts['valid']} + rejected {counts['rejected']}")
    if counts.get("featurized") is not None and \
            counts["valid"] != counts["featurized"] + (counts.get("rejected_by_job") or 0):
        problems.append(f"valid {counts['valid']} != featurized {counts['featurized']} + rejected by the job "
                        f"{counts.get('rejected_by_job') or 0}")
    return problems


def build_report(lake: Lake, *, run_key: str, status: str, compute: str, validation: dict,
                 feature_result: dict | None = None, pca_report: dict | None = None, pca_result: dict | None = None,
                 step_timings: list[dict] | None = None, cluster_id: str | None = None, cost: dict | None = None,
                 message: str | None = None) -> dict:
    counts = {
        "listed": validation["listed"],
        "valid": validation["valid"],
        "rejected": validation["rejected"],
        "rejected_by_reason": validation.get("rejected_by_reason", {}),
        "already_featurized": validation.get("already_featurized", 0),
        "previously_rejected": validation.get("previously_rejected", 0),
        "featurized": feature_result.get("featurized") if feature_result else None,
        "rejected_by_job": feature_result.get("rejected") if feature_result else None,
        "reduced": (pca_result or {}).get("n_images", (pca_report or {}).get("n_images")),
    }
    ran = feature_result is not None
    return {
        "run_key": run_key,
        "status": status,
        "message": message,
        "compute": compute,
        "counts": counts,
        "reconciliation": reconcile(counts),
        "pca": {
            "k": (pca_report or {}).get("k"),
            "variance_kept": (pca_report or {}).get("cumulative"),
            "k_requested": (pca_report or {}).get("k_requested"),
            "variance_target": (pca_report or {}).get("variance_target"),
        },
        "steps": step_timings or [],
        "cluster_id": cluster_id,
        "estimated_cost": cost,
        "uris": {
            "raw": lake.raw(),
            "manifest_valid": lake.manifest_valid(run_key),
            "manifest_rejected": lake.manifest_rejected(run_key),
            "features": lake.features(run_key) if ran else None,
            "pca": lake.pca(run_key) if ran else None,
            "pca_report": lake.pca_report(run_key) if ran else None,
            "report": lake.report(run_key),
            "emr_logs": lake.emr_logs() if cluster_id else None,
        },
    }


def summary_text(report: dict) -> str:
    c = report["counts"]
    lines = [f"fruits_pipeline run {report['run_key']}: {report['status'].upper()} ({report['compute']})"]
    if report.get("message"):
        lines.append(f"  {report['message']}")
    rejected = ", ".join(f"{k}={v}" for k, v in c["rejected_by_reason"].items()) or "none"
    lines.append(f"  uploads: {c['listed']} selected, {c['valid']} valid, {c['rejected']} rejected ({rejected}); "
                 f"{c['already_featurized']} already featurized, {c['previously_rejected']} rejected before")
    if c["featurized"] is not None:
        lines.append(f"  features: {c['featurized']} featurized, {c['rejected_by_job'] or 0} rejected by the job; "
                     f"PCA on {c['reduced']} images -> k={report['pca']['k']}, "
                     f"variance kept={report['pca']['variance_kept']}")
    for step in report["steps"]:
        lines.append(f"  step {step['name']}: {step.get('state', '')} {step.get('seconds')}s")
    if report.get("cluster_id"):
        lines.append(f"  cluster {report['cluster_id']}")
    cost = report.get("estimated_cost")
    if cost:
        lines.append(f"  estimated cost {cost['amount']} {cost['currency']} for {cost['instance_hours']} "
                     f"instance-hours (prices {cost['price_table']['region']} as of {cost['price_table']['as_of']})")
    for problem in report["reconciliation"]:
        lines.append(f"  COUNTS DO NOT RECONCILE: {problem}")
    lines.append(f"  report: {report['uris']['report']}")
    return "\n".join(lines)
