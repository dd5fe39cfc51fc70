#!/usr/bin/env bash
# The tiled Cholesky on this machine's CPU cores and OpenCL devices: static placements (every
# task on the CPU workers, every task on the OpenCL devices) against the eager and dmdas
# schedulers, once the performance models have calibrated. Prints '<placement> gflops <best>'.
#
#   bench/cholesky/compare.sh [N] [TILE]        (HETFLOW_BUILD: the build folder, default build)
#
# The OpenCL device of a machine without an accelerator is PoCL on the same cores as the CPU
# workers; so that the two kinds of workers do not fight over cores, each gets its share: one
# PoCL thread per OpenCL worker, and one CPU worker fewer than there are cores.
set -euo pipefail
n=${1:-2048}
tile=${2:-256}
build=${HETFLOW_BUILD:-build}
cholesky="$build/examples/cpp/cholesky"
[ -x "$cholesky" ] || { echo "build the examples first (make build): $cholesky is missing" >&2; exit 1; }

cores=$(nproc)
cpus=$(( cores > 1 ? cores - 1 : 1 ))
export HETFLOW_HOME=$(mktemp -d)
trap 'rm -rf "$HETFLOW_HOME"' EXIT
export HETFLOW_OPENCL_DEVICES=${HETFLOW_OPENCL_DEVICES:-all} POCL_MAX_PTHREAD_COUNT=${POCL_MAX_PTHREAD_COUNT:-1}
common=(--n "$n" --tile "$tile" --opencl --ncpus "$cpus")

best() {  # prints the best rate of a few runs
  "$cholesky" "${common[@]}" "$@" --repeat 3 2>&1 | sed -n 's/.*best [0-9.]* s (\([0-9.]*\) GFLOP\/s).*/\1/p'
}

echo "cholesky n=$n tile=$tile: $cpus CPU workers + OpenCL ($HETFLOW_OPENCL_DEVICES devices)" >&2
"$cholesky" "${common[@]}" --sched dmdas --repeat 5 >/dev/null 2>&1  # calibrates the models
echo "static_cpu gflops $(best --where cpu)"
echo "static_opencl gflops $(best --where opencl)"
echo "eager gflops $(best --sched eager)"
echo "dmdas gflops $(best --sched dmdas)"
"$cholesky" "${common[@]}" --sched dmdas --trace "${TRACE:-/dev/null}" 2>&1 | grep -E '^  worker' >&2
