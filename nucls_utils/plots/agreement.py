"""Figures of the inter-rater analyses (notebooks 03 and 04): paper Figures 2, 3a-e, 4b-e, 5a-d, S3, S5, S7, S8, S16.

Every function takes the tidy tables of :mod:`nucls_utils.interrater.analysis` and returns a matplotlib Figure;
the notebooks draw and save them with :func:`nucls_utils.figures.draw`. Colours: classes from
:mod:`nucls_utils.taxonomy`; participant groups and multi-rater sets from :data:`GROUP_COLORS` and
:data:`SET_COLORS`. Call :func:`nucls_utils.plots.set_style` once first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

from .. import taxonomy as tx

__all__ = ["GROUP_COLORS", "SET_COLORS", "plot_clustering_example", "plot_detection_accuracy", "plot_np_label_roc",
           "plot_confusion", "plot_mds", "plot_redundancy", "plot_clicked_share", "plot_boundary_accuracy",
           "plot_self_agreement", "plot_roc_by_set", "plot_anchors_and_alpha", "plot_constraint_effect",
           "plot_alpha_by_iou", "plot_pairwise_kappa", "plot_super_class_accuracy", "plot_boundaries_s5",
           "plot_confusions_s7", "plot_ease_of_detection", "plot_dendrogram_example", "plot_truth_vs_generator",
           "no_data_figure"]

GROUP_COLORS: dict[str, str] = {"SP": "#8b0000", "JP": "#e41a1c", "NP": "#1f5fd1", "Ps": "#e41a1c",
                                "NPs": "#1f5fd1"}
SET_COLORS: dict[str, str] = {"U-control": "#7f7f7f", "B-control": "#e08a00", "BT-control": "#a65628",
                              "E": "#2e7d32"}
_PAIR_COLORS = {"Ps-Ps": "#e41a1c", "Ps-NPs": "#9c4fa0", "NPs-NPs": "#1f5fd1"}
_IOU_COLORS = {0.25: "#1f5fd1", 0.5: "#e08a00", 0.75: "#e41a1c"}


def _class_color(name: object) -> str:
    return tx.class_color(name) or "#777777"


def _pn(group: str) -> str:
    return "Ps" if group in ("SP", "JP", "Ps") else "NPs"


def _box_strip(ax: plt.Axes, groups: Mapping[str, np.ndarray], colors: Sequence[str], rng_seed: int = 0) -> None:
    """Boxplots with the individual points jittered on top."""
    rng = np.random.default_rng(rng_seed)
    labels = list(groups)
    data = [np.asarray(groups[k], dtype=float)[~np.isnan(np.asarray(groups[k], dtype=float))] for k in labels]
    pos = np.arange(len(labels))
    bp = ax.boxplot([d if len(d) else [np.nan] for d in data], positions=pos, widths=0.55, showfliers=False,
                    patch_artist=True)
    for patch, c in zip(bp["boxes"], colors, strict=True):
        patch.set_facecolor(c)
        patch.set_alpha(0.25)
        patch.set_edgecolor(c)
    for med in bp["medians"]:
        med.set_color("k")
    for i, (d, c) in enumerate(zip(data, colors, strict=True)):
        ax.scatter(i + rng.uniform(-0.15, 0.15, len(d)), d, s=12, color=c, alpha=0.8, zorder=3)
    ax.set_xticks(pos)
    ax.set_xticklabels(labels, fontsize=8)


def _pstars(p: float) -> str:
    if not np.isfinite(p):
        return "n/a"
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


def no_data_figure(message: str) -> plt.Figure:
    """A small figure that only says why a panel could not be made."""
    fig, ax = plt.subplots(figsize=(5, 1.4))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True, fontsize=9)
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Figure 2 and S16: clustering


def _draw_box(ax, box, color, lw=1.0, ls="-", alpha=1.0):
    x0, y0, x1, y1 = box
    ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=color, lw=lw, ls=ls, alpha=alpha))


def plot_clustering_example(ex: dict) -> plt.Figure:
    """Fig 2a: one FOV's boxes from every participant (one colour per anchor) and the anchors they cluster into,
    coloured by the inferred P-truth (dashed grey: not a nucleus by the P-truth)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.4))
    img, boxes, anchors = ex["image"], ex["boxes"], ex["anchors"]
    ext = (0, max(boxes["xmax"].max(), anchors["xmax"].max()) + 2, max(boxes["ymax"].max(),
                                                                       anchors["ymax"].max()) + 2, 0)
    for ax in axes:
        if img is not None:
            ax.imshow(img)
        else:
            ax.set_xlim(ext[0], ext[1])
            ax.set_ylim(ext[2], ext[3])
            ax.set_facecolor("#f4f4f4")
        ax.set_xticks([])
        ax.set_yticks([])
    palette = plt.get_cmap("tab20")
    codes = {a: i for i, a in enumerate(anchors.index)}
    for _, r in boxes.iterrows():
        _draw_box(axes[0], (r.xmin, r.ymin, r.xmax, r.ymax), palette(codes.get(r.anchor_id, 0) % 20), lw=0.6,
                  alpha=0.8)
    axes[0].set_title(f"a. {len(boxes)} boxes of {boxes['participant'].nunique()} participants ({ex['evalset']});\n"
                      "colour = the anchor each box was clustered into", fontsize=9)
    present = []
    for _, r in anchors.iterrows():
        if r.ptruth is None or (isinstance(r.ptruth, float) and np.isnan(r.ptruth)):
            _draw_box(axes[1], (r.xmin, r.ymin, r.xmax, r.ymax), "#9e9e9e", lw=0.8, ls="--")
        else:
            _draw_box(axes[1], (r.xmin, r.ymin, r.xmax, r.ymax), _class_color(r.ptruth), lw=1.8)
            present.append(r.ptruth)
            axes[1].text(r.xmin, r.ymin - 1, str(int(r.n_boxes_in_set)), fontsize=5, color="k")
    handles = [Patch(color=_class_color(c), label=c) for c in dict.fromkeys(present)]
    handles.append(Patch(facecolor="white", edgecolor="#9e9e9e", ls="--", label="not a nucleus (P-truth)"))
    axes[1].legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[1].set_title(f"b. {len(anchors)} anchors (medoid boxes), colour = EM P-truth ({ex['level']});\n"
                      "number = boxes clustered into it", fontsize=9)
    fig.suptitle(f"Constrained agglomerative clustering, FOV {ex['fovname'][:40]}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_dendrogram_example(de: dict, image: np.ndarray | None = None) -> plt.Figure:
    """Fig S16: the complete-linkage dendrogram of a few boxes (distance 1 - IOU), the cut at 1 - min_iou, the
    constrained clusters (leaf colours) and where the constraint split a cluster (boxes drawn dashed)."""
    from scipy.cluster.hierarchy import dendrogram

    fig = plt.figure(figsize=(13, 4.8))
    gs = fig.add_gridspec(1, 3, width_ratios=[1.6, 1.0, 1.1])
    ax = fig.add_subplot(gs[0])
    labels, free = de["labels"], de["labels_unconstrained"]
    palette = plt.get_cmap("tab10")
    leaf_names = [f"{p}" for p in de["participants"]]
    d = dendrogram(de["linkage"], ax=ax, labels=leaf_names, color_threshold=0, above_threshold_color="#555555",
                   leaf_font_size=7)
    for tick, leaf in zip(ax.get_xticklabels(), d["leaves"], strict=True):
        tick.set_color(palette(labels[leaf] % 10))
    t = 1 - de["min_iou"]
    ax.axhline(t, color="#e41a1c", ls="--", lw=1)
    ax.text(ax.get_xlim()[1], t, f"  cut t* = 1 - {de['min_iou']:g}", color="#e41a1c", va="bottom", ha="right",
            fontsize=8)
    ax.set_ylabel("1 - IOU (complete linkage)")
    ax.set_title("a. dendrogram; leaf colour = constrained cluster", fontsize=9)
    ax2 = fig.add_subplot(gs[1])
    x0, y0, x1, y1 = de["window"]
    if image is not None:
        ax2.imshow(image)
    ax2.set_xlim(x0, x1)
    ax2.set_ylim(y1, y0)
    split = np.zeros(len(labels), bool)
    for c in np.unique(free):
        idx = np.flatnonzero(free == c)
        split[idx] = len(np.unique(labels[idx])) > 1
    for k, box in enumerate(de["boxes"]):
        _draw_box(ax2, box, palette(labels[k] % 10), lw=1.2, ls="--" if split[k] else "-")
    ax2.set_xticks([])
    ax2.set_yticks([])
    ax2.set_title("b. the boxes (dashed: in a cluster that\nthe constraint split)", fontsize=9)
    ax3 = fig.add_subplot(gs[2])
    ax3.axis("off")
    steps = ["1. Distance between two boxes: 1 - IOU.",
             "2. Complete-linkage dendrogram of all boxes of a FOV",
             "   (every participant, every set).",
             "3. Cut at t* = 1 - min IOU: every pair of boxes in a",
             "   cluster overlaps with IOU > min IOU.",
             "4. Don't-link: boxes of one participant in one set are",
             "   different nuclei. In a cluster holding several, the",
             "   first (leaf order) stays; the others move down to",
             "   the highest sub-node without a box of theirs, or",
             "   become singletons.",
             "5. Anchor = medoid box (highest mean IOU to the",
             "   others; pathologists' U-control boxes first).",
             f"Here: {len(labels)} boxes, {len(np.unique(free))} clusters without the",
             f"constraint, {len(np.unique(labels))} with it."]
    ax3.text(0, 1, "\n".join(steps), va="top", fontsize=8, family="monospace")
    ax3.set_title("c. the algorithm", fontsize=9)
    fig.suptitle(f"Constrained agglomerative clustering (FOV {de['fovname'][:30]})", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Figure 3


def plot_detection_accuracy(acc: pd.DataFrame, np_det: dict, title: str = "") -> plt.Figure:
    """Fig 3a: each participant's detection precision and recall against the P-truth, and the NP-label PR curve."""
    fig, ax = plt.subplots(figsize=(5.6, 4.8))
    for g, marker in (("SP", "s"), ("JP", "^"), ("NP", "o")):
        sub = acc[acc["group"] == g]
        ax.scatter(sub["recall"], sub["precision"], s=30, marker=marker, color=GROUP_COLORS[g], alpha=0.85,
                   label=f"{g} (n={len(sub)})", zorder=3)
    if len(np_det.get("recall", [])):
        ax.plot(np_det["recall"], np_det["precision"], color="k", lw=1.5,
                label=f"NP-label (EM), AP = {np_det['ap']:.2f}")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(title or "a. Detection vs inferred P-truth", fontsize=10)
    fig.tight_layout()
    return fig


def _roc_panel(ax: plt.Axes, roc: dict, title: str) -> None:
    curves = roc.get("curves", {})
    for c in roc.get("classes", []):
        if c in curves:
            ax.plot(*curves[c], color=_class_color(c), lw=1, alpha=0.8,
                    label=f"{c} ({roc['per_class'][c]:.2f})")
    if "micro" in curves:
        ax.plot(*curves["micro"], color="k", lw=2, label=f"micro ({roc['micro']:.2f})")
    if "macro" in curves:
        ax.plot(*curves["macro"], color="k", lw=2, ls=":", label=f"macro ({roc['macro']:.2f})")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"{title} (n={roc.get('n', 0)})", fontsize=9)
    ax.legend(fontsize=6.5, loc="lower right")


def plot_np_label_roc(rocs: Mapping[str, dict], title: str = "b. NP-label classification vs P-truth") -> plt.Figure:
    """Fig 3b / S3: NP-label ROC curves per class with micro and macro averages, one panel per class level."""
    fig, axes = plt.subplots(1, len(rocs), figsize=(5.2 * len(rocs), 4.6), squeeze=False)
    for ax, (level, roc) in zip(axes[0], rocs.items(), strict=True):
        _roc_panel(ax, roc, f"{level} classes")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_confusion(conf: pd.DataFrame, title: str = "", ax: plt.Axes | None = None, fmt: str = "{:.2f}",
                   cmap: str = "Blues") -> plt.Figure:
    """A labelled heat map of a confusion table (Fig 3c, S7)."""
    fig = ax.figure if ax is not None else plt.figure(figsize=(0.6 * conf.shape[1] + 3, 0.45 * conf.shape[0] + 2))
    ax = ax or fig.add_subplot(111)
    vals = conf.to_numpy(dtype=float)
    ax.imshow(vals, cmap=cmap, aspect="auto", vmin=0, vmax=np.nanmax(vals) if vals.size else 1)
    ax.set_xticks(range(conf.shape[1]))
    ax.set_xticklabels(conf.columns, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(conf.shape[0]))
    ax.set_yticklabels(conf.index, fontsize=7)
    top = np.nanmax(vals) if vals.size else 1
    for i in range(vals.shape[0]):
        for j in range(vals.shape[1]):
            v = vals[i, j]
            if np.isfinite(v) and v >= (0.01 if fmt == "{:.2f}" else 1):
                ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 * top else "k")
    ax.set_xlabel(conf.columns.name or "given")
    ax.set_ylabel(conf.index.name or "truth")
    if title:
        ax.set_title(title, fontsize=9)
    if ax.figure is fig and len(fig.axes) == 1:
        fig.tight_layout()
    return fig


def plot_mds(mds: pd.DataFrame, title: str = "d. MDS of pairwise classification agreement (1 - kappa)"
             ) -> plt.Figure:
    """Fig 3d: participants in the 2-D MDS space of 1 - kappa, coloured by group."""
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for g, marker in (("SP", "s"), ("JP", "^"), ("NP", "o")):
        sub = mds[mds["group"] == g]
        ax.scatter(sub["x"], sub["y"], s=36, marker=marker, color=GROUP_COLORS[g], label=g, alpha=0.85)
        for _, r in sub.iterrows():
            ax.text(r.x, r.y, " " + r.participant.split(".")[-1], fontsize=5.5, color=GROUP_COLORS[g])
    ps = mds[mds["group"].isin(("SP", "JP"))]
    if len(ps) >= 2:
        from matplotlib.patches import Ellipse

        cx, cy = ps["x"].mean(), ps["y"].mean()
        w = 2.5 * max(ps["x"].std(), 1e-3) * 2
        h = 2.5 * max(ps["y"].std(), 1e-3) * 2
        ax.add_patch(Ellipse((cx, cy), w, h, fill=False, color=GROUP_COLORS["Ps"], ls="--", lw=1))
    ax.set_xlabel("MDS 1")
    ax.set_ylabel("MDS 2")
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_redundancy(summary: pd.DataFrame, constant: pd.DataFrame | None = None, title: str = "",
                    per_class_prefix: str = "auroc_") -> plt.Figure:
    """Fig 3e: NP-label accuracy against the number of NPs per FOV: median and interquartile band of every
    realisation, and (points) the realisations that hold the total number of NPs constant."""
    overall = [m for m in ("det_f1", "mcc_pooled_ovr", "auroc_micro", "auroc_macro") if m in set(summary["metric"])]
    per_class = [m for m in summary["metric"].unique() if m.startswith(per_class_prefix) and m not in overall]
    names = {"det_f1": "detection F1", "mcc_pooled_ovr": "classification MCC", "auroc_micro": "AUROC (micro)",
             "auroc_macro": "AUROC (macro)"}
    n = len(overall) + (1 if per_class else 0)
    fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.7), squeeze=False)
    for ax, m in zip(axes[0], overall, strict=False):
        sub = summary[summary["metric"] == m]
        ax.fill_between(sub["k"], sub["q25"], sub["q75"], color="#1f5fd1", alpha=0.2, lw=0)
        ax.plot(sub["k"], sub["median"], color="#1f5fd1", lw=1.6, label="all realisations")
        if constant is not None and len(constant):
            c = constant[constant["metric"] == m]
            ax.plot(c["k"], c["median"], "o", color="k", ms=3.5, label="total NPs held constant")
        ax.set_xlabel("NPs per FOV")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(names.get(m, m), fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="lower right")
    if per_class:
        ax = axes[0, -1]
        for m in per_class:
            sub = summary[summary["metric"] == m]
            cls = m[len(per_class_prefix):]
            ax.plot(sub["k"], sub["median"], color=_class_color(cls), lw=1.6, label=cls)
            ax.fill_between(sub["k"], sub["q25"], sub["q75"], color=_class_color(cls), alpha=0.12, lw=0)
        ax.set_xlabel("NPs per FOV")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("AUROC per super-class", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(title or "e. Accuracy of the inferred NP-label vs NPs per FOV", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Figure 4


def _strips_by_set_and_group(ax: plt.Axes, frame: pd.DataFrame, sets: Sequence[str], value: str, colour_of) -> None:
    """Box-and-strip of ``frame[value]`` for each set of ``sets`` present in ``frame['evalset']`` and each of Ps and
    NPs (``frame['group']``), in that order, coloured by ``colour_of(set, group)``."""
    groups, colors = {}, []
    for s in [s for s in sets if s in set(frame["evalset"])]:
        for g in ("Ps", "NPs"):
            sub = frame[(frame["evalset"] == s) & (frame["group"].map(_pn) == g)]
            groups[f"{s}\n{g}"] = sub[value].to_numpy()
            colors.append(colour_of(s, g))
    if groups:
        _box_strip(ax, groups, colors)


def plot_clicked_share(cs: pd.DataFrame, tests: pd.DataFrame | None = None) -> plt.Figure:
    """Fig 4b: per participant, the percent of their detections that were clicked suggestions, per set."""
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    _strips_by_set_and_group(ax, cs, ("B-control", "E"), "psegmented", lambda s, g: SET_COLORS[s])
    ax.set_ylabel("clicked suggestions (% of detections)")
    note = ""
    if tests is not None and len(tests):
        note = "; ".join(f"{r.group}: p={r.pvalue:.2g} {_pstars(r.pvalue)}" for r in tests.itertuples())
    ax.set_title("b. Segmentations obtained by clicking suggestions" + (f"\nE vs B-control (Wilcoxon) {note}"
                                                                       if note else ""), fontsize=9)
    fig.tight_layout()
    return fig


def plot_boundary_accuracy(bt: pd.DataFrame) -> plt.Figure:
    """Fig 4c: DICE of the clicked algorithmic boundaries against the true boundaries, by the boundary EM's
    decision, per set."""
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    groups, colors = {}, []
    for s in [s for s in ("B-control", "E") if s in set(bt["evalset"])]:
        for dec, name in ((True, "EM: correct"), (False, "EM: incorrect")):
            sub = bt[(bt["evalset"] == s) & (bt["boundary_correct"] == dec)]
            groups[f"{s}\n{name}"] = 100 * sub["dice"].to_numpy(dtype=float)
            colors.append(SET_COLORS[s] if dec else "#9e9e9e")
    if groups:
        _box_strip(ax, groups, colors)
    ax.set_ylabel("DICE vs true boundary (%)")
    ax.set_title("c. Accuracy of clicked algorithmic boundaries", fontsize=9)
    fig.tight_layout()
    return fig


def plot_self_agreement(sa: pd.DataFrame) -> plt.Figure:
    """Fig 4d: each participant's self-agreement (Cohen's kappa) between U-control and a set with suggestions."""
    fig, ax = plt.subplots(figsize=(5.4, 4.2))
    _strips_by_set_and_group(ax, sa, ("E", "B-control"), "kappa", lambda s, g: GROUP_COLORS[g])
    for lo in (0.2, 0.4, 0.6, 0.8):
        ax.axhline(lo, color="#dddddd", lw=0.8, zorder=0)
    ax.set_ylabel("self-agreement (Cohen's kappa)")
    ax.set_xlabel("U-control vs ...")
    ax.set_title("d. Self-agreement with and without suggestions", fontsize=9)
    fig.tight_layout()
    return fig


def plot_roc_by_set(rocs: Mapping[str, dict], boot: pd.DataFrame, acc: pd.DataFrame | None = None,
                    tests: pd.DataFrame | None = None) -> plt.Figure:
    """Fig 4e: NP-label ROC (micro-average) per set with bootstrap intervals; with ``acc``, also each
    participant's detection F1 and classification MCC per set."""
    n = 3 if acc is not None else 1
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.3), squeeze=False)
    ax = axes[0, 0]
    b = boot.set_index("evalset")
    for s, roc in rocs.items():
        if "micro" not in roc.get("curves", {}):
            continue
        ci = ""
        if s in b.index and "micro_low" in b.columns and np.isfinite(b.at[s, "micro_low"]):
            ci = f" [{b.at[s, 'micro_low']:.2f}, {b.at[s, 'micro_high']:.2f}]"
        ax.plot(*roc["curves"]["micro"], color=SET_COLORS.get(s, "k"), lw=1.8,
                label=f"{s}: {roc['micro']:.2f}{ci}")
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=0.8, ls="--")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(fontsize=7, loc="lower right", title="micro AUROC [5-95 %]", title_fontsize=7)
    title = "e. NP-label vs P-truth, by set"
    if tests is not None and len(tests):
        r = tests.iloc[0]
        title += f"\n{r.set_a} vs {r.set_b}: Mann-Whitney p={r.pvalue:.2g} {_pstars(r.pvalue)}"
    ax.set_title(title, fontsize=9)
    if acc is not None:
        sets = [s for s in ("U-control", "B-control", "E") if s in set(acc["evalset"])]
        for ax, metric, name in ((axes[0, 1], "f1", "detection F1"), (axes[0, 2], "mcc_pooled_ovr", "classification MCC")):
            groups, colors = {}, []
            for g in ("Ps", "NPs"):
                for s in sets:
                    sub = acc[(acc["evalset"] == s) & (acc["group"].map(_pn) == g)]
                    groups[f"{g}\n{s}"] = sub[metric].to_numpy()
                    colors.append(SET_COLORS[s])
            _box_strip(ax, groups, colors)
            ax.set_ylabel(name)
            ax.set_title(f"participants' {name} vs the set's P-truth", fontsize=9)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Figure 5


def plot_anchors_and_alpha(counts: pd.DataFrame, alpha: pd.DataFrame, level: str = "main") -> plt.Figure:
    """Fig 5a: anchor proposals and pathologists' classification alpha against the minimum number of pathologists
    who detected the anchor, per clustering threshold."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
    for iou, sub in counts.groupby("min_iou"):
        c = _IOU_COLORS.get(float(iou), "k")
        axes[0].plot(sub["min_detections"], sub["n_proposals"], "-o", ms=3, color=c, label=f"IOU {iou:g}: proposals")
        axes[0].plot(sub["min_detections"], sub["n_ptruth"], "--", color=c, label=f"IOU {iou:g}: P-truth nuclei")
    a = alpha[(alpha["raters"] == "Ps") & (alpha["level"] == level)]
    for iou, sub in a.groupby("min_iou"):
        axes[1].plot(sub["min_detections"], sub["alpha"], "-o", ms=3, color=_IOU_COLORS.get(float(iou), "k"),
                     label=f"IOU {iou:g}")
    for ax in axes:
        ax.axvspan(-0.5, 1.5, color="#eeeeee", zorder=0)
        ax.set_xlabel("min. pathologists who detected the anchor")
    axes[0].set_yscale("log")
    axes[0].set_ylabel("anchors")
    axes[0].legend(fontsize=6.5)
    axes[1].set_ylabel(f"Krippendorff alpha, Ps, {level} classes")
    axes[1].legend(fontsize=7)
    axes[0].set_title("a. Anchor proposals vs clustering threshold", fontsize=9)
    axes[1].set_title("agreement on the P-truth nuclei", fontsize=9)
    fig.tight_layout()
    return fig


def plot_constraint_effect(summary: pd.DataFrame, crosstab: pd.DataFrame) -> plt.Figure:
    """Fig 5b: constrained vs unconstrained clustering: anchors and (synthetic) recall of overlapping nuclei; and
    how the P-truth of matched anchors changes."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    ax = axes[0]
    s = summary.set_index("clustering")
    if "recall_overlapping" in s.columns:
        cols = ["recall_overlapping", "recall_isolated", "recall"]
        names = ["overlapping\nnuclei", "isolated\nnuclei", "all"]
        x = np.arange(len(cols))
        for i, (name, row) in enumerate(s.iterrows()):
            ax.bar(x + (i - 0.5) * 0.38, [row[c] for c in cols], width=0.38, label=name,
                   color=["#1f5fd1", "#bdbdbd"][i])
        ax.set_xticks(x)
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel("true nuclei found by P-truth anchors (%)")
        ax.set_ylim(0, 105)
        ax.legend(fontsize=7)
        ax.set_title("b. Detection of overlapping nuclei (generator truth)\n" + ", ".join(
            f"{n}: {int(r.n_anchors)} anchors" for n, r in s.iterrows()), fontsize=9)
    else:
        ax.bar(s.index, s["n_ptruth"], color=["#1f5fd1", "#bdbdbd"][:len(s)])
        ax.set_ylabel("P-truth nuclei")
        ax.set_title("b. P-truth nuclei, constrained vs unconstrained", fontsize=9)
    plot_confusion(crosstab, "P-truth of matched anchors: constrained (rows) vs unconstrained", ax=axes[1],
                   fmt="{:.0f}", cmap="Greens")
    fig.tight_layout()
    return fig


def plot_alpha_by_iou(alpha: pd.DataFrame) -> plt.Figure:
    """Fig 5c: Krippendorff's alpha (classification) against the minimum number of pathologist detections, per
    clustering threshold: Ps and NPs (rows) x main and super classes (columns)."""
    raters = [r for r in ("Ps", "NPs") if r in set(alpha["raters"])]
    levels = [lv for lv in ("main", "super") if lv in set(alpha["level"])]
    fig, axes = plt.subplots(len(raters), len(levels), figsize=(4.6 * len(levels), 3.4 * len(raters)),
                             squeeze=False, sharey=True)
    for i, r in enumerate(raters):
        for j, lv in enumerate(levels):
            ax = axes[i, j]
            sub = alpha[(alpha["raters"] == r) & (alpha["level"] == lv)]
            for iou, d in sub.groupby("min_iou"):
                ax.plot(d["min_detections"], d["alpha"], "-o", ms=3, color=_IOU_COLORS.get(float(iou), "k"),
                        label=f"IOU {iou:g}")
            ax.axvspan(-0.5, 1.5, color="#eeeeee", zorder=0)
            ax.set_title(f"{r}, {lv} classes", fontsize=9)
            ax.set_xlabel("min. pathologists who detected the anchor")
            if j == 0:
                ax.set_ylabel("Krippendorff alpha")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("c. Classification agreement vs clustering threshold", fontsize=10)
    fig.tight_layout()
    return fig


def plot_pairwise_kappa(pairs: pd.DataFrame, tests: pd.DataFrame | None = None, mode: str = "classification"
                        ) -> plt.Figure:
    """Fig 5d: pairwise Cohen's kappa, Ps-Ps / Ps-NPs / NPs-NPs, per set."""
    sets = [s for s in ("E", "U-control", "B-control") if s in set(pairs["evalset"])]
    fig, axes = plt.subplots(1, len(sets), figsize=(4.4 * len(sets), 4.0), squeeze=False, sharey=True)
    for ax, s in zip(axes[0], sets, strict=True):
        sub = pairs[(pairs["evalset"] == s) & (pairs["mode"] == mode)]
        groups = {g: sub.loc[sub["pair_group"] == g, "kappa"].to_numpy() for g in _PAIR_COLORS}
        _box_strip(ax, groups, list(_PAIR_COLORS.values()))
        for lo in (0.2, 0.4, 0.6, 0.8):
            ax.axhline(lo, color="#dddddd", lw=0.8, zorder=0)
        title = f"{s}"
        if tests is not None and len(tests):
            t = tests[(tests["evalset"] == s) & (tests["mode"] == mode)]
            title += "\n" + ", ".join(f"{r.group_a} vs {r.group_b} {_pstars(r.pvalue)}" for r in t.itertuples())
        ax.set_title(title, fontsize=8)
    axes[0, 0].set_ylabel(f"Cohen's kappa ({mode})")
    fig.suptitle("d. Pairwise agreement at IOU 0.25", fontsize=10)
    fig.tight_layout()
    return fig


# ---------------------------------------------------------------------------------------------------------------
# Supplementary figures


def plot_super_class_accuracy(acc_main: pd.DataFrame, acc_super: pd.DataFrame, roc_super: dict) -> plt.Figure:
    """Fig S3: participants' classification MCC with main vs super classes (lines join a participant), and the
    NP-label ROC with super-classes."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.3))
    ax = axes[0]
    m = acc_main.set_index("participant")["mcc_pooled_ovr"]
    s = acc_super.set_index("participant")["mcc_pooled_ovr"]
    both = m.index.intersection(s.index)
    groups = acc_main.set_index("participant")["group"]
    for p in both:
        ax.plot([0, 1], [m[p], s[p]], "-o", ms=3, color=GROUP_COLORS[groups[p]], alpha=0.6, lw=0.8)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["main classes", "super-classes"])
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel("classification MCC vs P-truth")
    ax.legend(handles=[Patch(color=GROUP_COLORS[g], label=g) for g in ("SP", "JP", "NP")], fontsize=7)
    ax.set_title("a. Participants, main vs super-classes", fontsize=9)
    _roc_panel(axes[1], roc_super, "b. NP-label, super-classes")
    fig.tight_layout()
    return fig


def plot_boundaries_s5(share: pd.DataFrame, bt: pd.DataFrame) -> plt.Figure:
    """Fig S5: a. per FOV, the share of nuclei whose suggested boundary the EM judged correct, B-control vs E
    (circle size = nuclei in the FOV); b. DICE of boundaries judged correct in both sets."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    ax = axes[0]
    wide = share.pivot(index="fovname", columns="evalset", values="percent_good")
    size = share.groupby("fovname")["n_nuclei"].max()
    if {"B-control", "E"} <= set(wide.columns):
        ax.scatter(wide["B-control"], wide["E"], s=8 + 2 * size.reindex(wide.index), alpha=0.6, color="#2e7d32")
        ax.plot([0, 100], [0, 100], color="#999999", ls="--", lw=1)
        ax.set_xlabel("B-control: nuclei with a good boundary (%)")
        ax.set_ylabel("E: nuclei with a good boundary (%)")
    else:
        groups = {s: share.loc[share["evalset"] == s, "percent_good"].to_numpy() for s in sorted(set(
            share["evalset"]))}
        _box_strip(ax, groups, [SET_COLORS.get(s, "k") for s in groups])
        ax.set_ylabel("nuclei with a good boundary (%)")
    ax.set_title("a. Nuclei per FOV with a boundary judged correct", fontsize=9)
    ax = axes[1]
    ok = bt[bt["boundary_correct"] == True]  # noqa: E712 - nullable column
    groups = {s: 100 * ok.loc[ok["evalset"] == s, "dice"].dropna().to_numpy() for s in ("B-control", "E")
              if s in set(ok["evalset"])}
    if groups:
        _box_strip(ax, groups, [SET_COLORS[s] for s in groups])
    ax.axhline(80, color="#999999", ls="--", lw=1)
    ax.set_ylabel("DICE vs true boundary (%)")
    ax.set_title("b. Boundaries judged correct: DICE", fontsize=9)
    fig.tight_layout()
    return fig


def plot_confusions_s7(conf: Mapping[str, pd.DataFrame], tallies: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Fig S7: a. pooled confusion per group ("of the anchors called X, the fraction truly Y"); b. per true class,
    the mean number of participants giving each label."""
    n = max(len(conf), len(tallies))
    fig, axes = plt.subplots(2, n, figsize=(6.2 * n, 9.5), squeeze=False)
    for j, (who, c) in enumerate(conf.items()):
        plot_confusion(c, f"a. {who}: of anchors called X (column), fraction truly Y", ax=axes[0, j])
    for j, (who, t) in enumerate(tallies.items()):
        plot_confusion(t.drop(columns="n_anchors"), f"b. {who}: participants per anchor giving each label",
                       ax=axes[1, j], fmt="{:.1f}", cmap="Purples")
        axes[1, j].set_xlabel("label given")
        axes[1, j].set_ylabel("P-truth")
    fig.tight_layout()
    return fig


def plot_ease_of_detection(tally: pd.DataFrame, ease: Mapping[str, pd.DataFrame]) -> plt.Figure:
    """Fig S8: a. real nuclei by P-truth class and number of pathologists who detected them; b. percent of each
    class detected by at least x participants (one panel per group)."""
    fig, axes = plt.subplots(1, 1 + len(ease), figsize=(5.2 * (1 + len(ease)), 4.2))
    counts = pd.crosstab(tally["truth"], tally["n_matches_Ps"])
    plot_confusion(counts, "a. nuclei by P-truth class and pathologists who detected them", ax=axes[0],
                   fmt="{:.0f}", cmap="Oranges")
    axes[0].set_xlabel("pathologists who detected it")
    axes[0].set_ylabel("P-truth")
    for ax, (who, e) in zip(axes[1:], ease.items(), strict=True):
        for cls, sub in e.groupby("truth"):
            ax.plot(sub["min_detections"], sub["percent"], "-", color=_class_color(cls), lw=1.6,
                    label=f"{cls} (n={int(sub['n_class'].iloc[0])})")
        ax.set_xlabel(f"detected by at least x {who}")
        ax.set_ylabel("nuclei of the class (%)")
        ax.set_title(f"b. ease of detection by {who}", fontsize=9)
        ax.legend(fontsize=6.5)
    fig.tight_layout()
    return fig


def plot_truth_vs_generator(tvg: pd.DataFrame, conf: pd.DataFrame, level: str = "super") -> plt.Figure:
    """Synthetic cohort: EM and majority vote against the generator's truth, per set and group; and the P-truth's
    confusion with the generator's classes."""
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), gridspec_kw={"width_ratios": [1, 1, 1.2]})
    for ax, metric, name in ((axes[0], "label_accuracy", "label accuracy (class or not a nucleus)"),
                             (axes[1], "class_accuracy", "class accuracy on true nuclei")):
        sub = tvg[(tvg["metric"] == metric) & (tvg["level"] == level)]
        keys = [(s, w) for s in ("U-control", "B-control", "E") for w in ("Ps", "NPs")
                if ((sub["evalset"] == s) & (sub["who"] == w)).any()]
        x = np.arange(len(keys))
        for i, (method, color) in enumerate((("EM", "#2e7d32"), ("MV", "#bdbdbd"))):
            vals = [sub[(sub["evalset"] == s) & (sub["who"] == w) & (sub["method"] == method)]["value"].mean()
                    for s, w in keys]
            ax.bar(x + (i - 0.5) * 0.38, 100 * np.asarray(vals), width=0.38, color=color, label=method)
        ax.set_xticks(x)
        ax.set_xticklabels([f"{s}\n{w}" for s, w in keys], fontsize=7)
        lo = 100 * np.nanmin(sub["value"]) if len(sub) else 0
        ax.set_ylim(max(0, lo - 10), 100)
        ax.set_ylabel(f"{name} (%)")
        ax.set_title(f"{name}, {level} classes", fontsize=9)
        ax.legend(fontsize=7)
    plot_confusion(conf, "P-truth (E, EM of Ps) vs generator class", ax=axes[2], fmt="{:.0f}", cmap="Greens")
    fig.tight_layout()
    return fig
