#!/usr/bin/env bash
# The GPU check in one command (see docs/GPU.md).
#
#   bash dev/gpu_check.sh --prepare   # here (CPU): fetch what the GPU machine lacks into
#                                     # .gpu_check/ and prove it installs and imports with
#                                     # Python 3.12, torch 2.11, torchvision 0.26 and numpy 2
#   bash dev/gpu_check.sh             # on the GPU machine: install the carried wheels, run the
#                                     # CUDA tests, measure, write $OUT/gpu_check.md
#
# The GPU machine (the device tool's H100/H200) has Python 3.12 with torch 2.11 + CUDA 13,
# numpy 2, OpenCV, onnxruntime, pytest and the packages of dev/gpu_image_packages.txt, no
# network. .gpu_check/ (git-ignored; carry it) holds the wheels of dev/gpu_wheels.txt,
# Detectron2's Python code and a copy of tiny_coco. Whole run: well under 8 minutes on an H100.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CARRY=.gpu_check
WHEEL_LIST=dev/gpu_wheels.txt
LIMIT_MIB=64

pins() { grep -v '^\s*#' "$WHEEL_LIST" | awk 'NF {print $1}'; }
pins_with() { grep -v '^\s*#' "$WHEEL_LIST" | awk -v flag="$1" 'NF && $2 == flag {print $1}'; }

find_python312() {
  for candidate in "${PYTHON312:-}" python3.12 "$HOME"/.pyenv/versions/3.12*/bin/python3.12; do
    [ -n "$candidate" ] && "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
      2>/dev/null && { echo "$candidate"; return; }
  done
  echo "error: no Python 3.12 found (set PYTHON312)" >&2
  exit 2
}

prepare() {
  local py venv
  py="$(find_python312)"
  # A stand-in for the GPU machine's Python (outside the tree, which must stay small): torch
  # 2.11 and torchvision 0.26 (PyPI's build, run on the CPU here), numpy 2 and the image's
  # packages that yolact_d2 uses.
  venv="${GPU_CHECK_VENV:-$HOME/.cache/yolact_d2/gpu-check-py312}"
  if [ ! -x "$venv/bin/python" ]; then
    echo "[prepare] creating $venv (Python 3.12 as on the GPU machine)"
    "$py" -m venv "$venv"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check torch==2.11.0 \
    torchvision==0.26.0 "numpy>=2" opencv-python-headless matplotlib scikit-image pytest \
    hypothesis tabulate cloudpickle portalocker pyyaml tqdm tensorboard pillow packaging \
    wheel setuptools

  rm -rf "$CARRY"
  mkdir -p "$CARRY/wheels"
  echo "[prepare] wheels of $WHEEL_LIST into $CARRY/wheels"
  local pin
  for pin in $(pins_with ""); do
    "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
      --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
      --platform manylinux2014_x86_64 -d "$CARRY/wheels" "$pin"
  done
  for pin in $(pins_with s); do  # source archives only on PyPI: pure Python, built here
    "$venv/bin/python" -m pip wheel -q --disable-pip-version-check --no-deps \
      -w "$CARRY/wheels" "$pin"
  done
  # Detectron2's wheel targets CPython 3.10 (its compiled _C); its Python code runs as it is.
  local tmp
  tmp="$(mktemp -d)"
  "$venv/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
    --only-binary=:all: --python-version 3.10 -d "$tmp" "$(pins_with detectron2)"
  "$venv/bin/python" -m zipfile -e "$tmp"/*.whl "$tmp/unpacked"
  mv "$tmp/unpacked/detectron2" "$CARRY/detectron2"
  find "$CARRY/detectron2" -name '_C*.so' -delete
  rm -rf "$tmp"
  echo "[prepare] tiny_coco into $CARRY/tiny_coco"
  cp -r "${YOLACT_D2_TINY_COCO:-$ROOT/../shared/datasets/tiny_coco}" "$CARRY/tiny_coco"

  echo "[prepare] checking: install into a fresh --target, import, tests, with Python 3.12"
  local site
  site="$(mktemp -d)"
  install_carried "$venv/bin/python" "$site"
  PYTHONPATH="$site:$ROOT" YOLACT_D2_TINY_COCO="$ROOT/$CARRY/tiny_coco" "$venv/bin/python" -c '
import numpy, torch, torchvision, detectron2, yolact_d2, yolact_d2.benchmark, yolact_d2.engine
print(f"[prepare] import detectron2, yolact_d2: ok (torch {torch.__version__}, "
      f"torchvision {torchvision.__version__}, numpy {numpy.__version__})")'
  PYTHONPATH="$site:$ROOT" YOLACT_D2_TINY_COCO="$ROOT/$CARRY/tiny_coco" "$venv/bin/python" \
    -m pytest -q -p no:cacheprovider -x tests/test_cuda_placement.py tests/test_nms.py \
    tests/test_pinned_outputs.py
  rm -rf "$site"

  local size
  size=$(( $( (git ls-files -z; git ls-files -z --others --exclude-standard) \
    | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1) + $(du -sb "$CARRY" | cut -f1) ))
  echo "[prepare] the tree that travels with $CARRY: $((size / 1048576)) MiB (limit $LIMIT_MIB)"
  [ "$size" -lt $((LIMIT_MIB * 1048576)) ] || { echo "error: over $LIMIT_MIB MiB" >&2; exit 1; }
  echo "[prepare] done: run 'bash dev/gpu_check.sh' on the GPU machine, carrying $CARRY"
}

install_carried() {  # PYTHON TARGET
  "$1" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
    --no-cache-dir --target "$2" "$CARRY"/wheels/*.whl
  cp -r "$CARRY/detectron2" "$2/"
}

run_check() {
  [ -d "$CARRY/wheels" ] || { echo "error: no $CARRY/wheels: run --prepare first" >&2; exit 2; }
  local out="${OUT:-$ROOT/output/gpu_check}" site=/tmp/yolact_d2_site status=0
  mkdir -p "$out"
  rm -rf "$site"
  install_carried python3 "$site"
  export PYTHONPATH="$site:$ROOT" YOLACT_D2_TINY_COCO="$ROOT/$CARRY/tiny_coco"
  export PYTHONUNBUFFERED=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
  echo "[gpu_check] CUDA tests (pytest -m cuda)"
  python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda_placement.py \
    tests/test_nms.py tests/test_training_step.py 2>&1 | tee "$out/pytest_cuda.log" || status=1
  echo "[gpu_check] simulated-CUDA tests, for comparison on this machine"
  python3 -m pytest -q -p no:cacheprovider tests/test_cuda_placement.py -m "not cuda" 2>&1 \
    | tail -3 | tee -a "$out/pytest_cuda.log" || status=1
  echo "[gpu_check] measurements"
  python3 dev/gpu_check.py --output "$out" "$@" 2>&1 | tee "$out/gpu_check.log" || status=1
  exit $status
}

case "${1:-}" in
  --prepare) prepare ;;
  -h|--help) sed -n '2,13p' "$0" ;;
  *) run_check "$@" ;;
esac
