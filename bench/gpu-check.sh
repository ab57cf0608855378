#!/usr/bin/env bash
# GPU check and benchmarks, for a machine with an NVIDIA GPU, PyTorch and (probably) no Rust toolchain.
# Runs in stages, each bounded to 4 minutes and each appending its part to one markdown report under
# bench/results/, so a short GPU lease still leaves a report:
#   tests    engine-train gpu-check (every CUDA op against the CPU / f64 formulas, the head through
#            heads::loss, the optimizers, and one small-IResNet training step against the CPU backend);
#            then the core ops and every head against PyTorch on the GPU: tests/parity/core_ops.py and
#            heads_ref.py write their fixtures with --device cuda, gpu-check --torch-fixtures replays them
#   parity   one whole IR-50 + ArcFace training step (forward, backward; batch 64, 93,431 classes) of the
#            engine against PyTorch on the GPU with the same weights and batch, bf16 then f32:
#            engine-train gpu-check --step-parity writes weights, batch and the engine's loss, embedding
#            and gradients; bench/step_parity.py repeats the step in PyTorch and compares (also in f64)
#   train    engine-train gpu-check --train-demo 300: the generated demo set trained on the GPU (f32);
#            the loss must halve; reports images/s and the held-out pair accuracy
#   ir50     IR-50 + ArcFace (93,431 classes) training throughput: engine f32 (batch 128) against PyTorch
#            fp32 without TF32 at the same batch, and PyTorch eager AMP channels-last (batch 512)
#   head     the chunked margin head against PyTorch linear + margin + CE: time and peak memory
#   compile  (optional) the torch.compile IR-50 baseline
#   large    (optional) head benchmarks with 1M classes
#   multi    (optional) data-parallel scaling: engine-train train --gpus N (N = 1, 2, 4, 8 up to the
#            machine's GPUs; the class-sharded head), IR-50 at 128 images per GPU, one minute each at
#            93,431 and at 2,059,906 classes (a generated set whose property file claims them;
#            GPU_CHECK_MULTI_DATA=DIR: a RecordIO set instead), the job's images/s from its
#            summary.json; insightface's 8x A100 figure is about 5,400 images/s
# Usage: bench/gpu-check.sh [--bin PATH_TO_engine-train] [--stages tests,parity,train,ir50,head[,compile,large,multi]]
#                           [--results DIR]
# The binary defaults to target/release/engine-train, else bench/bin/engine-train (carry one stripped
# release binary built on an x86-64 machine: cargo build --release -p engine-train). Reports go to
# bench/results/ unless --results says otherwise.
# For CI on tests/cuda_emu (tests/run.sh): GPU_CHECK_LIBDIRS=DIR[:DIR] replaces the library search,
# GPU_CHECK_TORCH_DEVICE=cpu has PyTorch compute its side on the CPU (default cuda), and GPU_CHECK_TOY=1
# shrinks every problem to a toy size (the small backbone, 100 to 1,000 classes) so that the stages'
# plumbing runs there; its numbers mean nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bin=""
stages="tests,parity,train,ir50,head"
results=bench/results
torch_device="${GPU_CHECK_TORCH_DEVICE:-cuda}"
while [ $# -gt 0 ]; do
  case "$1" in
    --bin) bin="$2"; shift 2 ;;
    --stages) stages="$2"; shift 2 ;;
    --results) results="$2"; shift 2 ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "gpu-check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# No GPU: fail at once, before anything else.
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu-check.sh: no NVIDIA GPU found (nvidia-smi missing or lists no GPU); this script needs one" >&2
  exit 1
fi

if [ -z "$bin" ]; then
  for b in target/release/engine-train bench/bin/engine-train; do
    [ -x "$b" ] && { bin="$b"; break; }
  done
fi
if [ -z "$bin" ] && command -v cargo >/dev/null 2>&1; then
  cargo build --release -p engine-train && bin=target/release/engine-train
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "gpu-check.sh: no engine-train binary (build one: cargo build --release -p engine-train; pass --bin)" >&2
  exit 1
fi

py=${PYTHON:-}
if [ -z "$py" ]; then
  for p in python3 /opt/torch/.venv/bin/python3 python; do
    if command -v "$p" >/dev/null 2>&1 && "$p" -c 'import torch' 2>/dev/null; then py="$p"; break; fi
  done
fi

# CUDA libraries: the toolkit's directories, then the nvidia-* wheels beside PyTorch. cudarc opens
# libcuda, libnvrtc.so.13, libcublas.so.13, libcublasLt.so.13 and libcudnn.so.9 by name.
libdirs=()
if [ -n "${GPU_CHECK_LIBDIRS:-}" ]; then
  IFS=: read -r -a libdirs <<<"$GPU_CHECK_LIBDIRS"
else
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
  [ -d "$d" ] && libdirs+=("$d")
done
if [ -n "$py" ]; then
  while IFS= read -r d; do [ -n "$d" ] && libdirs+=("$d"); done < <("$py" - <<'PY' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
seen = set()
for r in roots:
    for p in glob.glob(os.path.join(r, "**", "lib*.so*"), recursive=True):
        d = os.path.dirname(p)
        if d not in seen:
            seen.add(d)
            print(d)
PY
)
fi
fi
find_lib() { for d in "${libdirs[@]}"; do ls "$d"/$1 >/dev/null 2>&1 && { echo "$d"; return; }; done; }
nvrtc_dir=$(find_lib 'libnvrtc.so.13*')
nccl_dir=$(find_lib 'libnccl.so*')
ldp=""
for d in "${libdirs[@]}"; do ldp="$ldp${ldp:+:}$d"; done
export LD_LIBRARY_PATH="$ldp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -n "$nvrtc_dir" ] && export FACETRAIN_NVRTC_DIR="$nvrtc_dir"
export FACETRAIN_KERNEL_CACHE="${FACETRAIN_KERNEL_CACHE:-$root/.cache/ptx}"

card=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9.]*\).*/\1/p' | head -1)
torchinfo="no PyTorch"
if [ -n "$py" ]; then
  torchinfo=$("$py" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")' 2>/dev/null || echo "PyTorch import failed")
fi
stamp=$(date -u +%Y%m%d-%H%M%S)
mkdir -p "$results"
report="$results/gpu-check-$stamp.md"
{
  echo "# GPU check and benchmarks, $stamp UTC"
  echo
  echo "- card: $card"
  echo "- driver: $driver, CUDA (driver) $cuda"
  echo "- $torchinfo"
  echo "- libnvrtc: ${nvrtc_dir:-not found}; libcublas: $(find_lib 'libcublas.so.13*'); libcudnn: $(find_lib 'libcudnn.so.9*'); libnccl: ${nccl_dir:-not found (the multi stage averages through the host)}"
  echo "- binary: $bin ($(git rev-parse --short HEAD 2>/dev/null || echo 'no git'))"
  [ "${GPU_CHECK_TOY:-0}" = 1 ] && echo "- **toy sizes (GPU_CHECK_TOY=1): stage titles name the real problems, the runs are tiny; no number here means anything**"
  echo
} >"$report"
echo "report: $report"

# Problem sizes of each stage (the issue's; toy ones for the CI run on the emulation).
if [ "${GPU_CHECK_TOY:-0}" = 1 ]; then
  parity_args=(--backbone small --batch 8 --classes 100 --input-size 32)
  demo_steps=300
  ir50_f32=(--backbone small --input-size 32 --batch 4 --classes 100 --steps 1)
  ir50_bf16=(--backbone small --input-size 32 --batch 4 --classes 100 --steps 1)
  torch_f32=(--batch 2 --classes 100 --steps 1 --warmup 1)
  torch_amp=(--batch 2 --classes 100 --steps 1 --warmup 1)
  head_engine=(--batch 8 --classes 1000 --block 256 --steps 1)
  head_torch=(--batch 8 --classes 1000 --steps 1 --warmup 1)
  large_classes=2000
  multi_synth=(--identities 20 --images 8 --heldout 4 --pairs 20 --size 32)
  multi_args=(--backbone small --batch-size 8 --epochs 1)
  multi_classes=(64 200)
else
  parity_args=(--backbone r50 --batch 64 --classes 93431)
  demo_steps=300
  ir50_f32=(--backbone r50 --batch 128 --classes 93431)
  ir50_bf16=(--backbone r50 --batch 512 --classes 93431)
  torch_f32=(--batch 128 --classes 93431)
  torch_amp=(--batch 512 --classes 93431)
  head_engine=(--batch 512 --classes 93431)
  head_torch=(--batch 512 --classes 93431)
  large_classes=1000000
  multi_synth=(--identities 2000 --images 8 --heldout 20 --pairs 20 --size 112)
  multi_args=(--backbone r50 --batch-size 128 --epochs 100 --time-limit 1)
  # MS1MV3's and WebFace42M's class counts.
  multi_classes=(93431 2059906)
fi

status=0
# run_stage NAME COMMAND...: at most 4 minutes; output appended to the report in a code block.
run_stage() {
  local name="$1"; shift
  echo "== stage $name"
  local out rc
  out=$(timeout 240 "$@" 2>&1); rc=$?
  echo "$out"
  {
    echo "## $name"
    echo
    if [ $rc -eq 124 ]; then echo "Stopped at the 4-minute bound."; echo; fi
    echo '```'
    echo "$out" | tail -n 200
    echo '```'
    echo "exit status: $rc"
    echo
  } >>"$report"
  [ $rc -ne 0 ] && status=1
  return 0
}

has_stage() { [[ ",$stages," == *",$1,"* ]]; }

if has_stage tests; then
  # PyTorch's results on this GPU for the fixture ops and heads (no TF32), when PyTorch is here.
  fx="$root/.cache/torch-fixtures/$stamp"
  fxargs=()
  if [ -n "$py" ] && "$bin" gpu-check --help 2>/dev/null | grep -q 'torch-fixtures'; then
    if timeout 120 "$py" tests/parity/core_ops.py "$fx" --device "$torch_device" >/dev/null && \
       timeout 120 "$py" tests/parity/heads_ref.py "$fx" --device "$torch_device" >/dev/null; then
      fxargs=(--torch-fixtures "$fx")
    else
      { echo "PyTorch could not write its GPU fixtures (tests/parity/*.py --device cuda): ops and heads checked against the CPU only."; echo; } >>"$report"
      status=1
    fi
  fi
  run_stage "tests: engine-train gpu-check" "$bin" gpu-check --report "$results/ops-$stamp.md" "${fxargs[@]}"
  [ -f "$results/ops-$stamp.md" ] && sed 's/^# /### /' "$results/ops-$stamp.md" >>"$report"
fi

if has_stage parity; then
  # The engine writes its step into a folder under .cache (weights, batch, gradients: ~0.7 GB per
  # precision, kept only when the comparison fails); PyTorch repeats it on the GPU (and in f64) and writes
  # the tables, which go into the report as they are.
  if ! "$bin" gpu-check --help 2>/dev/null | grep -q 'step-parity'; then
    { echo "## parity"; echo; echo "Not run: this engine-train build has no gpu-check --step-parity."; echo; } >>"$report"
  else
    for prec in bf16 f32; do
      d="$root/.cache/step-parity/$stamp-$prec"
      rm -rf "$d"
      run_stage "parity: engine IR-50 $prec step (batch 64)" "$bin" gpu-check --step-parity "$d" "${parity_args[@]}" --precision "$prec"
      [ -f "$d/engine.safetensors" ] || continue
      if [ -z "$py" ]; then
        { echo "Not compared: no Python with PyTorch."; echo; } >>"$report"
        status=1
        continue
      fi
      echo "== stage parity: PyTorch $prec on $torch_device"
      timeout 240 "$py" bench/step_parity.py "$d" --device "$torch_device" --f64 --report "$d/parity.md" 2>"$d/stderr.txt"; rc=$?
      {
        echo "## parity: IR-50 training step, engine $prec against PyTorch on the GPU"
        echo
        [ $rc -eq 124 ] && { echo "Stopped at the 4-minute bound."; echo; }
        [ -s "$d/parity.md" ] && cat "$d/parity.md"
        if [ -s "$d/stderr.txt" ]; then echo '```'; tail -n 40 "$d/stderr.txt"; echo '```'; fi
        echo "exit status: $rc"
        echo
      } >>"$report"
      if [ $rc -eq 0 ]; then rm -f "$d"/*.safetensors; else status=1; fi
    done
  fi
fi

if has_stage train; then
  run_stage "train: demo set on the GPU (f32, $demo_steps steps)" "$bin" gpu-check --train-demo "$demo_steps" --cache "$root/.cache/demo" --report "$results/train-demo-$stamp.md"
  [ -f "$results/train-demo-$stamp.md" ] && sed 's/^# /### /' "$results/train-demo-$stamp.md" >>"$report"
fi

if has_stage ir50; then
  # The engine's f32 step is set against PyTorch fp32 without TF32 at the same batch; its bf16 step
  # (convolutions, linear layers and the margin head's cosines on the tensor cores) against
  # PyTorch eager AMP at 512, the issue's target.
  if "$bin" gpu-check --help 2>/dev/null | grep -q 'bench-train'; then
    run_stage "ir50: engine f32" "$bin" gpu-check --bench-train "${ir50_f32[@]}" --report "$results/ir50-f32-$stamp.md"
    run_stage "ir50: engine bf16" "$bin" gpu-check --bench-train --precision bf16 "${ir50_bf16[@]}" --report "$results/ir50-bf16-$stamp.md"
  else
    { echo "## ir50: engine"; echo; echo "Not run: this engine-train build has no gpu-check --bench-train."; echo; } >>"$report"
  fi
  # What the step ledger predicts for the same bf16 step (and PyTorch eager's, from its committed trace),
  # to set beside the times measured here: the model checked against the card.
  if "$bin" bench --help 2>/dev/null | grep -q -- '--ledger'; then
    run_stage "ir50: the ledger's prediction (bf16)" "$bin" bench --ledger --precision bf16 "${ir50_bf16[@]}"
  fi
  if [ -n "$py" ]; then
    run_stage "ir50: PyTorch eager fp32" "$py" bench/torch_ir50.py ir50 --fp32 "${torch_f32[@]}" --device "$torch_device"
    run_stage "ir50: PyTorch eager" "$py" bench/torch_ir50.py ir50 "${torch_amp[@]}" --device "$torch_device"
  fi
fi

if has_stage head; then
  run_stage "head: engine chunked ArcFace" "$bin" gpu-check --bench-head "${head_engine[@]}" --report "$results/head-$stamp.md"
  [ -n "$py" ] && run_stage "head: PyTorch linear+ArcFace+CE" "$py" bench/torch_ir50.py head "${head_torch[@]}" --device "$torch_device"
fi

if has_stage compile && [ -n "$py" ]; then
  run_stage "ir50: torch.compile" "$py" bench/torch_ir50.py ir50 --compile "${torch_amp[@]}" --device "$torch_device"
fi

if has_stage large; then
  run_stage "head (1M classes): engine" "$bin" gpu-check --bench-head --classes "$large_classes" --report "$results/head-large-$stamp.md"
  [ -n "$py" ] && run_stage "head (1M classes): PyTorch" "$py" bench/torch_ir50.py head --batch 512 --classes "$large_classes" --device "$torch_device"
fi

if has_stage multi; then
  gpus=$(nvidia-smi -L | grep -c '^GPU ')
  # The gradients and the sharded head's traffic go through NCCL where the machine has it (found on the
  # paths above), else through the host.
  collectives=host
  [ -n "$nccl_dir" ] && collectives=nccl
  if [ -n "${GPU_CHECK_MULTI_DATA:-}" ]; then
    sets=("$GPU_CHECK_MULTI_DATA")
  else
    # A generated set presented with each class count: its train.rec and train.idx beside a property
    # file that claims the count. Its labels stay below the set's identities, but the classifier, its
    # softmax and its traffic are the count's, which is what the head costs.
    base="$root/.cache/multi-set"
    rm -rf "$base"
    run_stage "multi: generate the set" "$bin" data synth --out "$base" "${multi_synth[@]}"
    size=${multi_synth[-1]}
    sets=()
    for c in "${multi_classes[@]}"; do
      d="$base/classes-$c"
      mkdir -p "$d"
      ln -sf ../train/train.rec "$d/train.rec"
      ln -sf ../train/train.idx "$d/train.idx"
      echo "$c,$size,$size" >"$d/property"
      sets+=("$d")
    done
  fi
  for set in "${sets[@]}"; do
    classes=$(cut -d, -f1 "$set/property" 2>/dev/null || echo "?")
    for n in 1 2 4 8; do
      [ "$n" -gt "$gpus" ] && break
      out="$results/multi-$stamp/classes-$classes-gpus-$n"
      run_stage "multi: train --gpus $n ($classes classes, IR-50, 128 images per GPU, bf16, $collectives)" "$bin" train \
        --gpus "$n" --device cuda --collectives "$collectives" --precision bf16 "${multi_args[@]}" --data "$set" \
        --eval-every 1000000 --checkpoint-every 1000000 --cache "$root/.cache/multi" --output "$out"
      [ -f "$out/summary.json" ] && grep -o '"images_per_second":[^,}]*' "$out/summary.json" |
        sed "s/^/gpus $n, $classes classes: /" >>"$report"
    done
  done
fi

echo "report written: $report"
exit $status
