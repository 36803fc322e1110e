"""What an EMR cluster needs to run the jobs, with a content-hash version.

``build_code_package(jobs_dir, out_dir) -> CodePackage`` writes into ``out_dir``:

    extract_features.py                 entry script of step 1
    reduce_pca.py                       entry script of step 2
    train_classifier.py                 entry script of step 3
    fruits_spark.zip                    the jobs' shared library, for ``spark-submit --py-files``
    bootstrap/install_python_deps.sh    EMR bootstrap action (pinned Python packages)
    wheelhouse/*.whl                    when a wheelhouse is given: the bootstrap's pins and their
                                        dependencies for manylinux x86_64 and aarch64, cp311, so
                                        that nodes install with ``pip --no-index`` (no internet)

``CodePackage.version`` is the first 12 hex digits of a sha256 over those names and
contents. The zip is deterministic (sorted entries, fixed timestamps and modes), so the
version changes exactly when the code does: the DAG uploads ``files`` to
``code/<version>/<name>`` (``Lake.code(version)``) only when that prefix is missing, and
every run records which code it ran. ``CodePackage.files`` maps each name (the key
under ``code/<version>/``) to its local path.

``build_wheelhouse(dest)`` fills a wheelhouse with ``pip download --platform ... --only-binary=:all:``:
the bootstrap's PINNED list (the single source of the nodes' packages), their dependencies at the
versions of ``requirements.lock`` (given as constraints), for every architecture in ARCHITECTURES.

``python -m fruits_pipeline.code_package OUT_DIR [--wheelhouse DIR]`` (``make package``) builds the
wheelhouse in DIR when it is not complete, then the package, and prints the version. Pure standard
library: no pyspark, TensorFlow or Airflow import.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

LIBRARY = "fruits_spark"
LIBRARY_ZIP = f"{LIBRARY}.zip"
ENTRY_SCRIPTS = ("extract_features.py", "reduce_pca.py", "train_classifier.py")
BOOTSTRAP_SCRIPT = "bootstrap/install_python_deps.sh"
WHEELHOUSE = "wheelhouse"
VERSION_LENGTH = 12
# EMR 7 nodes: x86_64 (m5, c5, r5) and Graviton (m6g, m7g, c7g, r7g); Amazon Linux 2023 has glibc 2.34,
# so any manylinux_2_17..2_34 wheel runs there. pip does not widen a --platform tag to older glibc
# versions itself, hence one --platform per version.
ARCHITECTURES = ("x86_64", "aarch64")
GLIBC_MINORS = range(17, 35)
NODE_PYTHON = "3.11"
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


def wheel_platforms(arch: str) -> list[str]:
    return [f"manylinux2014_{arch}", *(f"manylinux_2_{minor}_{arch}" for minor in GLIBC_MINORS)]


def pip_download_command(pins: list[str], dest: Path, arch: str, constraints: Path | None,
                         python: str = sys.executable) -> list[str]:
    command = [python, "-m", "pip", "download", "--quiet", "--only-binary=:all:", "--dest", str(dest),
               "--python-version", NODE_PYTHON, "--implementation", "cp", "--abi", f"cp{NODE_PYTHON.replace('.', '')}"]
    for platform in wheel_platforms(arch):
        command += ["--platform", platform]
    if constraints:
        command += ["--constraint", str(constraints)]
    # backports-strenum 1.3.1 (locked, a dependency of ai-edge-litert) declares Requires-Python <3.11
    # although it works there (this venv runs it); the bootstrap installs with the same flag.
    return [*command, "--ignore-requires-python", *pins]


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


def build_wheelhouse(dest: Path, jobs_dir: Path | None = None, *, architectures=ARCHITECTURES,
                     constraints: Path | None = None, env: dict | None = None) -> list[Path]:
    """Download the bootstrap's pins and their dependencies into ``dest`` for ``architectures``.

    Skips the download when every pin already has its wheels there. Needs the package index
    (this machine's pip configuration); the nodes then need none."""
    from fruits_pipeline.settings import REPO_ROOT

    jobs_dir = Path(jobs_dir) if jobs_dir else REPO_ROOT / "spark_jobs"
    constraints = constraints or (REPO_ROOT / "requirements.lock")
    pins = bootstrap_pins(jobs_dir)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for arch in architectures:
        if not missing_wheels(dest, pins, (arch,)):
            continue
        command = pip_download_command(pins, dest, arch, constraints if Path(constraints).is_file() else None)
        completed = subprocess.run(command, capture_output=True, text=True, env=env)
        if completed.returncode != 0:
            raise CodePackageError(f"pip download of the {arch} wheelhouse failed ({' '.join(command)}):\n"
                                   f"{completed.stderr.strip()[-2000:]}")
    missing = missing_wheels(dest, pins, architectures)
    if missing:
        raise CodePackageError(f"wheelhouse {dest} lacks wheels for: {', '.join(missing)}")
    return sorted(dest.glob("*.whl"))


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m fruits_pipeline.code_package")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--wheelhouse", type=Path,
                        help="download the nodes' wheels here when incomplete and ship them (make package)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    jobs_dir = default_jobs_dir()
    try:
        if args.wheelhouse:
            wheels = build_wheelhouse(args.wheelhouse, jobs_dir)
            print(f"wheelhouse {args.wheelhouse}: {len(wheels)} wheels for {', '.join(ARCHITECTURES)}")
        package = build_code_package(jobs_dir, args.out_dir, args.wheelhouse)
    except CodePackageError as error:
        print(f"code_package: {error}", file=sys.stderr)
        return 1
    for name, path in package.files.items():
        if not name.startswith(f"{WHEELHOUSE}/"):
            print(f"  {name:<36} {path}")
    wheels = [name for name in package.files if name.startswith(f"{WHEELHOUSE}/")]
    if wheels:
        print(f"  {WHEELHOUSE + '/':<36} {len(wheels)} wheels")
    print(f"code package version {package.version} in {args.out_dir} (upload to <lake>/code/{package.version}/)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
