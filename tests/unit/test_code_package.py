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

from fruits_contract.lake import BOOTSTRAP_SCRIPT
from fruits_pipeline.job_code import CodePackageError, build_code_package, default_jobs_dir
from fruits_pipeline.settings import REPO_ROOT

JOBS_DIR = REPO_ROOT / "spark_jobs"
BOOTSTRAP = JOBS_DIR / BOOTSTRAP_SCRIPT
EXPECTED_FILES = {"extract_features.py", "reduce_pca.py", "train_classifier.py", "predict_uploads.py", "fruits_spark.zip", "bootstrap/install_python_deps.sh"}


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
    assert {"fruits_spark/__init__.py", "fruits_spark/session.py", "fruits_spark/jobs/extract_features.py", "fruits_spark/pca.py",
            "fruits_contract/__init__.py", "fruits_contract/lake.py"} <= set(names)
    assert [name for name in names if not name.endswith(".py")] == ["fruits_spark/not_fruit_photos.npz"]
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
        "import fruits_spark.pca, fruits_spark.session, fruits_spark.io, fruits_contract.lake; "
        "print(fruits_spark.pca.__file__, fruits_contract.lake.__file__)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe, str(package.files["fruits_spark.zip"])],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )
    assert completed.returncode == 0, completed.stderr
    zip_path = package.files["fruits_spark.zip"]
    assert completed.stdout.split() == [f"{zip_path}/fruits_spark/pca.py", f"{zip_path}/fruits_contract/lake.py"]


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
    assert set(pins) == {"ai-edge-litert", "pillow", "pillow-heif", "pyvips", "pyvips-binary", "boto3", "pyarrow", "pandas",
                         "numpy", "scipy"}  # no TensorFlow/Keras on nodes

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


# ---------------------------------------------------------------- wheelhouse: nodes install with no index

from fruits_pipeline.code_package import build_wheelhouse, pip_download_command  # noqa: E402
from fruits_pipeline.job_code import ARCHITECTURES, bootstrap_pins, missing_wheels  # noqa: E402

RUNTIME_PINS = [f"{name}=={version}" for name, version in _bootstrap_pins().items()]


def _fake_wheelhouse(folder: Path, pins=RUNTIME_PINS, architectures=ARCHITECTURES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for pin in pins:
        name, version = pin.split("==")
        for arch in architectures:
            (folder / f"{name.replace('-', '_')}-{version}-cp311-cp311-manylinux_2_28_{arch}.whl").write_bytes(
                f"{pin} {arch}".encode())
    (folder / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"a dependency")
    return folder


def test_bootstrap_pins_are_read_from_the_script_itself():
    assert bootstrap_pins(JOBS_DIR) == RUNTIME_PINS
    assert not [pin for pin in RUNTIME_PINS if pin.split("==")[0] in ("tensorflow", "tensorflow-cpu", "keras")]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_wheelhouse_download_is_binary_only_for_the_nodes_python_and_glibc(arch, tmp_path):
    command = pip_download_command(RUNTIME_PINS, tmp_path, arch, REPO_ROOT / "requirements.lock")
    assert command[1:4] == ["-m", "pip", "download"] and "--only-binary=:all:" in command
    assert command[command.index("--python-version") + 1] == "3.11"
    assert command[command.index("--abi") + 1] == "cp311" and command[command.index("--implementation") + 1] == "cp"
    platforms = [command[i + 1] for i, flag in enumerate(command) if flag == "--platform"]
    # ai-edge-litert ships manylinux_2_27 wheels and pyarrow manylinux_2_28; Amazon Linux 2023 has glibc 2.34
    assert {f"manylinux_2_27_{arch}", f"manylinux_2_28_{arch}", f"manylinux_2_34_{arch}"} <= set(platforms)
    assert not [p for p in platforms if not p.endswith(arch)] and f"manylinux_2_35_{arch}" not in platforms
    assert command[command.index("--constraint") + 1] == str(REPO_ROOT / "requirements.lock")
    assert command[-len(RUNTIME_PINS):] == RUNTIME_PINS


def test_missing_wheels_names_each_pin_and_architecture(tmp_path):
    wheelhouse = _fake_wheelhouse(tmp_path / "wh", architectures=("x86_64",))
    assert missing_wheels(wheelhouse, RUNTIME_PINS, ("x86_64",)) == []
    assert missing_wheels(wheelhouse, RUNTIME_PINS) == [f"{pin} (aarch64)" for pin in RUNTIME_PINS]
    (wheelhouse / "pandas-3.1.1-cp311-cp311-manylinux_2_28_x86_64.whl").unlink()
    assert missing_wheels(wheelhouse, ["pandas==3.1.1"], ("x86_64",)) == ["pandas==3.1.1 (x86_64)"]
    assert missing_wheels(tmp_path / "nowhere", ["numpy==2.4.6"], ("x86_64",)) == ["numpy==2.4.6 (x86_64)"]


def test_package_ships_the_wheelhouse_and_its_version_follows_the_wheels(tmp_path):
    wheelhouse = _fake_wheelhouse(tmp_path / "wh")
    without = build_code_package(JOBS_DIR, tmp_path / "plain")
    package = build_code_package(JOBS_DIR, tmp_path / "out", wheelhouse)
    wheels = {name for name in package.files if name.startswith("wheelhouse/")}
    assert wheels == {f"wheelhouse/{p.name}" for p in wheelhouse.glob("*.whl")}
    assert set(package.files) - wheels == EXPECTED_FILES and package.version != without.version
    assert (tmp_path / "out" / "wheelhouse" / "six-1.17.0-py2.py3-none-any.whl").read_bytes() == b"a dependency"
    (wheelhouse / "six-1.17.0-py2.py3-none-any.whl").write_bytes(b"another build")
    assert build_code_package(JOBS_DIR, tmp_path / "out", wheelhouse).version != package.version


def test_an_incomplete_wheelhouse_is_refused_before_anything_is_shipped(tmp_path):
    wheelhouse = _fake_wheelhouse(tmp_path / "wh", architectures=("x86_64",))
    with pytest.raises(CodePackageError, match=r"ai-edge-litert==2\.3\.0 \(aarch64\).*make package"):
        build_code_package(JOBS_DIR, tmp_path / "out", wheelhouse)
    assert not (tmp_path / "out").exists()


def _offline_env(python: Path, wheelhouse: Path | None) -> dict:
    """No package index reachable: pip's config files ignored, the index a closed local port."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "FRUITS_", "VIRTUAL_ENV"))}
    env.update({"FRUITS_PYTHON": str(python), "PIP_CONFIG_FILE": os.devnull,
                "PIP_INDEX_URL": "http://127.0.0.1:9/simple", "PIP_RETRIES": "0", "PIP_TIMEOUT": "2"})
    if wheelhouse is not None:
        env["FRUITS_WHEELHOUSE"] = str(wheelhouse)
    return env


def test_real_bootstrap_installs_a_fresh_python_from_the_wheelhouse_alone(host_wheelhouse, tmp_path):
    venv = tmp_path / "node"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"

    no_wheelhouse = subprocess.run(["bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=60,
                                   env=_offline_env(python, None))
    assert no_wheelhouse.returncode != 0 and "no wheelhouse given" in no_wheelhouse.stderr

    installed = subprocess.run(["bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=300,
                               env=_offline_env(python, host_wheelhouse))
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert "installed ai-edge-litert==2.3.0" in installed.stdout
    probe = ("import numpy, ai_edge_litert.interpreter as lite, PIL, pillow_heif, pyvips, boto3, pyarrow, pandas; "
             "from importlib.metadata import version; "
             f"print(sorted(version(n) for n in {tuple(_bootstrap_pins())})); "
             "print(lite.Interpreter.__name__)")
    versions = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, timeout=60)
    assert versions.returncode == 0, versions.stderr
    assert versions.stdout.splitlines() == [str(sorted(v for v in _bootstrap_pins().values())), "Interpreter"]
    heavy = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in ('tensorflow', 'keras') "
                            "if u.find_spec(m)])"], capture_output=True, text=True, timeout=60)
    assert heavy.stdout.strip() == "[]"

    again = subprocess.run(["bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=60,
                           env=_offline_env(python, tmp_path / "gone"))
    assert again.returncode == 0 and "nothing to do" in again.stdout  # idempotent: no wheelhouse needed twice


def test_bootstrap_names_an_incomplete_wheelhouse(tmp_path):
    venv = tmp_path / "node"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([str(venv / "bin" / "python"), "-m", "ensurepip", "--default-pip"], check=True,
                   capture_output=True, timeout=120)
    empty = tmp_path / "wheelhouse"
    empty.mkdir()
    completed = subprocess.run(["bash", str(BOOTSTRAP)], capture_output=True, text=True, timeout=120,
                               env=_offline_env(venv / "bin" / "python", empty))
    assert completed.returncode != 0
    assert f"from {empty} alone" in completed.stderr and "make package" in completed.stderr


@pytest.fixture(scope="session")
def full_wheelhouse(tmp_path_factory) -> Path:
    """Both architectures' wheels: `make package`'s dist/wheelhouse when complete, else built once here."""
    made = REPO_ROOT / "dist" / "wheelhouse"
    if not missing_wheels(made, RUNTIME_PINS):
        return made
    folder = tmp_path_factory.mktemp("full-wheelhouse")
    build_wheelhouse(folder, JOBS_DIR)
    return folder


def _bootstrap_copy_patterns(arch: str) -> list[str]:
    """The --include patterns of the bootstrap's `aws s3 cp`, for a node of ``arch`` (uname -m)."""
    text = BOOTSTRAP.read_text()
    return [pattern.replace("${arch}", arch) for pattern in re.findall(r'--include "([^"]+)"', text)]


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_a_node_of_each_architecture_resolves_every_pin_from_what_the_bootstrap_copies(arch, full_wheelhouse,
                                                                                      tmp_path):
    """What a Graviton (aarch64) or x86_64 node copies from code/<version>/wheelhouse is enough for pip
    with --no-index: checked here with pip's --platform resolution, as no aarch64 machine is at hand."""
    import fnmatch
    import json

    patterns = _bootstrap_copy_patterns(arch)
    assert patterns == ["*-any.whl", f"*_{arch}.whl"]
    copied = tmp_path / "node-wheels"
    copied.mkdir()
    for wheel in full_wheelhouse.glob("*.whl"):
        if any(fnmatch.fnmatch(wheel.name, pattern) for pattern in patterns):
            shutil.copy(wheel, copied / wheel.name)
    command = pip_download_command(RUNTIME_PINS, copied, arch, None)
    platforms = [command[i + 1] for i, flag in enumerate(command) if flag == "--platform"]
    resolve = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(tmp_path / "r.json"),
               "--no-index", "--find-links", str(copied), "--only-binary=:all:", "--target", str(tmp_path / "t"),
               "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--ignore-requires-python",
               *(f"--platform={p}" for p in platforms), *RUNTIME_PINS]
    completed = subprocess.run(resolve, capture_output=True, text=True, timeout=120,
                               env={**_offline_env(Path(sys.executable), None)})
    assert completed.returncode == 0, completed.stderr
    # normalized: pillow-heif's metadata spells its name pillow_heif
    installed = {_normalized(item["metadata"]["name"]): item["metadata"]["version"]
                 for item in json.loads((tmp_path / "r.json").read_text())["install"]}
    assert {f"{name}=={installed.get(_normalized(name))}" for name in (p.split("==")[0] for p in RUNTIME_PINS)} \
        == set(RUNTIME_PINS)
    wheels = [item["download_info"]["url"] for item in json.loads((tmp_path / "r.json").read_text())["install"]]
    assert all(url.endswith("-any.whl") or url.endswith(f"_{arch}.whl") for url in wheels)


def test_the_jobs_read_the_shipped_data_from_the_zip_as_spark_submit_gives_it(jobs_copy, tmp_path):
    """--py-files puts the zip on sys.path: fruits_spark.not_fruit reads its features from inside it."""
    import subprocess
    import sys

    package = build_code_package(jobs_copy, tmp_path / "out")
    probe = ("import fruits_spark.not_fruit as n; features, model = n.shipped_features(); "
             "assert '.zip' in n.__file__, n.__file__; print(features.shape[0], len(n.NOT_FRUIT_PHOTOS))")
    completed = subprocess.run([sys.executable, "-S", "-c", f"import sys; sys.path.insert(0, {str(package.files['fruits_spark.zip'])!r}); "
                                "import site; site.main(); " + probe], capture_output=True, text=True, cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-2000:]
    shipped, photos = completed.stdout.split()
    assert shipped == photos
