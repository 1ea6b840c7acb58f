"""DTALE steps 3 and 4: the regression tree from interpretable features to the embedding, and every internal node
scored as a one-vs-rest predictor of each predicted class."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import sparse

from ..evaluation import f1_from_counts, mcc_from_counts

__all__ = [
    "best_nodes", "fit_statistics", "fit_tree", "node_embedding_means", "node_members", "node_statistics",
]


def _matrix(X) -> tuple[np.ndarray, list[str] | None]:
    if isinstance(X, pd.DataFrame):
        return X.to_numpy(dtype=np.float32), [str(c) for c in X.columns]
    return np.asarray(X, dtype=np.float32), None


def _finite_rows(Xm: np.ndarray) -> np.ndarray:
    return np.all(np.isfinite(Xm), axis=1)


def fit_tree(X, Y, *, max_depth: int = 7, min_samples_leaf: int = 250, random_state: int = 0):
    """Regression tree from interpretable features to the 2-D embedding (the paper's constraints by default).

    Rows with a NaN or infinite feature (or embedding) are dropped. The tree is fitted on a float32 array (no
    pandas feature names, so later ``apply``/``predict`` on arrays raise no warning); the extra attributes are

    * ``dtale_feature_names_``: the column names of ``X`` (or ``f0, f1, ...``),
    * ``rows_used_``: (N,) bool, the rows fitted,
    * ``n_dropped_``: how many rows were dropped.

    Returns
    -------
    sklearn.tree.DecisionTreeRegressor
    """
    from sklearn.tree import DecisionTreeRegressor

    Xm, names = _matrix(X)
    Ym = np.asarray(Y, dtype=np.float64).reshape(len(Xm), -1)
    rows = _finite_rows(Xm) & np.all(np.isfinite(Ym), axis=1)
    tree = DecisionTreeRegressor(max_depth=max_depth, min_samples_leaf=min_samples_leaf,
                                 random_state=random_state)
    tree.fit(Xm[rows], Ym[rows])
    tree.dtale_feature_names_ = names or [f"f{j}" for j in range(Xm.shape[1])]
    tree.rows_used_ = rows
    tree.n_dropped_ = int((~rows).sum())
    return tree


def fit_statistics(tree, X, Y) -> dict:
    """Fidelity of the tree on ``(X, Y)`` (finite rows): R^2 per embedding axis and overall, sizes."""
    from sklearn.metrics import r2_score

    Xm, _ = _matrix(X)
    Ym = np.asarray(Y, dtype=np.float64).reshape(len(Xm), -1)
    rows = _finite_rows(Xm) & np.all(np.isfinite(Ym), axis=1)
    pred = tree.predict(Xm[rows]).reshape(int(rows.sum()), -1)
    t = tree.tree_
    out = {"n_rows": int(rows.sum()), "n_dropped": int((~rows).sum()), "n_nodes": int(t.node_count),
           "n_leaves": int(tree.get_n_leaves()), "depth": int(tree.get_depth()),
           "r2": float(r2_score(Ym[rows], pred, multioutput="variance_weighted"))}
    for j in range(Ym.shape[1]):
        out[f"r2_axis{j}"] = float(r2_score(Ym[rows, j], pred[:, j]))
    return out


def _parents_depths(tree) -> tuple[np.ndarray, np.ndarray]:
    t = tree.tree_
    n = t.node_count
    parent = np.full(n, -1, dtype=np.int64)
    depth = np.zeros(n, dtype=np.int64)
    for node in range(n):  # pre-order: a parent's id is smaller than its children's
        for child in (t.children_left[node], t.children_right[node]):
            if child != -1:
                parent[child] = node
                depth[child] = depth[node] + 1
    return parent, depth


def _membership(tree, X) -> tuple[sparse.csr_matrix, np.ndarray]:
    """Sparse (N_finite, n_nodes) indicator of the nodes on each finite row's path, and the finite-row mask."""
    Xm, _ = _matrix(X)
    rows = _finite_rows(Xm)
    return tree.decision_path(Xm[rows]).tocsr(), rows


def node_statistics(tree, X, predicted_classes, *, classes: Sequence[str] | None = None) -> pd.DataFrame:
    """One-vs-rest scores of every internal node for every predicted class.

    For node ``n`` and class ``c``: ``in_n`` = the nucleus's path passes through ``n`` (its leaf lies in ``n``'s
    subtree), ``is_c`` = the model predicted ``c``; TP = in_n & is_c, FP = in_n & ~is_c, FN = ~in_n & is_c,
    TN = the rest. Computed for all nodes and classes at once as one sparse product of the decision-path matrix
    (N x nodes) with the one-hot predictions (N x classes). Rows of ``X`` with a non-finite feature are ignored
    (the count is in ``attrs['n_dropped']``).

    Parameters
    ----------
    tree : fitted DecisionTreeRegressor (:func:`fit_tree`)
    X : (N, F) features, the columns the tree was fitted on
    predicted_classes : (N,) the model's predicted class of each row
    classes : classes to score, in this order (default: the sorted distinct predictions)

    Returns
    -------
    DataFrame, one row per (internal node, class): ``node, depth, parent, feature, threshold, n_node, class,
    n_class, TP, FP, FN, TN, precision, recall, f1, mcc``.
    """
    P, rows = _membership(tree, X)
    y = np.asarray(predicted_classes, dtype=object).ravel()
    if len(y) != len(rows):
        raise ValueError(f"{len(rows)} rows of X but {len(y)} predicted classes")
    y = y[rows]
    if classes is None:
        classes = sorted({str(c) for c in y})
    classes = list(classes)
    code = pd.Categorical(y.astype(str), categories=classes).codes
    n = len(y)
    ok = code >= 0
    onehot = sparse.csr_matrix((np.ones(int(ok.sum())), (np.flatnonzero(ok), code[ok])), shape=(n, len(classes)))
    tp = np.asarray((P.T @ onehot).todense(), dtype=np.int64)  # (nodes, K)
    size = np.asarray(P.sum(axis=0), dtype=np.int64).ravel()
    pos = np.asarray(onehot.sum(axis=0), dtype=np.int64).ravel()
    fp = size[:, None] - tp
    fn = pos[None, :] - tp
    tn = n - tp - fp - fn
    t = tree.tree_
    internal = np.flatnonzero(t.children_left != -1)
    parent, depth = _parents_depths(tree)
    names = getattr(tree, "dtale_feature_names_", None) or [f"f{j}" for j in range(t.n_features)]
    k = len(classes)
    sel = np.repeat(internal, k)
    cls_idx = np.tile(np.arange(k), len(internal))
    TP, FP, FN, TN = (a[sel, cls_idx] for a in (tp, fp, fn, tn))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(TP + FP > 0, TP / (TP + FP), np.nan)
        recall = np.where(TP + FN > 0, TP / (TP + FN), np.nan)
        f1 = f1_from_counts(TP, FP, FN, empty=np.nan)
    out = pd.DataFrame({
        "node": sel, "depth": depth[sel], "parent": parent[sel],
        "feature": [names[t.feature[i]] for i in sel], "threshold": t.threshold[sel],
        "n_node": size[sel], "class": np.asarray(classes, dtype=object)[cls_idx], "n_class": pos[cls_idx],
        "TP": TP, "FP": FP, "FN": FN, "TN": TN, "precision": precision, "recall": recall, "f1": f1,
        "mcc": mcc_from_counts(TP, FP, TN, FN) if len(sel) else np.zeros(0),
    })
    out.attrs["n_rows"] = int(n)
    out.attrs["n_dropped"] = int((~rows).sum())
    return out


def best_nodes(stats: pd.DataFrame, metric: str = "f1", *, min_size: int | None = None) -> pd.DataFrame:
    """The node with the highest ``metric`` for each class.

    ``metric='f1'`` gives the *representative* node, ``'precision'`` the *discriminative* node (paper, "Node fit
    statistics"). Ties go to the first maximum in node order (pre-order: shallowest, then leftmost). Nodes with
    fewer than ``min_size`` nuclei are not considered (default: all internal nodes; the tree's
    ``min_samples_leaf`` already bounds node sizes from below). A class whose best value is 0 (never predicted
    inside any node) is kept with ``informative = False``.

    Returns
    -------
    DataFrame indexed by class: the chosen row of ``stats`` plus ``metric`` and ``informative``.
    """
    if metric not in stats.columns:
        raise KeyError(f"unknown metric {metric!r}; choose one of precision, recall, f1, mcc")
    s = stats if min_size is None else stats[stats["n_node"] >= min_size]
    s = s.sort_values(["class", "node"], kind="stable")
    picks = []
    for _, g in s.groupby("class", sort=False):
        vals = g[metric].to_numpy(dtype=float)
        if np.isfinite(vals).any():
            picks.append(g.index[int(np.nanargmax(vals))])  # first maximum
    out = s.loc[picks].set_index("class")
    out["metric"] = metric
    out["informative"] = out[metric].astype(float) > 0
    return out


def node_members(tree, X, node: int) -> np.ndarray:
    """(N,) bool: whether each row of ``X`` passes through ``node`` (False for rows with a NaN feature)."""
    P, rows = _membership(tree, X)
    out = np.zeros(len(rows), dtype=bool)
    out[np.flatnonzero(rows)] = np.asarray(P[:, node].todense()).ravel() > 0
    return out


def node_embedding_means(tree, X, embedding: np.ndarray) -> np.ndarray:
    """(n_nodes, 2) mean embedding of the nuclei passing through each node (NaN for an empty node)."""
    P, rows = _membership(tree, X)
    emb = np.asarray(embedding, dtype=float)[rows]
    size = np.asarray(P.sum(axis=0)).ravel()
    sums = np.asarray(P.T @ emb)
    with np.errstate(invalid="ignore", divide="ignore"):
        return sums / size[:, None]
