"""Staging code and weights into a lake only when missing (a local lake; the moto DAG run covers S3)."""
from pathlib import Path

from fruits_pipeline.lake import Lake
from fruits_pipeline.settings import REPO_ROOT
from fruits_pipeline.staging import stage_code, stage_weights


def test_code_and_weights_are_staged_once(tmp_path):
    lake = Lake(f"file://{tmp_path}/lake")
    code_uri = stage_code(lake, REPO_ROOT / "spark_jobs", None)
    code_dir = Path(code_uri[len("file://"):])
    staged = {p.relative_to(code_dir).as_posix() for p in code_dir.rglob("*") if p.is_file()}
    assert {"fruits_spark.zip", "extract_features.py", "reduce_pca.py", "bootstrap/install_python_deps.sh"} <= staged
    mtimes = {p: p.stat().st_mtime_ns for p in code_dir.rglob("*") if p.is_file()}
    assert stage_code(lake, REPO_ROOT / "spark_jobs", None) == code_uri
    assert {p: p.stat().st_mtime_ns for p in code_dir.rglob("*") if p.is_file()} == mtimes  # not rewritten

    weights = tmp_path / "w.weights.h5"
    weights.write_bytes(b"weights")
    assert stage_weights(lake, str(weights), None) == "w.weights.h5"
    weights.write_bytes(b"changed")
    stage_weights(lake, str(weights), None)
    assert (tmp_path / "lake/models/w.weights.h5").read_bytes() == b"weights"  # only when missing
    assert stage_weights(lake, None, None) is None
