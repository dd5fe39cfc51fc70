#!/usr/bin/env bash
# Gathers, from this Debian machine's installed packages, what scripts/gpu-check.sh needs beside
# the CUDA toolkit, for a GPU machine that cannot install packages: GoogleTest (libgtest-dev, with
# the GoogleMock archives its CMake files name), OpenBLAS and LAPACKE (libopenblas-dev,
# liblapacke-dev) with the libraries they load, and pkg-config. The folder is self-contained (pkg-config files relative to their own place):
#
#   scripts/gpu-bundle-deps.sh .gpu-deps
#   HETFLOW_DEPS_PREFIX=$PWD/.gpu-deps scripts/gpu-check.sh      # on the GPU machine
#
# Libraries built on an older glibc run on a newer one, not the reverse: bundle on a system no
# newer than the GPU machine's.
set -euo pipefail

dest=${1:?usage: scripts/gpu-bundle-deps.sh DESTINATION}
multiarch=$(gcc -print-multiarch)
sys_lib=/usr/lib/$multiarch

for file in "$sys_lib/libgtest.a" /usr/include/lapacke.h "$sys_lib/openblas-pthread/libopenblas.so.0" /usr/bin/pkgconf; do
  [[ -e $file ]] || { echo "gpu-bundle-deps: $file is missing (make deps installs it)" >&2; exit 1; }
done

rm -rf "$dest"
mkdir -p "$dest/include" "$dest/lib/$multiarch/cmake" "$dest/lib/pkgconfig" "$dest/bin"

# GoogleTest keeps Debian's layout: its CMake files find the archives relative to themselves.
cp -r /usr/include/gtest /usr/include/gmock "$dest/include/"
cp "$sys_lib"/lib{gtest,gtest_main,gmock,gmock_main}.a "$dest/lib/$multiarch/"
cp -r "$sys_lib/cmake/GTest" "$dest/lib/$multiarch/cmake/"

cp /usr/include/x86_64-linux-gnu/openblas-pthread/{cblas.h,f77blas.h,openblas_config.h} "$dest/include/"
cp /usr/include/{lapack.h,lapacke.h,lapacke_config.h,lapacke_mangling.h,lapacke_utils.h} "$dest/include/"
for library in openblas-pthread/libopenblas.so.0 openblas-pthread/liblapack.so.3 openblas-pthread/libblas.so.3 \
  liblapacke.so.3 libtmglib.so.3 libgfortran.so.5 libquadmath.so.0 libpkgconf.so.3; do
  cp -L "$sys_lib/$library" "$dest/lib/"
done
ln -s libopenblas.so.0 "$dest/lib/libopenblas.so"
ln -s liblapacke.so.3 "$dest/lib/liblapacke.so"
cp /usr/bin/pkgconf "$dest/bin/pkg-config"

cat >"$dest/lib/pkgconfig/openblas.pc" <<'EOF'
prefix=${pcfiledir}/../..
Name: openblas
Description: OpenBLAS (bundled for scripts/gpu-check.sh)
Version: bundled
Libs: -L${prefix}/lib -lopenblas
Cflags: -I${prefix}/include
EOF
cat >"$dest/lib/pkgconfig/lapacke.pc" <<'EOF'
prefix=${pcfiledir}/../..
Name: LAPACKE
Description: LAPACKE (bundled for scripts/gpu-check.sh)
Version: bundled
Libs: -L${prefix}/lib -llapacke
Cflags: -I${prefix}/include
EOF
du -sh "$dest"
