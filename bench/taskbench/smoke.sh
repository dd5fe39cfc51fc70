#!/usr/bin/env bash
# Runs every pattern, with each kernel, through every Task Bench program built, on small graphs,
# with the correctness checks on; each run must pass, and every program must count the same tasks
# and dependencies as the serial core for the same flags. Then checks that the checks catch a
# task run before its inputs exist. Not part of the tests: it runs the competitors too.
#
# The Python front (taskbench.py) runs too where its core library is built and a python with
# hetflow is found: hetflow-py-thread and hetflow-py-process, and dask where dask is installed.
#
# Usage: bench/taskbench/smoke.sh [BUILD_DIR]    (default: build)
# Environment: PYTHON (default: .venv/bin/python here, then python3), SYSTEMS (which to run)
# Prints one line per failure and closes with "N passed, N failed".
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-$root/build}
bin="$build/bench/taskbench"
if [ ! -x "$bin/taskbench-selftest" ]; then
  echo "smoke.sh: no Task Bench programs under $bin (build with -DHETFLOW_BUILD_BENCH=ON)" >&2
  exit 1
fi
source "$here/python_systems.sh"
set_systems
echo "# systems: ${systems[*]}" >&2
export STARPU_SILENT=1

patterns=(
  "-type trivial"
  "-type no_comm"
  "-type stencil_1d"
  "-type stencil_1d_periodic"
  "-type dom"
  "-type tree"
  "-type fft"
  "-type all_to_all"
  "-type nearest -radix 5"
  "-type spread -radix 3 -period 2"
  "-type random_nearest -radix 5 -fraction 0.5"
)
kernels=(
  "-kernel empty"
  "-kernel compute_bound -iter 200"
  "-kernel memory_bound -iter 20 -scratch 65536 -sample 8"
  "-kernel load_imbalance -iter 200 -imbalance 1.5"
)
passed=0
failed=0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

counts() { grep -E '^Total (Tasks|Dependencies) ' "$1"; }

check() {  # check FLAGS...: every system against the serial core
  if ! "$bin/taskbench-selftest" in-order "$@" >"$tmp/core" 2>&1; then
    echo "FAILED core: $*" && sed 's/^/    /' "$tmp/core" | tail -5
    failed=$((failed + 1))
    return
  fi
  for system in "${systems[@]}"; do
    set_runner "$system"
    if timeout 120 "${runner[@]}" "$@" >"$tmp/out" 2>&1 && [ "$(counts "$tmp/out")" == "$(counts "$tmp/core")" ]; then
      passed=$((passed + 1))
    else
      echo "FAILED $system: $*" && sed 's/^/    /' "$tmp/out" | tail -5
      failed=$((failed + 1))
    fi
  done
}

for pattern in "${patterns[@]}"; do
  for kernel in "${kernels[@]}"; do
    # shellcheck disable=SC2086  # the flags are meant to split
    check -steps 12 -width 6 $pattern $kernel -output 40
  done
  # Reused output generations: the runtimes must see the write-after-read hazards too.
  # shellcheck disable=SC2086
  check -steps 16 -width 5 $pattern -field 2
done
# Several graphs in one run, of different shapes.
check -steps 10 -width 4 -type stencil_1d -and -steps 6 -width 7 -type fft -kernel compute_bound -iter 100 \
  -and -steps 9 -width 3 -type dom -field 3

# expect_caught LABEL COMMAND...: COMMAND runs a graph out of order, which its checks must report.
expect_caught() {
  local label=$1
  shift
  if "$@" >"$tmp/out" 2>&1; then
    echo "FAILED$label: a graph run out of order went unnoticed"
    failed=$((failed + 1))
  elif grep -q "a dependency was not respected" "$tmp/out"; then
    passed=$((passed + 1))
  else
    echo "FAILED$label: a graph run out of order failed without saying why" && sed 's/^/    /' "$tmp/out" | tail -5
    failed=$((failed + 1))
  fi
}

# The checks must catch a task that runs before the task it depends on, in C++ and through the
# Python front.
expect_caught "" "$bin/taskbench-selftest" last-step-first -steps 4 -width 4 -type stencil_1d
for system in "${systems[@]}"; do
  [[ $system == hetflow-py-* || $system == dask ]] || continue
  set_runner "$system"
  expect_caught " $system" "${runner[@]}" --wrong-order -steps 4 -width 4 -type stencil_1d
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
