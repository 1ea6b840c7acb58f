"""One figure style; ``save_figure(fig, name)`` writes PNG + PDF into ``figures/``, named after the paper."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import taxonomy as tx
from .io.atomic import atomic_path
from .summary import COCO_REFERENCE, COCO_SIZE_BINS_PX

__all__ = ["set_style", "save_figure", "plot_instances_and_sizes", "plot_class_by_fold", "plot_class_counts",
           "plot_fov_gallery", "plot_ground_truth_overlay", "plot_stain_ranges", "plot_suggestion_examples",
           "plot_per_fov_comparison", "plot_training_loss"]


def set_style() -> None:
    """The study's plotting style (white background, readable fonts, no top/right spines)."""
    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 200, "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10,
        "axes.spines.top": False, "axes.spines.right": False, "legend.frameon": False,
        "pdf.fonttype": 42, "savefig.bbox": "tight",
    })


def save_figure(fig: plt.Figure, name: str, figures_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<figures_dir>/<name>.png`` and ``.pdf`` atomically; return both paths."""
    figures_dir = Path(figures_dir)
    paths = []
    for ext in ("png", "pdf"):
        path = figures_dir / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext)
        paths.append(path)
    return paths[0], paths[1]


def plot_instances_and_sizes(per_fov: pd.Series, sizes: pd.DataFrame, title: str = "") -> plt.Figure:
    """Figure S9-style panels: (a) nuclei per FOV, (b) nucleus size as percent of FOV area, (c) area in px.

    COCO's published values are drawn as reference lines/annotations (quoted, not recomputed).
    """
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax = axes[0]
    bins = np.arange(0, max(int(per_fov.max()) + 2, 10), max(1, int(per_fov.max()) // 30 or 1))
    ax.hist(per_fov, bins=bins, color="#1f5fd1", alpha=0.85)
    ax.axvline(per_fov.mean(), color="k", lw=1)
    ax.text(per_fov.mean(), ax.get_ylim()[1] * 0.95, f" mean {per_fov.mean():.1f}", va="top", fontsize=9)
    ref = COCO_REFERENCE["instances_per_image_mean"]
    ax.set_title("a. Instances per image (FOV)")
    ax.set_xlabel("nuclei per FOV")
    ax.set_ylabel("FOVs")
    ax.text(0.98, 0.6, "mean instances per image\n" + "\n".join(f"{k}: {v}" for k, v in ref.items()),
            transform=ax.transAxes, ha="right", fontsize=8, color="#555555")
    ax = axes[1]
    pct = sizes["percent_of_fov"].clip(upper=sizes["percent_of_fov"].quantile(0.999))
    ax.hist(pct, bins=60, color="#e41a1c", alpha=0.85)
    ax.set_title("b. Object size (percent of FOV area)")
    ax.set_xlabel("nucleus area / FOV area (%)")
    ax.set_ylabel("nuclei")
    ax.text(0.98, 0.9, f"median {sizes['percent_of_fov'].median():.2f} %", transform=ax.transAxes, ha="right",
            fontsize=9)
    ax = axes[2]
    for cls in [c for c in tx.SUPER_CLASSES if c in set(sizes["super_class"])]:
        sub = sizes[sizes["super_class"] == cls]
        ax.hist(sub["area_px"], bins=np.linspace(0, sizes["area_px"].quantile(0.995), 50), histtype="step",
                lw=1.5, label=cls, color=tx.SUPER_COLORS.get(cls, "k"))
    for b in COCO_SIZE_BINS_PX:
        ax.axvline(b, color="#777777", ls="--", lw=1)
    ax.set_title("c. Nucleus area by super-class")
    ax.set_xlabel("area (px at 0.2 microns/px); dashed: COCO 32^2, 96^2")
    ax.set_ylabel("nuclei")
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_class_counts(counts: pd.DataFrame, title: str = "") -> plt.Figure:
    """Horizontal bars of nuclei per class, one panel per level (raw, main, super)."""
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), gridspec_kw={"width_ratios": [1.3, 1.1, 0.8]})
    for ax, level in zip(axes, ("raw", "main", "super"), strict=True):
        sub = counts[counts["level"] == level]
        cmap = tx.colors(level)
        ax.barh(sub["class"], sub["n"], color=[cmap.get(c, "k") for c in sub["class"]])
        ax.invert_yaxis()
        ax.set_title(f"{level} classes")
        ax.set_xlabel("nuclei")
        for y, (n, p) in enumerate(zip(sub["n"], sub["percent"], strict=True)):
            ax.text(n, y, f" {p:.1f}%", va="center", fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_class_by_fold(by_fold: pd.DataFrame, level: str = "super", title: str = "") -> plt.Figure:
    """Stacked bars of the class mix of each test fold (percent within fold), counts printed above."""
    tab = by_fold.pivot(index="fold", columns="class", values="percent")
    order = [c for c in {"raw": tx.RAW_CLASSES, "main": tx.MAIN_CLASSES, "super": tx.SUPER_CLASSES}[level]
             if c in tab.columns]
    tab = tab[order]
    totals = by_fold.groupby("fold")["n"].sum()
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    bottom = np.zeros(len(tab))
    cmap = tx.colors(level)
    for cls in order:
        ax.bar(tab.index.astype(str), tab[cls], bottom=bottom, color=cmap.get(cls, "k"), label=cls)
        bottom += tab[cls].to_numpy()
    for x, k in enumerate(tab.index):
        ax.text(x, 101, f"n={totals[k]}", ha="center", fontsize=8)
    ax.set_ylim(0, 108)
    ax.set_xlabel("test fold (1 = validation)")
    ax.set_ylabel("nuclei (%)")
    ax.legend(bbox_to_anchor=(1.01, 1), loc="upper left", fontsize=8)
    ax.set_title(title or f"{level}-class mix by fold")
    fig.tight_layout()
    return fig


def plot_fov_gallery(rows: dict[str, list[np.ndarray]], title: str = "", crop: int = 300) -> plt.Figure:
    """A grid of FOV images: one row per label (e.g. 'synthetic', 'real'), top-left ``crop`` pixels of each."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(2.6 * n, 2.75 * len(rows)), squeeze=False)
    for i, (label, images) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if j < len(images):
                ax.imshow(images[j][:crop, :crop])
            if j == 0:
                ax.set_ylabel(label, fontsize=11)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_ground_truth_overlay(rgb: np.ndarray, record, region_map: np.ndarray | None = None,
                              region_names: dict[int, str] | None = None,
                              region_colors: dict[int, str] | None = None) -> plt.Figure:
    """One FOV: the image, the image with every true outline coloured by raw class (dashed: intended FOV), and the
    tissue-region map when given."""
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch, Rectangle

    k = 3 if region_map is not None else 2
    fig, axes = plt.subplots(1, k, figsize=(4.6 * k, 4.8))
    axes[0].imshow(rgb)
    axes[0].set_title("image")
    axes[1].imshow(rgb)
    present = []
    for n in record.nuclei:
        color = tx.RAW_COLORS[n.raw_class]
        axes[1].plot(n.coords_x, n.coords_y, color=color, lw=1.2)
        if n.raw_class not in present:
            present.append(n.raw_class)
    if record.fov_rect is not None:
        x0, y0, x1, y1 = record.fov_rect
        axes[1].add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ls="--", lw=1, color="k"))
    axes[1].set_title("ground truth (outline colour = class)")
    axes[1].legend(handles=[Patch(color=tx.RAW_COLORS[c], label=c) for c in present], fontsize=7,
                   loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if region_map is not None:
        names = region_names or {}
        codes = sorted(int(c) for c in np.unique(region_map))
        palette = region_colors or {}
        img = np.zeros(region_map.shape + (3,))
        for c in codes:
            img[region_map == c] = to_rgb(palette.get(c, "#000000"))
        axes[2].imshow(img)
        axes[2].set_title("tissue regions")
        axes[2].legend(handles=[Patch(color=palette.get(c, "k"), label=names.get(c, str(c))) for c in codes],
                       fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


def plot_stain_ranges(tables: dict[str, pd.DataFrame], title: str = "") -> plt.Figure:
    """Hematoxylin vs eosin density per FOV, one colour per table (e.g. this dataset vs the real sample)."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for (label, t), color in zip(tables.items(), ["#1f5fd1", "#e41a1c", "#4daf4a"], strict=False):
        ax.scatter(t["h_mean"], t["e_mean"], s=14, alpha=0.7, label=f"{label} (n={len(t)})", color=color)
    ax.set_xlabel("hematoxylin density (HistomicsTK SDA, mean)")
    ax.set_ylabel("eosin density (mean)")
    ax.legend(fontsize=8)
    ax.set_title(title or "Stain densities per FOV")
    fig.tight_layout()
    return fig


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
