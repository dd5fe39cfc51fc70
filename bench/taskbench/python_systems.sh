# shellcheck shell=bash disable=SC2154,SC2034  # root and bin come from, and runner goes to, the sourcing script
# Sourced by smoke.sh and metg.sh: which systems run (the C++ programs built, and those of the
# Python front, taskbench.py, that can run here), and the command line of any system. Expects `root` (this repository) and `bin` (the build's
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

# The systems to run, in the array `systems`: those SYSTEMS names, else every C++ program built
# and the Python front's systems that can run.
set_systems() {
  if [ -n "${SYSTEMS:-}" ]; then
    read -r -a systems <<<"$SYSTEMS"
    return
  fi
  local system
  systems=()
  for system in hetflow openmp tbb starpu; do
    [ -x "$bin/taskbench-$system" ] && systems+=("$system")
  done
  local found
  read -r -a found <<<"$(python_systems)"
  systems+=("${found[@]}")
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
