#!/usr/bin/env bash
# Installs what the tests need into a local venv (.venv: PyTorch on CPU, MXNet 1.9.1, NVRTC for the PTX
# check), generates the PyTorch/MXNet fixtures, then runs every Rust test. `.ci/run` calls this script.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

if ! command -v cargo >/dev/null; then
  echo "tests/run.sh: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi

venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.deps-v2"
if [ ! -f "$stamp" ]; then
  "$py" -m pip install -q --upgrade pip
  # numpy<2 because MXNet 1.9.1 needs it; torch works with numpy 1.26. OpenCV because MXNet's pack_img
  # encodes with it (4.12+ wants numpy 2).
  "$py" -m pip install -q "numpy<2" torch mxnet==1.9.1 "opencv-python-headless<4.12" safetensors nvidia-cuda-nvrtc==13.0.88 nvidia-cuda-nvcc==13.0.88
  touch "$stamp"
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
