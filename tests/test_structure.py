"""The package's structure: no import-time work, torchvision only in ``model/``, each metric defined once in
``nucls_utils.evaluation``, and the linters (ruff on everything, mypy on ``evaluation`` and ``io``) clean."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "nucls_utils"
BIN = Path(sys.executable).parent


def _imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    return set(out.stdout.split())


def test_importing_the_analysis_packages_does_not_import_histomicstk():
    top = _imported_after("import nucls_utils.evaluation, nucls_utils.interrater, nucls_utils.model")
    assert "nucls_utils" in top  # the probe itself works
    assert "histomicstk" not in top
    assert "large_image" not in top


def test_importing_any_module_outside_model_imports_neither_torchvision_nor_histomicstk():
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts) for p in PACKAGE.rglob("*.py")
                     if "model" not in p.relative_to(PACKAGE).parts[:1] and p.name != "__main__.py")
    modules = [m.removesuffix(".__init__") for m in modules]
    top = _imported_after("\n".join(f"import {m}" for m in modules))
    assert not {"torchvision", "histomicstk"} & top, sorted({"torchvision", "histomicstk"} & top)


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_torchvision_is_imported_only_inside_model():
    offenders = {p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")
                 if p.relative_to(PACKAGE).parts[0] != "model"
                 and any(n.split(".")[0] == "torchvision" for n in _imports(p))}
    assert not offenders


def test_metric_libraries_are_called_only_from_evaluation():
    """scikit-learn's MCC / F1 / ROC functions are peers the tests compare with, not a second definition."""
    peers = {"matthews_corrcoef", "f1_score", "roc_auc_score", "roc_curve", "average_precision_score"}
    offenders = []
    for p in PACKAGE.rglob("*.py"):
        if p.relative_to(PACKAGE).parts[0] == "evaluation":
            continue
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sklearn"):
                offenders += [f"{p.relative_to(ROOT)}: {a.name}" for a in node.names if a.name in peers]
    assert not offenders


def _tool(name: str) -> str:
    exe = BIN / name
    if exe.is_file():
        return str(exe)
    found = shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed (it is a dev dependency in pyproject.toml)")
    return found


def test_ruff_is_clean():
    res = subprocess.run([_tool("ruff"), "check", "--no-cache", "."], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]


def test_mypy_is_clean_on_evaluation_and_io():
    res = subprocess.run([_tool("mypy"), "--no-incremental", "--cache-dir", "/dev/null"], capture_output=True,
                         text=True, cwd=ROOT)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
    assert "nucls_utils/evaluation" in (ROOT / "pyproject.toml").read_text()


def test_progress_bars_are_text_in_executed_notebooks_and_auto_elsewhere():
    code = "from nucls_utils.progress import tqdm; print(tqdm.__module__)"
    env = {k: v for k, v in os.environ.items() if k != "NUCLS_PROGRESS"}
    auto = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    text = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True,
                          env={**env, "NUCLS_PROGRESS": "text"})
    assert text.stdout.strip() == "tqdm.std"
    assert auto.stdout.strip() != "tqdm.std"  # tqdm.auto: widgets in a notebook kernel, else its async bar
    offenders = [p.relative_to(ROOT).as_posix() for p in PACKAGE.rglob("*.py")
                 if p.name != "progress.py" and "tqdm.auto" in _imports(p)]
    assert not offenders  # every bar goes through nucls_utils.progress
    assert "NUCLS_PROGRESS=text" in (ROOT / "run_all.sh").read_text()
