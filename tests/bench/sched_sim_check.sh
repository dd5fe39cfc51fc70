#!/usr/bin/env bash
# hetflow-bench sched-sim: one makespan line per scheduler, the lower bound and the offline plan,
# in the form the benchmark promises, on the built-in machine and on each machine file; no
# schedule beats either lower bound it reports (a bound that some schedule beat would be
# wrong); the built-in machine is legacy.json; with --nodes, the distributed Cholesky on one
# node is the single-machine run, on more nodes it sends tiles (as many as the real protocol
# sends) and beats no bound; and bad command lines and machine files are refused with a message
# that names the problem.
# Usage: sched_sim_check.sh <hetflow-bench> <directory of the machine files> [TILES]
set -euo pipefail
bench=$1
machines=$2
tiles=${3:-6}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
errors=$scratch/stderr
out=

fail() {
  echo "sched_sim_check: $*" >&2
  echo "--- stdout" >&2; echo "$out" >&2
  echo "--- stderr" >&2; cat "$errors" >&2
  exit 1
}

number='[0-9]+\.[0-9]+'
schedulers=(eager prio ws random dm dmda dmdas)
expected=("${schedulers[@]}" lower_bound offline_plan)

# Runs sched-sim with the given flags and checks its output and bounds.
check_run() {
  out=$("$bench" sched-sim --tiles "$tiles" "$@" 2>"$errors") || fail "sched-sim $* failed"
  [ "$(echo "$out" | wc -l)" -eq ${#expected[@]} ] || fail "sched-sim $*: expected ${#expected[@]} lines"
  declare -A makespan
  for name in "${expected[@]}"; do
    line=$(echo "$out" | grep -E "^$name makespan_s $number\$") || fail "sched-sim $*: no line '$name makespan_s <seconds>'"
    makespan[$name]=${line##* }
  done
  tighter=$(sed -nE "s/.*tighter lower bound .* ($number) s: .*/\1/p" "$errors")
  plan=$(sed -nE "s/.*offline HEFT plan without transfers ($number) s.*/\1/p" "$errors")
  [ -n "$tighter" ] || fail "sched-sim $*: no tighter lower bound on stderr"
  names_the_machine "$*"
  [ "$plan" = "${makespan[offline_plan]}" ] || fail "sched-sim $*: the offline plan differs on stdout and stderr"
  bound=${makespan[lower_bound]}
  awk -v simple="$bound" -v tighter="$tighter" 'BEGIN { exit !(tighter + 1e-9 >= simple) }' ||
    fail "sched-sim $*: the tighter bound $tighter is below the simple one $bound"
  for name in "${schedulers[@]}" offline_plan; do
    awk -v m="${makespan[$name]}" -v b="$tighter" 'BEGIN { exit !(m + 1e-9 >= b) }' ||
      fail "sched-sim $*: $name finished in ${makespan[$name]} s, under the lower bound $tighter s"
  done
}

# The simulator's report lines name the machine as the user gave it, not the scratch file that
# sched-sim hands the simulator.
names_the_machine() {
  ! grep -q "/proc/self/fd" "$errors" || fail "sched-sim $1: stderr names the scratch file"
  grep -qE "^hetflow: simulated [0-9]+ tasks on machine [^ ]+ \(with sched-sim's flags applied\) with " "$errors" ||
    fail "sched-sim $1: no report line naming the machine"
}

check_run
built_in=$out
check_run --machine "$machines/legacy.json"
[ "$out" = "$built_in" ] || fail "the built-in machine and legacy.json give different makespans"
check_run --machine "$machines/k40.json" --precision single
check_run --machine "$machines/gh200.json"
check_run --machine "$machines/legacy.json" --bandwidth-gbs 1e5
# Costs up to 1e9 s are accepted: upward ranks beyond an int's microseconds still order the
# tasks (the offline plan, which takes them by priority, beat the lower bound when they wrapped).
sed 's/"gemm": {"cpu": 44.24e-3/"gemm": {"cpu": 1e6/' "$machines/legacy.json" >"$scratch/slow_cores.json"
tiles=4 check_run --machine "$scratch/slow_cores.json"

# --nodes: per scheduler a makespan and a rate, then the network's transfers and bytes and the
# lower bound. Leaves the makespans in `nodes_makespan` and the counts in `transfers`, `bytes`.
declare -A nodes_makespan
transfers=
bytes=
check_nodes() {
  local nodes=$1
  shift
  out=$("$bench" sched-sim --nodes "$nodes" "$@" 2>"$errors") || fail "sched-sim --nodes $nodes $* failed"
  names_the_machine "--nodes $nodes $*"
  [ "$(echo "$out" | wc -l)" -eq $((2 * ${#schedulers[@]} + 3)) ] || fail "sched-sim --nodes $nodes $*: unexpected lines"
  local name line
  for name in "${schedulers[@]}" lower_bound; do
    line=$(echo "$out" | grep -E "^$name makespan_s $number\$") ||
      fail "sched-sim --nodes $nodes $*: no line '$name makespan_s <seconds>'"
    nodes_makespan[$name]=${line##* }
  done
  for name in "${schedulers[@]}"; do
    grep -qE "^$name gflops $number\$" <<<"$out" || fail "sched-sim --nodes $nodes $*: no line '$name gflops <rate>'"
    awk -v m="${nodes_makespan[$name]}" -v b="${nodes_makespan[lower_bound]}" 'BEGIN { exit !(m + 1e-9 >= b) }' ||
      fail "sched-sim --nodes $nodes $*: $name finished in ${nodes_makespan[$name]} s, under the lower bound"
  done
  transfers=$(echo "$out" | sed -nE 's/^network transfers ([0-9]+)$/\1/p')
  bytes=$(echo "$out" | sed -nE 's/^network bytes ([0-9]+)$/\1/p')
  if [ -z "$transfers" ] || [ -z "$bytes" ]; then fail "sched-sim --nodes $nodes $*: no network transfers or bytes"; fi
  if [ "$nodes" -eq 1 ]; then
    [ "$transfers" -eq 0 ] || fail "sched-sim --nodes 1 $*: $transfers transfers on one node"
  else
    if [ "$transfers" -eq 0 ] || [ "$bytes" -eq 0 ]; then fail "sched-sim --nodes $nodes $*: no tile crossed the network"; fi
  fi
}

# One node is the single machine: the same makespans and lower bound.
same_as_single_machine() {
  check_run "$@"
  local -A single
  local name
  for name in "${schedulers[@]}" lower_bound; do
    single[$name]=$(echo "$out" | sed -nE "s/^$name makespan_s ($number)\$/\1/p")
  done
  check_nodes 1 --tiles "$tiles" "$@"
  for name in "${schedulers[@]}" lower_bound; do
    [ "${nodes_makespan[$name]}" = "${single[$name]}" ] ||
      fail "sched-sim --nodes 1 $*: $name ${nodes_makespan[$name]} s, on the machine alone ${single[$name]} s"
  done
}
same_as_single_machine
same_as_single_machine --machine "$machines/k40.json" --precision single
check_nodes 4 --tiles "$tiles"
check_nodes 16 --tiles "$tiles" --machine "$machines/k40.json" --precision single
check_nodes 2 --tiles "$tiles" --machine "$machines/gh200.json"
# 8 x 8 tiles: 28 tiles sent on 2 x 1 nodes and 56 on 2 x 2, what the real protocol sends
# (docs/performance.md, "Across MPI ranks"): each tile version once to each node that reads it.
check_nodes 2 --tiles 8
[ "$transfers" -eq 28 ] || fail "8 x 8 tiles on 2 nodes: $transfers transfers, not 28"
check_nodes 4 --tiles 8
[ "$transfers" -eq 56 ] || fail "8 x 8 tiles on 4 nodes: $transfers transfers, not 56"
[ "$bytes" -eq $((56 * 960 * 960 * 8)) ] || fail "8 x 8 tiles on 4 nodes: $bytes bytes, not 56 double tiles"
fast_bound=${nodes_makespan[lower_bound]}
check_nodes 4 --tiles 8 --network-gbps 1 --network-latency-us 100
awk -v slow="${nodes_makespan[lower_bound]}" -v fast="$fast_bound" 'BEGIN { exit !(slow > fast) }' ||
  fail "a slower network gave the lower bound ${nodes_makespan[lower_bound]} s, not above $fast_bound s"

# Refused: exit status 2 for a command line, 1 for a machine file, and a message naming it.
expect_refusal() {
  local status=$1 message=$2
  shift 2
  out=
  set +e
  "$bench" "$@" >/dev/null 2>"$errors"
  local got=$?
  set -e
  [ "$got" -eq "$status" ] || fail "'$*' exited with $got, not $status"
  grep -qF -- "$message" "$errors" || fail "'$*': no '$message' on stderr"
}
expect_refusal 2 "--tiles: expects a whole number, got 'many'" sched-sim --tiles many
expect_refusal 2 "--tiles: must be at least 2, got 1" sched-sim --tiles 1
expect_refusal 2 "--bandwidth-gbs: must be from 1e-06 to 1e+09, got 0" sched-sim --bandwidth-gbs 0
expect_refusal 2 "--bandwidth-gbs: must be from 1e-06 to 1e+09, got 1e-300" sched-sim --bandwidth-gbs 1e-300
expect_refusal 2 "--bandwidth-gbs: expects a number, got 'fast'" sched-sim --bandwidth-gbs fast
expect_refusal 2 "--machine: File does not exist: $scratch/none.json" sched-sim --machine "$scratch/none.json"
expect_refusal 2 "--precision: half not in" sched-sim --precision half
expect_refusal 2 "unknown flag '--tile' (flags: --help, --tiles, --machine" sched-sim --tile 4
expect_refusal 2 "unknown subcommand 'sched'" sched --tiles 4
expect_refusal 2 "--tasks: must be at least 1, got 0" overhead --tasks 0
# overhead under a simulation printed the simulator's figures as the runtime's.
HETFLOW_SIMULATE="$machines/legacy.json" expect_refusal 1 "overhead measures the real runtime's cost per task" \
  overhead --tasks 1 --pending 1 --repeat 1
expect_refusal 2 "--nodes: must be at least 1, got 0" sched-sim --nodes 0
# Beyond an unsigned, CLI11 said only "Could not convert: --nodes = 99999999999".
expect_refusal 2 "--nodes: must be at most 4096 (the simulator takes at most 4096 workers" sched-sim --nodes 99999999999
expect_refusal 2 "--network-gbps: must be from 1e-06 to 1e+09, got 0" sched-sim --nodes 2 --network-gbps 0
expect_refusal 2 "--network-latency-us: must be from 0 to 1e+06, got -1" sched-sim --nodes 2 --network-latency-us -1
expect_refusal 2 "--network-gbps requires --nodes" sched-sim --network-gbps 10
expect_refusal 1 "--nodes: 16 nodes of gh200.json make 4624 workers" sched-sim --nodes 16 --machine "$machines/gh200.json"
echo '{"cpus": 2, "gpus": 1, "opencl": 1, "codelets": {}}' >"$scratch/opencl.json"
expect_refusal 1 "opencl.json: opencl: not used by sched-sim" sched-sim --machine "$scratch/opencl.json"
echo '{"cpus": 2, "gpus": 1, "link": "stored", "codelets": {}}' >"$scratch/stored.json"
expect_refusal 1 "stored.json: link: \"stored\" is not used by sched-sim" sched-sim --machine "$scratch/stored.json"
printf '{"cpus": 2,\n "gpus": 1,}\n' >"$scratch/comma.json"
expect_refusal 1 "comma.json:2:" sched-sim --machine "$scratch/comma.json"
sed 's/"cuda": 8251.1e-6/"cuda": "fast"/' "$machines/k40.json" >"$scratch/text.json"
expect_refusal 1 "text.json: codelets.potrf.cuda: expected seconds" sched-sim --machine "$scratch/text.json"
sed 's/"cuda": 8251.1e-6/"cuda": 1e-300/' "$machines/k40.json" >"$scratch/instant.json"
expect_refusal 1 "instant.json: codelets.potrf: a task must take from 1e-09 to 1e+09 seconds on each architecture, not 1e-300" \
  sched-sim --machine "$scratch/instant.json"
mkfifo "$scratch/fifo.json"
expect_refusal 1 "fifo.json' cannot be read: it is a FIFO, not a regular file" sched-sim --machine "$scratch/fifo.json"
HETFLOW_TRACE="$scratch/trace.json" expect_refusal 1 "put %s in the path for a trace per scheduler" sched-sim --tiles 2
HETFLOW_TRACE="$scratch/trace.%s.json" "$bench" sched-sim --tiles 2 >/dev/null 2>&1 || fail "sched-sim with HETFLOW_TRACE=trace.%s.json failed"
for scheduler in "${schedulers[@]}"; do
  [ -s "$scratch/trace.$scheduler.json" ] || fail "HETFLOW_TRACE=trace.%s.json wrote no trace for $scheduler"
done
if [ -w /dev/full ]; then
  set +e
  "$bench" sched-sim --tiles 2 >/dev/full 2>"$errors"
  got=$?
  set -e
  [ "$got" -eq 1 ] || fail "sched-sim writing to a full disk exited with $got, not 1"
  grep -qF "the results could not be written: No space left on device" "$errors" ||
    fail "sched-sim writing to a full disk did not say so"
fi

# The machine description sched-sim hands the simulator is in no directory: no path another user
# could plant a link at, and nothing left in TMPDIR, even when sched-sim is killed mid-run (it
# prints its first line once the description is made).
mkdir "$scratch/tmp"
TMPDIR="$scratch/tmp" "$bench" sched-sim --tiles 64 >/dev/null 2>"$errors" &
runner=$!
until grep -qF "sched-sim: Cholesky of" "$errors" || ! kill -0 "$runner" 2>/dev/null; do sleep 0.1; done
kill -KILL "$runner" 2>/dev/null || true
wait "$runner" 2>/dev/null || true
[ -z "$(ls -A "$scratch/tmp")" ] || fail "sched-sim left $(ls -A "$scratch/tmp") in TMPDIR"
# A link planted where sched-sim wrote its description (a path made of its process id) is not
# written through.
echo "someone else's" >"$scratch/theirs"
# shellcheck disable=SC2016 # expanded by the inner shell, whose process id sched-sim keeps
TMPDIR="$scratch/tmp" bash -c 'ln -s "$1" "$TMPDIR/hetflow-sched-sim-$$.json" && exec "$2" sched-sim --tiles 2' \
  planter "$scratch/theirs" "$bench" >/dev/null 2>"$errors" || fail "sched-sim beside a planted link failed"
[ "$(cat "$scratch/theirs")" = "someone else's" ] || fail "sched-sim wrote through a link planted in TMPDIR"
rm -f "$scratch/tmp"/hetflow-sched-sim-*.json
# The simulator's errors name the machine file, not the description in memory.
sed 's/"gpu_memory": 12079136768/"gpu_memory": "64X"/' "$machines/k40.json" >"$scratch/memory.json"
expect_refusal 1 "machine memory.json (with sched-sim's flags applied): gpu_memory: '64X'" \
  sched-sim --machine "$scratch/memory.json"
if grep -qF /proc/self/fd "$errors"; then fail "sched-sim's error names the description in memory"; fi

help=$("$bench" sched-sim --help) || fail "sched-sim --help failed"
for flag in --tiles --machine --precision --bandwidth-gbs --nodes --network-gbps --network-latency-us; do
  # A here-string, not a pipe: grep -q leaves at its first match, and under pipefail the echo it
  # cut off (SIGPIPE) failed the check now and then.
  grep -qF -- "$flag" <<<"$help" || fail "sched-sim --help does not mention $flag"
done
help=$("$bench" --help) || fail "--help failed"
grep -qF sched-sim <<<"$help" || fail "--help does not list sched-sim"
echo "sched-sim at $tiles x $tiles tiles on the built-in machine, legacy.json, k40.json and gh200.json: every" \
  "makespan at or above the bounds; --nodes 1 the single machine, more nodes send the tiles the protocol" \
  "sends; bad command lines and machine files refused"
