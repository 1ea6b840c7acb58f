"""Tables: ``save_table(df, name)`` writes CSV + Markdown into ``tables/``, named after the paper;
``compare_outputs(a, b)`` lists every difference between the CSV tables of two runs.

``python -m nucls_utils.tables compare A B [--tol 1e-9]`` compares two output folders (``./run_all.sh --out``):
exit status 0 when every CSV under ``tables/`` and ``results/`` is present in both and equal (numbers within
``tol``), 1 otherwise, with one line per difference."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from .io.atomic import atomic_path

__all__ = ["save_table", "save_results", "compare_tables", "compare_outputs", "TIMING_COLUMNS"]


def save_table(df: pd.DataFrame, name: str, tables_dir: str | os.PathLike[str], *, index: bool = False,
               floatfmt: str = ".3g", caption: str | None = None) -> tuple[Path, Path]:
    """Write ``<tables_dir>/<name>.csv`` and ``<name>.md`` (atomically); return both paths."""
    tables_dir = Path(tables_dir)
    csv_path, md_path = tables_dir / f"{name}.csv", tables_dir / f"{name}.md"
    with atomic_path(csv_path) as tmp:
        df.to_csv(tmp, index=index)
    shown = df.astype(object).where(df.notna(), None)  # NaN cells print empty, not 'nan'
    md = shown.to_markdown(index=index, floatfmt=floatfmt, missingval="")
    if caption:
        md = f"**{name}.** {caption}\n\n{md}"
    with atomic_path(md_path) as tmp:
        tmp.write_text(md + "\n", encoding="utf-8")
    return csv_path, md_path


def save_results(df: pd.DataFrame, name: str, stage_dir: str | os.PathLike[str]) -> Path:
    """Write a tidy intermediate table ``<stage_dir>/<name>.csv`` for later notebooks (atomically)."""
    path = Path(stage_dir) / f"{name}.csv"
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def compare_tables(a: pd.DataFrame, b: pd.DataFrame, tol: float = 1e-9) -> list[str]:
    """Differences between two tables as lines of text (empty: equal).

    Equal means the same columns in the same order, the same number of rows, and per column either the same
    numbers (``|a - b| <= tol * max(1, |a|)``, NaN equal to NaN) or the same text.
    """
    if list(a.columns) != list(b.columns):
        return [f"columns differ: {sorted(set(a.columns) ^ set(b.columns)) or 'same names, other order'}"]
    if len(a) != len(b):
        return [f"{len(a)} rows vs {len(b)}"]
    out = []
    for col in a.columns:
        x, y = a[col], b[col]
        if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
            xv, yv = x.to_numpy(dtype=float), y.to_numpy(dtype=float)
            same = (np.isnan(xv) & np.isnan(yv)) | (np.abs(xv - yv) <= tol * np.maximum(1.0, np.abs(xv)))
        else:
            same = (x.isna() & y.isna()).to_numpy() | (x.astype(str) == y.astype(str)).to_numpy()
        if not same.all():
            k = int(np.flatnonzero(~same)[0])
            va, vb = (v.item() if isinstance(v, np.generic) else v for v in (x.iloc[k], y.iloc[k]))
            out.append(f"column {col!r}: {int((~same).sum())} of {len(same)} rows differ (first: row {k}, "
                       f"{va!r} vs {vb!r})")
    return out


#: Columns that hold wall-clock measurements, which differ between any two runs.
TIMING_COLUMNS: tuple[str, ...] = ("seconds", "seconds_per_update")


def compare_outputs(a: str | os.PathLike[str], b: str | os.PathLike[str], tol: float = 1e-9,
                    folders: tuple[str, ...] = ("tables", "results"),
                    ignore_columns: tuple[str, ...] = TIMING_COLUMNS) -> list[str]:
    """Every difference between the CSV tables under ``folders`` of two output folders, as lines of text
    (``<relative path>: <difference>``; a table present in one folder only is a difference). Columns named in
    ``ignore_columns`` (default: the wall-clock times, :data:`TIMING_COLUMNS`) are left out of the comparison."""
    a, b = Path(a), Path(b)
    names = {p.relative_to(root).as_posix() for root in (a, b) for f in folders for p in (root / f).rglob("*.csv")}
    out = []
    for name in sorted(names):
        pa, pb = a / name, b / name
        if not pa.is_file() or not pb.is_file():
            out.append(f"{name}: only in {a if pa.is_file() else b}")
            continue
        try:
            ta, tb = pd.read_csv(pa), pd.read_csv(pb)
        except pd.errors.EmptyDataError:
            if pa.read_bytes() != pb.read_bytes():
                out.append(f"{name}: an empty table in one folder only")
            continue
        ta, tb = (t.drop(columns=[c for c in ignore_columns if c in t.columns]) for t in (ta, tb))
        out += [f"{name}: {d}" for d in compare_tables(ta, tb, tol)]
    return out


def _main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nucls_utils.tables", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    cmp = sub.add_parser("compare", help="compare the CSV tables of two output folders")
    cmp.add_argument("a")
    cmp.add_argument("b")
    cmp.add_argument("--tol", type=float, default=1e-9, help="relative tolerance of numbers (default 1e-9)")
    cmp.add_argument("--ignore-columns", nargs="*", default=list(TIMING_COLUMNS),
                     help=f"columns left out (default: the wall-clock times {' '.join(TIMING_COLUMNS)})")
    args = ap.parse_args(argv)
    diffs = compare_outputs(args.a, args.b, args.tol, ignore_columns=tuple(args.ignore_columns))
    for line in diffs:
        print(line)
    n = sum(1 for f in ("tables", "results") for root in (args.a,) for _ in Path(root, f).rglob("*.csv"))
    print(f"{len(diffs)} difference(s) over {n} tables of {args.a}" if diffs else f"identical: {n} tables (tol {args.tol:g})")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(_main())
