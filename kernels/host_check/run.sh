#!/usr/bin/env bash
# Manual kernel check without a GPU: g++ builds the CUDA sources for the host with the intrinsics
# stubbed (blocks.cpp: one std::thread per CUDA thread, barriers for __syncthreads and shuffles) and
# compares them with double formulas; check.py drives the margin kernels for 12 head configurations.
# f32 kernels only (16-bit conversions are PTX asm). Usage: kernels/host_check/run.sh [python]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
g++ -O1 -std=c++20 -w -pthread -o "$out/blocks" "$here/blocks.cpp"
timeout 300 "$out/blocks"
g++ -O1 -std=c++17 -w -o "$out/harness" "$here/harness.cpp"
"${1:-python3}" "$here/check.py" "$out/harness"
