#!/usr/bin/env bash
# The project's test command: bootstrap the environment when it is missing (same as run_all.sh), then run the whole
# test suite. Extra arguments go to pytest (e.g. ./run_tests.sh -k folds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NUCLS_VENV:-$ROOT/.venv}"
"$ROOT/run_all.sh" --setup-only
cd "$ROOT"
export MPLBACKEND=Agg
exec "$VENV/bin/python" -m pytest "$@"
