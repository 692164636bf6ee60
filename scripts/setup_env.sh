#!/usr/bin/env bash
# Installs what Kiln needs and builds it; scripts/demo and scripts/test run it first.
#
# Idempotent and quick on a rerun: system packages and Python packages are installed only when
# missing, and Kiln itself is rebuilt incrementally (CMake recompiles only what changed).
#
# Environment:
#   PYTHON                 the interpreter to install into (default: python3)
#   KILN_CMAKE_BUILD_DIR   the CMake build directory (default: build/cmake)
#   KILN_TORCH_INDEX_URL   a pip index to take torch and torchvision from (default: PyTorch's CPU
#                          index on a machine without an NVIDIA GPU, falling back to PyPI)
#   KILN_BUILD_TESTS       ON to build the GoogleTest suite as well (scripts/test sets it)

set -euo pipefail

KILN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
export KILN_CMAKE_BUILD_DIR="${KILN_CMAKE_BUILD_DIR:-$KILN_ROOT/build/cmake}"
TORCH_REQUIREMENT="torch==2.11.*"
TORCHVISION_REQUIREMENT="torchvision==0.26.*"

step() { echo "==> $*"; }

run_as_root() {
  if [ "$(id -u)" -eq 0 ]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    echo "setup_env: need root to run '$*' (no sudo found); install it by hand" >&2
    return 1
  fi
}

cmake_is_recent() {
  command -v cmake >/dev/null 2>&1 || return 1
  local version
  version="$(cmake --version | head -n 1 | awk '{print $3}')"
  [ "$(printf '%s\n' 3.24 "$version" | sort -V | head -n 1)" = 3.24 ]
}

python_headers_present() {
  "$PYTHON" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'
}

install_system_packages() {
  local missing=()
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  cmake_is_recent || missing+=(cmake)
  command -v ninja >/dev/null 2>&1 || missing+=(ninja-build)
  [ -f /usr/include/gtest/gtest.h ] || missing+=(libgtest-dev)
  python_headers_present || missing+=(python3-dev)
  "$PYTHON" -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
  if [ "${#missing[@]}" -eq 0 ]; then
    step "system packages: all present"
    return
  fi
  step "system packages: installing ${missing[*]}"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_env: missing ${missing[*]} and no apt-get to install them; install them by hand" >&2
    return 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  run_as_root apt-get update -q
  run_as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# Prints, one a line, the requirements among the arguments that the interpreter does not satisfy.
unsatisfied() {
  "$PYTHON" - "$@" <<'EOF'
import sys
from importlib import metadata

try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

for text in sys.argv[1:]:
    requirement = Requirement(text)
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        print(text)
        continue
    # A local version label (2.11.0+cpu) still satisfies torch==2.11.*.
    if not requirement.specifier.contains(version.split("+")[0], prereleases=True):
        print(text)
EOF
}

has_nvidia_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1
}

install_torch() {
  local missing
  missing="$(unsatisfied "$TORCH_REQUIREMENT" "$TORCHVISION_REQUIREMENT")"
  if [ -z "$missing" ]; then
    step "torch and torchvision: already installed ($("$PYTHON" -c 'import torch; print(torch.__version__)'))"
    return
  fi
  # torch and torchvision come from one index, so that their builds match.
  local index="${KILN_TORCH_INDEX_URL:-}"
  if [ -z "$index" ] && ! has_nvidia_gpu; then
    index="https://download.pytorch.org/whl/cpu"
  fi
  if [ -n "$index" ]; then
    step "torch and torchvision: installing from $index"
    if "$PYTHON" -m pip install --progress-bar on --timeout 20 --retries 1 --index-url "$index" \
        "$TORCH_REQUIREMENT" "$TORCHVISION_REQUIREMENT"; then
      return
    fi
    echo "setup_env: $index could not be used; installing torch from the default index" >&2
  fi
  step "torch and torchvision: installing from the default index"
  "$PYTHON" -m pip install --progress-bar on "$TORCH_REQUIREMENT" "$TORCHVISION_REQUIREMENT"
}

# transformers and timm: the model zoo tests (tests/py/test_zoo.py) build HF models from small
# configs and timm models with random weights (timm 1.0.x supports torch 2.11; tested with 1.0.31).
install_python_tools() {
  local missing
  mapfile -t missing < <(unsatisfied "setuptools>=64" wheel pytest numpy "transformers>=5,<6" \
    "timm>=1.0.20,<1.1")
  if [ "${#missing[@]}" -eq 0 ]; then
    step "setuptools, wheel, pytest, numpy, transformers, timm: already installed"
    return
  fi
  step "installing ${missing[*]}"
  "$PYTHON" -m pip install --progress-bar on "${missing[@]}"
}

# The hash of what decides the installed metadata (entry points, dependencies, package layout).
packaging_stamp() {
  cat "$KILN_ROOT/pyproject.toml" "$KILN_ROOT/setup.py" | sha256sum | cut -d' ' -f1
}

kiln_installed_from_this_tree() {
  (cd /tmp && "$PYTHON" - "$KILN_ROOT" <<'EOF'
import importlib.util
import os
import sys
from importlib import metadata

try:
    metadata.distribution("kiln")
except metadata.PackageNotFoundError:
    sys.exit(1)
spec = importlib.util.find_spec("kiln")
expected = os.path.join(sys.argv[1], "py", "kiln", "__init__.py")
sys.exit(0 if spec and spec.origin and os.path.samefile(spec.origin, expected) else 1)
EOF
  )
}

install_kiln() {
  local stamp_file="$KILN_CMAKE_BUILD_DIR/kiln-packaging.stamp"
  cd "$KILN_ROOT"
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$(packaging_stamp)" ] &&
      kiln_installed_from_this_tree; then
    # Installed in editable mode from this tree: only the native parts need rebuilding.
    step "kiln: rebuilding the native parts in place ($KILN_CMAKE_BUILD_DIR)"
    "$PYTHON" setup.py --quiet build_ext --inplace
  else
    step "kiln: pip install --no-build-isolation -e . (CMake build in $KILN_CMAKE_BUILD_DIR)"
    mkdir -p "$KILN_CMAKE_BUILD_DIR"
    local log="$KILN_CMAKE_BUILD_DIR/pip-install.log"
    # The full output goes to the log; the build's progress and diagnostics to the terminal.
    set +e
    "$PYTHON" -m pip install --no-build-isolation --no-deps -v -e . 2>&1 | tee "$log" |
      grep --line-buffered -E '^ *(\+ cmake|\[[0-9]+/[0-9]+\]|Successfully)|warning:|error'
    local status="${PIPESTATUS[0]}"
    set -e
    if [ "$status" -ne 0 ]; then
      tail -n 80 "$log" >&2
      echo "setup_env: pip install -e . failed (exit $status); the whole output is in $log" >&2
      return 1
    fi
    packaging_stamp >"$stamp_file"
  fi
  cd - >/dev/null
}

install_system_packages
install_python_tools
install_torch
install_kiln
step "environment ready"
