import pytest

from fruits_pipeline.cost import PriceTableError, estimate_cluster_cost, hourly_price, load_price_table
from fruits_pipeline.emr import step_failure_message
from fruits_contract.lake import Lake
from fruits_pipeline.params import INSTANCE_TYPES
from fruits_pipeline.report import build_report, reconcile, summary_text
from fruits_pipeline.settings import DEFAULT_PRICE_TABLE


def test_price_table_covers_every_offered_instance_type():
    table = load_price_table(DEFAULT_PRICE_TABLE)
    assert table["region"] == "eu-west-3" and table["currency"] == "USD" and table["as_of"]
    for instance_type in INSTANCE_TYPES:
        row = table["instances"][instance_type]
        assert row["ec2_on_demand_hourly"] > row["spot_hourly_typical"] > 0 and row["emr_hourly"] > 0


def test_cost_is_instance_hours_times_price():
    table = {"region": "eu-west-3", "currency": "USD", "as_of": "2025-01-15", "source": "test",
             "instances": {"m5.xlarge": {"ec2_on_demand_hourly": 0.2, "emr_hourly": 0.05,
                                         "spot_hourly_typical": 0.1}}}
    cost = estimate_cluster_cost(table, instance_type="m5.xlarge", core_instance_count=2, use_spot=False,
                                 seconds=3600)
    assert cost["amount"] == pytest.approx(3 * 0.25) and cost["instance_hours"] == 3
    spot = estimate_cluster_cost(table, instance_type="m5.xlarge", core_instance_count=2, use_spot=True,
                                 seconds=3600)
    assert spot["amount"] == pytest.approx(0.25 + 2 * 0.15)
    assert spot["price_table"]["as_of"] == "2025-01-15"
    with pytest.raises(PriceTableError, match="x1.huge"):
        hourly_price(table, "x1.huge")


def test_report_counts_reconcile_and_summary_reads_well():
    validation = {"listed": 10, "valid": 8, "rejected": 2, "rejected_by_reason": {"undecodable": 2}}
    report = build_report(Lake("s3://b"), run_key="r1", status="success", compute="emr", validation=validation,
                          feature_result={"featurized": 7, "rejected": 1},
                          pca_report={"k": 5, "cumulative": 0.96, "n_images": 40}, cluster_id="j-1")
    assert report["counts"]["featurized"] == 7 and report["counts"]["reduced"] == 40
    assert report["reconciliation"] == []
    assert report["uris"]["report"] == "s3://b/reports/r1.json"
    text = summary_text(report)
    assert "10 selected, 8 valid, 2 rejected (undecodable=2)" in text and "k=5" in text
    assert reconcile({"listed": 3, "valid": 1, "rejected": 1}) == ["listed 3 != valid 1 + rejected 1"]


def test_the_report_says_whether_the_pca_projected_every_row_or_the_days_batch():
    from fruits_pipeline.run_report_view import render_report

    basis = {"reprojected": "new batches only", "why": "the basis did not move: weighted angle 1.20 < 5.0 degrees"}
    report = build_report(Lake("s3://b"), run_key="r2", status="success", compute="emr",
                          validation={"listed": 1, "valid": 1, "rejected": 0, "rejected_by_reason": {}},
                          pca_report={"k": 5, "cumulative": 0.96, "n_images": 40, "basis": basis,
                                      "moments": {"kept_batches": 9, "read_batches": 1}})
    assert report["pca"]["basis"] == basis and report["pca"]["moments"]["read_batches"] == 1
    assert "projected: new batches only (the basis did not move" in summary_text(report)
    assert 'data-field="pca.basis.reprojected">new batches only<' in render_report(report, run_id="r2", run_state="success", picture_url=None)


def test_duplicates_count_in_the_report_and_its_summary():
    """A photo uploaded under two names is featurized once: the second is valid but neither featurized
    nor rejected by the job; the counts reconcile only when duplicates are counted."""
    validation = {"listed": 5, "valid": 5, "rejected": 0, "rejected_by_reason": {},
                  "valid_by_format": {"HEIF": 1, "JPEG": 3, "WEBP": 1}}
    report = build_report(Lake("s3://b"), run_key="r1", status="success", compute="emr", validation=validation,
                          feature_result={"featurized": 3, "rejected": 1, "duplicates": 1})
    assert report["counts"]["duplicates"] == 1 and report["reconciliation"] == []
    text = summary_text(report)
    assert "features: 3 featurized, 1 rejected by the job, 1 duplicates" in text
    assert "valid by format: HEIF=1, JPEG=3, WEBP=1" in text
    report = build_report(Lake("s3://b"), run_key="r1", status="success", compute="emr", validation=validation,
                          feature_result={"featurized": 3, "rejected": 1})
    assert report["reconciliation"] == ["valid 5 != featurized 3 + rejected by the job 1 + duplicates 0"]


def test_step_failure_message_names_reason_and_logs():
    response = {"Step": {"Id": "s-1", "Name": "extract_features r",
                         "Status": {"State": "FAILED", "FailureDetails": {"Reason": "Out of memory"}}}}
    message = step_failure_message(response, cluster_id="j-9", log_uri="s3://b/logs/emr/")
    assert "FAILED" in message and "Out of memory" in message
    assert "s3://b/logs/emr/j-9/steps/s-1/" in message


def test_price_table_rows_are_complete_and_each_family_has_its_own_emr_charge():
    from fruits_pipeline.job_code import ARCHITECTURES

    table = load_price_table(DEFAULT_PRICE_TABLE)
    assert table["as_of"] >= "2026-11-30" and "aws.amazon.com/emr/pricing" in table["source"]
    rows = table["instances"]
    for name, row in rows.items():
        assert row["arch"] in ARCHITECTURES, f"{name}: no wheelhouse for {row['arch']}"  # the bootstrap would fail
        assert row["ec2_on_demand_hourly"] > row["spot_hourly_typical"] > 0 and row["emr_hourly"] > 0
        family, size = name.split(".")
        if size != "xlarge":  # same family, n times the vCPUs: n times the price
            n = row["vcpu"] / rows[f"{family}.xlarge"]["vcpu"]
            assert row["ec2_on_demand_hourly"] == pytest.approx(n * rows[f"{family}.xlarge"]["ec2_on_demand_hourly"], rel=0.01)
            assert row["emr_hourly"] == pytest.approx(n * rows[f"{family}.xlarge"]["emr_hourly"], rel=0.02)
    assert rows["c5.xlarge"]["emr_hourly"] != rows["m5.xlarge"]["emr_hourly"]  # c5 had m5's charge copied
    emr_by_family = {name.split(".")[0]: row["emr_hourly"] for name, row in rows.items() if name.endswith(".xlarge")}
    assert len(set(emr_by_family.values())) == len(emr_by_family)
    graviton = {name for name, row in rows.items() if row["arch"] == "aarch64"}
    assert {f"{family}.{size}" for family in ("m7g", "c7g", "r7g") for size in ("xlarge", "2xlarge", "4xlarge")} <= graviton
    assert all(rows[name].get("estimated") for name in graviton if not name.startswith("m6g"))  # said, not hidden
    assert set(INSTANCE_TYPES) == set(rows)  # the trigger form offers exactly the priced types


FIGURES = {"accuracy": 0.9, "macro_f1": 0.8889, "n_train": 30, "n_test": 10, "excluded_labels": {"fig": 3},
           "per_label": {"kiwi": {"precision": 1.0, "recall": 0.8, "support": 5},
                         "lime": {"precision": 0.8333, "recall": 1.0, "support": 5}},
           "confusion_matrix": {"labels": ["kiwi", "lime"], "matrix": [[4, 1], [0, 5]]},
           "accuracy_by_k": {"8": 0.8, "12": 0.9}, "something_else": 1}


def test_the_report_carries_the_classifiers_figures_under_the_agreed_keys():
    validation = {"listed": 43, "valid": 43, "rejected": 0}
    report = build_report(Lake("s3://b"), run_key="r1", status="success", compute="emr", validation=validation,
                          feature_result={"featurized": 43, "rejected": 0},
                          pca_report={"k": 12, "cumulative": 0.9, "n_images": 43}, classifier_figures=FIGURES)
    classifier = report["classifier"]
    assert set(classifier) == {"uri", "accuracy", "macro_f1", "per_label", "confusion_matrix", "accuracy_by_k",
                               "accuracy_by_k_measured", "fits", "excluded_labels", "n_train", "n_test", "unsure", "publication", "labelled_uploads"}
    assert classifier["uri"] == report["uris"]["classifier"] == "s3://b/classifier/r1"
    assert classifier["confusion_matrix"] == FIGURES["confusion_matrix"]
    text = summary_text(report)
    assert "classifier: held-out accuracy 90.0%, macro F1 0.889 on 10 images (trained on 30); " \
           "left out, too few images: fig (3)" in text

    young = build_report(Lake("s3://b"), run_key="r0", status="success", compute="emr", validation=validation,
                         pca_report={"k": 2, "cumulative": 0.9, "n_images": 4}, classifier_not_trained="2 images")
    assert young["classifier"] is None and "classifier: not trained: 2 images" in summary_text(young)


def test_the_report_says_what_the_day_predicted_how_sure_and_whether_the_classifier_was_published():
    validation = {"listed": 5, "valid": 5, "rejected": 0,
                  "labels": {"files": 2, "rows": 4, "accepted": 2, "rejected": 2,
                             "rejected_by_reason": {"unknown_path": 1, "empty_label": 1}, "file_problems": [
                                 {"file": "file:///l/labels/notes.txt", "reason": "not_csv_or_parquet", "detail": "x"}],
                             "digest": "d"}}
    figures = FIGURES | {"unsure": {"method": "m", "held_out_sure_and_right": 0.985, "held_out_unsure": 0.01,
                                    "not_fruit_photos": 20, "not_fruit_unsure": 0.95},
                         "publication": {"published": False, "why": "worse by more than 1 point: 80% against 90%"},
                         "labelled_uploads": 2}
    predictions = {"job": "predict_uploads", "model": "r0", "predicted": 5, "unsure": 1,
                   "by_label": {"kiwi": 3, "lime": 1}, "mean_probability_by_label": {"kiwi": 0.97, "lime": 0.9},
                   "seconds": 3.0}
    report = build_report(Lake("s3://b"), run_key="r1", status="success", compute="emr", validation=validation,
                          feature_result={"featurized": 5, "rejected": 0},
                          pca_report={"k": 12, "cumulative": 0.9, "n_images": 43}, classifier_figures=figures,
                          predictions=predictions)
    assert report["predictions"]["uri"] == report["uris"]["predictions"] == "s3://b/predictions/r1"
    assert report["predictions"]["by_label"] == {"kiwi": 3, "lime": 1} and report["predictions"]["unsure"] == 1
    assert "seconds" not in report["predictions"]
    text = summary_text(report)
    assert "predictions: 5 upload(s) answered by classifier r0: kiwi=3, lime=1; unsure 1" in text
    assert "held-out fruit sure and right 98.5%" in text and "photos of no fruit unsure 95.0% of 20" in text
    assert "NOT published: worse by more than 1 point" in text
    assert "trained on 2 upload(s) with a confirmed label" in text
    assert "confirmed labels: 2 accepted from 4 row(s) in 2 file(s); rejected: unknown_path=1, empty_label=1" in text
    assert "file file:///l/labels/notes.txt: not_csv_or_parquet" in text
    nothing = build_report(Lake("s3://b"), run_key="r2", status="success", compute="emr", validation=validation,
                           feature_result={"featurized": 5, "rejected": 0},
                           predictions={"model": None, "predicted": 0, "unsure": 0, "by_label": {},
                                        "reason": "no classifier published yet"})
    assert "predictions: none: no classifier published yet" in summary_text(nothing)


def test_an_upload_named_like_a_labelled_image_is_named_in_the_report_and_processed(tmp_path):
    from fruits_pipeline.validation import upload_collisions

    lake = Lake(f"file://{tmp_path}")
    raw = {lake.uri("raw", "Apple", "1.jpg"): 10, lake.uri("raw", "Kiwi", "2.jpg"): 10}
    selected = {lake.uri("uploads", "Apple", "1.jpg"): 10, lake.uri("uploads", "d1", "Kiwi", "2.jpg"): 10,
                lake.uri("raw", "Apple", "1.jpg"): 10}
    assert upload_collisions(lake, selected, lambda uris: uris & raw.keys()) == [
        {"path": lake.uri("uploads", "Apple", "1.jpg"), "raw_path": lake.uri("raw", "Apple", "1.jpg")}]
    report = build_report(lake, run_key="r", status="success", compute="local",
                          validation={"listed": 3, "valid": 3, "rejected": 0,
                                      "upload_collisions": upload_collisions(lake, selected, lambda uris: uris & raw.keys())})
    assert "1 upload(s) named like a labelled image, processed as app photos" in summary_text(report)
