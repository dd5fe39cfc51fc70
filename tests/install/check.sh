#!/usr/bin/env bash
# Installs the built hetflow into a scratch prefix, then builds and runs a consumer against it
# with find_package and with pkg-config.
set -euo pipefail
build=$1
source_dir=$(cd "$(dirname "$0")" && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cmake --install "$build" --prefix "$scratch/prefix" >/dev/null
cmake -S "$source_dir" -B "$scratch/consumer" -DCMAKE_PREFIX_PATH="$scratch/prefix" >/dev/null
cmake --build "$scratch/consumer" >/dev/null
LD_LIBRARY_PATH="$scratch/prefix/lib:$scratch/prefix/lib64" "$scratch/consumer/consumer"
libdir=$(ls -d "$scratch"/prefix/lib*/pkgconfig | head -1)
PKG_CONFIG_PATH="$libdir" c++ "$source_dir/consumer.cpp" -o "$scratch/consumer_pc" $(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs hetflow)
LD_LIBRARY_PATH="$(dirname "$libdir")" "$scratch/consumer_pc"
