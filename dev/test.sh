#!/usr/bin/env bash
# Sets everything up (dev/setup_env.sh) and runs the test suite. Extra arguments go to pytest.
# The tests that run OpenVINO inside the pytest process (exported and int8 models, the runtime
# rows of the benchmark) run in a pytest process of their own: in two full runs a pytest process
# that had loaded OpenVINO's runtime crashed later, while waiting on a subprocess (cause not
# established; see the README's Tests section).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/dev/setup_env.sh"
cd "$ROOT"
PYTEST=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=15)
ISOLATED=(tests/test_benchmark.py tests/test_deploy.py tests/test_quantize.py)
status=0
"${PYTEST[@]}" tests "${ISOLATED[@]/#/--ignore=}" "$@" || status=$?
"${PYTEST[@]}" "${ISOLATED[@]}" "$@" || status=$?
exit $status
