"""What an EMR cluster needs to run the jobs, with a content-hash version.

``build_code_package(jobs_dir, out_dir) -> CodePackage`` writes into ``out_dir``:

    extract_features.py                 entry script of step 1
    reduce_pca.py                       entry script of step 2
    fruits_spark.zip                    the jobs' shared library, for ``spark-submit --py-files``
    bootstrap/install_python_deps.sh    EMR bootstrap action (pinned Python packages)

``CodePackage.version`` is the first 12 hex digits of a sha256 over those names and
contents. The zip is deterministic (sorted entries, fixed timestamps and modes), so the
version changes exactly when the code does: the DAG uploads ``files`` to
``code/<version>/<name>`` (``Lake.code(version)``) only when that prefix is missing, and
every run records which code it ran. ``CodePackage.files`` maps each name (the key
under ``code/<version>/``) to its local path.

``python -m fruits_pipeline.code_package OUT_DIR`` (``make package``) builds it and
prints the version. Pure standard library: no pyspark, TensorFlow or Airflow import.
"""
from __future__ import annotations

import hashlib
import io
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

LIBRARY = "fruits_spark"
LIBRARY_ZIP = f"{LIBRARY}.zip"
ENTRY_SCRIPTS = ("extract_features.py", "reduce_pca.py")
BOOTSTRAP_SCRIPT = "bootstrap/install_python_deps.sh"
VERSION_LENGTH = 12
# The earliest time a zip entry can carry; any fixed value keeps the archive's bytes stable.
_ZIP_TIMESTAMP = (1980, 1, 1, 0, 0, 0)


class CodePackageError(RuntimeError):
    """A file the cluster needs is missing; the message names it."""


@dataclass(frozen=True)
class CodePackage:
    version: str
    files: dict[str, Path]  # name under code/<version>/ -> local path

    def keys(self, prefix: str) -> dict[str, Path]:
        """``{prefix/name: local path}``, e.g. with prefix ``Lake.code(version)``."""
        return {f"{prefix.rstrip('/')}/{name}": path for name, path in self.files.items()}


def library_zip_bytes(jobs_dir: Path) -> bytes:
    """``fruits_spark/*.py`` as a zip whose bytes depend only on the sources."""
    package_dir = Path(jobs_dir) / LIBRARY
    if not (package_dir / "__init__.py").is_file():
        raise CodePackageError(f"{package_dir}/__init__.py not found: {jobs_dir} does not hold the {LIBRARY} library")
    sources = sorted(path for path in package_dir.rglob("*.py") if "__pycache__" not in path.parts)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for source in sources:
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
    contents[LIBRARY_ZIP] = library_zip_bytes(jobs_dir)
    return contents


def content_version(contents: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(contents):
        digest.update(name.encode() + b"\0" + hashlib.sha256(contents[name]).digest())
    return digest.hexdigest()[:VERSION_LENGTH]


def build_code_package(jobs_dir: Path, out_dir: Path) -> CodePackage:
    """Write the package into ``out_dir`` (its files are replaced) and return its version."""
    contents = package_contents(jobs_dir)
    out_dir = Path(out_dir)
    files = {}
    for name, data in sorted(contents.items()):
        target = out_dir / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        if name == BOOTSTRAP_SCRIPT:
            target.chmod(0o755)
        files[name] = target
    return CodePackage(version=content_version(contents), files=files)


def default_jobs_dir() -> Path:
    """``Settings().jobs_dir`` (FRUITS_JOBS_DIR or the checkout's spark_jobs/); packaging needs no lake."""
    from fruits_pipeline.settings import Settings

    env = dict(os.environ)
    env.setdefault("FRUITS_LAKE_URI", "file:///packaging-needs-no-lake")
    return Settings.from_env(env).jobs_dir


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m fruits_pipeline.code_package OUT_DIR", file=sys.stderr)
        return 2
    jobs_dir = default_jobs_dir()
    try:
        package = build_code_package(jobs_dir, Path(argv[0]))
    except CodePackageError as error:
        print(f"code_package: {error}", file=sys.stderr)
        return 1
    for name, path in package.files.items():
        print(f"  {name:<36} {path}")
    print(f"code package version {package.version} in {argv[0]} (upload to <lake>/code/{package.version}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
