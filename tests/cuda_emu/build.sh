#!/usr/bin/env bash
# Builds the host emulation of the CUDA libraries (libcuda, libnvrtc, libcublas, libcudnn, libnccl) into OUT
# (default target/cuda_emu). With OUT on LD_LIBRARY_PATH, cudarc loads these instead of NVIDIA's, so the
# CUDA backend's code runs end to end on a machine without a GPU. Usage: tests/cuda_emu/build.sh [OUT]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:-$root/target/cuda_emu}
mkdir -p "$out"
cxx=${CXX:-g++}
flags=(-O3 -g -std=c++17 -ffp-contract=off -fPIC -shared -Wall -Wextra -Wno-unused-parameter -Wno-unused-function -I"$here")
for lib in cuda nvrtc cublas cudnn nccl; do
  [ -f "$here/$lib.cpp" ] || continue
  "$cxx" "${flags[@]}" -o "$out/lib$lib.so.tmp" "$here/$lib.cpp" -ldl -lpthread -lrt
  mv "$out/lib$lib.so.tmp" "$out/lib$lib.so"
done
# The fake NVRTC compiles kernels against these two headers, found beside libnvrtc.so.
cp "$here/emu_rt.h" "$here/half.h" "$out/"
echo "$out"
