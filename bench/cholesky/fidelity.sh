#!/usr/bin/env bash
# Simulator fidelity: the tiled Cholesky of compare.sh runs for real on this machine's CPU workers
# and OpenCL devices, then in simulation (HETFLOW_SIMULATE) on the machine those runs measured:
# the performance models they stored and the bus they measured, with the same workers. Prints
# '<sched> n<N> predicted_over_measured <ratio>' per scheduler and size: the simulated time over
# the real one (1 is a perfect prediction).
#
#   bench/cholesky/fidelity.sh [N...]     (default 2048 4096; TILE: tile size, default 256;
#                                         SCHEDS: default "eager dmdas"; ROUNDS: default 3;
#                                         REPEAT: runs per process, default 4;
#                                         HETFLOW_BUILD: the build folder, default build)
#
# The real time of a scheduler is the median of its runs, leaving out the first run of each
# process (it pays one-off costs no model learns: device buffers, first touches). Every size is
# calibrated first (5 dmdas runs, as compare.sh), then the schedulers take turns for ROUNDS
# rounds, REPEAT runs each, so that a slow spell of a shared machine falls on all of them. The
# simulation then runs each once: it is deterministic.
#
# The OpenCL devices are the CPU's (HETFLOW_OPENCL_DEVICES=cpu, PoCL on a machine without an
# accelerator): their compute units make their copies, which the machine file says with
# "opencl_copy_engine": false. With HETFLOW_OPENCL_DEVICES=gpu or accelerator they copy with
# engines of their own (true).
set -euo pipefail
sizes=("$@")
[ ${#sizes[@]} -gt 0 ] || sizes=(2048 4096)
tile=${TILE:-256}
read -r -a scheds <<<"${SCHEDS:-eager dmdas}"
rounds=${ROUNDS:-3}
repeat=${REPEAT:-4}
build=${HETFLOW_BUILD:-build}
cholesky="$build/examples/cpp/cholesky"
[ -x "$cholesky" ] || { echo "build the examples first (make build): $cholesky is missing" >&2; exit 1; }
[ "$repeat" -ge 2 ] || { echo "REPEAT must be 2 or more (the first run of each process is left out)" >&2; exit 1; }

cores=$(nproc)
cpus=$(( cores > 1 ? cores - 1 : 1 ))
HETFLOW_HOME=$(mktemp -d)
export HETFLOW_HOME
trap 'rm -rf "$HETFLOW_HOME"' EXIT
export HETFLOW_OPENCL_DEVICES=${HETFLOW_OPENCL_DEVICES:-cpu} POCL_MAX_PTHREAD_COUNT=${POCL_MAX_PTHREAD_COUNT:-1}
# The simulated workers have a core each. Unpinned, the OS at times runs PoCL's thread on the CPU
# worker's core, and a tile task there waits a time slice (a few ms for a task of 0.8 ms).
export HETFLOW_PIN=${HETFLOW_PIN:-1}
case "$HETFLOW_OPENCL_DEVICES" in
  cpu) copy_engine=false ;;
  *cpu* | all) echo "HETFLOW_OPENCL_DEVICES=$HETFLOW_OPENCL_DEVICES mixes CPU devices with others: use cpu, gpu or accelerator" >&2; exit 1 ;;
  *) copy_engine=true ;;
esac
real=(--tile "$tile" --opencl --ncpus "$cpus")
samples="$HETFLOW_HOME/samples"

# Appends the times of every run but the first to the samples of "$sched $n".
measure() {
  local n=$1 sched=$2
  "$cholesky" --n "$n" "${real[@]}" --sched "$sched" --repeat "$repeat" 2>&1 |
    sed -n 's/^times (s)://p' | awk -v key="$sched $n" '{ for (i = 2; i <= NF; ++i) print key, $i }' >>"$samples"
}

# Other work on the machine slows the real runs and not the simulation (the models' robust
# estimates leave out the slowed tasks): the load average says how quiet the machine was.
load() { cut -d ' ' -f 1-3 /proc/loadavg 2>/dev/null || echo unknown; }
echo "cholesky fidelity, tiles of $tile: CPU workers $cpus + OpenCL ($HETFLOW_OPENCL_DEVICES devices);" \
  "real: median of $rounds x $((repeat - 1)) runs per scheduler; load average $(load)" >&2
opencl_workers=0
for n in "${sizes[@]}"; do
  # Calibrates the models at this size (every architecture, as the schedulers' calibration
  # spreading sends tasks to each until it has its samples).
  calibration=$("$cholesky" --n "$n" "${real[@]}" --sched dmdas --repeat 5 2>&1) || true
  opencl_workers=$(sed -n 's/^hetflow: .* workers (.*\b\([0-9]\+\) opencl).*/\1/p' <<<"$calibration")
  if [ -z "$opencl_workers" ]; then
    # Nothing to compare without the OpenCL driver and a device of the chosen type (make bench
    # goes on to its next benchmark).
    echo "cholesky fidelity skipped: no OpenCL worker ($HETFLOW_OPENCL_DEVICES devices)" >&2
    grep -E '^note:|no OpenCL driver|^usage' <<<"$calibration" >&2 || true
    exit 0
  fi
  for ((round = 0; round < rounds; ++round)); do
    for sched in "${scheds[@]}"; do measure "$n" "$sched"; done
  done
done

echo "load average after the real runs: $(load)" >&2

# The machine the real runs measured: their workers, their stored bus model and performance
# models (this HETFLOW_HOME).
machine="$HETFLOW_HOME/machine.json"
cat >"$machine" <<EOF
{"cpus": $cpus, "opencl": $opencl_workers, "opencl_copy_engine": $copy_engine, "link": "stored", "models": "stored"}
EOF
for n in "${sizes[@]}"; do
  for sched in "${scheds[@]}"; do
    predicted=$(HETFLOW_SIMULATE="$machine" "$cholesky" --n "$n" --tile "$tile" --sched "$sched" 2>&1 |
      sed -n 's/^time \([0-9.]*\) s.*/\1/p')
    [ -n "$predicted" ] || { echo "the simulation of $sched at n=$n failed" >&2; exit 1; }
    measured=$(awk -v key="$sched $n" '$1 " " $2 == key { print $3 }' "$samples" | sort -g |
      awk '{ v[NR] = $1 } END { print NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    echo "$sched n$n measured_s $measured predicted_s $predicted" >&2
    awk -v s="$sched" -v n="$n" -v p="$predicted" -v m="$measured" \
      'BEGIN { printf "%s n%d predicted_over_measured %.3f\n", s, n, p / m }'
  done
done
