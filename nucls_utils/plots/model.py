"""Figures of the NuCLS model (notebooks 05 and 06): training curves (Fig. S10), confusion of matched nuclei
(Fig. S11) and predictions on test FOVs (Fig. 6d)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .. import taxonomy as tx

if TYPE_CHECKING:  # the model's types, without importing torch for a figure
    from ..model.data import FovSample
    from ..model.detections import Detections

__all__ = ["plot_training_curves", "plot_confusions", "plot_predictions"]


def plot_training_curves(history: pd.DataFrame, title: str = "Training progress (fold 1)",
                         freeze_at: int | None = None) -> plt.Figure:
    """Fig. S10: loss terms (running mean) and test metrics vs gradient updates."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    h = history[history["loss"].notna()] if "loss" in history else history.iloc[:0]
    win = max(1, len(h) // 30)
    for col in [c for c in h.columns if c.startswith("loss")]:
        axes[0].plot(h["iteration"], h[col].rolling(win, min_periods=1).mean(), label=col, lw=1.5 if col == "loss" else 1)
    axes[0].set(xlabel="gradient updates", ylabel=f"loss (running mean of {win})", yscale="log", title="losses")
    axes[0].legend(fontsize=7)
    eval_cols = [c for c in history.columns if c.startswith("eval_")]
    ev = history[history[eval_cols].notna().any(axis=1)] if eval_cols else history.iloc[:0]
    for col in eval_cols:
        axes[1].plot(ev["iteration"], ev[col], marker="o", label=col.removeprefix("eval_"))
    axes[1].set(xlabel="gradient updates", ylabel="held-out metric", ylim=(0, 1), title="test fold")
    if eval_cols:
        axes[1].legend(fontsize=7)
    for ax in axes:
        if freeze_at:
            ax.axvline(freeze_at, color="grey", ls="--", lw=1)
    fig.suptitle(title + (" (dashed: detection frozen)" if freeze_at else ""))
    fig.tight_layout()
    return fig


def plot_confusions(pairs: dict[str, pd.DataFrame], level: str = "main") -> plt.Figure:
    """Fig. S11: row-normalised confusion matrices of matched nuclei (true class rows, predicted columns)."""
    import seaborn as sns

    fig, axes = plt.subplots(1, len(pairs), figsize=(6.2 * len(pairs), 5.4), squeeze=False)
    order = [c for c in (tx.MAIN_CLASSES if level == "main" else tx.SUPER_CLASSES) if c != tx.AMBIGUOUS]
    for ax, (title, df) in zip(axes[0], pairs.items(), strict=True):
        t = df["true_class" if level == "main" else "true_super"]
        p = df["pred_class" if level == "main" else "pred_super"]
        ct = pd.crosstab(pd.Categorical(t, order), pd.Categorical(p, order), dropna=False)
        frac = ct.div(ct.sum(axis=1).replace(0, np.nan), axis=0)
        sns.heatmap(frac, annot=ct.to_numpy(), fmt="d", cmap="Blues", vmin=0, vmax=1, ax=ax, cbar=False,
                    annot_kws={"fontsize": 7})
        ax.set(xlabel="predicted", ylabel="true", title=f"{title} (n = {int(ct.to_numpy().sum())})")
        ax.tick_params(axis="x", rotation=45, labelsize=7)
        ax.tick_params(axis="y", rotation=0, labelsize=7)
    fig.tight_layout()
    return fig


def plot_predictions(samples: Sequence[FovSample], preds: dict[str, Detections], level: str = "super",
                     n: int = 4, threshold: float = 0.5) -> plt.Figure:
    """Fig. 6d: test FOVs with predicted boundaries coloured by predicted class; truth boxes dashed."""
    from skimage.segmentation import find_boundaries

    samples = list(samples)[:n]
    colors = tx.colors(level)
    fig, axes = plt.subplots(2, len(samples), figsize=(4.2 * len(samples), 8.4), squeeze=False)
    for j, s in enumerate(samples):
        det = preds[s.name]
        det = det.select(det.scores >= threshold)
        axes[0, j].imshow(s.rgb)
        axes[0, j].set_title(s.name.split("_id-")[0], fontsize=8)
        for b, c in zip(s.boxes, s.classes, strict=True):
            name = tx.to_super(c) if level == "super" else c
            axes[0, j].add_patch(plt.Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=1,
                                               ls="--", ec=colors.get(name, "k")))
        overlay = s.rgb.copy()
        inst = det.instance_map(s.rgb.shape[:2], threshold=0.5)
        probs, names = tx.group_probabilities(det.probs, det.classes, level) if level == "super" else \
            (det.probs, list(det.classes))
        lab = np.asarray(names)[probs.argmax(1)] if len(det) else np.array([])
        edge = find_boundaries(inst, mode="inner")
        for k in range(len(det)):
            col = np.array(plt.matplotlib.colors.to_rgb(colors.get(lab[k], "#000000"))) * 255
            overlay[edge & (inst == k + 1)] = col.astype(np.uint8)
        axes[1, j].imshow(overlay)
        axes[1, j].set_title(f"{len(det)} predicted nuclei (objectness >= {threshold})", fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [plt.Line2D([], [], color=c, lw=3, label=k) for k, c in colors.items() if k != tx.AMBIGUOUS]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=8)
    axes[0, 0].set_ylabel("truth (boxes)")
    axes[1, 0].set_ylabel("NuCLS prediction")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig
