"""Which classifier the app answers with: the publication rule, the lake's pointer as ``classify
--model`` reads it, and the answer's shape (no Spark: the export is NumPy)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fruits_spark.classifier_training import publish_decision
from fruits_spark.classify import ExportError, load_export, write_export


def test_a_new_classifier_is_published_unless_more_than_one_point_worse_on_the_shared_held_out_images():
    assert publish_decision(0, 0, 0, current_run=None) == (True, "no classifier published yet")
    assert publish_decision(1000, 985, 990, current_run="d1")[0], "0.5 point worse: within 1 point"
    assert publish_decision(1000, 980, 990, current_run="d1")[0], "exactly 1 point worse"
    published, why = publish_decision(1000, 979, 990, current_run="d1")
    assert not published and "97.90% against 99.00%" in why and "d1" in why and "1000 held-out" in why
    assert publish_decision(0, 0, 0, current_run="d1")[0], "nothing in common to compare on: the new one"


def _export(folder, run_key, labels=("kiwi", "lime"), rule=None):
    dim, k = 4, 2
    metadata = {"run_key": run_key, "labels": list(labels), "k": k}
    if rule is not None:
        metadata["unsure"] = rule
    arrays = {"pca_mean": np.zeros(dim), "pca_components": np.eye(dim)[:, :k],
              "coefficients": np.array([[4.0, 0.0], [0.0, 4.0]]), "intercepts": np.zeros(2)}
    write_export(folder / "export", metadata, arrays)


def test_classify_given_the_lake_uses_the_classifier_its_pointer_names(tmp_path):
    lake = tmp_path / "lake"
    _export(lake / "classifier" / "day1", "day1", labels=("kiwi", "lime"))
    _export(lake / "classifier" / "day2", "day2", labels=("pear", "plum"))
    with pytest.raises(ExportError, match="no classifier/current.json"):
        load_export(f"file://{lake}")
    pointer = lake / "classifier" / "current.json"
    pointer.write_text(json.dumps({"run_key": "day1", "classifier_uri": f"file://{lake}/classifier/day1"}))
    assert load_export(f"file://{lake}").labels == ["kiwi", "lime"]
    assert load_export(str(lake / "classifier")).model == "day1", "the classifier/ folder holds the pointer too"
    assert load_export(str(lake / "classifier" / "day2")).labels == ["pear", "plum"], "a run's own folder still works"
    pointer.write_text(json.dumps({"run_key": "day2"}))
    with pytest.raises(ExportError, match="names no classifier_uri"):
        load_export(f"file://{lake}")


def test_an_answer_is_a_label_or_unsure_with_the_three_best_and_an_old_export_is_always_sure(tmp_path):
    _export(tmp_path / "old", "day1")
    export = load_export(str(tmp_path / "old"))
    features = np.array([[3.0, 0.0, 0.0, 0.0], [0.0, 0.1, 0.0, 0.0]])
    first, second = export.answers(features)
    assert first["label"] == "kiwi" and not first["unsure"] and first["probability"] > 0.99
    assert [t["label"] for t in first["top"]] == ["kiwi", "lime"], "two labels: two in the top"
    assert second["label"] == "lime" and not second["unsure"], "no rule in the export: never unsure"
    assert second["probability"] == second["top"][0]["probability"]
