"""DTALE's figures: the embedding (Fig 7b-g), the tree overlay (Figs 7e-f, S15), node members, the step-by-step
path (Fig S14) and the simplified tree (Fig 7d)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from .. import taxonomy as tx
from ..dtale.features import short_name
from ..dtale.rules import Rule, decision_path
from ..dtale.tree import _membership, _parents_depths, node_embedding_means, node_members
from ..evaluation import f1_from_counts

__all__ = [
    "plot_embedding", "plot_embedding_panels", "plot_node_members", "plot_simplified_tree", "plot_step_by_step",
    "plot_tree_overlay", "plot_tree_overlays",
]


def _class_colors(classes: Iterable[str]) -> dict[str, str]:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    out, k = {}, 0
    for c in classes:
        known = tx.class_color(c, default=None)
        if known is not None:
            out[c] = known
        else:
            out[c] = cycle[k % len(cycle)]
            k += 1
    return out


def _ordered_classes(labels) -> list[str]:
    present = pd.unique(pd.Series(labels, dtype=object).dropna().astype(str))
    order = [c for c in (*tx.MAIN_CLASSES, *tx.SUPER_CLASSES, *tx.RAW_CLASSES) if c in present]
    return list(dict.fromkeys(order)) + sorted(c for c in present if c not in order)


def _new_ax(ax, figsize=(5.5, 5.0)):
    import matplotlib.pyplot as plt

    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def _disk(ax, embedding: np.ndarray) -> None:
    if np.nanmax(np.abs(embedding)) <= 1.0:  # Poincare disk: draw the boundary circle
        import matplotlib.pyplot as plt

        ax.add_patch(plt.Circle((0, 0), 1.0, fill=False, lw=0.6, color="0.6"))
        ax.set_xlim(-1.03, 1.03)
        ax.set_ylim(-1.03, 1.03)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_embedding(embedding: np.ndarray, labels, *, ax=None, title: str = "", s: float = 3.0,
                   colors: Mapping[str, str] | None = None, legend: bool = True):
    """Scatter of the embedding coloured by class (Fig. 7b, 7g); NaN labels in light grey. Returns the Figure."""
    fig, ax = _new_ax(ax)
    emb = np.asarray(embedding, dtype=float)
    lab = pd.Series(labels, dtype=object).reset_index(drop=True)
    classes = _ordered_classes(lab)
    colors = {**_class_colors(classes), **(colors or {})}
    missing = lab.isna().to_numpy()
    if missing.any():
        ax.scatter(emb[missing, 0], emb[missing, 1], s=s, c="0.85", lw=0, label="unmatched", rasterized=True)
    for c in classes:
        m = (lab == c).to_numpy()
        ax.scatter(emb[m, 0], emb[m, 1], s=s, color=colors[c], lw=0, label=f"{c} ({m.sum()})", rasterized=True)
    _disk(ax, emb)
    if legend:
        ax.legend(markerscale=4, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig


def plot_tree_overlay(tree, X, embedding: np.ndarray, *, highlight: Mapping[str, int] | None = None,
                      labels=None, ax=None, title: str = "", s: float = 2.0):
    """The tree drawn on the embedding (Fig. 7e, S15a/c).

    Each node sits at the mean embedding of the nuclei passing through it; every parent -> child edge is a
    light grey line. ``highlight`` (class -> node, e.g. from :func:`best_nodes`) draws the path root -> node in
    black and marks the node in the class colour. ``labels`` colours the background nuclei (faint).
    """
    fig, ax = _new_ax(ax)
    emb = np.asarray(embedding, dtype=float)
    if labels is not None:
        lab = pd.Series(labels, dtype=object).reset_index(drop=True)
        cmap = _class_colors(_ordered_classes(lab))
        col = [cmap.get(v, "0.85") if isinstance(v, str) else "0.85" for v in lab]
        ax.scatter(emb[:, 0], emb[:, 1], s=s, c=col, lw=0, alpha=0.25, rasterized=True)
    else:
        ax.scatter(emb[:, 0], emb[:, 1], s=s, c="0.85", lw=0, rasterized=True)
    pos = node_embedding_means(tree, X, emb)
    t = tree.tree_
    for a in range(t.node_count):
        for c in (t.children_left[a], t.children_right[a]):
            if c != -1 and np.all(np.isfinite(pos[[a, c]])):
                ax.plot(pos[[a, c], 0], pos[[a, c], 1], color="0.55", lw=0.5, zorder=2)
    ax.scatter(pos[:, 0], pos[:, 1], s=4, c="0.45", zorder=3)
    if highlight:
        cmap = _class_colors(list(highlight))
        for cls, node in highlight.items():
            path = decision_path(tree, int(node)).nodes
            ax.plot(pos[path, 0], pos[path, 1], color="k", lw=1.6, zorder=4)
            ax.scatter(pos[node, 0], pos[node, 1], s=70, c=cmap[cls], edgecolors="k", zorder=5, label=cls)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _disk(ax, emb)
    ax.set_title(title)
    return fig


def plot_node_members(tree, X, embedding: np.ndarray, nodes: Mapping[str, int], *, ax=None, title: str = "",
                      s: float = 3.0):
    """Nuclei that pass through each selected node, coloured by the node's class (Fig. 7f, S15b/d)."""
    fig, ax = _new_ax(ax)
    emb = np.asarray(embedding, dtype=float)
    ax.scatter(emb[:, 0], emb[:, 1], s=s, c="0.88", lw=0, rasterized=True)
    cmap = _class_colors(list(nodes))
    for cls, node in nodes.items():
        m = node_members(tree, X, int(node))
        ax.scatter(emb[m, 0], emb[m, 1], s=s, c=cmap[cls], lw=0, label=f"{cls}: node {node} ({m.sum()})",
                   rasterized=True)
    _disk(ax, emb)
    ax.legend(markerscale=4, fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_title(title)
    return fig


def plot_step_by_step(tree, X, embedding: np.ndarray, node: int, predicted_classes, cls: str, *,
                      mark: Mapping[str, int] | None = None, ncols: int = 4, units: str = "physical",
                      s: float = 2.0, panel_size: float = 3.0):
    """Fig. S14: one panel per node on the path root -> ``node``.

    Panel ``k`` shows all nuclei in light grey and the nuclei that satisfy the first ``k`` rules, coloured by
    the class colour when the model predicted ``cls`` and dark grey otherwise; the title gives the added rule
    and the node's size, precision, recall and F1 for ``cls``. ``mark`` (name -> node, e.g. ``{'representative':
    n1, 'discriminative': n2}``) labels those panels.
    """
    import matplotlib.pyplot as plt

    path = decision_path(tree, node, units=units)
    emb = np.asarray(embedding, dtype=float)
    y = np.asarray(predicted_classes, dtype=object).ravel()
    is_c = y == cls
    P, rows = _membership(tree, X)
    members_all = np.zeros((len(rows), len(path.nodes)), dtype=bool)
    members_all[np.flatnonzero(rows)] = np.asarray(P[:, path.nodes].todense()) > 0
    n_pos = int(is_c[rows].sum())
    color = _class_colors([cls])[cls]
    names = {int(v): k for k, v in (mark or {}).items()}
    n = len(path.nodes)
    nrows = int(np.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, min(ncols, n), figsize=(panel_size * min(ncols, n), panel_size * nrows + 0.4),
                             squeeze=False)
    for k, nd in enumerate(path.nodes):
        ax = axes.flat[k]
        m = members_all[:, k]
        tp = int((m & is_c).sum())
        size = int(m.sum())
        prec = tp / size if size else np.nan
        rec = tp / n_pos if n_pos else np.nan
        f1 = f1_from_counts(tp, size - tp, n_pos - tp, empty=np.nan)
        ax.scatter(emb[:, 0], emb[:, 1], s=s, c="0.9", lw=0, rasterized=True)
        ax.scatter(emb[m & ~is_c, 0], emb[m & ~is_c, 1], s=s, c="0.35", lw=0, rasterized=True)
        ax.scatter(emb[m & is_c, 0], emb[m & is_c, 1], s=s, c=color, lw=0, rasterized=True)
        _disk(ax, emb)
        rule = "all nuclei" if k == 0 else path.rules[k - 1].format(units)
        tag = f" [{names[nd]}]" if nd in names else ""
        ax.set_title(f"{k}. {rule}{tag}\nn={size}  P={prec:.2f}  R={rec:.2f}  F1={f1:.2f}", fontsize=7)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(f"DTALE path to node {node} for {cls}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    return fig


def plot_simplified_tree(tree, nodes: Mapping[str, int] | None = None, *, feature_names=None, stats=None,
                         max_depth: int = 3, units: str = "physical", ax=None, title: str = ""):
    """A readable tree (Fig. 7d).

    With ``nodes`` (label -> node, e.g. ``{'lymphocyte (F1)': 12, 'lymphocyte (P)': 40}``) only the union of the
    paths root -> those nodes is drawn: each edge carries its rule, each selected node its label(s) and, given
    ``stats`` (:func:`node_statistics`) and labels that start with a class name, that class's precision and
    F1. Without ``nodes``, scikit-learn's ``plot_tree`` limited to ``max_depth``.
    """

    if nodes is None:
        from sklearn.tree import plot_tree

        fig, ax = _new_ax(ax, figsize=(14, 6))
        names = list(feature_names) if feature_names is not None else getattr(tree, "dtale_feature_names_", None)
        plot_tree(tree, max_depth=max_depth, feature_names=[short_name(f) for f in names] if names else None,
                  ax=ax, fontsize=6, impurity=False, filled=False)
        ax.set_title(title)
        return fig
    t = tree.tree_
    paths = {lbl: decision_path(tree, int(nd), feature_names, units=units) for lbl, nd in nodes.items()}
    keep = sorted({v for p in paths.values() for v in p.nodes})
    children = {v: [c for c in (t.children_left[v], t.children_right[v]) if c in keep] for v in keep}
    xpos: dict[int, float] = {}
    counter = [0]

    def layout(v):  # leaves of the pruned tree left to right, parents centred over their children
        if not children[v]:
            xpos[v] = counter[0]
            counter[0] += 1
        else:
            for c in children[v]:
                layout(c)
            xpos[v] = float(np.mean([xpos[c] for c in children[v]]))

    layout(0)
    _, depth = _parents_depths(tree)
    width = max(counter[0], 1)
    fig, ax = _new_ax(ax, figsize=(max(6.0, 2.8 * width), 1.2 + 1.1 * (max(depth[keep]) + 1)))
    names = list(feature_names) if feature_names is not None else (
        getattr(tree, "dtale_feature_names_", None) or [f"f{j}" for j in range(t.n_features)])
    for v in keep:
        for c in children[v]:
            ax.plot([xpos[v], xpos[c]], [-depth[v], -depth[c]], color="0.5", lw=1, zorder=1)
            op = "<=" if c == t.children_left[v] else ">"
            r = Rule(names[t.feature[v]], op, float(t.threshold[v])).format(units)
            r = r.replace(f" {op} ", f"\n{op} ", 1)  # feature on one line, bound on the next
            f = 0.7  # along the edge, so that sibling labels do not collide
            ax.text(xpos[v] + f * (xpos[c] - xpos[v]), -depth[v] - f * (depth[c] - depth[v]), r, fontsize=6,
                    ha="center", va="center", bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none"),
                    zorder=2)
    by_node: dict[int, list[str]] = {}
    for lbl, nd in nodes.items():
        by_node.setdefault(int(nd), []).append(lbl)
    cmap = _class_colors(_ordered_classes([str(lbl).split(" ")[0] for lbl in nodes]))
    for v in keep:
        lbls = by_node.get(v, [])
        fc = cmap.get(str(lbls[0]).split(" ")[0], "0.7") if lbls else "0.8"
        ax.scatter([xpos[v]], [-depth[v]], s=60 if lbls else 15, c=fc, edgecolors="k", zorder=3)
        if lbls:
            lines = []
            for lbl in lbls:
                txt = str(lbl)
                if stats is not None:
                    cls = str(lbl).split(" ")[0]
                    row = stats[(stats["node"] == v) & (stats["class"] == cls)]
                    if len(row):
                        txt += f"\nP={row['precision'].iloc[0]:.2f} F1={row['f1'].iloc[0]:.2f}"
                lines.append(txt)
            ax.text(xpos[v], -depth[v] - 0.22, "\n".join(lines), fontsize=6, ha="center", va="top", zorder=4)
    ax.set_xlim(-0.7, width - 0.3)
    ax.set_ylim(-max(depth[keep]) - 1.0, 0.4)
    ax.axis("off")
    ax.set_title(title)
    return fig


def plot_embedding_panels(embedding: np.ndarray, predicted, truth):
    """Figures 7b and 7g: the embedding coloured by the model's super-class prediction and by the matched true
    class (``truth``: 'unmatched' where a detection matched no true nucleus)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
    plot_embedding(embedding, predicted, ax=axes[0], title="7b. coloured by NuCLS prediction (super-class)")
    plot_embedding(embedding, truth, ax=axes[1], title="7g. coloured by the matched true class")
    return fig


def plot_tree_overlays(tree, X, embedding: np.ndarray, discriminative: Mapping[str, int],
                       representative: Mapping[str, int], labels):
    """Figures 7e, 7f and S15: the tree's discriminative paths over the embedding, the nuclei in the
    discriminative nodes, and the representative (best-F1) paths."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(17, 5.5))
    plot_tree_overlay(tree, X, embedding, highlight=discriminative, labels=labels, ax=axes[0],
                      title="7e. tree on the embedding, discriminative paths")
    plot_node_members(tree, X, embedding, discriminative, ax=axes[1], title="7f. nuclei in the discriminative nodes")
    plot_tree_overlay(tree, X, embedding, highlight=representative, labels=labels, ax=axes[2],
                      title="S15. representative (best F1) paths")
    return fig
