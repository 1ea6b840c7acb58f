#!/usr/bin/env bash
# Regenerate the NuCLS study: bootstrap the environment when it is missing, then execute notebooks/NN_*.ipynb in
# order with papermill. Run with --help for the options.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${NUCLS_VENV:-$ROOT/.venv}"
KERNEL="nucls-study"
NB_DIR="${NUCLS_NOTEBOOK_DIR:-$ROOT/notebooks}"

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
  --force           execute every notebook even when its inputs and outputs are unchanged since its last run.
  --setup-only      create/refresh the environment and the kernel, then exit.
  --lab [ARGS...]   set up as --setup-only, then open JupyterLab on the notebooks with the project's kernel
                    ("Python (NuCLS study)"); every argument after --lab goes to 'jupyter lab' (e.g. --no-browser).

A notebook whose inputs (the notebook, these options, the package source, the environment, the data and the
earlier notebooks' outputs) are unchanged since its last successful run into the same --out, and whose outputs are
all still there unchanged (sha256), is not executed again ("up to date"). Each notebook writes its figures and
tables into a staging folder that is moved into figures/ and tables/ only when the notebook succeeds; a failed or
interrupted (Ctrl-C, SIGTERM) notebook leaves none of its figures or tables behind.
  -h, --help        show this help and exit.

Environment variables:
  NUCLS_VENV        where the virtual environment lives (default: ./.venv).
  PYTHON            the Python 3.11 interpreter used to create it (default: python3.11, else python3).
  NUCLS_NOTEBOOK_DIR  run the NN_*.ipynb of another folder (default: ./notebooks; used by the tests).
USAGE
}

DATA=""
METADATA=""
PROFILE="cpu"
SEED=0
ONLY=""
OUT="$ROOT"
SETUP_ONLY=0
LAB=0
LAB_ARGS=()
FORCE=0
# the value of option $1, which must be $2 and not empty or another option; else the usage error
need_value() {
    if [[ $# -lt 2 || -z "$2" || "$2" == --* ]]; then
        echo "run_all.sh: $1 needs a value (see --help)" >&2
        usage >&2
        exit 2
    fi
}
while [[ $# -gt 0 ]]; do
    case "$1" in
        --data) need_value "$@"; DATA="$2"; shift 2 ;;
        --metadata) need_value "$@"; METADATA="$2"; shift 2 ;;
        --profile) need_value "$@"; PROFILE="$2"; shift 2 ;;
        --seed) need_value "$@"; SEED="$2"; shift 2 ;;
        --only) need_value "$@"; ONLY="$2"; shift 2 ;;
        --out) need_value "$@"; OUT="$2"; shift 2 ;;
        --force) FORCE=1; shift ;;
        --setup-only) SETUP_ONLY=1; shift ;;
        --lab) LAB=1; shift; LAB_ARGS=("$@"); break ;;
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
# The output folder must be writable before anything is generated: one clear error, not a mkdir trace later.
if [[ "$SETUP_ONLY" == 0 && "$LAB" == 0 ]]; then
    if ! mkdir -p "$OUT" 2>/dev/null || [[ ! -d "$OUT" ]]; then
        echo "run_all.sh: --out '$OUT' cannot be created (a file is in the way, or a parent folder is not writable)" >&2
        exit 2
    fi
    probe="$(mktemp "$OUT/.nucls-write-probe.XXXXXX" 2>/dev/null)" || {
        echo "run_all.sh: --out '$OUT' is not writable" >&2; exit 2; }
    rm -f "$probe"
    for sub in figures tables results supplement; do
        if [[ -e "$OUT/$sub" && ! -d "$OUT/$sub" ]]; then
            echo "run_all.sh: --out '$OUT' holds a file '$sub' where the folder $sub/ must go" >&2; exit 2
        fi
    done
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
# The notebooks (and the helper commands below) import nucls_utils from this checkout, whichever checkout the
# environment's editable install points to: NUCLS_VENV may be shared by several checkouts (e.g. a worktree of the
# parent commit for a before/after comparison), and the environment is reinstalled only when its lock changes.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$LAB" == 1 ]]; then
    echo "[lab] JupyterLab on $NB_DIR (kernel: Python (NuCLS study)); Ctrl-C to stop"
    ROOT_FLAG=()
    [[ "$(id -u)" == 0 ]] && ROOT_FLAG=(--allow-root)  # containers and CI run as root
    exec "$PY" -m jupyter lab --notebook-dir="$NB_DIR" "${ROOT_FLAG[@]}" "${LAB_ARGS[@]}"
fi

# ---------------------------------------------------------------------------------------------------------------
# Notebooks
# ---------------------------------------------------------------------------------------------------------------
mapfile -t NOTEBOOKS < <(cd "$NB_DIR" && ls [0-9][0-9]_*.ipynb 2>/dev/null | sort)
if [[ -n "$ONLY" ]]; then
    mapfile -t NOTEBOOKS < <(printf '%s\n' "${NOTEBOOKS[@]}" | grep "^${ONLY}_" || true)
    [[ ${#NOTEBOOKS[@]} -gt 0 ]] || { echo "run_all.sh: no notebook $NB_DIR/${ONLY}_*.ipynb" >&2; exit 2; }
fi

if [[ -z "$DATA" ]]; then
    DATA="$ROOT/data/synthetic/$PROFILE"
    echo "[data] synthetic cohort ($PROFILE, seed $SEED): $DATA"
    "$PY" -m nucls_utils.phantom --profile "$PROFILE" --seed "$SEED" --out "$DATA"
fi

mkdir -p "$OUT"/{figures,tables,results,supplement}
OUT="$(cd "$OUT" && pwd)"
DATASET_NAME="$("$PY" -c 'import sys; from nucls_utils.config import resolve_data; print(resolve_data(sys.argv[1]).name)' "$DATA")"
REAL_SAMPLE="$("$PY" -c 'from nucls_utils.config import find_real_sample; print(find_real_sample("auto") or "")')"
STAGING="$OUT/.staging"
STARTED="$(mktemp)"
PM_PID=""
cleanup() { rm -f "$STARTED"; rm -rf "$STAGING"; }
on_signal() {
    local sig="$1" code="$2"
    trap - INT TERM
    echo "" >&2
    echo "run_all.sh: interrupted by SIG$sig${CURRENT:+ during $CURRENT}; stopping" >&2
    if [[ -n "$PM_PID" ]]; then
        kill -TERM "$PM_PID" 2>/dev/null || true
        wait "$PM_PID" 2>/dev/null || true
    fi
    cleanup
    echo "run_all.sh: the interrupted notebook's figures and tables were discarded; finished notebooks are kept," \
        "and a re-run resumes (training from its last checkpoint)" >&2
    exit "$code"
}
trap cleanup EXIT
trap 'on_signal INT 130' INT
trap 'on_signal TERM 143' TERM
touch "$STARTED"
echo "[run] profile=$PROFILE seed=$SEED data=$DATA out=$OUT"

declare -a TIMES=()
# machine paths and the labels the executed notebooks show instead (nucls_utils.nbtools relativize); the longest
# path wins, and the repository's label wins over an output folder that is the repository itself
PATH_LABELS=("$OUT=\$OUT" "$ROOT=\$REPO" "$VENV=\$VENV")
[[ "$DATA" == "$ROOT"/* ]] || PATH_LABELS+=("$DATA=\$DATA")
[[ -d "$ROOT/../shared" ]] && PATH_LABELS+=("$(cd "$ROOT/../shared" && pwd)=\$SHARED")
[[ -n "${HOME:-}" && "$HOME" != "/" ]] && PATH_LABELS+=("$HOME=~")
RUN_T0=$(date +%s)
# text progress bars in the executed notebooks: a widget bar keeps no state there (nucls_utils.progress)
export NUCLS_PROGRESS=text
# the shared trunk (and, cpu and smoke, detector) the models start from (nucls_utils.model.pretrain): built once,
# then reused from data/
# (only when a notebook that trains a model runs: 02 and 05; they would otherwise build it themselves)
if [[ -z "$ONLY" || "$ONLY" == "02" || "$ONLY" == "05" ]]; then
    t0=$(date +%s)
    "$PY" -m nucls_utils.model.pretrain --profile "$PROFILE"
    TIMES+=("pretraining $(( $(date +%s) - t0 ))")
fi
CURRENT=""
for nb in "${NOTEBOOKS[@]}"; do
    stem="${nb%.ipynb}"
    key="$("$PY" -m nucls_utils.stages key "$NB_DIR/$nb" --data "$DATA" --profile "$PROFILE" --seed "$SEED" \
        --metadata "${METADATA:-auto}" --out "$OUT" --real-sample "$REAL_SAMPLE")"
    if [[ "$FORCE" == 0 ]] && why="$("$PY" -m nucls_utils.stages check "$nb" --key "$key" --out "$OUT")"; then
        echo "[run] $nb: up to date (inputs and outputs unchanged since its last run), not executed again"
        TIMES+=("$nb reused")
        continue
    fi
    [[ "$FORCE" == 1 ]] && why="--force"
    echo "[run] $nb (${why})"
    CURRENT="$nb"
    stage="$STAGING/$stem"
    rm -rf "$stage"
    mkdir -p "$stage"/{figures,tables}
    t0=$(date +%s)
    set +e
    "$PY" -m papermill "$NB_DIR/$nb" "$stage/$nb" \
        --kernel "$KERNEL" --cwd "$NB_DIR" --progress-bar \
        -p data_dir "$DATA" -p profile "$PROFILE" -p seed "$SEED" \
        -p results_dir "$OUT/results" -p figures_dir "$stage/figures" -p tables_dir "$stage/tables" \
        -p core_metadata "${METADATA:-auto}" 2> "$stage/$stem.log" &
    PM_PID=$!
    wait "$PM_PID"
    rc=$?
    PM_PID=""
    set -e
    t1=$(date +%s)
    if [[ $rc -ne 0 ]]; then
        failed="$OUT/supplement/failed"
        mkdir -p "$failed"
        mv -f "$stage/$nb" "$stage/$stem.log" "$failed/" 2>/dev/null || true
        rm -rf "$stage"
        echo "" >&2
        echo "run_all.sh: notebook $nb FAILED after $((t1 - t0)) s; none of its figures or tables were kept" >&2
        "$PY" -m nucls_utils.nbtools describe-failure "$failed/$nb" "$failed/$stem.log" >&2 || true
        exit 1
    fi
    # the supplement shows no machine's paths: each is replaced by a label ($REPO, $OUT, $DATA, $SHARED, $VENV, ~)
    "$PY" -m nucls_utils.nbtools relativize "$stage/$nb" "${PATH_LABELS[@]}" \
        "$stage/figures=\$OUT/figures" "$stage/tables=\$OUT/tables" >/dev/null
    "$PY" -m jupyter nbconvert --to html --log-level WARN "$stage/$nb" --output-dir "$stage" >/dev/null
    # success: move the staged outputs into place, then record what this notebook wrote
    rm -f "$OUT/supplement/failed/$nb" "$OUT/supplement/failed/$stem.log"
    written=()
    for kind in figures tables; do
        while IFS= read -r -d '' f; do
            mv -f "$f" "$OUT/$kind/"
            written+=("$OUT/$kind/$(basename "$f")")
        done < <(find "$stage/$kind" -maxdepth 1 -type f -print0)
    done
    for f in "$nb" "$stem.html" "$stem.log"; do
        mv -f "$stage/$f" "$OUT/supplement/$f"
        written+=("$OUT/supplement/$f")
    done
    rm -rf "$stage"
    "$PY" -m nucls_utils.stages record "$nb" --key "$key" --out "$OUT" \
        --results-dir "$OUT/results/$DATASET_NAME/$stem" --files "${written[@]}"
    CURRENT=""
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
# the browsable supplement: supplement/index.html (figures, tables, notebooks, this summary)
"$PY" - "$OUT/supplement/run_summary.json" "$PROFILE" "$SEED" "$DATASET_NAME" "$(( $(date +%s) - RUN_T0 ))" \
    "${TIMES[@]}" <<'PYEOF'
import json, sys
from nucls_utils.config import git_commit
path, profile, seed, data, total, *rows = sys.argv[1:]
old = json.load(open(path)) if __import__("os").path.exists(path) else {}
times = dict(old.get("notebooks", {}))
for row in rows:
    name, value = row.rsplit(" ", 1)
    times[name.removesuffix(".ipynb")] = value
json.dump({"profile": profile, "seed": int(seed), "data": data, "commit": git_commit(), "total_seconds": int(total),
           "notebooks": times}, open(path, "w"), indent=1)
PYEOF
"$PY" -m nucls_utils.figures supplement "$OUT"
