"""The run report (``reports/<run_key>.json``): route and why, counts that reconcile, timings, cost, URIs.

A successful run also moves the pointers to the current PCA and the published classifier
(``pca/current.json``, ``classifier/current.json``), which the next run, ``make classify`` and the app
read; the classifier's only when the classifier step found it as good as the current one.
"""
from __future__ import annotations

import logging
from datetime import datetime

from fruits_contract.lake import Lake
from fruits_contract.s3_faults import report_faults
from fruits_pipeline.routes import ROUTE_TITLES

log = logging.getLogger(__name__)


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
    if counts.get("featurized") is not None and counts["valid"] != \
            counts["featurized"] + (counts.get("rejected_by_job") or 0) + (counts.get("duplicates") or 0):
        problems.append(f"valid {counts['valid']} != featurized {counts['featurized']} + rejected by the job "
                        f"{counts.get('rejected_by_job') or 0} + duplicates {counts.get('duplicates') or 0}")
    return problems


def current_pca(lake: Lake, conn_id: str | None, *, exclude_run_key: str | None = None) -> dict | None:
    """The PCA the next run builds on, from its pointer ``pca/current.json`` ({"run_key", "pca_uri",
    "pca_target"}); None when no run has fitted one (or the pointer names ``exclude_run_key``: a rerun
    of that run does not build on its own earlier attempt)."""
    from fruits_pipeline import storage

    pointer = storage.read_json(lake.pca_current(), conn_id)
    return None if not pointer or pointer.get("run_key") == exclude_run_key else pointer


def current_classifier(lake: Lake, conn_id: str | None) -> dict | None:
    """The published classifier, from its pointer ``classifier/current.json`` ({"run_key",
    "classifier_uri", "accuracy"}), which the classifier step writes; None when none is published."""
    from fruits_pipeline import storage

    return storage.read_json(lake.classifier_current(), conn_id)


def current_pointers(report: dict) -> dict[str, dict]:
    """The pointers a run report moves, by kind: a successful run that fitted a PCA makes it the
    current one (with the digest of the confirmed labels it trained on, so that a day with new
    labels and no new photo still trains); its classifier becomes the published one only when the
    classifier step found it as good as the current one (``publication``)."""
    if report.get("status") != "success":
        return {}
    uris, pointers = report.get("uris") or {}, {}
    if uris.get("pca"):
        pointers["pca"] = {"run_key": report["run_key"], "pca_uri": uris["pca"], "pca_target": report.get("pca_target"),
                           "labels_digest": (report.get("labels") or {}).get("digest")}
    classifier = report.get("classifier") or {}
    if classifier.get("uri") and (classifier.get("publication") or {}).get("published", True):
        pointers["classifier"] = {"run_key": report["run_key"], "classifier_uri": classifier["uri"],
                                  "accuracy": classifier.get("accuracy")}
    return pointers


def write_current_pointers(lake: Lake, report: dict, conn_id: str | None) -> None:
    """Point ``pca/current.json`` and ``classifier/current.json`` at this run's outputs: each one PUT
    of a small object, after the outputs and the report are written, so a reader sees the old
    pointer or the new one, never a half-written one nor one naming an unfinished output. Only this
    task moves them: the cluster's nodes may not (infra/, the instance profile)."""
    from fruits_pipeline import storage

    where = {"pca": lake.pca_current(), "classifier": lake.classifier_current()}
    for kind, pointer in current_pointers(report).items():
        storage.write_json(where[kind], pointer, conn_id)


def faults_met(*, validation: dict, feature_result: dict | None = None, pca_result: dict | None = None,
               s3_faults: list[dict] | None = None) -> list[dict]:
    """The faults a run met and survived, as {"kind", "detail"}: S3 errors retried (validation's, the
    report task's own and the feature job's Python workers'), partial feature batches ignored (by validation or the PCA job), executors lost
    during the feature job (their tasks ran again elsewhere)."""
    faults = [*validation.get("s3_faults", []), *(s3_faults or []),
              *report_faults((feature_result or {}).get("s3_retried", {}), where="feature job's reads of the photos, ")]
    partial = {*validation.get("partial_batches_ignored", []), *(pca_result or {}).get("partial_batches_ignored", [])}
    faults += [{"kind": "partial_batch_ignored",
                "detail": f"{batch}: a feature job died before committing it; ignored, its images taken again"}
               for batch in sorted(partial)]
    faults += [{"kind": "executor_lost", "detail": f"executor {lost['id']} on {lost['host']}: {lost['reason']}; "
                                                   "its tasks ran again on the other executors"}
               for lost in (feature_result or {}).get("executors_lost", [])]
    return faults


def build_report(lake: Lake, *, run_key: str, status: str, compute: str, validation: dict,
                 feature_result: dict | None = None, pca_report: dict | None = None, pca_result: dict | None = None,
                 step_timings: list[dict] | None = None, cluster_id: str | None = None, cost: dict | None = None,
                 message: str | None = None, pca_target: dict | None = None, picture_uri: str | None = None,
                 classifier_figures: dict | None = None, classifier_not_trained: str | None = None,
                 predictions: dict | None = None, faults: list[dict] | None = None) -> dict:
    counts = {
        "listed": validation["listed"],
        "valid": validation["valid"],
        "rejected": validation["rejected"],
        "rejected_by_reason": validation.get("rejected_by_reason", {}),
        "rejected_examples": validation.get("rejected_examples", {}),
        "valid_by_format": validation.get("valid_by_format", {}),
        "already_featurized": validation.get("already_featurized", 0),
        "previously_rejected": validation.get("previously_rejected", 0),
        "featurized": feature_result.get("featurized") if feature_result else None,
        "rejected_by_job": feature_result.get("rejected") if feature_result else None,
        # same bytes as another upload of the run: featurized once, under the smallest path
        "duplicates": feature_result.get("duplicates", 0) if feature_result else None,
        "reduced": (pca_result or {}).get("n_images", (pca_report or {}).get("n_images")),
    }
    ran = feature_result is not None
    pca_ran = ran or pca_report is not None
    return {
        "run_key": run_key,
        "status": status,
        "message": message,
        "compute": compute,
        "route": validation.get("route"),
        "route_reason": validation.get("route_reason"),
        "pca_target": pca_target if pca_ran else None,
        "counts": counts,
        "reconciliation": reconcile(counts),
        "pca": {
            "k": (pca_report or {}).get("k"),
            "variance_kept": (pca_report or {}).get("cumulative"),
            "k_requested": (pca_report or {}).get("k_requested"),
            "variance_target": (pca_report or {}).get("variance_target"),
            # what a day cost the PCA: the batches whose moments were read, and whether every row was projected
            "moments": (pca_report or {}).get("moments"),
            "basis": (pca_report or {}).get("basis"),
        },
        "classifier": classifier_report(lake.classifier(run_key), classifier_figures) if classifier_figures else None,
        "classifier_not_trained": classifier_not_trained,  # why a run that fitted a PCA has no classifier
        "labels": validation.get("labels"),  # the users' confirmed labels: accepted, rejected and why
        "upload_collisions": validation.get("upload_collisions") or [],  # uploads named like a raw/ image
        "predictions": predictions_report(lake.predictions(run_key), predictions) if predictions else None,
        "steps": step_timings or [],
        "cluster_id": cluster_id,
        "estimated_cost": cost,
        "faults": faults or [],
        "uris": {
            "raw": lake.raw(),
            "manifest_valid": lake.manifest_valid(run_key),
            "manifest_rejected": lake.manifest_rejected(run_key),
            "features": lake.features(run_key) if ran else None,
            "pca": lake.pca(run_key) if pca_ran else None,
            "pca_report": lake.pca_report(run_key) if pca_ran else None,
            "classifier": lake.classifier(run_key) if classifier_figures else None,
            "predictions": lake.predictions(run_key) if predictions else None,
            "report": lake.report(run_key),
            "picture": picture_uri,
            "emr_logs": lake.emr_logs() if cluster_id else None,
        },
    }


CLASSIFIER_KEYS = ("accuracy", "macro_f1", "per_label", "confusion_matrix", "accuracy_by_k", "accuracy_by_k_measured",
                   "fits", "excluded_labels", "n_train", "n_test", "unsure", "publication", "labelled_uploads")
PREDICTION_KEYS = ("model", "predicted", "unsure", "by_label", "mean_probability_by_label", "reason")


def classifier_report(uri: str, figures: dict) -> dict:
    """The report's ``classifier`` object: the classifier's URI and its held-out figures (figures.json)."""
    return {"uri": uri, **{key: figures.get(key) for key in CLASSIFIER_KEYS}}


def predictions_report(uri: str, job_result: dict) -> dict:
    """The report's ``predictions`` object: the day's answers (the predictions step's job result)."""
    return {"uri": uri, **{key: job_result.get(key) for key in PREDICTION_KEYS}}


def _percent(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "n/a"


def summary_text(report: dict) -> str:
    c = report["counts"]
    lines = [f"fruits_pipeline run {report['run_key']}: {report['status'].upper()} ({report['compute']})"]
    if report.get("route"):
        lines.append(f"  route: {ROUTE_TITLES.get(report['route'], report['route'])}"
                     + (f": {report['route_reason']}" if report.get("route_reason") else ""))
    if report.get("message"):
        lines.append(f"  {report['message']}")
    rejected = ", ".join(f"{k}={v}" for k, v in c["rejected_by_reason"].items()) or "none"
    lines.append(f"  uploads: {c['listed']} selected, {c['valid']} valid, {c['rejected']} rejected ({rejected}); "
                 f"{c['already_featurized']} already featurized, {c['previously_rejected']} rejected before")
    if c.get("valid_by_format"):
        lines.append("  valid by format: " + ", ".join(f"{k}={v}" for k, v in c["valid_by_format"].items()))
    pca = report["pca"]
    kept = f"{pca['variance_kept']:.1%}" if isinstance(pca.get("variance_kept"), (int, float)) else None
    if c["featurized"] is not None:
        lines.append(f"  features: {c['featurized']} featurized, {c['rejected_by_job'] or 0} rejected by the job, "
                     f"{c.get('duplicates') or 0} duplicates")
    if pca.get("k") is not None:
        basis = pca.get("basis") or {}
        lines.append(f"  PCA on {c['reduced']} images -> k={pca['k']} components keeping {kept} of the variance"
                     + (f"; projected: {basis['reprojected']} ({basis.get('why')})" if basis.get("reprojected") else ""))
    classifier = report.get("classifier")
    if classifier and classifier.get("accuracy") is not None:
        left_out = ", ".join(f"{label} ({n})" for label, n in (classifier.get("excluded_labels") or {}).items())
        lines.append(f"  classifier: held-out accuracy {classifier['accuracy']:.1%}, macro F1 {classifier['macro_f1']:.3f} "
                     f"on {classifier['n_test']} images (trained on {classifier['n_train']})"
                     + (f"; left out, too few images: {left_out}" if left_out else ""))
        unsure = classifier.get("unsure") or {}
        if unsure:
            lines.append(f"  not sure ({unsure.get('method')}): held-out fruit sure and right "
                         f"{_percent(unsure.get('held_out_sure_and_right'))}, unsure {_percent(unsure.get('held_out_unsure'))}; "
                         f"photos of no fruit unsure {_percent(unsure.get('not_fruit_unsure'))} "
                         f"of {unsure.get('not_fruit_photos')}")
        publication = classifier.get("publication") or {}
        if publication:
            lines.append(f"  {'published' if publication.get('published') else 'NOT published'}: {publication.get('why')}")
        if classifier.get("labelled_uploads"):
            lines.append(f"  trained on {classifier['labelled_uploads']} upload(s) with a confirmed label")
    elif report.get("classifier_not_trained"):
        lines.append(f"  classifier: not trained: {report['classifier_not_trained']}")
    collisions = report.get("upload_collisions") or []
    if collisions:
        lines.append(f"  {len(collisions)} upload(s) named like a labelled image, processed as app photos: "
                     + ", ".join(f"{c['path']} (as {c['raw_path']})" for c in collisions[:3])
                     + (" ..." if len(collisions) > 3 else ""))
    labels = report.get("labels") or {}
    if labels.get("rows") or labels.get("file_problems"):
        rejected = ", ".join(f"{k}={v}" for k, v in (labels.get("rejected_by_reason") or {}).items()) or "none"
        lines.append(f"  confirmed labels: {labels.get('accepted', 0)} accepted from {labels.get('rows', 0)} row(s) in "
                     f"{labels.get('files', 0)} file(s); rejected: {rejected}"
                     + "".join(f"; file {p['file']}: {p['reason']}" for p in labels.get("file_problems") or []))
    predictions = report.get("predictions")
    if predictions:
        if predictions.get("model"):
            by_label = ", ".join(f"{label}={n}" for label, n in (predictions.get("by_label") or {}).items()) or "none sure"
            lines.append(f"  predictions: {predictions['predicted']} upload(s) answered by classifier {predictions['model']}: "
                         f"{by_label}; unsure {predictions['unsure']}")
        else:
            lines.append(f"  predictions: none: {predictions.get('reason')}")
    for step in report["steps"]:
        lines.append(f"  step {step['name']}: {step.get('state', '')} {step.get('seconds')}s")
    if report.get("cluster_id"):
        lines.append(f"  cluster {report['cluster_id']}")
    cost = report.get("estimated_cost")
    if cost:
        lines.append(f"  estimated cost {cost['amount']} {cost['currency']} for {cost['instance_hours']} "
                     f"instance-hours (prices {cost['price_table']['region']} as of {cost['price_table']['as_of']})")
    faults = report.get("faults") or []
    if faults:
        lines.append(f"  faults met ({len(faults)}): " + "; ".join(f"{f['kind']}: {f['detail']}" for f in faults))
    for problem in report["reconciliation"]:
        lines.append(f"  COUNTS DO NOT RECONCILE: {problem}")
    lines.append(f"  report: {report['uris']['report']}")
    if report["uris"].get("picture"):
        lines.append(f"  picture: {report['uris']['picture']}")
    return "\n".join(lines)
