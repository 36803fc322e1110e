"""The "Run report" tab's plain parts: id checks, where a run's report is, and the page rendered from a report.
Its access rules and the page in the real UI are tested against the real api-server in tests/ui."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from html.parser import HTMLParser

import pytest

from fruits_contract.lake import Lake, run_key_for
from fruits_pipeline.report import build_report
from fruits_pipeline.run_report_view import (
    NO_REPORT_SENTENCE, UnsafeId, check_id, lake_link, lake_of_outlets, render_no_report, render_report, report_uris,
)
from fruits_pipeline.validation import ValidationResult

LAKE = Lake("s3://fruits-lake")
HOSTILE_IDS = ["../../etc/passwd", "..", "a/b", "a\\b", "%2e%2e%2fx", "manual__x%2Fy", "run\x00id", "x" * 300, ""]


class Fields(HTMLParser):
    """{data-field: text} of a rendered page."""

    def __init__(self):
        super().__init__()
        self.fields, self._open = {}, []

    def handle_starttag(self, tag, attrs):
        self._open.append(dict(attrs).get("data-field"))
        if self._open[-1] is not None:
            self.fields.setdefault(self._open[-1], "")

    def handle_endtag(self, tag):
        self._open.pop()

    def handle_data(self, data):
        for name in self._open:
            if name is not None:
                self.fields[name] += data


def fields_of(page: str) -> dict[str, str]:
    parser = Fields()
    parser.feed(page)
    return parser.fields


@pytest.mark.parametrize("value", HOSTILE_IDS)
def test_ids_that_could_leave_reports_are_refused_with_their_value(value):
    with pytest.raises(UnsafeId, match="run id .* is refused"):
        check_id(value, "run id")


@pytest.mark.parametrize("value", ["scheduled__2026-11-30T00:00:00+00:00", "manual__2026-12-01T05:37:39.632405+00:00",
                                   "fruits_pipeline", "my run~1"])
def test_airflows_own_ids_pass(value):
    assert check_id(value, "run id") == value


def test_a_runs_report_is_where_the_dag_wrote_it_under_reports():
    end = datetime(2026, 11, 30, tzinfo=timezone.utc)
    assert report_uris(LAKE, "scheduled", "scheduled__2026-11-30T00:00:00+00:00", end) == (
        "s3://fruits-lake/reports/2026-11-30T000000Z.json", "s3://fruits-lake/reports/2026-11-30T000000Z.png")
    json_uri, png_uri = report_uris(LAKE, "manual", "manual__2026-12-01T05:37:39+00:00", end)
    assert json_uri == LAKE.report(run_key_for("manual", "manual__2026-12-01T05:37:39+00:00", None))
    assert json_uri.startswith("s3://fruits-lake/reports/manual__2026-12-01T05-37-39-00-00")
    # whatever a run id holds, its key stays one name directly under reports/
    for run_id in ("a/../../b", "x/y/z", "é?#1"):
        for uri in report_uris(LAKE, "manual", run_id, None):
            assert re.fullmatch(r"s3://fruits-lake/reports/[A-Za-z0-9_.-]+\.(json|png)", uri), uri
    # run ids with nothing safe in them still get keys of their own (run_key_for adds a digest of the id)
    assert report_uris(LAKE, "manual", "...", None) != report_uris(LAKE, "manual", "..", None)


def test_the_lake_comes_from_the_report_tasks_features_asset():
    assert lake_of_outlets(["s3://fruits-lake/pca", "s3://fruits-lake/features"]) == LAKE
    assert lake_of_outlets(["file:///tmp/lake/features"]) == Lake("file:///tmp/lake")
    assert lake_of_outlets(["s3://other/pca", "dataset://features", "s3://x/featuresx"]) is None
    assert lake_of_outlets([]) is None


def _report(**extra) -> dict:
    result = ValidationResult(run_key="r1", listed=6)
    result.valid = [{"path": f"s3://fruits-lake/raw/Kiwi/{i}.jpg", "format": "JPEG"} for i in range(2)]
    result.rejected = [{"path": f"s3://fruits-lake/raw/Kiwi/bad{i}.jpg", "reason": "undecodable", "detail": ""}
                       for i in range(5)] + [{"path": "s3://fruits-lake/raw/<script>.jpg", "reason": "empty", "detail": ""}]
    result.listed = len(result.valid) + len(result.rejected)
    validation = result.summary() | {"route": "features_and_pca", "route_reason": "2 valid new upload(s)"}
    report = build_report(LAKE, run_key="r1", status="success", compute="emr", validation=validation,
                          feature_result={"featurized": 2, "rejected": 0},
                          pca_report={"k": 7, "cumulative": 0.9512, "n_images": 40},
                          step_timings=[{"name": "extract_features", "state": "COMPLETED", "seconds": 30.6}],
                          cluster_id="j-ABC", picture_uri=LAKE.report_picture("r1"),
                          cost={"amount": 0.12, "currency": "USD", "instance_hours": 0.5,
                                "price_table": {"region": "eu-west-3", "as_of": "2026-11-30"}})
    report["orphan_clusters_terminated"] = [{"cluster_id": "j-OLD", "run_key": "r0", "state": "WAITING",
                                             "age_seconds": 7200}]
    report.update(extra)
    return report


def test_the_report_json_names_a_few_rejected_paths_per_reason():
    counts = _report()["counts"]
    assert counts["rejected_by_reason"] == {"empty": 1, "undecodable": 5}
    assert counts["rejected_examples"]["undecodable"] == [f"s3://fruits-lake/raw/Kiwi/bad{i}.jpg" for i in range(3)]


def test_the_page_shows_the_reports_numbers():
    report = _report()
    page = render_report(report, run_id="manual__1", run_state="success", picture_url="/pic?x=1&y=2")
    shown = fields_of(page)
    assert shown["status"] == "success" and shown["run_state"] == "success"
    assert shown["route"] == "features + PCA" and shown["route_reason"] == "2 valid new upload(s)"
    assert (shown["counts.listed"], shown["counts.valid"], shown["counts.rejected"]) == ("8", "2", "6")
    assert shown["counts.rejected_by_reason.undecodable"] == "5"
    assert shown["counts.rejected_examples.undecodable"].splitlines() == [f"s3://fruits-lake/raw/Kiwi/bad{i}.jpg" for i in range(3)]
    assert (shown["counts.featurized"], shown["pca.k"], shown["pca.variance_kept"]) == ("2", "7", "95.1%")
    assert shown["steps.extract_features.seconds"] == "30.6 s" and shown["cluster_id"] == "j-ABC"
    assert shown["estimated_cost.amount"] == "0.12" and shown["orphan_clusters_terminated"] == "1"
    assert "s3://fruits-lake/raw/Kiwi/bad0.jpg" in page and "bad3.jpg" not in page  # a few examples, not all
    assert '<img class="picture" src="/pic?x=1&amp;y=2"' in page
    # lake URIs link to the S3 console; names from uploads are escaped
    assert "https://s3.console.aws.amazon.com/s3/buckets/fruits-lake?prefix=reports%2Fr1.json" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert shown["counts.duplicates"] == "0"  # the feature job's result always has the count
    # a report without a classifier or faults has no such sections
    for absent in ("classifier.accuracy", "faults.kind"):
        assert absent not in shown
    assert "Classifier" not in page and "Faults" not in page


def test_the_page_shows_duplicates_classifier_and_faults_when_the_report_has_them():
    report = _report(
        classifier={"uri": "s3://fruits-lake/classifier/r1", "accuracy": 0.9375, "macro_f1": 0.91234,
                    "per_label": {"Kiwi": {"precision": 1.0, "recall": 0.875, "support": 8},
                                  "Apple Red 1": {"precision": 0.8889, "recall": 1.0, "support": 8}},
                    "confusion_matrix": {"labels": ["Apple Red 1", "Kiwi"], "matrix": [[8, 0], [1, 7]]},
                    "accuracy_by_k": {"2": 0.5, "7": 0.9375}, "excluded_labels": ["Lonely"],
                    "n_train": 60, "n_test": 16},
        faults=[{"kind": "s3_throttled", "detail": "SlowDown on raw/Kiwi/1.jpg, retried"}])
    report["counts"]["duplicates"] = 3
    page = render_report(report, run_id="manual__1", run_state="success", picture_url=None)
    shown = fields_of(page)
    assert shown["counts.duplicates"] == "3"
    assert shown["classifier.accuracy"] == "93.8%" and shown["classifier.macro_f1"] == "0.912"
    assert (shown["classifier.n_train"], shown["classifier.n_test"]) == ("60", "16")
    assert shown["classifier.per_label.Kiwi.recall"] == "0.875" and shown["classifier.per_label.Kiwi.support"] == "8"
    assert "classifier.confusion_matrix" in shown  # rows: true label, then its counts by predicted label
    assert "<tr><th>Apple Red 1</th><td>8</td><td>0</td></tr><tr><th>Kiwi</th><td>1</td><td>7</td></tr>" in page
    assert shown["classifier.accuracy_by_k.7"] == "93.8%" and "Lonely" in page
    assert shown["faults.kind"] == "s3_throttled" and "SlowDown on raw/Kiwi/1.jpg, retried" in page
    assert "<img" not in page  # no picture, no broken image


def test_a_run_without_report_says_so_in_one_sentence():
    shown = fields_of(render_no_report("fruits_pipeline", "manual__1", "running"))
    assert shown == {"run_state": "running", "no_report": NO_REPORT_SENTENCE}
    assert NO_REPORT_SENTENCE.count(". ") == 0 and NO_REPORT_SENTENCE.endswith(".")


def test_only_s3_uris_become_links():
    assert lake_link("file:///tmp/lake/reports/r.json") == "<code>file:///tmp/lake/reports/r.json</code>"
    assert lake_link(None) == ""


@pytest.mark.parametrize("path", ["/run", "/picture"])
def test_the_app_asks_for_a_signed_in_user_before_anything_else(path):
    """A plugin's FastAPI app is not behind Airflow's authentication by itself: its routes depend on the
    api-server's check (the rest of the access rules are tested against the real api-server in tests/ui)."""
    from fastapi.testclient import TestClient

    from fruits_pipeline.run_report_view import create_app

    response = TestClient(create_app()).get(path, params={"dag_id": "fruits_pipeline", "run_id": "../x"})
    assert response.status_code == 401
    assert fields_of(response.text) == {"refused": "Not authenticated"}
