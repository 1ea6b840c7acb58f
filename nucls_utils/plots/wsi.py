"""Figures of a whole-slide prediction (notebook 09, and the heatmap every ``nucls_utils.wsi`` run writes)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..taxonomy import class_color

__all__ = ["plot_density_heatmap", "plot_slide_overlay"]


def plot_density_heatmap(thumbnail: np.ndarray, density: Mapping[str, np.ndarray], grid_um: float,
                         cell_px: float) -> plt.Figure:
    """The thumbnail, then one panel per super-class: nuclei per mm^2 of tissue on the grid (cells of ``cell_px``
    thumbnail pixels; the last row and column may reach past the thumbnail's edge), over the thumbnail."""
    h, w = thumbnail.shape[:2]
    n = 1 + len(density)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4 * h / max(w, 1) + 0.8))
    axes[0].imshow(thumbnail)
    axes[0].set_title("thumbnail", fontsize=9)
    for ax, (name, grid) in zip(axes[1:], density.items(), strict=True):
        grid = np.asarray(grid, dtype=float)
        ax.imshow(thumbnail, alpha=0.55)
        vmax = float(np.nanpercentile(grid, 99)) if np.isfinite(grid).any() else 1.0
        gh, gw = grid.shape
        im = ax.imshow(np.ma.masked_invalid(grid), extent=(0, gw * cell_px, gh * cell_px, 0), cmap="magma",
                       alpha=0.75, vmin=0, vmax=max(vmax, 1.0), interpolation="nearest")
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_title(f"{name} per mm$^2$ of tissue", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(f"Nucleus density on the slide ({grid_um:g} micron cells)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_slide_overlay(thumbnail: np.ndarray, downsample: float, nuclei: pd.DataFrame, zoom_rgb: np.ndarray,
                       zoom_origin: tuple[float, float], zoom_nuclei: pd.DataFrame, mpp: float,
                       max_points: int = 30000) -> plt.Figure:
    """Left: the thumbnail with every nucleus (centroid) in its class colour, as the GeoJSON shows it in QuPath;
    right: a region at full resolution with the traced outlines (``zoom_nuclei``: ``polygon_x``, ``polygon_y`` in
    level-0 px, ``class``)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 5.6), gridspec_kw={"width_ratios": [1.4, 1]})
    a.imshow(thumbnail)
    pts = nuclei if len(nuclei) <= max_points else nuclei.sample(max_points, random_state=0)
    for cls, g in pts.groupby("class", sort=True):
        a.scatter(g["x"] / downsample, g["y"] / downsample, s=1.5, color=class_color(cls), label=f"{cls} "
                  f"({int((nuclei['class'] == cls).sum())})", linewidths=0)
    zx, zy = zoom_origin
    zh, zw = zoom_rgb.shape[:2]
    a.add_patch(plt.Rectangle((zx / downsample, zy / downsample), zw / downsample, zh / downsample, fill=False,
                              color="k", lw=1.2))
    a.legend(fontsize=7, markerscale=6, loc="upper right", framealpha=0.85)
    a.set_title(f"{len(nuclei)} nuclei on the slide (box: the region on the right)", fontsize=9)
    b.imshow(zoom_rgb, extent=(zx, zx + zw, zy + zh, zy))
    for _, r in zoom_nuclei.iterrows():
        b.plot(r["polygon_x"], r["polygon_y"], color=class_color(r["class"]), lw=0.9)
    b.set_xlim(zx, zx + zw)
    b.set_ylim(zy + zh, zy)
    b.set_title(f"{zw * mpp:.0f} x {zh * mpp:.0f} microns at full resolution: traced outlines", fontsize=9)
    for ax in (a, b):
        ax.set_axis_off()
    fig.tight_layout()
    return fig
