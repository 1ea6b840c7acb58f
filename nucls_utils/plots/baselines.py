"""Figures of the baselines (notebook 08): the supervision ladder and Cyclic Learning's cycles."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

__all__ = ["plot_supervision_ladder", "plot_cyclic_cycles"]

_METRICS = (("AP@.5", "AP@.5"), ("pixel Dice", "pixel Dice"), ("AJI", "AJI"), ("PQ", "PQ"))
_TRUTH_COLOURS = {"corrected": "#4c72b0", "generator": "#55a868", "real sample": "#c44e52"}


def plot_supervision_ladder(ladder: pd.DataFrame, metrics: Sequence[tuple[str, str]] = _METRICS) -> plt.Figure:
    """One panel per metric: each system (cheapest label left) as bars, one per truth set (the ladder table of
    :func:`nucls_utils.baselines.study.ladder_table`, metrics in %)."""
    systems = list(dict.fromkeys(ladder["system"]))
    labels = dict(zip(ladder["system"], ladder["label"], strict=False))
    truths = list(dict.fromkeys(ladder["truth"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 4.2), sharey=True)
    axes = np.atleast_1d(axes)
    width = 0.8 / max(len(truths), 1)
    y = np.arange(len(systems))
    for ax, (col, title) in zip(axes, metrics, strict=True):
        for k, t in enumerate(truths):
            sub = ladder[ladder["truth"] == t].set_index("system").reindex(systems)
            ax.barh(y + (k - (len(truths) - 1) / 2) * width, sub[col].to_numpy(dtype=float), height=width,
                    color=_TRUTH_COLOURS.get(t, "0.5"), label=t)
        ax.set(title=title, xlim=(0, 100), xlabel="%")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, [f"{s}\n({labels.get(s, '')})" for s in systems], fontsize=8)
    axes[0].invert_yaxis()
    axes[-1].legend(title="truth", fontsize=8, loc="lower right")
    fig.suptitle("The supervision ladder: what each kind of label buys (cheapest label at the top)")
    fig.tight_layout()
    return fig


def plot_cyclic_cycles(cycles: pd.DataFrame) -> plt.Figure:
    """Cyclic Learning's scores after each cycle, per truth set, with the pseudo masks' Dice on the training FOVs."""
    metrics = (("ap50", "AP@.5"), ("dice", "pixel Dice"), ("aji", "AJI"), ("pq", "PQ"), ("pseudo_dice",
                                                                                       "pseudo masks' Dice (train)"))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.4), sharey=True)
    for ax, (col, title) in zip(axes, metrics, strict=True):
        for t, sub in cycles.groupby("truth", sort=False):
            m = sub.groupby("cycle")[col].mean()
            ax.plot(m.index, 100 * m.to_numpy(), marker="o", color=_TRUTH_COLOURS.get(t, "0.5"), label=t)
        ax.set(title=title, xlabel="cycle", ylim=(0, 100))
        ax.set_xticks(sorted(cycles["cycle"].unique()))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("%")
    axes[0].legend(fontsize=8)
    fig.suptitle("Cyclic Learning: each cycle's back end on the test FOVs")
    fig.tight_layout()
    return fig
