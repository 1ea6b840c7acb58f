"""The study's plotting style and the one way a figure is written: PNG and PDF, atomically, with the figure's
registry entry and the git commit in their metadata."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

from ..io.atomic import atomic_path

__all__ = ["set_style", "save_figure"]


def set_style() -> None:
    """The study's plotting style (white background, readable fonts, no top/right spines)."""
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "pdf.fonttype": 42, "savefig.bbox": "tight",
    })


def save_figure(fig: plt.Figure, name: str, figures_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<figures_dir>/<name>.png`` and ``.pdf`` atomically; return both paths.

    Both files carry, in their metadata, the figure's registry entry (:mod:`nucls_utils.figures`: paper label,
    caption, notebook, builder) and the git commit of the code that drew it (PNG text chunks ``Title``,
    ``Description``, ``Source``; PDF ``Title``, ``Subject``, ``Keywords``). The PDF carries no creation date, so the
    same figure gives the same file."""
    from ..config import git_commit
    from ..figures import figure_metadata

    meta = figure_metadata(name, _commit(git_commit))
    per_format = {"png": {"Title": meta["Title"], "Description": meta["Subject"], "Source": meta["Keywords"]},
                  "pdf": {**meta, "CreationDate": None}}
    figures_dir = Path(figures_dir)
    paths = []
    for ext in ("png", "pdf"):
        path = figures_dir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, metadata=per_format[ext])
        paths.append(path)
    return paths[0], paths[1]


_COMMIT: list[str] = []


def _commit(lookup) -> str:
    """The git commit, asked once per process."""
    if not _COMMIT:
        _COMMIT.append(lookup())
    return _COMMIT[0]
