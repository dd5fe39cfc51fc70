#!/usr/bin/env bash
# METG(50%), the minimum effective task granularity of Task Bench (Slaughter et al., SC 2020),
# for every Task Bench program built and every pattern asked for.
#
# For each system and pattern it runs compute_bound graphs `CORES` points wide, halving -iter
# from tasks of about TASK_MS milliseconds down to about MIN_NS nanoseconds. Each run gives
#   granularity = elapsed * CORES / tasks        (the time a core spends per task)
#   efficiency  = FLOP/s / peak FLOP/s
# where the peak is the best FLOP/s any system reached on the pattern with the largest tasks.
# METG(50%) is the smallest granularity at which the efficiency is still at least 50%: the
# smallest-task sweep point at 50% or more, read towards the next smaller one (linear in log
# granularity). It prints
#   <system> <pattern> metg50_us <v>
# (nan when even the largest tasks stay under 50%; the smallest granularity measured, with a note
# on stderr, when the efficiency never falls under 50%), keeps every run in OUT/metg.tsv and,
# where python with matplotlib is found, plots efficiency against granularity in OUT/metg.png.
#
# The Python front (taskbench.py, see python_systems.sh) takes part as the systems
# hetflow-py-thread, hetflow-py-process and dask: by default where the build has its core library
# (libtaskbench_capi.so) and a python imports hetflow (dask: and dask). Their per-task cost is
# tens of microseconds, so their runs are capped at PY_MAX_STEPS steps, and any system whose
# efficiency falls under DROP_BELOW is not run on the smaller tasks that follow.
#
# Usage: bench/taskbench/metg.sh [PATTERN...]     (default: stencil_1d)
# Environment:
#   BUILD        the build directory (default: build in this repository)
#   SYSTEMS      which systems (default: every one built of hetflow openmp tbb starpu, then
#                hetflow-py-thread hetflow-py-process dask where they can run)
#   CORES        cores, and the graph's width (default: nproc)
#   TASK_MS      the largest task, in ms (default 2)
#   MIN_NS       the smallest task's kernel, in ns (default 50)
#   RUN_SECONDS  kernel time aimed at per run (default 0.25); steps are capped by MAX_STEPS
#   MAX_STEPS    the most steps of one run (default 5000)
#   PY_MAX_STEPS the most steps of one run of the Python front (default 1000)
#   NEAREST_RADIX  the nearest pattern's radix (default 5, as in Task Bench's METG figures)
#   DROP_BELOW   efficiency under which a system stops (default 0.1; 0 runs every system throughout)
#   REPEAT       runs per sweep point, of which the fastest counts (default 1)
#   OUT          where metg.tsv and metg.png go (default: a new temporary directory)
#   PYTHON       the python for the Python front and the plot (default: .venv/bin/python here,
#                then python3)
# Timings on a shared machine are noisy: compare systems measured in one run.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD:-$root/build}
bin="$build/bench/taskbench"
cores=${CORES:-$(nproc)}
task_ms=${TASK_MS:-2}
min_ns=${MIN_NS:-50}
run_seconds=${RUN_SECONDS:-0.25}
max_steps=${MAX_STEPS:-5000}
py_max_steps=${PY_MAX_STEPS:-1000}
drop_below=${DROP_BELOW:-0.1}
repeat=${REPEAT:-1}
out=${OUT:-$(mktemp -d)}
patterns=("$@")
[ ${#patterns[@]} -gt 0 ] || patterns=(stencil_1d)

for value in "$cores" "$max_steps" "$py_max_steps" "$repeat"; do
  if ! [[ $value =~ ^[1-9][0-9]*$ ]]; then
    echo "metg.sh: '$value' is not a positive whole number (CORES, MAX_STEPS, PY_MAX_STEPS, REPEAT)" >&2
    exit 2
  fi
done
if ! [[ $drop_below =~ ^(0|0?\.[0-9]+)$ ]]; then
  echo "metg.sh: DROP_BELOW '$drop_below' is not a number in [0, 1)" >&2
  exit 2
fi
source "$here/python_systems.sh"
read -r -a python_front <<<"$(python_systems)"
set_systems
if [ ${#systems[@]} -eq 0 ]; then
  echo "metg.sh: no Task Bench programs under $bin (build with -DHETFLOW_BUILD_BENCH=ON, or set BUILD)" >&2
  exit 1
fi
is_python_front() { [[ $1 == hetflow-py-thread || $1 == hetflow-py-process || $1 == dask ]]; }
for system in "${systems[@]}"; do
  if is_python_front "$system"; then
    if [[ " ${python_front[*]} " != *" $system "* ]]; then
      echo "metg.sh: $system cannot run: it needs $bin/libtaskbench_capi.so and a python with hetflow" \
        "(and dask for dask); set PYTHON" >&2
      exit 1
    fi
  elif [ ! -x "$bin/taskbench-$system" ]; then
    echo "metg.sh: $bin/taskbench-$system is not built" >&2
    exit 1
  fi
done
mkdir -p "$out"
export STARPU_SILENT=1

# run SYSTEM FLAGS...: prints "tasks elapsed flops_per_s" of the fastest of REPEAT runs.
run() {
  local system=$1 best="" line runner
  shift
  set_runner "$system"
  for _ in $(seq "$repeat"); do
    if ! line=$("${runner[@]}" "$@" 2>&1 | awk '
        /^Total Tasks /   { tasks = $3 }
        /^Elapsed Time /  { elapsed = $3 }
        /^FLOP\/s /       { rate = $2 }
        END { if (elapsed == "") exit 1; printf "%s %s %s\n", tasks, elapsed, rate }'); then
      echo "metg.sh: $system $* failed:" >&2
      "${runner[@]}" "$@" 2>&1 | tail -5 >&2
      exit 1
    fi
    if [ -z "$best" ] || awk -v a="$line" -v b="$best" 'BEGIN { split(a, x); split(b, y); exit !(x[2] < y[2]) }'; then
      best=$line
    fi
  done
  echo "$best"
}

# The kernel's speed, from a few large tasks on the first system: ns per iteration. The tasks
# form a chain (stencil_1d one point wide), so that they run one after the other.
calibration=$(repeat=3 run "${systems[0]}" -steps 8 -width 1 -type stencil_1d -kernel compute_bound -iter 200000)
ns_per_iter=$(awk -v c="$calibration" 'BEGIN { split(c, x); printf "%.6g", x[2] * 1e9 / (8 * 200000) }')
iter_max=$(awk -v n="$ns_per_iter" -v ms="$task_ms" 'BEGIN { i = int(ms * 1e6 / n); print (i < 1 ? 1 : i) }')
model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "# machine: $(nproc) CPUs, ${model:-unknown model}; width $cores; kernel ${ns_per_iter} ns per iteration" >&2
echo "# sweep: -iter $iter_max halving while a task's kernel takes >= $min_ns ns; results in $out" >&2

# Graph flags each pattern needs at this width (spread's radix and period are bounded by it).
pattern_flags() {
  case $1 in
    spread)
      local radix=$((cores < 3 ? cores : 3))
      local most=$(((cores + radix - 1) / radix))
      echo "-radix $radix -period $((most < 3 ? most : 3))"
      ;;
    nearest) echo "-radix ${NEAREST_RADIX:-5}" ;;  # the radix Task Bench's METG figures use
    *) echo "" ;;
  esac
}

# The systems still swept: one whose efficiency fell under DROP_BELOW has its METG measured.
declare -A dropped=()
tsv="$out/metg.tsv"
printf 'system\tpattern\titer\tsteps\ttasks\telapsed_s\tflops_per_s\tgranularity_us\n' >"$tsv"
# The systems take turns at each sweep point, so that a change in the machine's load while the
# sweep runs falls on all of them alike.
for pattern in "${patterns[@]}"; do
  read -r -a extra <<<"$(pattern_flags "$pattern")"
  iter=$iter_max
  dropped=()
  peak_at_top=0
  while :; do
    for system in "${systems[@]}"; do
      [ -z "${dropped[$system]:-}" ] || continue
      most=$max_steps
      is_python_front "$system" && most=$py_max_steps
      steps=$(awk -v s="$run_seconds" -v n="$ns_per_iter" -v i="$iter" -v m="$most" \
        'BEGIN { k = int(s / (i * n * 1e-9)); if (k < 10) k = 10; if (k > m) k = m; print k }')
      result=$(run "$system" -steps "$steps" -width "$cores" -type "$pattern" "${extra[@]}" \
        -kernel compute_bound -iter "$iter")
      read -r tasks elapsed rate <<<"$result"
      awk -v OFS='\t' -v sys="$system" -v p="$pattern" -v i="$iter" -v s="$steps" -v t="$tasks" -v e="$elapsed" \
        -v r="$rate" -v c="$cores" 'BEGIN { print sys, p, i, s, t, e, r, e * c / t * 1e6 }' >>"$tsv"
      if [ "$iter" -eq "$iter_max" ]; then
        peak_at_top=$(awk -v a="$peak_at_top" -v b="$rate" 'BEGIN { print (b > a ? b : a) }')
      elif awk -v r="$rate" -v p="$peak_at_top" -v d="$drop_below" 'BEGIN { exit !(r < d * p) }'; then
        dropped[$system]=1
      fi
    done
    next=$((iter / 2))
    if [ ${#dropped[@]} -eq ${#systems[@]} ] || [ "$next" -lt 1 ] || awk -v n="$ns_per_iter" -v i="$next" -v m="$min_ns" 'BEGIN { exit !(i * n < m) }'; then
      break
    fi
    iter=$next
  done
done

awk -F '\t' -v top="$iter_max" '
  NR == 1 { next }
  {
    key = $1 "\t" $2
    if (!(key in count)) order[++keys] = key
    n = ++count[key]
    gran[key, n] = $8
    rate[key, n] = $7
    if ($3 == top && $7 > peak[$2]) peak[$2] = $7
  }
  END {
    for (k = 1; k <= keys; k++) {
      key = order[k]
      split(key, names, "\t")
      p = peak[names[2]]
      # The last sweep point (smallest tasks) still at 50%: noise on a busy machine only slows
      # runs down, so an early dip below 50% among larger tasks does not end the search.
      last = 0
      for (n = 1; n <= count[key]; n++) if (rate[key, n] / p >= 0.5) last = n
      if (last == 0) {
        metg = "nan"
      } else if (last == count[key]) {
        metg = sprintf("%.3g", gran[key, last])
        printf "# %s %s: efficiency never fell under 50%%; METG is at most the smallest granularity measured\n", names[1], names[2] > "/dev/stderr"
      } else {
        e1 = rate[key, last] / p; e2 = rate[key, last + 1] / p
        g1 = log(gran[key, last]); g2 = log(gran[key, last + 1])
        metg = sprintf("%.3g", exp(g1 + (e1 - 0.5) / (e1 - e2) * (g2 - g1)))
      }
      printf "%s %s metg50_us %s\n", names[1], names[2], metg
    }
  }' "$tsv"

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in "$root/.venv/bin/python" python3; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import matplotlib' 2>/dev/null; then
      python=$candidate
      break
    fi
  done
fi
if [ -n "$python" ]; then
  "$python" "$here/plot_metg.py" "$tsv" "$out/metg.png" && echo "# plot: $out/metg.png" >&2
else
  echo "# no python with matplotlib found: no plot (set PYTHON)" >&2
fi
