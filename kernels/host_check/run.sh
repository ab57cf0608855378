#!/usr/bin/env bash
# Manual check without a GPU: g++ builds the margin kernels for the host, check.py compares them with
# f64 formulas. Usage: kernels/host_check/run.sh [python]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
g++ -O1 -std=c++17 -w -o "$out/harness" "$here/harness.cpp"
"${1:-python3}" "$here/check.py" "$out/harness"
