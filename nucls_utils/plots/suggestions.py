"""Figures of the algorithmic suggestions (notebook 02): the refinement model's training loss and example FOVs
(Fig. S2), and suggestion accuracy per FOV (Fig. S4)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import taxonomy as tx

__all__ = ["plot_suggestion_examples", "plot_per_fov_comparison", "plot_suggestion_accuracy_per_fov",
           "plot_training_loss"]


def _outline(ax, nuclei, lw: float = 1.0) -> None:
    for n in nuclei:
        xs = list(n.coords_x) if n.is_polygon else [n.xmin, n.xmax, n.xmax, n.xmin, n.xmin]
        ys = list(n.coords_y) if n.is_polygon else [n.ymin, n.ymin, n.ymax, n.ymax, n.ymin]
        ax.plot(xs, ys, color=tx.RAW_COLORS.get(n.raw_class, "k"), lw=lw)


def plot_suggestion_examples(rows: list[dict], region_colors: dict[int, str] | None = None) -> plt.Figure:
    """Figure S2-style panels, one row per FOV: image, tissue regions, bootstrap, refined and true nuclei.

    Each row is a dict with ``rgb``, ``regions`` (or None), ``bootstrap``, ``refined``, ``truth`` (lists of Nucleus)
    and ``title``.
    """
    from matplotlib.colors import to_rgb

    cols = ["image", "regions", "bootstrap", "refined (Mask R-CNN)", "truth"]
    fig, axes = plt.subplots(len(rows), 5, figsize=(15, 3.1 * len(rows)), squeeze=False)
    for i, row in enumerate(rows):
        axes[i, 0].imshow(row["rgb"])
        if row.get("regions") is not None:
            img = np.zeros(row["regions"].shape + (3,))
            for c in np.unique(row["regions"]):
                img[row["regions"] == c] = to_rgb((region_colors or {}).get(int(c), "#000000"))
            axes[i, 1].imshow(img)
        for j, key in ((2, "bootstrap"), (3, "refined"), (4, "truth")):
            axes[i, j].imshow(row["rgb"])
            _outline(axes[i, j], row[key])
        axes[i, 0].set_ylabel(row.get("title", ""), fontsize=8)
        for j in range(5):
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            if i == 0:
                axes[i, j].set_title(cols[j])
    fig.tight_layout()
    return fig


def plot_per_fov_comparison(a: pd.Series, b: pd.Series, label_a: str, label_b: str, quantity: str,
                            ax: plt.Axes | None = None) -> plt.Figure:
    """Scatter of a per-FOV quantity under two conditions with the identity line (Figure S4a-style)."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(4.4, 4.2))
    ax = ax or fig.add_subplot(111)
    ax.scatter(a, b, s=14, alpha=0.7, color="#1f5fd1")
    lim = [0, max(100.0, float(np.nanmax([a.max(), b.max()])))]
    ax.plot(lim, lim, color="#777777", ls="--", lw=1)
    better = float(np.mean(b > a)) * 100
    ax.set_title(f"{quantity} per FOV ({label_b} better in {better:.0f} % of FOVs)", fontsize=9)
    ax.set_xlabel(f"{label_a}")
    ax.set_ylabel(f"{label_b}")
    return fig


def plot_suggestion_accuracy_per_fov(scores: dict[str, pd.DataFrame], panels: list[tuple[str, str, str, str, str, str]]
                                     ) -> plt.Figure:
    """Figure S4: per-FOV scores of two suggestion sets side by side, one panel per
    ``(column, set a, set b, label a, label b, title)`` of ``panels``; ``scores`` maps a set's name to its per-FOV
    table (:func:`nucls_utils.suggestions.per_fov_scores`). A score that is not defined for either set (no matched
    suggestion with a class) is said so in its panel rather than drawn."""
    fig, axes = plt.subplots(1, len(panels), figsize=(4.7 * len(panels), 4.3), squeeze=False)
    for ax, (col, a, b, label_a, label_b, title) in zip(axes[0], panels, strict=True):
        if scores[a][col].notna().any() and scores[b][col].notna().any():
            plot_per_fov_comparison(scores[a][col], scores[b][col], label_a, label_b, title, ax)
        else:
            ax.text(0.5, 0.5, f"{title}\nnot defined: no matched suggestion\nwith a class", ha="center",
                    transform=ax.transAxes)
    fig.tight_layout()
    return fig


def plot_training_loss(history: pd.DataFrame, title: str = "Refinement model training") -> plt.Figure:
    """Total and per-term losses against iterations (smoothed over 20 iterations)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for col in [c for c in history.columns if c.startswith("loss")]:
        ax.plot(history["iteration"], history[col].rolling(20, min_periods=1).mean(), label=col,
                lw=2 if col == "loss" else 1)
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss (rolling mean of 20)")
    ax.legend(fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    return fig
