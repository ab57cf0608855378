#!/usr/bin/env bash
# Forward+backward images/s of IR-18 and the small IResNet at batch 32 on the CPU, engine next to
# PyTorch with the same thread count, one after the other in one run. Writes bench/results/.
# Usage: bench/iresnet_cpu.sh [threads] [iterations]   (PYTHON defaults to /work/venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
iters=${2:-3}
py=${PYTHON:-/work/venv/bin/python}
cargo build --release -q -p engine --example bench_iresnet
out="bench/results/iresnet_cpu_$(date -u +%Y%m%d_%H%M%S).txt"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "machine: $(uname -srm); $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(nproc) cores visible"
  echo "command: bench/iresnet_cpu.sh $threads $iters"
  echo "load before: $(cut -d" " -f1-3 /proc/loadavg) (the machine is shared)"
  for net in small r18; do
    RAYON_NUM_THREADS=$threads target/release/examples/bench_iresnet "$net" 32 "$iters"
    "$py" bench/iresnet_torch.py "$net" 32 "$iters" "$threads"
  done
} | tee "$out"
echo "written: $out"
