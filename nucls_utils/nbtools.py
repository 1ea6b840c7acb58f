"""Notebook helpers for run_all.sh and the tests: describe a failed papermill run, inspect parameters cells.

Command line:

* ``python -m nucls_utils.nbtools describe-failure EXECUTED.ipynb [STDERR.log]``
* ``python -m nucls_utils.nbtools strip NOTEBOOK.ipynb ...`` - clear outputs, execution counts and papermill
  metadata in place, so a notebook edited in JupyterLab can be committed clean.
* ``python -m nucls_utils.nbtools relativize EXECUTED.ipynb PATH=LABEL ...`` - replace each machine path by its
  label (e.g. ``/home/me/nucls=$REPO``) everywhere in the notebook (sources, outputs, metadata), in place, so the
  supplement shows no machine's paths.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

__all__ = ["failing_cell", "parameters_cell", "parameter_names", "describe_failure", "strip_outputs",
           "relativize_paths"]


def _load(path: str | Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def failing_cell(nb_path: str | Path) -> dict | None:
    """The first code cell of an executed notebook whose outputs hold an error, or ``None``.

    Returns a dict with ``index`` (0-based among all cells), ``execution_count``, ``source``, ``ename``, ``evalue``.
    """
    nb = _load(nb_path)
    for i, cell in enumerate(nb.get("cells", [])):
        if cell.get("cell_type") != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                src = cell.get("source", "")
                return {"index": i, "execution_count": cell.get("execution_count"),
                        "source": "".join(src) if isinstance(src, list) else src,
                        "ename": out.get("ename", ""), "evalue": out.get("evalue", "")}
    return None


def describe_failure(nb_path: str | Path, log_path: str | Path | None = None) -> str:
    """Human-readable account of why a notebook run failed."""
    lines = [f"executed notebook (with the error): {nb_path}"]
    cell = None
    if Path(nb_path).exists():
        cell = failing_cell(nb_path)
    if cell is not None:
        head = "\n".join("    " + ln for ln in cell["source"].strip().splitlines()[:8])
        lines += [f"failing cell: #{cell['index']} (In [{cell['execution_count']}])", head,
                  f"error: {cell['ename']}: {cell['evalue']}"]
    elif log_path is not None and Path(log_path).exists():
        text = Path(log_path).read_text(errors="replace")
        tail = "\n".join(text.strip().splitlines()[-15:])
        lines += ["papermill did not reach a cell; its log ends with:", tail]
    if log_path is not None:
        lines.append(f"full log: {log_path}")
    return "\n".join(lines)


def parameters_cell(nb_path: str | Path) -> tuple[int, str] | None:
    """``(index, source)`` of the cell tagged ``parameters``, or ``None``."""
    nb = _load(nb_path)
    for i, cell in enumerate(nb.get("cells", [])):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = cell.get("source", "")
            return i, "".join(src) if isinstance(src, list) else src
    return None


def parameter_names(source: str) -> list[str]:
    """Names assigned in a parameters cell; raises ValueError unless every statement is ``name = literal``."""
    names = []
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign | ast.AnnAssign)):
            raise ValueError(f"parameters cell may only assign literals; found {ast.dump(node)[:60]}")
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        if not isinstance(target, ast.Name):
            raise ValueError("parameters cell may only assign plain names")
        ast.literal_eval(node.value)
        names.append(target.id)
    return names


def strip_outputs(nb_path: str | Path) -> bool:
    """Clear outputs, execution counts, papermill metadata and papermill's injected-parameters cell, in place.

    Returns whether the file changed.
    """
    path = Path(nb_path)
    before = path.read_text(encoding="utf-8")
    nb = json.loads(before)
    nb["cells"] = [c for c in nb.get("cells", [])
                   if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    for key in ("papermill", "widgets"):
        nb.get("metadata", {}).pop(key, None)
    after = json.dumps(nb, indent=1, ensure_ascii=False) + "\n"
    if after != before:
        path.write_text(after, encoding="utf-8")
    return after != before


def _replace_strings(obj, swap):
    if isinstance(obj, str):
        return swap(obj)
    if isinstance(obj, list):
        return [_replace_strings(x, swap) for x in obj]
    if isinstance(obj, dict):
        return {k: _replace_strings(v, swap) for k, v in obj.items()}
    return obj


def relativize_paths(nb_path: str | Path, replacements: dict[str, str]) -> int:
    """Replace machine paths by labels everywhere in a notebook (cell sources, outputs, metadata), in place.

    ``replacements``: absolute path -> label, e.g. ``{"/home/me/nucls": "$REPO"}``. Longer paths are replaced
    first (an output folder inside the repository keeps its own label), a path only where it is followed by a
    separator, a quote, white space or the end (``/data/x`` does not touch ``/data/xy``), and empty or relative
    paths are ignored. Returns how many strings changed.
    """
    path = Path(nb_path)
    nb = json.loads(path.read_text(encoding="utf-8"))
    pairs = sorted(((str(Path(k)), v) for k, v in replacements.items() if k and Path(k).is_absolute()),
                   key=lambda kv: -len(kv[0]))
    pattern = re.compile("|".join(f"({re.escape(k)})(?=[/\\\\'\"\\s,)]|$)" for k, _ in pairs)) if pairs else None
    changed = 0

    def swap(text: str) -> str:
        nonlocal changed
        if pattern is None:
            return text
        new = pattern.sub(lambda m: pairs[m.lastindex - 1][1], text)
        changed += new != text
        return new

    nb = _replace_strings(nb, swap)
    if changed:
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return changed


def _main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "describe-failure":
        print(describe_failure(argv[1], argv[2] if len(argv) > 2 else None))
        return 0
    if len(argv) >= 2 and argv[0] == "strip":
        for p in argv[1:]:
            print(f"{p}: {'stripped' if strip_outputs(p) else 'already clean'}")
        return 0
    if len(argv) >= 2 and argv[0] == "relativize":
        pairs = dict(a.split("=", 1) for a in argv[2:] if "=" in a)
        print(f"{argv[1]}: {relativize_paths(argv[1], pairs)} strings relativized")
        return 0
    print(re.sub(r"\n\s+", "\n", __doc__ or ""), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
