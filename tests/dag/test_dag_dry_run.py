"""A dry run on a local lake: validate and report only, no cluster task runs, raw/ untouched."""
import json

from generated_images import write_generated_images


def test_dry_run_validates_and_reports_only(airflow_db, monkeypatch, tmp_path):
    from airflow.utils.cli import get_bagged_dag

    lake = tmp_path / "lake"
    write_generated_images(lake / "raw", per_label=2, labels=("pear",))
    (lake / "raw" / "pear" / "broken.jpg").write_bytes(b"not a jpeg")
    monkeypatch.setenv("FRUITS_LAKE_URI", f"file://{lake}")
    monkeypatch.setenv("FRUITS_COMPUTE", "emr")

    dag_run = get_bagged_dag(None, "fruits_pipeline").test(run_conf={"dry_run": True})

    states = {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}
    assert str(dag_run.state) == "success", states
    assert states["create_cluster"] == "skipped" and states["terminate_cluster"] == "skipped"
    (report_file,) = (lake / "reports").glob("*.json")
    report = json.loads(report_file.read_text())
    assert report["status"] == "success" and report["message"].startswith("dry run")
    assert (report["counts"]["valid"], report["counts"]["rejected"]) == (2, 1)
    assert (lake / "manifests" / report["run_key"] / "valid" / "part-00000.parquet").is_file()
    assert sorted(p.name for p in (lake / "raw" / "pear").iterdir()) == ["broken.jpg", "img_000.jpg", "img_001.jpg"]
