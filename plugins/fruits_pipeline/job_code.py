"""The code an EMR cluster runs, built from the jobs folder, with a content-hash version.

``build_code_package(jobs_dir, out_dir) -> CodePackage`` writes into ``out_dir``:

    extract_features.py                 entry script of step 1
    reduce_pca.py                       entry script of step 2
    train_classifier.py                 entry script of step 3
    fruits_spark.zip                    the jobs' library and the contract, for ``spark-submit --py-files``
    bootstrap/install_python_deps.sh    EMR bootstrap action (pinned Python packages)
    wheelhouse/*.whl                    when a wheelhouse is given: the bootstrap's pins and their
                                        dependencies for manylinux x86_64 and aarch64, cp311, so
                                        that nodes install with ``pip --no-index`` (no internet)

``CodePackage.version`` is the first 12 hex digits of a sha256 over those names and
contents. The zip is deterministic (sorted entries, fixed timestamps and modes), so the
version changes exactly when the code does: the DAG uploads ``files`` to
``code/<version>/<name>`` (``Lake.code(version)``) only when that prefix is missing, and
every run records which code it ran. The wheelhouse itself is filled by the packager,
``fruits_pipeline.code_package`` (``make package``), a development tool the DAG never imports.
Pure standard library: no pyspark, TensorFlow or Airflow import.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fruits_contract.lake import BOOTSTRAP_SCRIPT, PY_FILES_ZIP, STEP_NAMES, WHEELHOUSE

# The packages of spark_jobs/ the zip carries: the jobs' library and the contract it shares with Airflow.
LIBRARIES = ("fruits_spark", "fruits_contract")
ENTRY_SCRIPTS = tuple(f"{name}.py" for name in STEP_NAMES)
VERSION_LENGTH = 12
# EMR 7 nodes: x86_64 (m5, c5, r5) and Graviton (m6g, m7g, c7g, r7g).
ARCHITECTURES = ("x86_64", "aarch64")
# The earliest time a zip entry can carry; any fixed value keeps the archive's bytes stable.
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


class CodePackageError(RuntimeError):
    """A file the cluster needs is missing; the message names it."""


def bootstrap_pins(jobs_dir: Path) -> list[str]:
    """``name==version`` of the bootstrap's PINNED list: the one place the nodes' packages are named."""
    script = Path(jobs_dir) / BOOTSTRAP_SCRIPT
    block = re.search(r"^PINNED=\((.*?)\)", script.read_text(), re.S | re.M)
    pins = re.findall(r'"([A-Za-z0-9_.-]+==[^"]+)"', block.group(1)) if block else []
    if not pins:
        raise CodePackageError(f"{script} has no PINNED=(\"name==version\" ...) list")
    return pins


def _normalized(project: str) -> str:
    """A project name as PEP 503 compares them (wheel file names spell ai-edge-litert ai_edge_litert)."""
    return re.sub(r"[-_.]+", "-", project).lower()


def _wheel_name(path: Path) -> tuple[str, str, str]:
    """(normalized project, version, platform tag) of a wheel file name."""
    parts = path.name[:-len(".whl")].split("-")
    return _normalized(parts[0]), parts[1], parts[-1]


def missing_wheels(wheelhouse: Path, pins: list[str], architectures=ARCHITECTURES) -> list[str]:
    """``pin (arch)`` for each pin that has no wheel for that architecture in ``wheelhouse``."""
    wheels = [_wheel_name(p) for p in Path(wheelhouse).glob("*.whl")] if Path(wheelhouse).is_dir() else []
    missing = []
    for pin in pins:
        name, version = pin.split("==")
        name = _normalized(name)
        for arch in architectures:
            if not any(n == name and v == version and (tag == "any" or tag.endswith(arch)) for n, v, tag in wheels):
                missing.append(f"{pin} ({arch})")
    return missing


@dataclass(frozen=True)
class CodePackage:
    version: str
    files: dict[str, Path]  # name under code/<version>/ -> local path

    def keys(self, prefix: str) -> dict[str, Path]:
        """``{prefix/name: local path}``, e.g. with prefix ``Lake.code(version)``."""
        return {f"{prefix.rstrip('/')}/{name}": path for name, path in self.files.items()}


# What the jobs import and read from LIBRARIES: the modules, and the data they load with importlib.resources
# (fruits_spark.not_fruit's features).
LIBRARY_FILES = ("*.py", "*.npz")


def library_zip_bytes(jobs_dir: Path) -> bytes:
    """The LIBRARY_FILES of LIBRARIES as a zip whose bytes depend only on the sources."""
    sources = []
    for library in LIBRARIES:
        package_dir = Path(jobs_dir) / library
        if not (package_dir / "__init__.py").is_file():
            raise CodePackageError(f"{package_dir}/__init__.py not found: {jobs_dir} does not hold the {library} library")
        sources += sorted(path for pattern in LIBRARY_FILES for path in package_dir.rglob(pattern)
                          if "__pycache__" not in path.parts)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source in sorted(sources):
            entry = zipfile.ZipInfo(source.relative_to(jobs_dir).as_posix(), date_time=_ZIP_TIMESTAMP)
            entry.compress_type = zipfile.ZIP_DEFLATED
            entry.external_attr = 0o644 << 16
            entry.create_system = 3  # unix, whatever system builds it
            archive.writestr(entry, source.read_bytes())
    return buffer.getvalue()


def package_contents(jobs_dir: Path) -> dict[str, bytes]:
    jobs_dir = Path(jobs_dir)
    contents = {}
    for name in (*ENTRY_SCRIPTS, BOOTSTRAP_SCRIPT):
        source = jobs_dir / name
        if not source.is_file():
            raise CodePackageError(f"{source} not found: the code package needs it")
        contents[name] = source.read_bytes()
    contents[PY_FILES_ZIP] = library_zip_bytes(jobs_dir)
    return contents


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    with Path(path).open("rb") as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.digest()


def content_version(contents: dict[str, bytes], wheels: dict[str, Path] | None = None) -> str:
    digests = {name: hashlib.sha256(data).digest() for name, data in contents.items()}
    digests |= {name: _file_digest(path) for name, path in (wheels or {}).items()}
    digest = hashlib.sha256()
    for name in sorted(digests):
        digest.update(name.encode() + b"\0" + digests[name])
    return digest.hexdigest()[:VERSION_LENGTH]


def build_code_package(jobs_dir: Path, out_dir: Path, wheelhouse: Path | None = None) -> CodePackage:
    """Write the package into ``out_dir`` (its files are replaced) and return its version.

    With ``wheelhouse``, its wheels go to ``wheelhouse/`` and count in the version; it must hold
    a wheel of every bootstrap pin for every architecture (EMR nodes have no package index)."""
    contents = package_contents(jobs_dir)
    wheels = {}
    if wheelhouse is not None:
        missing = missing_wheels(Path(wheelhouse), bootstrap_pins(jobs_dir))
        if missing:
            raise CodePackageError(
                f"wheelhouse {wheelhouse} (FRUITS_WHEELHOUSE) lacks wheels for {', '.join(missing)}: "
                "run `make package` on a machine that reaches the package index; EMR nodes install from it only")
        wheels = {f"{WHEELHOUSE}/{path.name}": path for path in sorted(Path(wheelhouse).glob("*.whl"))}
    out_dir = Path(out_dir)
    for stale in (out_dir / WHEELHOUSE).glob("*.whl"):  # from an earlier build into the same folder
        if f"{WHEELHOUSE}/{stale.name}" not in wheels:
            stale.unlink()
    files = {}
    for name, data in sorted(contents.items()):
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if name == BOOTSTRAP_SCRIPT:
            target.chmod(0o755)
        files[name] = target
    for name, source in wheels.items():
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.resolve() != source.resolve():
            shutil.copyfile(source, target)
        files[name] = target
    return CodePackage(version=content_version(contents, wheels), files=files)


def default_jobs_dir() -> Path:
    """``Settings().jobs_dir`` (FRUITS_JOBS_DIR or the checkout's spark_jobs/); packaging needs no lake."""
    from fruits_pipeline.settings import Settings

    env = dict(os.environ)
    env.setdefault("FRUITS_LAKE_URI", "file:///packaging-needs-no-lake")
    return Settings.from_env(env).jobs_dir
