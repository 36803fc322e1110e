"""Staging code and the model into a lake only when missing (a local lake; the moto DAG run covers S3)."""
from pathlib import Path

from fruits_contract.lake import Lake
from fruits_pipeline.settings import REPO_ROOT
import hashlib

import pytest

from fruits_contract.model import SHIPPED_MODEL_PATH
from fruits_pipeline.settings import Settings
from fruits_pipeline.staging import stage_code, stage_model


def test_code_is_staged_once(tmp_path):
    lake = Lake(f"file://{tmp_path}/lake")
    code_uri = stage_code(lake, REPO_ROOT / "spark_jobs", None)
    code_dir = Path(code_uri[len("file://"):])
    staged = {p.relative_to(code_dir).as_posix() for p in code_dir.rglob("*") if p.is_file()}
    assert {"fruits_spark.zip", "extract_features.py", "reduce_pca.py", "bootstrap/install_python_deps.sh"} <= staged
    mtimes = {p: p.stat().st_mtime_ns for p in code_dir.rglob("*") if p.is_file()}
    assert stage_code(lake, REPO_ROOT / "spark_jobs", None) == code_uri
    assert {p: p.stat().st_mtime_ns for p in code_dir.rglob("*") if p.is_file()} == mtimes  # not rewritten



def test_model_is_staged_once_under_a_name_of_its_content_with_its_provenance(tmp_path):
    lake = Lake(f"file://{tmp_path}/lake")
    model = tmp_path / "shipped" / "m.tflite"
    model.parent.mkdir()
    model.write_bytes(b"model one")
    model.with_suffix(".provenance.json").write_text('{"sha256": "..."}')
    name = stage_model(lake, model, None)
    assert name == f"m-{hashlib.sha256(b'model one').hexdigest()[:16]}/m.tflite"
    staged = tmp_path / "lake" / "models" / name
    assert staged.read_bytes() == b"model one"
    assert staged.with_suffix(".provenance.json").read_text() == '{"sha256": "..."}'
    mtime = staged.stat().st_mtime_ns
    assert stage_model(lake, model, None) == name and staged.stat().st_mtime_ns == mtime  # not rewritten

    model.write_bytes(b"model two")  # another model: another folder, the first one kept for past runs
    other = stage_model(lake, model, None)
    assert other != name and (tmp_path / "lake" / "models" / other).read_bytes() == b"model two"
    assert staged.read_bytes() == b"model one"


def test_missing_model_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="FRUITS_MODEL.*make model"):
        stage_model(Lake(f"file://{tmp_path}/lake"), tmp_path / "none.tflite", None)


def test_settings_stage_the_model_the_feature_job_defaults_to_unless_fruits_model_says_otherwise(tmp_path):
    settings = Settings.from_env({"FRUITS_LAKE_URI": f"file://{tmp_path}"})
    assert settings.model_file == SHIPPED_MODEL_PATH and settings.model_file.is_file()
    other = Settings.from_env({"FRUITS_LAKE_URI": f"file://{tmp_path}", "FRUITS_MODEL": "/m/x.tflite"})
    assert other.model_file == Path("/m/x.tflite")
