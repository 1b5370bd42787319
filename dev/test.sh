#!/usr/bin/env bash
# Sets everything up (dev/setup_env.sh) and runs the test suite in one pytest process. Extra
# arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/dev/setup_env.sh"
cd "$ROOT"
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
