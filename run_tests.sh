#!/usr/bin/env bash
# The project's test command: bootstrap the environment when it is missing (same as run_all.sh), then run the whole
# test suite. Extra arguments go to pytest (e.g. ./run_tests.sh -k folds).
#
# The suite runs on NUCLS_TEST_WORKERS pytest-xdist workers (default 2, the CI machine's cores; 0 runs it in one
# process). Tests that run the notebooks read two caches of the repository's data/ (the smoke cohort and the smoke
# profile's pretrained trunk); they are built here first, once, so that no two workers build them at the same time.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NUCLS_VENV:-$ROOT/.venv}"
WORKERS="${NUCLS_TEST_WORKERS:-2}"
[[ "$WORKERS" =~ ^[0-9]+$ ]] || { echo "run_tests.sh: NUCLS_TEST_WORKERS must be a number, not '$WORKERS'" >&2; exit 2; }
"$ROOT/run_all.sh" --setup-only
# Chromium for the supplement's browser test (tests/test_figures.py; it skips with a message without it): installed
# from the Debian packages when this runs as root on a machine with apt and the browser is missing; best effort.
if ! command -v chromium-headless-shell >/dev/null 2>&1 && ! command -v chromium >/dev/null 2>&1 \
        && [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "[tests] installing chromium-headless-shell (Debian) for the supplement's browser test"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium-headless-shell; } \
        >/dev/null 2>&1 || echo "[tests] could not install Chromium: the browser test will skip"
fi
cd "$ROOT"
export MPLBACKEND=Agg
PARALLEL=()
if [[ "$WORKERS" -gt 0 ]]; then
    "$VENV/bin/python" -m nucls_utils.phantom --profile smoke --seed 0 --out "$ROOT/data/synthetic/smoke"
    "$VENV/bin/python" -m nucls_utils.model.pretrain --profile smoke
    PARALLEL=(-n "$WORKERS" --dist worksteal)
fi
exec "$VENV/bin/python" -m pytest "${PARALLEL[@]}" "$@"
