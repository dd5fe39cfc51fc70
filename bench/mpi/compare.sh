#!/usr/bin/env bash
# The distributed tiled Cholesky on this machine's cores, hetflow (examples/cpp/mpi_cholesky)
# beside StarPU-MPI's own example (mpi_cholesky of Debian's starpu-examples), with the same matrix
# order, tile order and ranks, under the same mpirun. For each rank count R prints
#
#   hetflow ranksR_cholesky_gflops <best>        starpu-mpi ranksR_cholesky_gflops <best>
#   hetflow ranksR_bytes_sent <all ranks>        starpu-mpi ranksR_bytes_sent <all ranks>
#   hetflow ranksR_tiles_sent <bytes / tile>     starpu-mpi ranksR_tiles_sent <bytes / tile>
#
# then the ratios, hetflow over starpu-mpi. Bytes are what all ranks sent during one
# factorisation: hetflow's Context::sent(), StarPU's STARPU_COMM_STATS=1 report; tiles_sent
# divides them by the bytes of one tile in each program's precision. hetflow's count includes the
# 8-byte header it sends before each tile; StarPU's counts the tiles only, not the envelope it
# sends before each.
#
#   bench/mpi/compare.sh [RANKS...]     (default 1 2 4; N: matrix order, default 2048; TILE:
#                                       default 256, must divide N; ROUNDS: launches of each
#                                       program per rank count, default 3, the best one kept;
#                                       PRECISION: hetflow's, single (default) or double;
#                                       HETFLOW_BUILD: the build folder, default build)
#
# Both use a 2-D block-cyclic distribution over a P x Q grid as square as can be (P >= Q): tile
# (i, j) on rank (i % P) * Q + j % Q for hetflow, on rank i % P + (j % Q) * P for StarPU's
# example, the same partition of the tiles with the ranks numbered otherwise. StarPU 1.3's
# example computes in single precision (sgemm, ssyrk, strsm, spotrf), and so does hetflow's by
# default (--precision single, its float kernels on CPU workers): both then do the same flops on
# tiles of the same bytes. PRECISION=double runs hetflow in double, whose flops cost more and
# whose tiles are twice the bytes: its rates and bytes are then not those of the same work.
#
# The ranks share the machine: each gets the same number of CPU workers in both programs
# (--ncpus, STARPU_NCPU): WORKERS, default max(1, cores / R). Nothing is pinned (mpirun
# --bind-to none, STARPU_WORKERS_NOBIND=1, hetflow's default): pinned ranks that each see the
# whole machine would put their first workers on the same core. BLAS runs one thread per call
# in both (OPENBLAS_NUM_THREADS=1; hetflow's example sets it itself), the workers making the
# parallelism. StarPU-MPI also runs a thread per rank that polls MPI while messages are pending
# and wants a core of its own; when the ranks leave it none the script prints a '#' note, since
# StarPU's rates then measure that sharing as much as the factorisation. StarPU's rates come
# from runs without STARPU_COMM_STATS (which slows it down), its bytes from one more run with it.
set -euo pipefail
ranks_list=("$@")
[ ${#ranks_list[@]} -gt 0 ] || ranks_list=(1 2 4)
n=${N:-2048}
tile=${TILE:-256}
rounds=${ROUNDS:-3}
precision=${PRECISION:-single}
build=${HETFLOW_BUILD:-build}
hetflow="$build/examples/cpp/mpi_cholesky"
[ -x "$hetflow" ] || {
  echo "build the examples with MPI first (make build, with openmpi-bin libopenmpi-dev): $hetflow is missing" >&2
  exit 1
}
case "$precision" in
  single) element_bytes=4 ;;
  double) element_bytes=8 ;;
  *) echo "PRECISION is single or double, not '$precision'" >&2; exit 1 ;;
esac
(( n % tile == 0 )) || { echo "TILE ($tile) must divide N ($n): StarPU's example takes a number of blocks" >&2; exit 1; }

starpu_example() { dpkg -L starpu-examples 2>/dev/null | grep '/mpi/mpi_cholesky$' | head -n 1; }
starpu=$(starpu_example || true)
if [ -z "$starpu" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing starpu-examples (StarPU-MPI's mpi_cholesky)" >&2
    apt-get install -y -q starpu-examples >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q starpu-examples >/dev/null; }
    starpu=$(starpu_example || true)
  fi
  [ -n "$starpu" ] || { echo "StarPU-MPI's mpi_cholesky not found: apt-get install starpu-examples" >&2; exit 1; }
fi

cores=$(nproc)  # before OMP_NUM_THREADS=1, which nproc would report
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Performance models and calibration files go here, not to the user's home.
export HETFLOW_HOME="$work/hetflow-home" STARPU_HOME="$work/starpu-home"
export STARPU_WORKERS_NOBIND=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
# Open MPI on one machine, as root if need be, ranks that may outnumber the cores, shared memory
# copied through vader's buffers (single-copy needs ptrace rights a container may not give).
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1 \
  OMPI_MCA_btl=self,vader OMPI_MCA_btl_vader_single_copy_mechanism=none
mpirun=(mpirun --timeout 300 --bind-to none)

nblocks=$((n / tile))
echo "# mpi_cholesky n=$n tile=$tile ($nblocks x $nblocks tiles), $cores cores, best of $rounds launches;" \
  "hetflow in $precision precision, StarPU-MPI $(dpkg-query -W -f '${Version}' starpu-examples) in single"

is_number() { [[ "$1" =~ ^[0-9]+(\.[0-9]+)?$ ]]; }
larger() { awk -v a="$1" -v b="$2" 'BEGIN { print (b + 0 > a + 0) ? b : a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "nan"; else printf "%.3f\n", a / b }'; }

declare -A result
for ranks in "${ranks_list[@]}"; do
  workers=${WORKERS:-$((cores / ranks))}
  ((workers >= 1)) || workers=1
  hetflow_gflops=0 starpu_gflops=0
  # StarPU's bytes, from a run of its own (which also calibrates its bus model in STARPU_HOME).
  out="$work/starpu-stats.out"
  STARPU_NCPU=$workers STARPU_COMM_STATS=1 "${mpirun[@]}" -np "$ranks" "$starpu" -size "$n" -nblocks "$nblocks" \
    >"$out" 2>&1 || { cat "$out" >&2; echo "StarPU-MPI's mpi_cholesky failed with $ranks ranks" >&2; exit 1; }
  # One line per rank: [starpu_comm_stats][<rank>] TOTAL:	<bytes> B	...
  starpu_bytes=$(awk '/^\[starpu_comm_stats\]\[[0-9]+\] TOTAL:/ { sum += $3 } END { printf "%.0f\n", sum }' "$out")
  # The programs take turns, so that a slow spell of a shared machine falls on both.
  for ((round = 0; round < rounds; ++round)); do
    out="$work/hetflow.out"
    "${mpirun[@]}" -np "$ranks" "$hetflow" --n "$n" --tile "$tile" --precision "$precision" --ncpus "$workers" \
      >"$out" 2>&1 ||
      { cat "$out" >&2; echo "hetflow's mpi_cholesky failed with $ranks ranks" >&2; exit 1; }
    gflops=$(sed -n 's/^time [0-9.]* s, \([0-9.]*\) GFLOP\/s.*/\1/p' "$out")
    is_number "$gflops" || { cat "$out" >&2; echo "no rate in hetflow's output" >&2; exit 1; }
    hetflow_gflops=$(larger "$hetflow_gflops" "$gflops")
    hetflow_bytes=$(sed -n 's/^sent by all ranks: \([0-9]*\) bytes.*/\1/p' "$out")

    out="$work/starpu.out"
    STARPU_NCPU=$workers "${mpirun[@]}" -np "$ranks" "$starpu" -size "$n" -nblocks "$nblocks" \
      >"$out" 2>&1 || { cat "$out" >&2; echo "StarPU-MPI's mpi_cholesky failed with $ranks ranks" >&2; exit 1; }
    gflops=$(sed -n 's/^Synthetic GFlops : \([0-9.]*\).*/\1/p' "$out")
    is_number "$gflops" || { cat "$out" >&2; echo "no rate in StarPU-MPI's output" >&2; exit 1; }
    starpu_gflops=$(larger "$starpu_gflops" "$gflops")
  done
  result[hetflow_gflops_$ranks]=$hetflow_gflops result[starpu_gflops_$ranks]=$starpu_gflops
  result[hetflow_bytes_$ranks]=${hetflow_bytes:-0} result[starpu_bytes_$ranks]=${starpu_bytes:-0}
  result[hetflow_tiles_$ranks]=$(awk -v b="${hetflow_bytes:-0}" -v t="$tile" -v e="$element_bytes" \
    'BEGIN { printf "%.1f\n", b / (t * t * e) }')
  result[starpu_tiles_$ranks]=$(awk -v b="${starpu_bytes:-0}" -v t="$tile" 'BEGIN { printf "%.1f\n", b / (t * t * 4) }')
  echo "# ranks $ranks: $workers CPU worker(s) per rank"
  if ((ranks * (workers + 1) > cores)); then
    echo "# ranks $ranks: $ranks x ($workers worker(s) + StarPU-MPI's polling thread) > $cores cores: it shares a core"
  fi
  echo "hetflow ranks${ranks}_cholesky_gflops ${result[hetflow_gflops_$ranks]}"
  echo "starpu-mpi ranks${ranks}_cholesky_gflops ${result[starpu_gflops_$ranks]}"
  echo "hetflow ranks${ranks}_bytes_sent ${result[hetflow_bytes_$ranks]}"
  echo "starpu-mpi ranks${ranks}_bytes_sent ${result[starpu_bytes_$ranks]}"
  echo "hetflow ranks${ranks}_tiles_sent ${result[hetflow_tiles_$ranks]}"
  echo "starpu-mpi ranks${ranks}_tiles_sent ${result[starpu_tiles_$ranks]}"
done
for ranks in "${ranks_list[@]}"; do
  for metric in cholesky_gflops:gflops bytes_sent:bytes tiles_sent:tiles; do
    echo "hetflow/starpu-mpi ranks${ranks}_${metric%%:*} $(ratio "${result[hetflow_${metric#*:}_$ranks]}" "${result[starpu_${metric#*:}_$ranks]}")"
  done
done
