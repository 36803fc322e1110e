#!/usr/bin/env bash
# EMR bootstrap action: the Python packages the Spark jobs import, for the cluster's python3.11
# (EMR 7, Amazon Linux 2023). Runs on every node before Spark starts.
#
#   install_python_deps.sh WHEELHOUSE
#
# WHEELHOUSE (or FRUITS_WHEELHOUSE) is code/<version>/wheelhouse: an s3:// prefix (copied with
# `aws s3 cp`, only this node's architecture) or a local folder. Nodes need no internet: pip runs
# with --no-index and finds every wheel there (`make package` builds it). FRUITS_PYTHON chooses
# the interpreter (default python3.11; a test gives a fresh venv's python).
# The pins are the project's own (pyproject.toml / requirements.lock); tests/unit/test_code_package.py
# fails if they drift apart. Idempotent: a node that already has exactly these versions is left alone.
set -euo pipefail

PYTHON="${FRUITS_PYTHON:-python3.11}"
WHEELHOUSE="${FRUITS_WHEELHOUSE:-${1:-}}"
# The jobs' runtime: LiteRT runs the model (no TensorFlow or Keras on the nodes), pandas for the
# pandas UDF, Pillow to decode (pillow-heif for HEIC/HEIF, pyvips for WebP at reduced size),
# boto3 for the Python workers' reads of the photos from S3, PyArrow for Arrow batches, SciPy's
# L-BFGS for the classifier's fit on the driver (fruits_spark.logistic).
PINNED=(
  "ai-edge-litert==2.3.0"
  "pillow==13.0.0"
  "pillow-heif==1.8.1"
  "pyvips==3.2.0"
  "pyvips-binary==8.18.7"
  "boto3==1.43.117"
  "pyarrow==26.0.1"
  "pandas==3.1.1"
  "numpy==2.4.6"
  "scipy==1.17.1"
)

fail() {
  echo "install_python_deps.sh: FAILED: $*" >&2
  echo "install_python_deps.sh: the Spark jobs cannot run on this node; see the bootstrap log above." >&2
  exit 1
}
trap 'fail "command failed at line ${LINENO}: ${BASH_COMMAND}"' ERR

# EMR runs bootstrap actions as hadoop (sudo without password); a given interpreter (a venv) is the caller's own.
SUDO=""
if [[ "$(id -u)" != "0" && -z "${FRUITS_PYTHON:-}" ]]; then SUDO="sudo"; fi

if ! command -v "${PYTHON}" >/dev/null 2>&1; then
  if [[ "${PYTHON}" == "python3.11" ]] && command -v dnf >/dev/null 2>&1; then
    # Amazon Linux's repositories are served from S3: reachable through the subnet's S3 gateway endpoint.
    echo "install_python_deps.sh: ${PYTHON} not found, installing it with dnf"
    ${SUDO} dnf install -y -q python3.11 python3.11-pip
  fi
  command -v "${PYTHON}" >/dev/null 2>&1 || fail "${PYTHON} is not installed and could not be installed"
fi

# Prints the pins that are missing or at another version (nothing when all are in place).
missing_pins() {
  "${PYTHON}" - "${PINNED[@]}" <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for pin in sys.argv[1:]:
    name, wanted = pin.split("==")
    try:
        found = version(name)
    except PackageNotFoundError:
        found = None
    if found != wanted:
        print(pin)
PY
}

todo="$(missing_pins)"
if [[ -z "${todo}" ]]; then
  echo "install_python_deps.sh: ${PINNED[*]} already installed for ${PYTHON}; nothing to do"
  exit 0
fi

[[ -n "${WHEELHOUSE}" ]] || fail "no wheelhouse given (first argument or FRUITS_WHEELHOUSE): nodes install from code/<version>/wheelhouse, never from the internet"
if [[ "${WHEELHOUSE}" == s3://* ]]; then
  local_wheels="$(mktemp -d /tmp/fruits-wheelhouse.XXXXXX)"
  arch="$(uname -m)"
  echo "install_python_deps.sh: copying the ${arch} and pure-Python wheels of ${WHEELHOUSE} to ${local_wheels}"
  aws s3 cp --recursive --quiet --exclude "*" --include "*-any.whl" --include "*_${arch}.whl" \
    "${WHEELHOUSE%/}/" "${local_wheels}/" || fail "cannot copy ${WHEELHOUSE} (instance profile s3:GetObject/ListBucket on code/?)"
  WHEELHOUSE="${local_wheels}"
fi
[[ -d "${WHEELHOUSE}" ]] || fail "wheelhouse ${WHEELHOUSE} is not a folder"

echo "install_python_deps.sh: installing for ${PYTHON} from ${WHEELHOUSE}: ${todo//$'\n'/ }"
# --ignore-requires-python: backports-strenum 1.3.1 (locked, needed by ai-edge-litert) declares <3.11
# but runs on 3.11; `make package` downloads it with the same flag.
${SUDO} "${PYTHON}" -m pip install --quiet --no-cache-dir --disable-pip-version-check \
  --no-index --find-links "${WHEELHOUSE}" --ignore-requires-python "${PINNED[@]}" \
  || fail "pip could not install ${PINNED[*]} from ${WHEELHOUSE} alone (a wheel missing for $(uname -m)? rebuild it with make package)"

todo="$(missing_pins)"
[[ -z "${todo}" ]] || fail "still not at the pinned versions after pip install: ${todo//$'\n'/ }"
"${PYTHON}" -c "import ai_edge_litert.interpreter, PIL, pillow_heif, pyarrow, pandas, numpy" || fail "the installed packages do not import"
echo "install_python_deps.sh: installed ${PINNED[*]} for ${PYTHON}"
