#!/usr/bin/env bash
# Loader benchmark, Rust and the Python/MXNet baselines side by side on one generated file.
# Usage: bench/loader/run.sh [PYTHON] [N_IMAGES] [THREADS]
# (PYTHON needs mxnet 1.9.1, numpy<2, opencv; Pillow for the AdaFace-augmented baseline rows)
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${1:-${FACETRAIN_PYTHON:-.venv/bin/python}}
n=${2:-4000}
threads=${3:-$(nproc)}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cargo build -q --release -p datasets --example loader_bench
bin=target/release/examples/loader_bench
echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
$bin make "$dir" "$n"
"$py" bench/loader/mxnet_baseline.py "$dir"
"$py" bench/loader/mxnet_baseline.py "$dir" --adaface
$bin run "$dir" "$threads"
"$py" bench/loader/mxnet_baseline.py "$dir"
"$py" bench/loader/mxnet_baseline.py "$dir" --adaface
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
