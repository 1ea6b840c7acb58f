"""Figures of the dataset (notebook 01): class counts (Fig. 1a), nuclei per FOV and sizes (Fig. S9), class mix per
fold (Fig. 6c), example FOVs, ground-truth overlay, stain densities and the synthetic cohort's realism report."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import taxonomy as tx
from ..summary import COCO_REFERENCE, COCO_SIZE_BINS_PX

__all__ = ["plot_instances_and_sizes", "plot_class_counts", "plot_class_by_fold", "plot_fov_gallery",
           "plot_ground_truth_overlay", "plot_stain_ranges", "plot_realism_report", "plot_real_vs_synthetic_grid",
           "REALISM_COLORS", "REALISM_IMAGE_STATS"]


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


REALISM_COLORS = {"synthetic": "#1f5fd1", "real": "#e41a1c"}


REALISM_IMAGE_STATS = ("focus", "background_fraction", "nuclear_fraction", "eosin_fraction", "h_mean", "e_mean")


def _realism_c2st_panel(ax: plt.Axes, c2st: pd.DataFrame, targets: dict[str, float]) -> None:
    labels = [t.replace("features: ", "").replace("patches: 64 px CNN", "patches\n(CNN)") for t in c2st["test"]]
    is_patch = c2st["test"].str.startswith("patches").to_numpy()
    auroc = c2st["auroc"].to_numpy(float)
    x = np.arange(len(c2st))
    ax.bar(x, np.nan_to_num(auroc), color=np.where(is_patch, "#984ea3", "#4daf4a"), width=0.7)
    top = auroc.copy()
    if {"auroc_min", "auroc_max", "runs"} <= set(c2st.columns):  # repeated trainings: their range
        runs = c2st["runs"].to_numpy()
        lo, hi = c2st["auroc_min"].to_numpy(float), c2st["auroc_max"].to_numpy(float)
        rep = (runs > 1) & np.isfinite(auroc)
        if rep.any():
            ax.errorbar(x[rep], auroc[rep], yerr=[auroc[rep] - lo[rep], hi[rep] - auroc[rep]], fmt="none",
                        ecolor="k", capsize=3, lw=1)
            top = np.where(rep, hi, auroc)
    for xi, v, t in zip(x, auroc, top, strict=True):
        ax.text(xi, (t if np.isfinite(t) else 0) + 0.01, f"{v:.2f}" if np.isfinite(v) else "not run", ha="center",
                va="bottom", fontsize=8)
    ax.axhline(0.5, color="#444444", lw=1, label="chance (0.5)")
    shown = []
    for mask, key in ((~is_patch, "feature_c2st_auroc"), (is_patch, "patch_c2st_auroc")):
        if mask.any() and key in targets:
            xs = x[mask]
            ax.hlines(targets[key], xs.min() - 0.45, xs.max() + 0.45, colors="k", linestyles="--", lw=1.2,
                      label="target (AUROC at most)" if not shown else None)
            shown.append(f"{targets[key]:.2f}")
    ax.legend(fontsize=8, loc="upper left", ncol=2, title=" / ".join(["target: features", "patches"][:len(shown)])
              + (" " + " / ".join(shown) if shown else ""), title_fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=8)
    ax.set_ylim(0, 1.25)
    ax.set_yticks(np.arange(0, 1.01, 0.2))
    ax.set_ylabel("held-out AUROC, mean over folds (real vs synthetic)")
    ax.set_title("a. Classifier two-sample tests (0.5: indistinguishable)")


def _realism_smd_panel(fig: plt.Figure, ax: plt.Axes, smd: pd.DataFrame, limit: float = 3.0,
                       within: float = 0.5) -> None:
    from matplotlib.patches import Rectangle

    tab = smd.pivot(index="class", columns="feature", values="smd")
    tab = tab.loc[list(dict.fromkeys(smd["class"])), list(dict.fromkeys(smd["feature"]))]
    vals = tab.to_numpy(float)
    im = ax.imshow(np.clip(vals, -limit, limit), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    for (i, j), v in np.ndenumerate(vals):
        ok = bool(np.isfinite(v) and abs(v) <= within)
        ax.text(j, i, f"{v:.2f}" if np.isfinite(v) else "n/a", ha="center", va="center", fontsize=8,
                fontweight="bold" if ok else "normal", color="k" if not np.isfinite(v) or abs(v) < 2 else "w")
        if ok:
            ax.add_patch(Rectangle((j - 0.44, i - 0.44), 0.88, 0.88, fill=False, ec="k", lw=1.6))
    ax.set_xticks(range(vals.shape[1]))
    ax.set_xticklabels(tab.columns, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(vals.shape[0]))
    ax.set_yticklabels(tab.index, fontsize=8)
    for side in ax.spines.values():
        side.set_visible(False)
    n_ok = int((np.abs(vals) <= within).sum())
    ax.set_title(f"b. Standardised mean difference, synthetic - real\n(boxed: |SMD| <= {within}: {n_ok} of "
                 f"{vals.size}; colour clipped at +-{limit:g})")
    fig.colorbar(im, ax=ax, fraction=0.04, pad=0.02, label="SMD (pooled SD)")


def _realism_bootstrap_panel(ax: plt.Axes, boot: pd.DataFrame) -> None:
    metrics = ["precision", "recall", "F1"]
    x = np.arange(len(metrics))
    sides = list(boot["dataset"])
    width = 0.8 / max(len(sides), 1)
    for k, side in enumerate(sides):
        row = boot[boot["dataset"] == side].iloc[0]
        vals = [float(row[m]) for m in metrics]
        xs = x - 0.4 + width * (k + 0.5)
        ax.bar(xs, vals, width=width * 0.95, color=REALISM_COLORS.get(side, "#777777"),
               label=f"{side} (N={int(row['N'])})")
        for xi, v in zip(xs, vals, strict=True):
            ax.text(xi, v + 1, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(metrics)
    ax.set_ylim(0, 110)
    ax.set_ylabel("percent (IOU >= 0.5)")
    ax.legend(fontsize=8, loc="upper right")
    title = "c. Heuristic bootstrap detection"
    if {"synthetic", "real"} <= set(sides):
        f1 = boot.set_index("dataset")["F1"]
        title += f"\n(F1 gap {abs(f1['synthetic'] - f1['real']):.1f} points)"
    ax.set_title(title)


def _realism_images_panel(ax: plt.Axes, images: pd.DataFrame, stats: tuple[str, ...] = REALISM_IMAGE_STATS) -> None:
    stats = tuple(s for s in stats if s in images.columns)
    sides = list(dict.fromkeys(images["dataset"]))
    rng = np.random.default_rng(0)  # jitter of the strip points only
    width = 0.8 / max(len(sides), 1)
    labels = []
    for j, stat in enumerate(stats):
        col = images[stat].astype(float)
        lo, hi = float(col.min()), float(col.max())
        span = hi - lo if hi > lo else 1.0
        labels.append(f"{stat.replace('_', ' ')}\n[{lo:.3g}, {hi:.3g}]")
        for k, side in enumerate(sides):
            v = ((col[images["dataset"] == side] - lo) / span).dropna().to_numpy()
            if not len(v):
                continue
            pos = j - 0.4 + width * (k + 0.5)
            color = REALISM_COLORS.get(side, "#777777")
            ax.boxplot(v, positions=[pos], widths=width * 0.8, showfliers=False, patch_artist=True,
                       boxprops={"facecolor": "none", "edgecolor": color}, medianprops={"color": color, "lw": 2},
                       whiskerprops={"color": color}, capprops={"color": color})
            ax.scatter(pos + rng.uniform(-width * 0.3, width * 0.3, len(v)), v, s=6, alpha=0.45, color=color,
                       label=side if j == 0 else None)
    ax.set_xticks(range(len(stats)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_xlim(-0.6, len(stats) - 0.4)
    ax.set_ylim(-0.05, 1.17)
    ax.set_yticks(np.arange(0, 1.01, 0.2))
    ax.set_ylabel("per FOV, scaled to [min, max] of both")
    ax.legend(fontsize=8, loc="upper right", ncol=len(sides), markerscale=2)
    ax.set_title("d. Image statistics per FOV (raw range under each name)")


def plot_realism_report(report, title: str = "") -> plt.Figure:
    """Panels of a :class:`nucls_utils.phantom.realism.RealismReport`.

    (a) C2ST AUROC per test (feature groups, patches) with the chance line and the targets dashed; (b) SMD heatmap,
    class x feature (diverging, centred at 0, clipped at +-3, values printed, ``|SMD| <= 0.5`` boxed); (c) bootstrap
    precision / recall / F1, synthetic vs real; (d) image statistics per FOV, box and strip plots per dataset on
    axes scaled to the pooled range.
    """
    summary = report.summary.set_index("quantity")
    targets = summary["target"].to_dict()
    fig = plt.figure(figsize=(15, 10))
    gs = fig.add_gridspec(2, 2, width_ratios=[1, 1.25], height_ratios=[1, 1.05])
    _realism_c2st_panel(fig.add_subplot(gs[0, 0]), report.c2st, targets)
    _realism_smd_panel(fig, fig.add_subplot(gs[0, 1]), report.smd)
    _realism_bootstrap_panel(fig.add_subplot(gs[1, 0]), report.bootstrap)
    _realism_images_panel(fig.add_subplot(gs[1, 1]), report.images)
    met = int(summary["meets"].sum())
    fig.suptitle(title or f"Realism of the synthetic cohort against the real sample: {met} of {len(summary)} "
                          "targets met")
    fig.tight_layout()
    return fig


def _centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    """``(size, size, C)`` centre crop of an image; an image smaller than that is padded with white."""
    h, w = image.shape[:2]
    y0, x0 = max((h - size) // 2, 0), max((w - size) // 2, 0)
    out = image[y0:y0 + size, x0:x0 + size]
    if out.shape[0] < size or out.shape[1] < size:
        pad = [(0, size - out.shape[0]), (0, size - out.shape[1])] + [(0, 0)] * (image.ndim - 2)
        out = np.pad(out, pad, constant_values=255 if image.dtype == np.uint8 else 1)
    return out


def plot_real_vs_synthetic_grid(real_images: list[np.ndarray], synthetic_images: list[np.ndarray], n: int = 5,
                                rows_per_side: int = 1, crop: int = 300, mpp: float = 0.2,
                                scale_bar_um: float = 20.0, title: str = "") -> plt.Figure:
    """Real FOVs (top rows) above synthetic FOVs (bottom rows), ``n`` per row, each centre-cropped to ``crop`` px
    (``crop * mpp`` microns, the same scale in every panel), with a ``scale_bar_um`` scale bar and row labels.

    Takes the first ``n * rows_per_side`` images of each list; draws with :func:`plot_fov_gallery`.
    """
    rows: dict[str, list[np.ndarray]] = {}
    for side, images in (("real", real_images), ("synthetic", synthetic_images)):
        images = [_centre_crop(np.asarray(im), crop) for im in images[:n * rows_per_side]]
        for r in range(rows_per_side):
            chunk = images[r * n:(r + 1) * n]
            if chunk:
                rows[side if rows_per_side == 1 else f"{side} ({r + 1})"] = chunk
    if not rows:
        raise ValueError("no images to draw")
    um = crop * mpp
    fig = plot_fov_gallery(rows, crop=crop, title=title or f"Real (top) and synthetic (bottom) FOVs, centre "
                                                           f"{crop} x {crop} px = {um:g} x {um:g} microns")
    bar = scale_bar_um / mpp
    for ax in fig.axes:
        if not ax.get_images():
            continue
        ax.set_xlim(-0.5, crop - 0.5)
        ax.set_ylim(crop - 0.5, -0.5)
        x0, y0 = crop - 12 - bar, crop - 14
        ax.plot([x0, x0 + bar], [y0, y0], color="w", lw=5, solid_capstyle="butt")
        ax.plot([x0, x0 + bar], [y0, y0], color="k", lw=3, solid_capstyle="butt")
        ax.text(x0 + bar / 2, y0 - 8, f"{scale_bar_um:g} \u00b5m", ha="center", va="bottom", fontsize=7,
                bbox={"boxstyle": "square,pad=0.1", "fc": "w", "ec": "none", "alpha": 0.8})
    return fig
