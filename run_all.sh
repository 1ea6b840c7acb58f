#!/usr/bin/env bash
# Regenerate the NuCLS study: bootstrap the environment when it is missing, then execute notebooks/NN_*.ipynb in
# order with papermill. Run with --help for the options.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NUCLS_VENV:-$ROOT/.venv}"
KERNEL="nucls-study"

usage() {
    cat <<'USAGE'
Usage: ./run_all.sh [options]

Bootstraps the project's virtual environment when it is missing (reuses it when present), registers the Jupyter
kernel "nucls-study", then executes notebooks/NN_*.ipynb in order with papermill. Executed notebooks are written
to supplement/ (ipynb + HTML); figures to figures/, tables to tables/, tidy intermediate tables to results/.

Options:
  --data PATH       a dataset in the official NuCLS single-rater layout (rgb/, csv/[, mask/]). Without it the
                    embedded synthetic cohort of the profile is used: generated under data/synthetic/<profile>/ on
                    first use and reused until the generator version, seed or profile changes.
  --metadata PATH   optional core-set metadata sqlite (fov_meta, annotation_elements), used by notebook 01 for the
                    whole-core-set fold table (Table 1 "N") and FOV rectangles.
  --profile NAME    smoke | cpu | paper (default: cpu; paper is meant for a GPU).
  --seed N          random seed passed to every notebook (default 0).
  --only NN         execute notebook NN only (e.g. --only 01) and nothing else.
  --out DIR         write figures/, tables/, results/ and supplement/ under DIR (default: the repository).
  --setup-only      create/refresh the environment and the kernel, then exit.
  -h, --help        show this help and exit.

Environment variables:
  NUCLS_VENV        where the virtual environment lives (default: ./.venv).
  PYTHON            the Python 3.11 interpreter used to create it (default: python3.11, else python3).
USAGE
}

DATA=""
METADATA=""
PROFILE="cpu"
SEED=0
ONLY=""
OUT="$ROOT"
SETUP_ONLY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data) DATA="${2:?--data needs a path}"; shift 2 ;;
        --metadata) METADATA="${2:?--metadata needs a path}"; shift 2 ;;
        --profile) PROFILE="${2:?--profile needs a name}"; shift 2 ;;
        --seed) SEED="${2:?--seed needs a number}"; shift 2 ;;
        --only) ONLY="${2:?--only needs a notebook number}"; shift 2 ;;
        --out) OUT="${2:?--out needs a directory}"; shift 2 ;;
        --setup-only) SETUP_ONLY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run_all.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

case "$PROFILE" in smoke|cpu|paper) ;; *) echo "run_all.sh: --profile must be smoke, cpu or paper, not '$PROFILE'" >&2; exit 2 ;; esac
[[ "$SEED" =~ ^[0-9]+$ ]] || { echo "run_all.sh: --seed must be a non-negative integer, not '$SEED'" >&2; exit 2; }
if [[ -n "$ONLY" && ! "$ONLY" =~ ^[0-9][0-9]$ ]]; then
    echo "run_all.sh: --only takes a two-digit notebook number such as 01, not '$ONLY'" >&2; exit 2
fi
if [[ -n "$DATA" ]]; then
    [[ -d "$DATA" ]] || { echo "run_all.sh: --data '$DATA' is not a directory" >&2; exit 2; }
    DATA="$(cd "$DATA" && pwd)"
fi
if [[ -n "$METADATA" ]]; then
    [[ -f "$METADATA" ]] || { echo "run_all.sh: --metadata '$METADATA' is not a file" >&2; exit 2; }
    METADATA="$(cd "$(dirname "$METADATA")" && pwd)/$(basename "$METADATA")"
fi

# ---------------------------------------------------------------------------------------------------------------
# Environment bootstrap
# ---------------------------------------------------------------------------------------------------------------
env_stamp() {
    cat "$ROOT/requirements.lock" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1
}

bootstrap_env() {
    local want have=""
    want="$(env_stamp)"
    [[ -f "$VENV/.nucls-env-stamp" ]] && have="$(cat "$VENV/.nucls-env-stamp")"
    if [[ -x "$VENV/bin/python" && "$want" == "$have" ]]; then
        echo "[env] reusing $VENV"
        return
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        local py="${PYTHON:-}"
        if [[ -z "$py" ]]; then
            if command -v python3.11 >/dev/null 2>&1; then py=python3.11; else py=python3; fi
        fi
        "$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' || {
            echo "run_all.sh: the study needs Python 3.11; '$py' is $("$py" --version 2>&1). Set PYTHON=..." >&2; exit 1; }
        echo "[env] creating $VENV with $("$py" --version)"
        "$py" -m venv "$VENV"
    else
        echo "[env] $VENV is out of date with requirements.lock / pyproject.toml: updating it"
    fi
    local pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
    # The lock holds every package at an exact version; --no-deps installs exactly that set (this is also how
    # histomicstk comes in without its large-image[sources] extra, see pyproject.toml).
    echo "[env] installing requirements.lock (first time: several GB, a few minutes)"
    "${pip[@]}" install --no-deps --progress-bar off -r "$ROOT/requirements.lock"
    "${pip[@]}" install --no-deps --quiet -e "$ROOT"
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name "$KERNEL" --display-name "Python (NuCLS study)" >/dev/null
    "$VENV/bin/python" -c 'import nucls_utils, torch, torchvision, histomicstk.features, papermill' \
        || { echo "run_all.sh: the environment in $VENV does not import; delete it and re-run" >&2; exit 1; }
    echo "$want" > "$VENV/.nucls-env-stamp"
    echo "[env] ready: $VENV"
}

bootstrap_env
if [[ "$SETUP_ONLY" == 1 ]]; then exit 0; fi
PY="$VENV/bin/python"

# ---------------------------------------------------------------------------------------------------------------
# Notebooks
# ---------------------------------------------------------------------------------------------------------------
mapfile -t NOTEBOOKS < <(cd "$ROOT/notebooks" && ls [0-9][0-9]_*.ipynb 2>/dev/null | sort)
if [[ -n "$ONLY" ]]; then
    mapfile -t NOTEBOOKS < <(printf '%s\n' "${NOTEBOOKS[@]}" | grep "^${ONLY}_" || true)
    [[ ${#NOTEBOOKS[@]} -gt 0 ]] || { echo "run_all.sh: no notebook notebooks/${ONLY}_*.ipynb" >&2; exit 2; }
fi

if [[ -z "$DATA" ]]; then
    DATA="$ROOT/data/synthetic/$PROFILE"
    echo "[data] synthetic cohort ($PROFILE, seed $SEED): $DATA"
    "$PY" -m nucls_utils.phantom --profile "$PROFILE" --seed "$SEED" --out "$DATA"
fi

mkdir -p "$OUT"/{figures,tables,results,supplement}
OUT="$(cd "$OUT" && pwd)"
STARTED="$(mktemp)"
trap 'rm -f "$STARTED"' EXIT
touch "$STARTED"
echo "[run] profile=$PROFILE seed=$SEED data=$DATA out=$OUT"

declare -a TIMES=()
for nb in "${NOTEBOOKS[@]}"; do
    out_nb="$OUT/supplement/$nb"
    echo "[run] $nb"
    t0=$(date +%s)
    set +e
    "$PY" -m papermill "$ROOT/notebooks/$nb" "$out_nb" \
        --kernel "$KERNEL" --cwd "$ROOT/notebooks" --progress-bar \
        -p data_dir "$DATA" -p profile "$PROFILE" -p seed "$SEED" \
        -p results_dir "$OUT/results" -p figures_dir "$OUT/figures" -p tables_dir "$OUT/tables" \
        -p core_metadata "${METADATA:-auto}" 2> "$OUT/supplement/${nb%.ipynb}.log"
    rc=$?
    set -e
    t1=$(date +%s)
    if [[ $rc -ne 0 ]]; then
        echo "" >&2
        echo "run_all.sh: notebook $nb FAILED after $((t1 - t0)) s" >&2
        "$PY" -m nucls_utils.nbtools describe-failure "$out_nb" "$OUT/supplement/${nb%.ipynb}.log" >&2 || true
        exit 1
    fi
    "$PY" -m jupyter nbconvert --to html --log-level WARN "$out_nb" --output-dir "$OUT/supplement" >/dev/null
    TIMES+=("$nb $((t1 - t0))")
done

echo ""
echo "================ summary ================"
printf '%-40s %10s\n' "notebook" "wall (s)"
for row in "${TIMES[@]}"; do printf '%-40s %10s\n' ${row}; done
echo "figures written:"
(cd "$OUT" && find figures -type f -newer "$STARTED" ! -name README.md | sort | sed 's/^/  /')
echo "tables written:"
(cd "$OUT" && find tables -type f -newer "$STARTED" ! -name README.md | sort | sed 's/^/  /')
echo "executed notebooks: $OUT/supplement/"
