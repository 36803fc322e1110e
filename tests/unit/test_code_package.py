"""The code package shipped to EMR: contents, importable zip, stable version, bootstrap pins."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

from fruits_pipeline.code_package import (
    BOOTSTRAP_SCRIPT,
    CodePackageError,
    build_code_package,
    default_jobs_dir,
)
from fruits_pipeline.settings import REPO_ROOT

JOBS_DIR = REPO_ROOT / "spark_jobs"
BOOTSTRAP = JOBS_DIR / BOOTSTRAP_SCRIPT
EXPECTED_FILES = {"extract_features.py", "reduce_pca.py", "fruits_spark.zip", "bootstrap/install_python_deps.sh"}


@pytest.fixture
def jobs_copy(tmp_path) -> Path:
    """A copy of spark_jobs/ that a test may change, with stale bytecode that must not be shipped."""
    copy = tmp_path / "spark_jobs"
    shutil.copytree(JOBS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "fruits_spark" / "__pycache__").mkdir()
    (copy / "fruits_spark" / "__pycache__" / "pca.cpython-311.pyc").write_bytes(b"stale")
    return copy


def test_package_holds_what_spark_submit_and_the_bootstrap_need(jobs_copy, tmp_path):
    package = build_code_package(jobs_copy, tmp_path / "out")

    assert set(package.files) == EXPECTED_FILES
    assert re.fullmatch(r"[0-9a-f]{12}", package.version)
    for name, path in package.files.items():
        assert path == tmp_path / "out" / name and path.is_file()
    assert (tmp_path / "out" / "reduce_pca.py").read_bytes() == (jobs_copy / "reduce_pca.py").read_bytes()
    assert os.access(package.files[BOOTSTRAP_SCRIPT], os.X_OK)
    with zipfile.ZipFile(package.files["fruits_spark.zip"]) as archive:
        names = archive.namelist()
    assert names == sorted(names)
    assert {"fruits_spark/__init__.py", "fruits_spark/common.py", "fruits_spark/pca.py"} <= set(names)
    assert not [name for name in names if not name.endswith(".py")]
    assert package.keys("s3://bucket/code/" + package.version)[
        f"s3://bucket/code/{package.version}/fruits_spark.zip"
    ] == package.files["fruits_spark.zip"]


def test_version_is_stable_and_follows_the_content(jobs_copy, tmp_path):
    first = build_code_package(jobs_copy, tmp_path / "a")
    os.utime(jobs_copy / "fruits_spark" / "pca.py", (1_000_000_000, 1_000_000_000))  # mtime alone changes nothing
    second = build_code_package(jobs_copy, tmp_path / "b")
    assert second.version == first.version
    assert (tmp_path / "a" / "fruits_spark.zip").read_bytes() == (tmp_path / "b" / "fruits_spark.zip").read_bytes()

    with (jobs_copy / "fruits_spark" / "pca.py").open("a") as source:
        source.write("\n# a change in the shared library\n")
    library_changed = build_code_package(jobs_copy, tmp_path / "c")
    assert library_changed.version != first.version

    with (jobs_copy / "bootstrap" / "install_python_deps.sh").open("a") as script:
        script.write("\n# a change in the bootstrap\n")
    assert build_code_package(jobs_copy, tmp_path / "d").version != library_changed.version


def test_zip_is_importable_as_py_files_would_use_it(tmp_path):
    package = build_code_package(JOBS_DIR, tmp_path / "out")
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "import fruits_spark.pca, fruits_spark.common, fruits_spark.io; "
        "print(fruits_spark.pca.__file__)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe, str(package.files["fruits_spark.zip"])],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"{package.files['fruits_spark.zip']}/fruits_spark/pca.py"


def test_missing_entry_script_is_named(jobs_copy, tmp_path):
    (jobs_copy / "extract_features.py").unlink()
    with pytest.raises(CodePackageError, match=r"extract_features\.py not found"):
        build_code_package(jobs_copy, tmp_path / "out")


def test_make_package_entry_point_builds_from_settings_jobs_dir(tmp_path):
    assert default_jobs_dir() == JOBS_DIR
    env = {**os.environ, "FRUITS_JOBS_DIR": str(JOBS_DIR)}
    probe = (
        "import sys, runpy; sys.argv = ['code_package', sys.argv[1]]\n"
        "try:\n    runpy.run_module('fruits_pipeline.code_package', run_name='__main__')\n"
        "except SystemExit as done:\n    code = done.code\n"
        "heavy = [m for m in ('pyspark', 'tensorflow', 'airflow') if m in sys.modules]\n"
        "print('heavy imports:', heavy); sys.exit(code)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=60
    )
    assert completed.returncode == 0, completed.stderr
    assert "heavy imports: []" in completed.stdout
    assert re.search(r"code package version [0-9a-f]{12}", completed.stdout)
    assert {p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file()} == EXPECTED_FILES


def _bootstrap_pins() -> dict[str, str]:
    text = BOOTSTRAP.read_text()
    block = re.search(r"PINNED=\((.*?)\)", text, re.S).group(1)
    return dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', block))


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_bootstrap_pins_agree_with_pyproject_and_lock():
    pins = _bootstrap_pins()
    assert set(pins) == {"ai-edge-litert", "pillow", "pyarrow", "pandas", "numpy"}  # no TensorFlow/Keras on nodes

    dependencies = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pyproject = {}
    for requirement in dependencies:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)", requirement.strip())
        if match:
            pyproject[_normalized(match.group(1))] = match.group(2)
    lock = {
        _normalized(name): version
        for name, version in re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (REPO_ROOT / "requirements.lock").read_text(), re.M)
    }
    for name, version in pins.items():
        assert pyproject.get(_normalized(name)) == version, f"{name}: bootstrap {version}, pyproject {pyproject.get(_normalized(name))}"
        assert lock.get(_normalized(name)) == version, f"{name}: bootstrap {version}, requirements.lock {lock.get(_normalized(name))}"


def test_bootstrap_skips_a_node_that_already_has_the_pins():
    # This venv is installed from the same lock, so it is such a node; no pip or sudo is run.
    completed = subprocess.run(
        ["bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=120,
        env={**os.environ, "FRUITS_PYTHON": sys.executable},
    )
    assert completed.returncode == 0, completed.stderr
    assert "already installed" in completed.stdout and "nothing to do" in completed.stdout


def test_bootstrap_fails_loudly_without_its_python(tmp_path):
    completed = subprocess.run(
        ["bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=60,
        env={**os.environ, "FRUITS_PYTHON": str(tmp_path / "no-python3.11")},
    )
    assert completed.returncode != 0
    assert "FAILED" in completed.stderr and "no-python3.11" in completed.stderr


def test_bootstrap_is_strict_bash():
    text = BOOTSTRAP.read_text()
    assert text.startswith("#!/usr/bin/env bash")
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(BOOTSTRAP)], capture_output=True).returncode == 0
