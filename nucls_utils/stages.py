"""Notebook-level reuse for ``run_all.sh``: a notebook whose inputs have not changed is not executed again.

A notebook run is a *stage*. Its **key** is a sha256 over everything it can depend on: the notebook's bytes, the
parameters run_all.sh passes, the source of ``nucls_utils``, the locked environment, the dataset (the synthetic
cohort's manifest, which holds a sha256 per file, or the sha256 of every file of a real dataset and of the
metadata sqlite), the real sample beside the project, and the sha256 of every results file the earlier notebooks wrote into the
same output folder (later notebooks read only those). After a successful run, run_all.sh records the key and the sha256 of every file the notebook wrote (its
figures, tables, executed notebook and results folder) in ``<out>/results/.stages/<notebook>.json``. On the next
run the notebook is skipped only when the key is the same *and* every recorded file is still there, unchanged;
otherwise it runs, and the reason is printed.

Command line (used by run_all.sh)::

    python -m nucls_utils.stages key NB --data DIR --profile P --seed S [--metadata M] --out OUT
    python -m nucls_utils.stages check NB --key K --out OUT          # exit 0: up to date; 1: prints why not
    python -m nucls_utils.stages record NB --key K --out OUT --files F1 F2 ... --results-dir DIR
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from pathlib import Path

from .io.atomic import atomic_path
from .io.manifest import files_problem, hash_files, read_manifest_json, sha256_file

__all__ = ["stage_key", "stage_problem", "record_stage", "record_path", "source_digest"]

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent


def _digest(parts: Iterable) -> str:
    return hashlib.sha256(json.dumps(list(parts), sort_keys=True, default=str).encode()).hexdigest()


def source_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """sha256 over the package's Python sources (path and bytes of every ``*.py``)."""
    h = hashlib.sha256()
    for p in sorted(package_dir.rglob("*.py")):
        if "__pycache__" in p.parts:
            continue
        h.update(p.relative_to(package_dir).as_posix().encode() + b"\0")
        h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def _data_digest(data_dir: Path) -> str:
    """The synthetic cohort's manifest (which already holds a sha256 per file) or every file's sha256."""
    manifest = read_manifest_json(data_dir / "manifest.json")
    if manifest is not None and manifest.get("generator") == "nucls_utils.phantom" and manifest.get("files"):
        return _digest(["synthetic", manifest])
    return _digest(["dataset", hash_files(data_dir, exclude=())])


def record_path(out: Path, notebook: str) -> Path:
    """Where the record of ``notebook`` (e.g. ``02_suggestions.ipynb``) lives under the output folder ``out``."""
    return Path(out) / "results" / ".stages" / f"{Path(notebook).stem}.json"


def stage_key(notebook: Path, *, data_dir: Path, profile: str, seed: int, metadata: str, out: Path,
              real_sample: Path | None = None) -> str:
    """The key of one notebook run (see the module docstring)."""
    notebook = Path(notebook)
    nb_dir = notebook.parent
    earlier = sorted(p.name for p in nb_dir.glob("[0-9][0-9]_*.ipynb") if p.name < notebook.name)
    upstream = {}
    for name in earlier:
        rec = read_manifest_json(record_path(out, name))
        # what a later notebook can read of an earlier one is its results folder (not its figures, tables or
        # executed copy, whose bytes change with every execution): an earlier notebook that ran again and wrote
        # the same results leaves this key unchanged
        files = (rec or {}).get("files") or {}
        upstream[name] = None if rec is None else _digest(sorted((k, v) for k, v in files.items()
                                                                 if k.startswith("results/")))
    meta = None if metadata in ("", "auto", "none") else sha256_file(metadata)
    sample = None
    if real_sample is not None and Path(real_sample).is_dir():
        sample = _digest([hash_files(real_sample, exclude=())])
    env = [sha256_file(REPO_ROOT / f) for f in ("requirements.lock", "pyproject.toml") if (REPO_ROOT / f).is_file()]
    return _digest(["stage-key-v1", notebook.name, sha256_file(notebook), str(Path(data_dir).resolve()), profile,
                    int(seed), metadata, meta, source_digest(), env, _data_digest(Path(data_dir)), sample, upstream])


def stage_problem(notebook: str, key: str, out: Path) -> str | None:
    """Why ``notebook`` must run again (``None``: its recorded outputs are complete and its key is unchanged)."""
    out = Path(out)
    rec = read_manifest_json(record_path(out, notebook))
    if rec is None:
        return "not run before in this output folder"
    if rec.get("key") != key:
        return "its inputs changed (notebook, parameters, package source, environment, data or an earlier notebook)"
    files = rec.get("files")
    if not isinstance(files, dict) or not files:
        return "its record lists no outputs"
    problem = files_problem(out, files)
    return None if problem is None else f"output {problem}"


def record_stage(notebook: str, key: str, out: Path, files: Iterable[Path], results_dir: Path | None = None) -> Path:
    """Record a successful run: its key and the sha256 of ``files`` and of every file below ``results_dir``."""
    out = Path(out).resolve()
    listed: dict[str, str] = {}
    for f in files:
        f = Path(f).resolve()
        listed[f.relative_to(out).as_posix()] = sha256_file(f)
    if results_dir is not None and Path(results_dir).is_dir():
        base = Path(results_dir).resolve()
        for rel, digest in hash_files(base, exclude=()).items():
            listed[(base / rel).relative_to(out).as_posix()] = digest
    path = record_path(out, notebook)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({"notebook": notebook, "key": key, "files": dict(sorted(listed.items()))},
                                  indent=1) + "\n")
    return path


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nucls_utils.stages")
    sub = ap.add_subparsers(dest="cmd", required=True)
    k = sub.add_parser("key")
    k.add_argument("notebook")
    k.add_argument("--data", required=True)
    k.add_argument("--profile", required=True)
    k.add_argument("--seed", type=int, required=True)
    k.add_argument("--metadata", default="auto")
    k.add_argument("--out", required=True)
    k.add_argument("--real-sample", default="")
    c = sub.add_parser("check")
    c.add_argument("notebook")
    c.add_argument("--key", required=True)
    c.add_argument("--out", required=True)
    r = sub.add_parser("record")
    r.add_argument("notebook")
    r.add_argument("--key", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--results-dir", default="")
    r.add_argument("--files", nargs="*", default=[])
    a = ap.parse_args(argv)
    if a.cmd == "key":
        print(stage_key(Path(a.notebook), data_dir=Path(a.data), profile=a.profile, seed=a.seed,
                        metadata=a.metadata, out=Path(a.out), real_sample=Path(a.real_sample) if a.real_sample
                        else None))
        return 0
    if a.cmd == "check":
        problem = stage_problem(Path(a.notebook).name, a.key, Path(a.out))
        if problem is None:
            return 0
        print(problem)
        return 1
    record_stage(Path(a.notebook).name, a.key, Path(a.out), [Path(f) for f in a.files],
                 Path(a.results_dir) if a.results_dir else None)
    return 0


if __name__ == "__main__":
    sys.exit(_main())
