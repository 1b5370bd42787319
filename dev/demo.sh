#!/usr/bin/env bash
# The main job on the embedded default: sets everything up (dev/setup_env.sh), trains a small
# YOLACT from scratch on the project's synthetic shapes dataset, evaluates it with COCOEvaluator
# and writes visualisations of its predictions. Extra arguments are config overrides.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/dev/setup_env.sh"
cd "$ROOT"
exec .venv/bin/python tools/train_synthetic_demo.py "$@"
