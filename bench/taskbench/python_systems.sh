# shellcheck shell=bash disable=SC2154,SC2034  # root and bin come from, and runner goes to, the sourcing script
# Sourced by smoke.sh and metg.sh: which systems of the Python front (taskbench.py) can run here,
# and the command line of any system. Expects `root` (this repository) and `bin` (the build's
# bench/taskbench) to be set; PYTHON chooses the python (default: .venv/bin/python, then python3).
#
#   hetflow-py-thread   taskbench.py --system hetflow-thread   (hetflow's thread executor)
#   hetflow-py-process  taskbench.py --system hetflow-process  (hetflow's process executor)
#   dask                taskbench.py --system dask             (Dask's threaded scheduler)

# The python that imports hetflow (and numpy), or nothing.
taskbench_python() {
  local candidate
  for candidate in ${PYTHON:-"$root/.venv/bin/python" python3}; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import hetflow, numpy' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
}

# The Python front's systems that can run: none without the core library or a python with
# hetflow; dask only where it imports.
python_systems() {
  local python
  [ -f "$bin/libtaskbench_capi.so" ] || return 0
  python=$(taskbench_python)
  [ -n "$python" ] || return 0
  echo -n "hetflow-py-thread hetflow-py-process"
  "$python" -c 'import dask.threaded' 2>/dev/null && echo -n " dask"
  echo
}

# set_runner SYSTEM: the command that runs SYSTEM, in the array `runner`.
set_runner() {
  case $1 in
    hetflow-py-*) runner=("$(taskbench_python)" "$root/bench/taskbench/taskbench.py" --lib "$bin/libtaskbench_capi.so"
      --system "hetflow-${1#hetflow-py-}") ;;
    dask) runner=("$(taskbench_python)" "$root/bench/taskbench/taskbench.py" --lib "$bin/libtaskbench_capi.so"
      --system dask) ;;
    *) runner=("$bin/taskbench-$1") ;;
  esac
}
