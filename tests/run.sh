#!/usr/bin/env bash
# Installs what the tests need into a local venv (.venv: PyTorch on CPU, MXNet 1.9.1, NVRTC for the PTX
# check, ONNX Runtime and insightface), generates the PyTorch/MXNet fixtures, then runs every Rust test.
# `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
# No wheel cache: the venv alone is about 6 GB (PyPI's torch brings its CUDA libraries), and a cached copy
# of every wheel would double that on a machine whose disk may be short.
export PIP_NO_CACHE_DIR=1
# Nor incremental-compilation caches: this run builds once.
export CARGO_INCREMENTAL=0

if ! command -v cargo >/dev/null; then
  echo "tests/run.sh: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

# Formatting and lints first (rustfmt.toml; clippy with warnings as errors): a failure here costs seconds.
if [ $# -eq 0 ]; then
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  fi
  cargo fmt --all --check
  cargo clippy --workspace --all-targets -- -D warnings
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.deps-v3"
if [ ! -f "$stamp" ]; then
  "$py" -m pip install -q --upgrade pip
  # numpy<2 because MXNet 1.9.1 needs it; torch works with numpy 1.26. OpenCV because MXNet's pack_img
  # encodes with it (4.12+ wants numpy 2).
  # scikit-learn, scikit-image and scipy for the evaluation references (tests/parity/ijb_ref.py,
  # tinyface_ref.py, align_ref.py): roc_curve/auc, SimilarityTransform, and scipy.io.savemat for .mat files.
  "$py" -m pip install -q "numpy<2" torch mxnet==1.9.1 "opencv-python-headless<4.12" safetensors nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-nvcc==13.0.88 \
    scikit-learn scikit-image scipy
  # insightface only for its face_align.py (norm_crop), which needs just cv2, numpy and scikit-image and is
  # loaded by file path. Its declared dependencies (onnxruntime, opencv-python for numpy 2) would clash
  # with MXNet's numpy<2, so it comes without them; nothing imports the package itself.
  "$py" -m pip install -q --no-deps insightface==2.1
  touch "$stamp"
fi
# Model import/export checks: onnx (its checker; PyTorch's TorchScript exporter writes model-zoo-style
# files with it), onnxruntime, and insightface's own ONNX recognition class. insightface without its
# declared dependencies: its opencv-python would put a second cv2 beside the headless one above; what
# its model_zoo imports (scikit-image, scipy, tqdm, requests) is listed instead. numpy stays < 2.
import_stamp="$venv/.deps-import-v1"
if [ ! -f "$import_stamp" ]; then
  "$py" -m pip install -q "numpy<2" onnx onnxruntime scikit-image scipy tqdm requests
  "$py" -m pip install -q --no-deps insightface
  touch "$import_stamp"
fi
export FACETRAIN_PYTHON="$py"

# Fixtures: every script under tests/parity writes into tests/fixtures/ from fixed seeds.
export FACETRAIN_FIXTURES="$root/tests/fixtures"
mkdir -p "$FACETRAIN_FIXTURES"
for script in tests/parity/*.py; do
  [ -e "$script" ] || continue
  case "$(basename "$script")" in _*) continue ;; esac
  echo "== fixtures: $script"
  "$py" "$script" "$FACETRAIN_FIXTURES"
done

# libnvrtc from the nvidia-cuda-nvrtc wheel, for the kernels' PTX compile test.
nvrtc_dir=$("$py" - <<'PY'
import glob, os, site
for s in site.getsitepackages():
    for p in glob.glob(os.path.join(s, "nvidia", "**", "libnvrtc.so*"), recursive=True):
        print(os.path.dirname(p)); raise SystemExit
PY
)
if [ -n "$nvrtc_dir" ]; then
  export FACETRAIN_NVRTC_DIR="$nvrtc_dir"
  export LD_LIBRARY_PATH="$nvrtc_dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

cargo test --workspace "$@"

# The CUDA backend once more, on the host emulation of the CUDA libraries (tests/cuda_emu: no GPU is
# involved; kernels run as host code with GPU thread semantics, cuBLAS/cuDNN/NCCL are reference stand-ins
# checked against NumPy/PyTorch first). This runs the opt-in GPU tests' code paths end to end; it does
# not stand for a GPU run (bench/gpu-check.sh on a real card does). The 300-step demo runs here too: the
# emulation trains it at ~300 images/s on a 2-core host (about 2 minutes).
if [ $# -eq 0 ]; then
  emu="$root/target/cuda_emu"
  echo "== CUDA backend on the host emulation ($emu)"
  bash tests/cuda_emu/build.sh "$emu" >/dev/null
  "$py" tests/cuda_emu/check_cublas.py "$emu" | tail -n 1
  "$py" tests/cuda_emu/check_cudnn.py "$emu" | tail -n 1
  "$py" tests/cuda_emu/check_streams.py "$emu" | tail -n 1
  "$py" tests/cuda_emu/check_nccl.py "$emu" | tail -n 1
  emu_env=(env -u FACETRAIN_NVRTC_DIR LD_LIBRARY_PATH="$emu" FACETRAIN_KERNEL_CACHE="$emu/ptx" FACETRAIN_EMU_CACHE="$emu/kernels")
  # A driver that loads but shows no device (CUDA_VISIBLE_DEVICES=""): still a clear error, auto on the CPU.
  "${emu_env[@]}" cargo test --workspace --test device_cli
  "${emu_env[@]}" cargo test --workspace -- --ignored gpu_
  # What a GPU session runs: bench/gpu-check.sh. Here with a stand-in nvidia-smi, PyTorch on the CPU (its
  # fixtures written by tests/parity/_safetensors.py, as on GPU machines without the safetensors package)
  # and toy problem sizes, so that every stage's plumbing runs: the tests stage in full (engine-train
  # gpu-check: every op against the CPU or an f64 formula, then against PyTorch's fixtures), the parity,
  # benchmark and large-head stages at toy sizes. The script exits non-zero when any stage fails.
  gcs="$emu/gpu-check-sh"
  rm -rf "$gcs"
  # The stand-in is installed with its mode set here: a checkout that rewrites changed files may drop
  # the executable bit, and then `command -v nvidia-smi` finds nothing.
  mkdir -p "$emu/bin" && install -m 755 tests/cuda_emu/bin/nvidia-smi "$emu/bin/nvidia-smi"
  "${emu_env[@]}" PATH="$emu/bin:$PATH" GPU_CHECK_LIBDIRS="$emu" GPU_CHECK_TORCH_DEVICE=cpu \
    GPU_CHECK_TOY=1 FACETRAIN_ST_FALLBACK=1 FACETRAIN_EMU_DEVICES=2 PYTHON="$py" bash bench/gpu-check.sh \
    --bin "$root/target/debug/engine-train" --stages tests,parity,ir50,head,large,multi --results "$gcs" | tail -n 2
  grep -q "PyTorch fixture | pass" "$gcs"/gpu-check-*.md || { echo "gpu-check.sh replayed no PyTorch fixture" >&2; exit 1; }
  [ "$(grep -c '^exit status: 0$' "$gcs"/gpu-check-*.md)" -eq 19 ] || { echo "gpu-check.sh: a stage did not run" >&2; exit 1; }
  [ "$(grep -c '^gpus 2, [0-9]* classes: "images_per_second"' "$gcs"/gpu-check-*.md)" -eq 2 ] || { echo "gpu-check.sh: a 2-GPU job wrote no summary" >&2; exit 1; }
fi
