#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and the CUDA toolkit: builds hetflow with the CUDA driver, runs
# every CUDA test (C++ and Python), the GPU benchmarks (tiled GEMM against one cuBLAS call, tiled
# Cholesky against one cuSOLVER potrf, the Python tiled GEMM and Cholesky against one CuPy call),
# the whole C++ suite on all cores, and prints a summary.
# Sized to finish within 8 minutes on 16 cores; each step has its own time limit.
#
#   scripts/gpu-check.sh                      # packages installed (make deps)
#   HETFLOW_DEPS_PREFIX=DIR scripts/gpu-check.sh   # an offline machine: DIR from scripts/gpu-bundle-deps.sh
#
# Environment: BUILD (default build-gpu), GPU_CHECK_LOGS (a folder for the full logs; default
# BUILD/gpu-check-logs), PYTHON (default python3), GEMM_N and CHOLESKY_N (default 16384).
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
build=$(mkdir -p "${BUILD:-build-gpu}" && cd "${BUILD:-build-gpu}" && pwd)
logs=${GPU_CHECK_LOGS:-$build/gpu-check-logs}
python=${PYTHON:-python3}
gemm_n=${GEMM_N:-16384}
cholesky_n=${CHOLESKY_N:-16384}
jobs=$(nproc)
mkdir -p "$logs"
summary=()
started=$SECONDS

if [[ -n ${HETFLOW_DEPS_PREFIX:-} ]]; then
  prefix=$(cd "$HETFLOW_DEPS_PREFIX" && pwd)
  export CMAKE_PREFIX_PATH="$prefix${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export PKG_CONFIG_PATH="$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
  export LD_LIBRARY_PATH="$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  command -v pkg-config >/dev/null || export PATH="$PATH:$prefix/bin"
fi
if ! command -v nvcc >/dev/null && [[ -x /usr/local/cuda/bin/nvcc ]]; then export PATH="$PATH:/usr/local/cuda/bin"; fi

# step NAME SECONDS COMMAND...: runs COMMAND under a time limit, its output to the screen and to
# logs/NAME.log, and records the outcome for the summary.
step() {
  local name=$1 limit=$2
  shift 2
  local begin=$SECONDS
  echo "=== $name (limit ${limit}s): $*"
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$logs/$name.log"
  local status=${PIPESTATUS[0]}
  local outcome=ok
  if ((status == 124 || status == 137)); then
    outcome="TIMED OUT"
  elif ((status != 0)); then
    outcome="FAILED ($status)"
  fi
  summary+=("$(printf '%-22s %-12s %4ds' "$name" "$outcome" $((SECONDS - begin)))")
  return "$status"
}

{
  echo "date: $(date -u '+%F %T UTC')"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || echo "nvidia-smi failed"
  nvcc --version | tail -2
  echo "cores: $jobs; $(${CXX:-c++} --version | head -1); $(cmake --version | head -1); $($python --version 2>&1)"
} 2>&1 | tee "$logs/machine.log"

generator=()
command -v ninja >/dev/null && generator=(-G Ninja)
built=no
step configure 120 cmake -S . -B "$build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DHETFLOW_WITH_CUDA=ON \
  -DHETFLOW_BUILD_BENCH=OFF -DCMAKE_CUDA_ARCHITECTURES=90 &&
  step build 300 cmake --build "$build" -j"$jobs" && built=yes

if [[ $built == yes ]]; then
  step cuda-tests 150 ctest --test-dir "$build" -L cuda -j4 --output-on-failure --timeout 120
  gemm=("$build"/examples/cpp/tiled_gemm --cuda --where cuda --n "$gemm_n" --repeat 3 --cublas)
  step gemm-tile4096 90 "${gemm[@]}" --tile 4096
  step gemm-tile2048 90 "${gemm[@]}" --tile 2048
  cholesky=("$build"/examples/cpp/cholesky --cuda --where cuda --n "$cholesky_n" --repeat 3 --cusolver)
  step cholesky-tile2048 90 "${cholesky[@]}" --tile 2048
  step cholesky-tile1024 90 "${cholesky[@]}" --tile 1024
  # The GPU with every core beside it: the model-driven scheduler chooses per tile.
  step cholesky-dmdas 90 "$build"/examples/cpp/cholesky --cuda --sched dmdas --n 8192 --tile 1024 --repeat 3
  step all-cpp-tests 200 ctest --test-dir "$build" -LE cuda -j"$jobs" --timeout 120
fi

if step python-build 200 "$python" -m pip install -q --no-build-isolation --no-deps -e .; then
  step python-cuda-tests 200 "$python" -m pytest -q -rs -p no:cacheprovider tests/python/test_cuda_codelets.py
  python_gemm=("$python" examples/python/tiled_gemm.py --cuda --where cuda --n "$gemm_n" --repeat 3 --cupy)
  step python-gemm-tile4096 120 "${python_gemm[@]}" --tile 4096
  step python-gemm-tile2048 120 "${python_gemm[@]}" --tile 2048
  step python-cholesky 120 "$python" examples/python/tiled_cholesky.py --cuda --where cuda --n "$cholesky_n" \
    --tile 2048 --repeat 3 --cupy
fi

echo
echo "=== gpu-check summary ($((SECONDS - started)) s; logs in $logs)"
printf '%s\n' "${summary[@]}"
for name in gemm-tile4096 gemm-tile2048 cholesky-tile2048 cholesky-tile1024 cholesky-dmdas python-gemm-tile4096 \
  python-gemm-tile2048 python-cholesky; do
  [[ -f $logs/$name.log ]] && grep -h "runs: first\|^cublasDgemm\|^cusolverDnDpotrf\|^cupy\." "$logs/$name.log" |
    sed "s/^/$name: /"
done
grep -h -A30 "tests passed\|tests failed" "$logs"/*tests.log 2>/dev/null | grep -v "^$\|sec\*proc\|Label Time\|Total Test time"
tail -n 1 "$logs/python-cuda-tests.log" 2>/dev/null
