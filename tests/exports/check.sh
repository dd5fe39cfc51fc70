#!/usr/bin/env bash
# Fails when a library exports engine internals: of namespace hetflow::detail, only the entry
# points that include/hetflow/detail/ declares HETFLOW_API (what the public templates call) may be
# exported. Usage: check.sh <library.so> <include/hetflow/detail>
set -euo pipefail
library=$1
detail_headers=$2
allowed=$(grep -ho 'HETFLOW_API[^(]*(' "$detail_headers"/*.hpp | sed -E 's/.*[^A-Za-z0-9_]([A-Za-z_][A-Za-z0-9_]*)\($/\1/' | sort -u)
# Each symbol's own name: without the parameter list, the type of a vtable or typeinfo.
exported=$(nm -DC --defined-only "$library" | cut -d' ' -f3- |
  sed -E -e 's/^(typeinfo name for|typeinfo for|vtable for|VTT for|guard variable for) //' -e 's/\(.*//' |
  { grep -o '^hetflow::detail::[A-Za-z_][A-Za-z0-9_]*' || true; } | sed 's/^hetflow::detail:://' | sort -u)
unexpected=$(comm -23 <(printf '%s\n' "$exported") <(printf '%s\n' "$allowed") | sed '/^$/d')
if [[ -n $unexpected ]]; then
  echo "$(basename "$library") exports internals of hetflow::detail:" $unexpected
  echo "(mark what the public headers need HETFLOW_API in include/hetflow/detail/, keep the rest hidden)"
  exit 1
fi
echo "$(basename "$library"): $(nm -DC --defined-only "$library" | wc -l) symbols exported; of hetflow::detail:" $exported
