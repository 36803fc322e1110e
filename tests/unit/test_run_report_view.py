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


HOSTILE_LABEL = '<script>alert("x")</script>'
CLASSIFIER = {"uri": "s3://fruits-lake/classifier/r1", "accuracy": 0.9375, "macro_f1": 0.91234,
              "per_label": {}, "confusion_matrix": None, "accuracy_by_k": {}, "excluded_labels": None,
              "n_train": 60, "n_test": 16, "labelled_uploads": 3,
              "unsure": {"method": "max probability below 0.6", "held_out": 16, "held_out_sure_and_right": 0.875,
                         "held_out_unsure": 0.0625, "held_out_sure_and_wrong": 0.0625, "not_fruit_photos": 20,
                         "not_fruit_unsure": 0.95},
              "publication": {"published": False, "why": "worse by more than 1 point: 80% against 90%",
                              "compared_with": "r0", "shared_held_out": 10, "new_right": 8, "current_right": 9}}
PREDICTIONS = {"uri": "s3://fruits-lake/predictions/r1", "model": "r0", "predicted": 9, "unsure": 2,
               "by_label": {"Kiwi": 5, HOSTILE_LABEL: 2}, "mean_probability_by_label": {"Kiwi": 0.97, HOSTILE_LABEL: 0.8},
               "reason": None}
LABELS = {"files": 2, "rows": 5, "accepted": 2, "rejected": 3,
          "rejected_by_reason": {"unknown_path": 2, "empty_label": 1},
          "rejected_examples": {
              "unknown_path": [{"file": "s3://fruits-lake/labels/day1.csv", "row": 2, "path": "uploads/<img src=x>.jpg",
                                "label": HOSTILE_LABEL, "reason": "unknown_path", "detail": "no such upload"},
                               {"file": "s3://fruits-lake/labels/day1.csv", "row": 4, "path": "uploads/b.jpg",
                                "label": "Kiwi", "reason": "unknown_path", "detail": ""}],
              "empty_label": [{"file": "s3://fruits-lake/labels/day2.parquet", "row": 1, "path": "uploads/c.jpg",
                               "label": "", "reason": "empty_label", "detail": None}]},
          "file_problems": [{"file": "s3://fruits-lake/labels/<notes>.txt", "reason": "not_csv_or_parquet",
                             "detail": "only .csv and .parquet files are read"}],
          "digest": "sha256:abc"}


def _page_with(**extra) -> tuple[str, dict[str, str]]:
    report = _report(**extra)
    report["uris"]["predictions"] = (extra.get("predictions") or {}).get("uri")
    page = render_report(report, run_id="manual__1", run_state="success", picture_url=None)
    return page, fields_of(page)


def test_the_page_shows_the_days_predictions_by_label():
    page, shown = _page_with(predictions=PREDICTIONS)
    assert "<h2>Predictions</h2>" in page
    assert (shown["predictions.model"], shown["predictions.predicted"], shown["predictions.unsure"]) == ("r0", "9", "2")
    assert shown["predictions.by_label.Kiwi"] == "5" and shown["predictions.mean_probability_by_label.Kiwi"] == "0.970"
    assert shown[f"predictions.by_label.{HOSTILE_LABEL}"] == "2"
    assert shown[f"predictions.mean_probability_by_label.{HOSTILE_LABEL}"] == "0.800"
    assert "https://s3.console.aws.amazon.com/s3/buckets/fruits-lake?prefix=predictions%2Fr1" in page
    # the label came from a user: escaped in the text and in the attribute
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_a_day_without_a_classifier_says_why_nothing_was_predicted():
    page, shown = _page_with(predictions={"uri": "s3://fruits-lake/predictions/r1", "model": None, "predicted": 0,
                                          "unsure": 0, "by_label": {}, "mean_probability_by_label": {},
                                          "reason": "no classifier published yet"})
    assert shown["predictions.reason"] == "no classifier published yet"
    assert "predictions.predicted" not in shown and "predictions.model" not in shown


def test_the_classifier_section_says_how_often_it_is_unsure_and_whether_it_was_published():
    page, shown = _page_with(classifier=CLASSIFIER)
    assert shown["classifier.unsure.method"] == "max probability below 0.6"
    assert shown["classifier.unsure.held_out"] == "16"
    assert (shown["classifier.unsure.held_out_sure_and_right"], shown["classifier.unsure.held_out_unsure"],
            shown["classifier.unsure.held_out_sure_and_wrong"]) == ("87.5%", "6.2%", "6.2%")
    assert shown["classifier.unsure.not_fruit_unsure"] == "95.0%" and shown["classifier.unsure.not_fruit_photos"] == "20"
    assert shown["classifier.publication.published"] == "no"
    assert shown["classifier.publication.why"] == "worse by more than 1 point: 80% against 90%"
    assert (shown["classifier.publication.compared_with"], shown["classifier.publication.shared_held_out"],
            shown["classifier.publication.new_right"], shown["classifier.publication.current_right"]) == ("r0", "10", "8", "9")
    assert shown["classifier.labelled_uploads"] == "3"
    published = CLASSIFIER | {"publication": {"published": True, "why": "first classifier", "compared_with": None,
                                              "shared_held_out": 0, "new_right": 0, "current_right": 0}}
    _, shown = _page_with(classifier=published)
    assert shown["classifier.publication.published"] == "yes" and "classifier.publication.compared_with" not in shown


def test_a_classifier_of_before_the_not_sure_figures_still_renders():
    old = {key: value for key, value in CLASSIFIER.items() if key not in ("unsure", "publication", "labelled_uploads")}
    for classifier in (old, old | {"unsure": None, "publication": None, "labelled_uploads": None}):
        page, shown = _page_with(classifier=classifier)
        assert shown["classifier.accuracy"] == "93.8%"
        assert not any(name.startswith(("classifier.unsure", "classifier.publication", "classifier.labelled"))
                       for name in shown)


def test_the_page_shows_the_confirmed_labels_and_escapes_what_users_wrote():
    page, shown = _page_with(labels=LABELS)
    assert "<h2>Confirmed labels</h2>" in page
    assert (shown["labels.files"], shown["labels.rows"], shown["labels.accepted"], shown["labels.rejected"]) == \
        ("2", "5", "2", "3")
    assert shown["labels.rejected_by_reason.unknown_path"] == "2" and shown["labels.rejected_by_reason.empty_label"] == "1"
    examples = shown["labels.rejected_examples.unknown_path"].splitlines()
    assert examples[0] == ('s3://fruits-lake/labels/day1.csv row 2: uploads/<img src=x>.jpg labelled '
                           '<script>alert("x")</script> (no such upload)')
    assert examples[1] == "s3://fruits-lake/labels/day1.csv row 4: uploads/b.jpg labelled Kiwi"
    assert shown["labels.file_problems"] == "1" and "not_csv_or_parquet" in page
    assert shown["labels.digest"] == "sha256:abc"
    assert "<script>" not in page and "<img src=x>" not in page and "<notes>" not in page
    assert "&lt;img src=x&gt;" in page and "&lt;notes&gt;" in page


@pytest.mark.parametrize("name", ["predictions", "labels", "classifier"])
def test_absent_sections_are_left_out(name):
    page, shown = _page_with(**{name: None})
    assert not any(field.startswith(name + ".") for field in shown)
    assert {"predictions": "<h2>Predictions</h2>", "labels": "<h2>Confirmed labels</h2>",
            "classifier": "<h2>Classifier</h2>"}[name] not in page


def test_a_report_with_every_new_section_renders_from_build_report():
    validation = {"listed": 5, "valid": 5, "rejected": 0, "labels": LABELS}
    figures = {key: value for key, value in CLASSIFIER.items() if key != "uri"}
    report = build_report(LAKE, run_key="r1", status="success", compute="emr", validation=validation,
                          feature_result={"featurized": 5, "rejected": 0},
                          pca_report={"k": 12, "cumulative": 0.9, "n_images": 43}, classifier_figures=figures,
                          predictions={k: v for k, v in PREDICTIONS.items() if k != "uri"} | {"seconds": 3.0})
    page = render_report(report, run_id="manual__1", run_state="success", picture_url=None)
    shown = fields_of(page)
    assert shown["predictions.unsure"] == "2" and shown["classifier.unsure.not_fruit_unsure"] == "95.0%"
    assert shown["classifier.publication.published"] == "no" and shown["labels.accepted"] == "2"
    assert "https://s3.console.aws.amazon.com/s3/buckets/fruits-lake?prefix=predictions%2Fr1" in page
    assert "<script>" not in page
