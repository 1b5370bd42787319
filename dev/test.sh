#!/usr/bin/env bash
# Sets everything up (dev/setup_env.sh) and runs the test suite on $YOLACT_D2_TEST_WORKERS
# pytest-xdist workers (default 2, one per core here; 1: one pytest process), each taking whole
# test files. Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/dev/setup_env.sh"
cd "$ROOT"
WORKERS="${YOLACT_D2_TEST_WORKERS:-2}"
if [ "$WORKERS" -gt 1 ]; then
    # Two processes share the cores: OpenMP threads that wait must sleep, not spin (spinning
    # made runs several times slower), and the tools the tests start run on one thread each.
    export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
    exec .venv/bin/python -m pytest -q -p no:cacheprovider -n "$WORKERS" --dist loadfile \
        --durations=15 tests "$@"
fi
exec .venv/bin/python -m pytest -q -p no:cacheprovider --durations=15 tests "$@"
