#!/usr/bin/env bash
# Builds Kiln with CUDA on the GPU machine and runs the GPU checks: the C++ CUDA tests, the
# GPU pytest suite, or (with --bench ARGS...) the benchmark, or (with --inspect ARGS...) the
# inspector's per-layer profile of the benchmark's models (bench/inspect_models.py, files in
# $OUT/inspect), or (with --attention ARGS...) the attention kernel against PyTorch's
# (bench/attention.py, $OUT/attention.md). Logs go to $OUT (default /tmp/kiln-out).
#
# The GPU machine has PyTorch in /opt/torch/.venv, cuDNN under its site-packages/nvidia, and no
# GoogleTest package: GoogleTest's sources are carried in third_party/googletest.
# With --bench, torch.compile's cache lives in .inductor-cache (carry it) and comes back packed as
# $OUT/inductor-cache.tgz (unpack it into .inductor-cache for the next call).
# PYTEST_PATHS (default tests/py) and PYTEST_ARGS narrow the GPU pytest run, PYTEST_SHARDS=n
# splits it over n processes (tests/py/conftest.py's KILN_TEST_SHARD); CTEST=0 skips the C++
# tests.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/kiln-out}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-/opt/torch/.venv/bin/python}"
SITE="$("$PYTHON" -c 'import site; print(site.getsitepackages()[0])')"
BUILD="${BUILD:-build/gpu-gxx}"
export PATH="/usr/local/cuda/bin:$PATH"
# The GPU machine's CXX (/opt/gcc/bin/g++) has only a static libstdc++, which Kiln's CMake refuses
# (torch's libstdc++.so must be the only one): the system g++ has the shared one.
CXX_COMPILER="${KILN_CXX:-/usr/bin/g++}"

step() { echo "==> $* ($(date +%T))"; }

step "configure"
cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DKILN_CUDA=ON -DKILN_BUILD_TESTS=ON \
  -DCMAKE_CXX_COMPILER="$CXX_COMPILER" -DCMAKE_CUDA_HOST_COMPILER="$CXX_COMPILER" \
  -DKILN_GTEST_SOURCE_DIR="$PWD/third_party/googletest" -DKILN_CUDNN_ROOT="$SITE/nvidia/cudnn" \
  -DPython3_EXECUTABLE="$PYTHON" >"$OUT/configure.log" 2>&1 || { tail -30 "$OUT/configure.log"; exit 1; }
step "build"
cmake --build "$BUILD" -j16 >"$OUT/build.log" 2>&1 || { grep -E "error|FAILED" "$OUT/build.log" | head -40; exit 1; }

# The package as pip would lay it out: py/kiln plus the built libraries.
PKG="$BUILD/pkg"
rm -rf "$PKG" && mkdir -p "$PKG" && cp -r py/kiln "$PKG/" && cp "$BUILD"/_C*.so "$BUILD"/libkiln_runtime.so "$PKG/kiln/"
export PYTHONPATH="$PWD/$PKG${PYTHONPATH:+:$PYTHONPATH}"
# cuDNN and cuBLAS of torch's pip packages, which the build linked against.
export LD_LIBRARY_PATH="$SITE/nvidia/cudnn/lib:$SITE/nvidia/cublas/lib:${LD_LIBRARY_PATH:-}"

if [ "${1:-}" = "--bench" ]; then
  shift
  # torch.compile's caches (compiled graphs, max-autotune's choices) in .inductor-cache, packed
  # into $OUT/inductor-cache.tgz afterwards: carried back to the next machine, a later call
  # compiles what an earlier one did from cache instead of for minutes.
  export TORCHINDUCTOR_CACHE_DIR="$PWD/.inductor-cache"
  mkdir -p "$TORCHINDUCTOR_CACHE_DIR"
  step "benchmark $*"
  "$PYTHON" bench/run.py --out "$OUT" "$@" 2>&1 | tee "$OUT/bench.log" | grep -v "^20" | tail -60
  status=${PIPESTATUS[0]}
  tar czf "$OUT/inductor-cache.tgz" -C "$TORCHINDUCTOR_CACHE_DIR" .
  exit "$status"
fi

# Runs one of bench/'s tools with its log in $OUT, shows the log's end and exits with its status.
run_bench_tool() {
  local name=$1 log=$2
  shift 2
  step "$name: $*"
  "$PYTHON" "$@" >"$OUT/$log" 2>&1
  local tool_status=$?
  tail -25 "$OUT/$log"
  exit "$tool_status"
}

if [ "${1:-}" = "--attention" ]; then
  shift
  run_bench_tool attention attention.log bench/attention.py --out "$OUT/attention.md" "$@"
fi

if [ "${1:-}" = "--inspect" ]; then
  shift
  run_bench_tool inspect inspect.log bench/inspect_models.py --out "$OUT/inspect" "$@"
fi

status=0
if [ "${CTEST:-1}" != 0 ]; then
  step "C++ tests"
  "$BUILD/kiln_core_tests" --gtest_brief=1 >"$OUT/ctest.log" 2>&1 || status=1
  grep -E "FAILED|PASSED|Failure|error" "$OUT/ctest.log" | head -60
  step "C++ device-memory test, modules loaded eagerly"
  CUDA_MODULE_LOADING=EAGER "$BUILD/kiln_core_tests" --gtest_brief=1 \
    --gtest_filter=CudaEngine.BuildRunFreeCyclesReturnDeviceMemory >"$OUT/ctest_eager.log" 2>&1 || status=1
  grep -E "FAILED|PASSED|Failure|Skipped" "$OUT/ctest_eager.log" | head -10
fi
shards="${PYTEST_SHARDS:-1}"
step "pytest (gpu), $shards process(es)"
pids=()
for ((i = 0; i < shards; i++)); do
  KILN_TEST_SHARD="$i/$shards" "$PYTHON" -m pytest ${PYTEST_PATHS:-tests/py} -m gpu -q -rfEs \
    -p no:cacheprovider ${PYTEST_ARGS:-} >"$OUT/pytest_gpu_$i.log" 2>&1 &
  pids+=($!)
done
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
for ((i = 0; i < shards; i++)); do
  grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest_gpu_$i.log" | cut -c1-400 | tail -40
done
exit $status
