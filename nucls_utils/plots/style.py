"""The study's plotting style. Figures are written by :func:`nucls_utils.figures.save_figure` (PNG and PDF with their
registry entry and the git commit in the metadata)."""

from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["set_style"]


def set_style() -> None:
    """The study's plotting style (white background, readable fonts, no top/right spines)."""
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "pdf.fonttype": 42, "savefig.bbox": "tight",
    })
