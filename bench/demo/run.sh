#!/usr/bin/env bash
# Runs the embedded default demo (`engine-train train`, no flags) and writes
# bench/results/demo_cpu_<date>.md: machine, command, the accuracy curve against training seconds
# (evaluation time excluded) and whether 95% verification accuracy came within 300 s of training.
# Usage: bench/demo/run.sh [extra flags for engine-train train]
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p engine-train
stamp=$(date -u +%Y%m%d-%H%M%S)
out=${DEMO_OUT:-/tmp/facetrain-demo-$stamp}
cache=${DEMO_CACHE:-.cache/facetrain}
cmd=(./target/release/engine-train train --cache "$cache" --output "$out" "$@")
start=$(date +%s.%N)
"${cmd[@]}" 2>&1 | tee "$out.log"
wall=$(echo "$(date +%s.%N) - $start" | bc)
report=bench/results/demo_cpu_$(date -u +%Y%m%d).md
python3 - "$out/metrics.jsonl" "$out/summary.json" "$report" "$wall" "${cmd[*]}" <<'PY'
import json, subprocess, sys, datetime
metrics, summary_path, report, wall, cmd = sys.argv[1:]
evals = [e for e in map(json.loads, open(metrics)) if e.get("event") == "eval"]
summary = json.load(open(summary_path))
lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
cores = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip()
hit = [e for e in evals if e["accuracy"] >= 0.95]
first = hit[0] if hit else None
lines = [
    "# Embedded default demo on the CPU",
    "",
    f"- date (UTC): {datetime.datetime.utcnow():%Y-%m-%d %H:%M}",
    f"- machine: {model}, {cores} cores (shared; other jobs may have run)",
    f"- command: `{cmd.replace('./target/release/engine-train', 'engine-train')}`",
    f"- backbone {summary['backbone']}, head {summary['head']}, {summary['steps']} steps, "
    f"{summary['images_per_second']:.0f} images/s while training",
    f"- training {summary['train_seconds']:.1f} s, whole run {float(wall):.1f} s wall "
    f"(evaluation, checkpoints and, when not cached, the generation of the set (about 2 s) included; build excluded)",
    f"- final verification accuracy (10-fold, image + flip): {summary['verification_accuracy']:.4f}",
    "- 95% within 300 s of training: "
    + (f"**yes**, at {first['train_seconds']:.0f} s (step {first['step']:.0f}, accuracy {first['accuracy']:.4f})"
       if first and first["train_seconds"] <= 300 else
       (f"**no** (first at {first['train_seconds']:.0f} s)" if first else "**no** (never reached)")),
    "",
    "| step | training seconds | accuracy | std | AUC |",
    "|---|---|---|---|---|",
]
for e in evals:
    lines.append(f"| {e['step']:.0f} | {e['train_seconds']:.1f} | {e['accuracy']:.4f} | {e['accuracy_std']:.4f} | {e['auc']:.4f} |")
open(report, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "wrote $report"
