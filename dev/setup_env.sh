#!/usr/bin/env bash
# Creates (or reuses) the virtual environment at .venv/ and installs everything yolact_d2 needs.
# Safe to run again: each step is skipped when what it installs is already importable.
# Source it (". dev/setup_env.sh") to get the environment activated in the calling shell.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
cd "$ROOT"

if [ ! -x .venv/bin/python ]; then
  # A Detectron2 the user already has (e.g. built from source with CUDA) is kept: the venv then
  # sees the base interpreter's packages, so that Detectron2 and its torch are used as they are.
  if "$PYTHON" -c "import detectron2" 2>/dev/null; then
    echo "[setup] keeping the Detectron2 of $PYTHON (venv with --system-site-packages)"
    "$PYTHON" -m venv --system-site-packages .venv
  else
    echo "[setup] creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
  fi
fi
VPY="$ROOT/.venv/bin/python"
pipq() { "$VPY" -m pip install -q --disable-pip-version-check "$@"; }

"$VPY" -c "import pkg_resources" 2>/dev/null || pipq "setuptools<81" wheel

if ! "$VPY" -c "import torch, torchvision" 2>/dev/null; then
  echo "[setup] installing torch and torchvision"
  pipq torch==2.14.1 torchvision==0.29.1
fi

# Detectron2 is not on PyPI. Keep any importable Detectron2 (e.g. a CUDA build from source);
# otherwise install the pure-Python part of the sal-detectron2 wheel (its compiled _C targets
# CPython 3.10 and is simply unavailable here, which Detectron2 tolerates). The wheel also ships
# a top-level "tools" package with Detectron2's scripts; it is left out on purpose.
if ! "$VPY" -c "import detectron2" 2>/dev/null; then
  echo "[setup] installing Detectron2 (sal-detectron2 0.7.2, Python code only)"
  SITE="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  TMP="$(mktemp -d)"
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps --python-version 3.10 \
    --only-binary=:all: --target "$TMP" sal-detectron2==0.7.2
  rm -rf "$SITE/detectron2" "$SITE"/sal_detectron2-*.dist-info
  mv "$TMP/detectron2" "$TMP"/sal_detectron2-*.dist-info "$SITE/"
  rm -rf "$TMP"
fi

if ! "$VPY" -c "import yolact_d2" 2>/dev/null || [ setup.py -nt .venv/.yolact_d2_installed ]; then
  echo "[setup] installing yolact_d2 and its dependencies"
  # Detectron2's own requirements (its wheel metadata targets 3.10, so they are named here;
  # black among them, at the version the dev extra pins, so that pip finds nothing missing).
  pipq "numpy<2" "setuptools<81" Pillow matplotlib "pycocotools>=2.0.2" termcolor yacs tabulate \
    cloudpickle tqdm tensorboard "omegaconf>=2.1,<2.4" "hydra-core>=1.1" packaging fvcore iopath \
    black==26.10.1
  pipq --no-build-isolation -e ".[dev,deploy,scale,video]" --config-settings editable_mode=compat
  touch .venv/.yolact_d2_installed
fi
# Detectron2's dataset root ($DETECTRON2_DATASETS, default ./datasets): tiny_coco, the 100 real
# COCO images the documented commands use, is linked there from the shared copy (not copied).
if [ ! -e datasets/tiny_coco ] && [ -d ../shared/datasets/tiny_coco ]; then
  ln -s ../../shared/datasets/tiny_coco datasets/tiny_coco
  echo "[setup] linked datasets/tiny_coco -> ../shared/datasets/tiny_coco"
fi
echo "[setup] environment ready: $VPY"
