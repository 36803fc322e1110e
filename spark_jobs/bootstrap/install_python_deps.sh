#!/usr/bin/env bash
# EMR bootstrap action: the Python packages the Spark jobs import, for the cluster's python3.11
# (EMR 7, Amazon Linux 2023). Runs on every node before Spark starts.
# The pins are the project's own (pyproject.toml / requirements.lock); tests/unit/test_code_package.py
# fails if they drift apart. Idempotent: a node that already has exactly these versions is left alone.
set -euo pipefail

PYTHON="${FRUITS_PYTHON:-python3.11}"
# The jobs' runtime: LiteRT runs the model (no TensorFlow or Keras on the nodes), pandas for the
# pandas UDF, Pillow to decode, PyArrow for Arrow batches.
PINNED=(
  "ai-edge-litert==2.3.0"
  "pillow==13.0.0"
  "pyarrow==26.0.1"
  "pandas==3.1.1"
  "numpy==2.4.6"
)

fail() {
  echo "install_python_deps.sh: FAILED: $*" >&2
  echo "install_python_deps.sh: the Spark jobs cannot run on this node; see the bootstrap log above." >&2
  exit 1
}
trap 'fail "command failed at line ${LINENO}: ${BASH_COMMAND}"' ERR

SUDO=""
if [[ "$(id -u)" != "0" ]]; then SUDO="sudo"; fi

if ! command -v "${PYTHON}" >/dev/null 2>&1; then
  if [[ "${PYTHON}" == "python3.11" ]] && command -v dnf >/dev/null 2>&1; then
    echo "install_python_deps.sh: ${PYTHON} not found, installing it with dnf"
    ${SUDO} dnf install -y -q python3.11 python3.11-pip
  fi
  command -v "${PYTHON}" >/dev/null 2>&1 || fail "${PYTHON} is not installed and could not be installed"
fi

# Prints the pins that are missing or at another version (nothing when all are in place).
missing_pins() {
  "${PYTHON}" - "${PINNED[@]}" <<'EOF'
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
EOF
}

todo="$(missing_pins)"
if [[ -z "${todo}" ]]; then
  echo "install_python_deps.sh: ${PINNED[*]} already installed for ${PYTHON}; nothing to do"
  exit 0
fi

echo "install_python_deps.sh: installing for ${PYTHON}: ${todo//$'\n'/ }"
${SUDO} "${PYTHON}" -m pip install --quiet --no-cache-dir "${PINNED[@]}"

todo="$(missing_pins)"
[[ -z "${todo}" ]] || fail "still not at the pinned versions after pip install: ${todo//$'\n'/ }"
"${PYTHON}" -c "import ai_edge_litert.interpreter, PIL, pyarrow, pandas, numpy" || fail "the installed packages do not import"
echo "install_python_deps.sh: installed ${PINNED[*]} for ${PYTHON}"
