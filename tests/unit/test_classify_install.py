"""fruits-classify (spark_jobs/pyproject.toml): the classify command installed on its own, as the app's
backend installs it, with NumPy, Pillow, pillow-heif, pyvips and LiteRT and nothing else.

Slow for a unit test (10-60 s): it makes a bare venv (no system site packages, nothing of this checkout's
venv), builds the distribution and installs it there, non-editable, with uv: offline from uv's cache when
that holds the wheels, else from PyPI. Not skipped anywhere: it is what keeps classify's imports away from
pandas, pyarrow, Spark, Airflow and TensorFlow.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from fruits_contract.model import FEATURE_DIM, SHIPPED_MODEL_PATH
from fruits_spark.classify import write_export
from fruits_spark.feature_model import model_name

REPO = Path(__file__).resolve().parents[2]
DISTRIBUTION = REPO / "spark_jobs"
# What the distribution is made of: its packages and the model it carries.
SOURCES = ("pyproject.toml", "fruits_spark", "fruits_contract", "models")
FORBIDDEN = ("pandas", "pyarrow", "pyspark", "py4j", "airflow", "tensorflow", "keras")
DEPENDENCIES = ("numpy", "pillow", "pillow-heif", "pyvips", "pyvips-binary", "ai-edge-litert")
PHOTO = sorted((REPO / "plugins" / "fruits_pipeline" / "demo_data").rglob("*.jpg"))[0]
LABELS = ["apple", "fig", "kiwi", "lemon"]
INSTALL_SECONDS = 600

PROBE = """
import importlib.util, json, sys
import fruits_spark.classify as classify
findable = [name for name in sys.argv[1:] if importlib.util.find_spec(name)]
print(json.dumps({"file": classify.__file__, "model": str(classify.default_feature_model()),
                  "modules": sorted(sys.modules), "findable": findable}))
"""


def pins(pyproject: Path) -> dict[str, str]:
    """name -> requirement of the [project] dependencies of ``pyproject``."""
    requirements = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return {requirement.split("==")[0].split("[")[0]: requirement for requirement in requirements}


def test_the_distribution_pins_exactly_the_root_projects_versions_of_its_dependencies():
    ours, root = pins(DISTRIBUTION / "pyproject.toml"), pins(REPO / "pyproject.toml")
    assert sorted(ours) == sorted(DEPENDENCIES)
    assert ours == {name: root[name] for name in DEPENDENCIES}


def uv() -> str:
    found = Path(sys.executable).with_name("uv")
    path = str(found) if found.is_file() else shutil.which("uv")
    assert path, "uv not found beside this Python nor on PATH (make install puts it in .venv/bin)"
    return path


def bare_env() -> dict[str, str]:
    """This environment without what would let the venv's Python find this checkout or Spark."""
    return {k: v for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "PYTHONHOME", "PYSPARK_SUBMIT_ARGS", "VIRTUAL_ENV")}


def install(python: Path, source: Path) -> None:
    """``source`` into the venv of ``python``, non-editable: offline from uv's cache first, then online."""
    attempts = []
    for network in (["--offline"], []):
        done = subprocess.run([uv(), "pip", "install", "--python", str(python), *network, str(source)],
                              capture_output=True, text=True, env=bare_env(), timeout=INSTALL_SECONDS)
        if done.returncode == 0:
            return
        attempts.append(f"uv pip install {' '.join(network)}: {done.stderr[-2000:]}")
    pytest.fail("fruits-classify did not install:\n" + "\n".join(attempts))


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A bare venv with fruits-classify installed from a copy of spark_jobs/ (a build writes into its source)."""
    root = tmp_path_factory.mktemp("classify-install")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (DISTRIBUTION / name).is_dir():
            shutil.copytree(DISTRIBUTION / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(DISTRIBUTION / name, source / name)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True, timeout=120,
                   env=bare_env())
    python = root / "venv" / "bin" / "python"
    install(python, source)
    return python


def run_in(python: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python`` (or a command of its venv) with ``args``, in ``cwd``: never the checkout, which ``-m``
    and ``-c`` would put on sys.path."""
    return subprocess.run([str(python), *args], capture_output=True, text=True, env=bare_env(), cwd=cwd,
                          timeout=300)


def test_importing_classify_reaches_neither_pandas_nor_pyarrow_spark_airflow_or_tensorflow(venv, tmp_path):
    probe = run_in(venv, "-c", PROBE, *FORBIDDEN, cwd=tmp_path)
    assert probe.returncode == 0, probe.stderr[-3000:]
    found = json.loads(probe.stdout)
    site = venv.parent.parent
    assert Path(found["file"]).is_relative_to(site), f"classify imported from {found['file']}, not the install"
    assert found["findable"] == [], "the venv is not bare: these are installed"
    assert sorted({m.split(".")[0] for m in found["modules"]} & set(FORBIDDEN)) == []
    # The model an installed copy classifies with by default: the one the repository ships, carried inside.
    model = Path(found["model"])
    assert model.is_relative_to(site) and model.read_bytes() == SHIPPED_MODEL_PATH.read_bytes()


def test_the_installed_command_classifies_a_photo_with_a_run_export(venv, tmp_path):
    rng = np.random.default_rng(0)
    k = 4
    flatbuffer = SHIPPED_MODEL_PATH.read_bytes()
    metadata = {"labels": LABELS, "k": k, "input_dim": FEATURE_DIM,
                "feature_model": {"name": model_name(flatbuffer),
                                  "sha256_prefix": hashlib.sha256(flatbuffer).hexdigest()[:16]}}
    arrays = {"pca_mean": rng.normal(size=FEATURE_DIM), "pca_components": rng.normal(size=(FEATURE_DIM, k)) / 30,
              "coefficients": rng.normal(size=(len(LABELS), k)), "intercepts": rng.normal(size=len(LABELS))}
    write_export(tmp_path / "classifier" / "export", metadata, arrays)

    by_module = run_in(venv, "-m", "fruits_spark.classify", "--model", str(tmp_path / "classifier"), str(PHOTO),
                       cwd=tmp_path)
    assert by_module.returncode == 0, by_module.stderr[-3000:]
    lines = by_module.stdout.splitlines()
    assert len(lines) == 1, by_module.stdout
    answer = json.loads(lines[0])
    assert answer["image"] == str(PHOTO) and len(answer["top"]) == 3
    assert {top["label"] for top in answer["top"]} <= set(LABELS)
    probabilities = [top["probability"] for top in answer["top"]]
    assert probabilities == sorted(probabilities, reverse=True) and 0 < sum(probabilities) <= 1 + 1e-6

    by_script = run_in(venv.with_name("fruits-classify"), "--model", str(tmp_path / "classifier"), str(PHOTO),
                       cwd=tmp_path)
    assert by_script.returncode == 0 and by_script.stdout == by_module.stdout, by_script.stderr[-3000:]
