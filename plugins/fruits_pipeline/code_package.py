"""The packager (``make package``): fills the wheelhouse EMR nodes install from, then builds the job code.

``build_wheelhouse(dest)`` fills a wheelhouse with ``pip download --platform ... --only-binary=:all:``:
the bootstrap's PINNED list (the single source of the nodes' packages), their dependencies at the
versions of ``requirements.lock`` (given as constraints), for every architecture in ARCHITECTURES.
The pins in BUILT_HERE are published as source only: each is built once into a pure-Python wheel
(``pip wheel --no-deps``) that serves every architecture.

``python -m fruits_pipeline.code_package OUT_DIR [--wheelhouse DIR]`` builds the wheelhouse in DIR when
it is not complete, then the package (``fruits_pipeline.job_code``), and prints the version. A
development tool: the DAG's tasks never import it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fruits_contract.lake import WHEELHOUSE
from fruits_pipeline.job_code import (ARCHITECTURES, CodePackageError, bootstrap_pins, build_code_package,
                                      default_jobs_dir, missing_wheels)

# EMR 7 nodes: x86_64 (m5, c5, r5) and Graviton (m6g, m7g, c7g, r7g); Amazon Linux 2023 has glibc 2.34,
# so any manylinux_2_17..2_34 wheel runs there. pip does not widen a --platform tag to older glibc
# versions itself, hence one --platform per version.
GLIBC_MINORS = range(17, 35)
NODE_PYTHON = "3.11"
# pyvips is on PyPI as an sdist only; it is pure Python (it loads pyvips-binary's libvips through
# cffi), so its wheel is "py3-none-any". Its dependency, cffi, comes with pyvips-binary's download.
BUILT_HERE = ("pyvips",)


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
    built_here = [pin for pin in pins if pin.split("==")[0] in BUILT_HERE]
    downloaded = [pin for pin in pins if pin not in built_here]
    if missing_wheels(dest, built_here, architectures):
        _run_pip([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), *built_here],
                 "pip wheel of the source-only pins", env)
    for arch in architectures:
        if not missing_wheels(dest, downloaded, (arch,)):
            continue
        command = pip_download_command(downloaded, dest, arch, constraints if Path(constraints).is_file() else None)
        _run_pip(command, f"pip download of the {arch} wheelhouse", env)
    missing = missing_wheels(dest, pins, architectures)
    if missing:
        raise CodePackageError(f"wheelhouse {dest} lacks wheels for: {', '.join(missing)}")
    return sorted(dest.glob("*.whl"))


def _run_pip(command: list[str], what: str, env: dict | None) -> None:
    completed = subprocess.run(command, capture_output=True, text=True, env=env)
    if completed.returncode != 0:
        raise CodePackageError(f"{what} failed ({' '.join(command)}):\n{completed.stderr.strip()[-2000:]}")


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
