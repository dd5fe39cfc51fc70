#!/usr/bin/env bash
# Runs the overhead workloads on hetflow, StarPU and oneTBB in one go, with the same task count,
# and prints hetflow's ratios against its targets. The machines are noisy: compare ratios taken in
# one run, never absolute times across runs.
#
# Usage: bench/overhead/compare.sh [TASKS]          (default 100000)
# Environment:
#   HETFLOW_BENCH  the hetflow-bench to run (default: build/bench/hetflow-bench in this repository)
#   REPEAT         timed runs per workload, of which each program prints the median (default 3)
#   STARPU_SCHED   StarPU's scheduler (default eager)
# Needs gcc, g++, pkg-config, libstarpu-dev and libtbb-dev; run as root, it installs those missing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
tasks=${1:-100000}
repeat=${REPEAT:-3}
bench=${HETFLOW_BENCH:-$root/build/bench/hetflow-bench}

for value in "$tasks" "$repeat"; do
  if ! [[ $value =~ ^[1-9][0-9]*$ ]]; then
    echo "compare.sh: '$value' is not a positive whole number (usage: compare.sh [TASKS], REPEAT=R)" >&2
    exit 2
  fi
done
if [ ! -x "$bench" ]; then
  echo "compare.sh: no hetflow-bench at $bench" >&2
  echo "build it (cmake -S . -B build && cmake --build build) or point HETFLOW_BENCH at it" >&2
  exit 1
fi

# The competitors' build dependencies (Debian packages).
need=()
command -v gcc >/dev/null || need+=(gcc)
command -v g++ >/dev/null || need+=(g++)
command -v pkg-config >/dev/null || need+=(pkg-config)
{ command -v pkg-config >/dev/null && pkg-config --exists starpu-1.3; } || need+=(libstarpu-dev)
[ -e /usr/include/tbb/task_group.h ] || [ -e /usr/include/oneapi/tbb/task_group.h ] || need+=(libtbb-dev)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "compare.sh needs these Debian packages: ${need[*]}" >&2
    echo "install them as root: apt-get install ${need[*]}" >&2
    exit 1
  fi
  echo "installing: ${need[*]}" >&2
  (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}") >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck disable=SC2046  # pkg-config's flags are meant to split
gcc -O2 "$here/starpu.c" -o "$tmp/starpu" $(pkg-config --cflags --libs starpu-1.3)
g++ -O2 -std=c++17 "$here/tbb.cpp" -o "$tmp/tbb" -ltbb

model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "# machine: $(nproc) CPUs, ${model:-unknown model}; $tasks tasks, median of $repeat runs" >&2
results="$tmp/results"
"$bench" overhead --tasks "$tasks" --repeat "$repeat" | tee -a "$results"
STARPU_SCHED=${STARPU_SCHED:-eager} STARPU_SILENT=1 "$tmp/starpu" "$tasks" "$repeat" | tee -a "$results"
"$tmp/tbb" "$tasks" "$repeat" | tee -a "$results"

echo
awk -v sched="${STARPU_SCHED:-eager}" '
  { value[$1 " " $2] = $3 }
  function row(label, mine, other, unit, target,    ratio, met) {
    if (value[mine] == "" || (other != "" && value[other] == "")) {
      printf "%-34s %10s\n", label, "missing"
      missed++
      return
    }
    if (other != "") {
      ratio = value[mine] / value[other]
      met = ratio <= target
      printf "%-34s %8.0f %-2s %8.0f %-2s %7.3f   <= %-5s %s\n", label, value[mine], unit, value[other], unit, ratio,
             target, met ? "met" : "MISSED"
    } else {
      met = value[mine] <= target
      printf "%-34s %8.0f %-2s %11s %7s   <= %-5s %s\n", label, value[mine], unit, "", "", target, met ? "met" : "MISSED"
    }
    if (!met) missed++
    rows++
  }
  END {
    printf "%-34s %11s %11s %7s   %-8s %s\n", "comparison", "hetflow", "other", "ratio", "target", "result"
    row("independent hetflow/StarPU " sched, "hetflow independent_ns_per_task", "starpu independent_ns_per_task", "ns", 0.2)
    row("chain       hetflow/StarPU " sched, "hetflow chain_ns_per_task", "starpu chain_ns_per_task", "ns", 0.2)
    row("fanout      hetflow/StarPU " sched, "hetflow fanout_ns_per_task", "starpu fanout_ns_per_task", "ns", 0.2)
    row("independent hetflow/TBB task_group", "hetflow independent_ns_per_task", "tbb independent_ns_per_task", "ns", 2)
    row("pending     bytes per task", "hetflow pending_bytes_per_task", "", "B", 256)
    printf "\ntargets met: %d of 5\n", 5 - missed
  }' "$results"
