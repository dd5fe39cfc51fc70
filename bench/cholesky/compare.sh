#!/usr/bin/env bash
# The tiled Cholesky on this machine's CPU cores and OpenCL devices: static placements (every
# task on the CPU workers, every task on the OpenCL devices) against the eager and dmdas
# schedulers, once the performance models have calibrated. Prints '<placement> gflops <best>'.
#
#   bench/cholesky/compare.sh [N] [TILE]        (HETFLOW_BUILD: the build folder, default build;
#                                               ROUNDS: turns of every placement, default 3)
#
# The OpenCL device of a machine without an accelerator is PoCL on the same cores as the CPU
# workers; so that the two kinds of workers do not fight over cores, each gets its share: one
# PoCL thread per OpenCL worker, and one CPU worker fewer than there are cores.
set -euo pipefail
n=${1:-2048}
tile=${2:-256}
rounds=${ROUNDS:-3}
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

echo "cholesky n=$n tile=$tile: $cpus CPU workers + OpenCL ($HETFLOW_OPENCL_DEVICES devices), best of $rounds rounds" >&2
"$cholesky" "${common[@]}" --sched dmdas --repeat 5 >/dev/null 2>&1  # calibrates the models
# The placements take turns, round after round, so that a slow spell of a shared machine falls
# on all of them rather than on one.
declare -A rate=([static_cpu]=0 [static_opencl]=0 [eager]=0 [dmdas]=0)
declare -A flags=([static_cpu]="--where cpu" [static_opencl]="--where opencl" [eager]="--sched eager" [dmdas]="--sched dmdas")
for ((round = 0; round < rounds; ++round)); do
  for placement in static_cpu static_opencl eager dmdas; do
    # shellcheck disable=SC2086 # the flags are two words
    value=$(best ${flags[$placement]})
    rate[$placement]=$(awk -v a="${rate[$placement]}" -v b="$value" 'BEGIN { print (b > a ? b : a) }')
  done
done
for placement in static_cpu static_opencl eager dmdas; do echo "$placement gflops ${rate[$placement]}"; done
awk -v d="${rate[dmdas]}" -v c="${rate[static_cpu]}" -v o="${rate[static_opencl]}" -v e="${rate[eager]}" \
  'BEGIN { s = c > o ? c : o; printf "dmdas / best static %.2f, dmdas / eager %.2f\n", d / s, d / e }'
"$cholesky" "${common[@]}" --sched dmdas --repeat 3 --trace "${TRACE:-/dev/null}" 2>&1 | grep -E '^  worker' >&2
