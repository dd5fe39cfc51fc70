#!/usr/bin/env bash
# hetflow-bench sched-sim: one makespan line per scheduler and the lower bound, in the form the
# benchmark promises, and no schedule beats either lower bound it reports (a bound that some
# schedule beat would be wrong). Usage: sched_sim_check.sh <hetflow-bench> [TILES]
set -euo pipefail
bench=$1
tiles=${2:-6}
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT
out=$("$bench" sched-sim --tiles "$tiles" 2>"$errors")

fail() {
  echo "sched_sim_check: $*" >&2
  echo "--- stdout" >&2; echo "$out" >&2
  echo "--- stderr" >&2; cat "$errors" >&2
  exit 1
}

number='[0-9]+\.[0-9]+'
expected=(eager prio ws random dm dmda dmdas lower_bound)
[ "$(echo "$out" | wc -l)" -eq ${#expected[@]} ] || fail "expected ${#expected[@]} lines"
declare -A makespan
for name in "${expected[@]}"; do
  line=$(echo "$out" | grep -E "^$name makespan_s $number\$") || fail "no line '$name makespan_s <seconds>'"
  makespan[$name]=${line##* }
done
tighter=$(sed -nE "s/.*tighter lower bound .* ($number) s: .*/\1/p" "$errors")
plan=$(sed -nE "s/.*offline HEFT plan without transfers ($number) s.*/\1/p" "$errors")
[ -n "$tighter" ] || fail "no tighter lower bound on stderr"
[ -n "$plan" ] || fail "no offline plan on stderr"

bound=${makespan[lower_bound]}
awk -v simple="$bound" -v tighter="$tighter" 'BEGIN { exit !(tighter + 1e-9 >= simple) }' ||
  fail "the tighter bound $tighter is below the simple one $bound"
for name in eager prio ws random dm dmda dmdas; do
  awk -v m="${makespan[$name]}" -v b="$tighter" 'BEGIN { exit !(m + 1e-9 >= b) }' ||
    fail "$name finished in ${makespan[$name]} s, under the lower bound $tighter s"
done
awk -v p="$plan" -v b="$tighter" 'BEGIN { exit !(p + 1e-9 >= b) }' ||
  fail "the offline plan takes $plan s, under the lower bound $tighter s"
echo "sched-sim at $tiles x $tiles tiles: every makespan at or above the bounds ($bound, $tighter s)"
