"""Tables: ``save_table(df, name)`` writes CSV + Markdown into ``tables/``, named after the paper."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from .io.atomic import atomic_path

__all__ = ["save_table", "save_results"]


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
