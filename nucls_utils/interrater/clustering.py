"""Constrained agglomerative clustering of annotation boxes (paper Figure 2a; notes section 2a).

Every box of every participant, in every multi-rater set, of one FOV is clustered together, so that one cluster
(an *anchor*) is one nucleus seen by many participants. The distance between two boxes is ``1 - IOU``; clusters are
cut from a complete-linkage dendrogram at ``T = 1 - min_iou``, so that every pair of boxes in a cluster overlaps
with IOU > ``min_iou``.

The *constraint*: the boxes of one participant in one set (a "don't-link group") are different nuclei, so no cluster
may hold two of them. Rather than re-running the clustering, the notes' demotion procedure is applied to the cut
dendrogram (see :func:`cluster_boxes`): within a cluster, the first box of a group in dendrogram leaf order stays,
and each other box of that group moves to the highest sub-node of the cluster that does not yet hold a box of that
group, or becomes a singleton.

IOU convention: boxes are pixel corners (``xmax - xmin`` is the width) and the IOU is
:func:`nucls_utils.evaluation.box_iou`, the one definition used everywhere in this project. The reference code uses
HistomicsTK's inclusive-pixel (+1) convention, which makes small boxes overlap slightly more; we deliberately do not
replicate it.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import leaves_list, linkage

from ..evaluation import box_iou

__all__ = ["cluster_boxes", "condensed_iou_distance", "medoid"]

#: Rows of the IOU matrix computed at once when building the condensed distance vector (bounds peak memory to about
#: ``_BLOCK_ROWS * N * 6`` floats instead of ``6 N^2``).
_BLOCK_ROWS = 256


def _as_boxes(boxes: np.ndarray, name: str = "boxes") -> np.ndarray:
    b = np.asarray(boxes, dtype=float)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"{name} must be an (N, 4) array of (xmin, ymin, xmax, ymax), got shape {b.shape}")
    if not np.isfinite(b).all():
        bad = int(np.flatnonzero(~np.isfinite(b).all(axis=1))[0])
        raise ValueError(f"{name} row {bad} is not finite: {b[bad].tolist()}")
    if ((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1])).any():
        bad = int(np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))[0])
        raise ValueError(f"{name} row {bad} has xmax < xmin or ymax < ymin: {b[bad].tolist()}")
    return b


def condensed_iou_distance(boxes: np.ndarray) -> np.ndarray:
    """Condensed ``1 - IOU`` distance vector (scipy's ``pdist`` layout) of a set of boxes.

    Computed in blocks of rows so that a few thousand boxes do not need several full ``N x N`` temporaries.

    Parameters
    ----------
    boxes : (N, 4) array
        ``(xmin, ymin, xmax, ymax)`` in pixels.

    Returns
    -------
    (N * (N - 1) / 2,) float ndarray
        Entry for the pair ``i < j`` in row-major upper-triangle order.
    """
    b = _as_boxes(boxes)
    n = len(b)
    out = np.empty(n * (n - 1) // 2)
    pos = 0
    for i0 in range(0, n, _BLOCK_ROWS):
        i1 = min(n, i0 + _BLOCK_ROWS)
        iou = box_iou(b[i0:i1], b[i0:])  # (i1 - i0, n - i0); column c is box i0 + c
        upper = np.arange(n - i0)[None, :] > np.arange(i1 - i0)[:, None]
        vals = iou[upper]  # row-major: exactly the condensed order for rows i0..i1-1
        out[pos:pos + len(vals)] = 1.0 - vals
        pos += len(vals)
    return out


def _relabel_by_first_member(keys: np.ndarray) -> np.ndarray:
    """Map arbitrary cluster keys to ``0..C-1`` numbered by the first position at which each key occurs."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.reshape(-1)]


def cluster_boxes(boxes: np.ndarray, groups: np.ndarray | None = None, min_iou: float = 0.25) -> np.ndarray:
    """Cluster boxes by complete linkage on ``1 - IOU``, optionally with don't-link groups.

    Algorithm (notes section 2a):

    1. Complete-linkage dendrogram of the boxes on ``D = 1 - IOU`` (``scipy.cluster.hierarchy.linkage``).
    2. Cut at ``T = 1 - min_iou``: the *top nodes* are the highest internal nodes whose merge height is ``< T``;
       each top node's leaves form one cluster, and leaves never merged below ``T`` are singletons. Complete linkage
       makes a node's height the largest distance between any two of its leaves, so every pair of boxes under a node
       of height ``< T`` has IOU ``> min_iou``.
    3. With ``groups`` (the constraint), for each cluster and each group ``G`` with more than one box in it: the
       group's boxes ``L`` are taken in the dendrogram's leaf order; ``L[0]`` stays; each later box leaves the
       cluster and walks its ancestors strictly below the cluster's top node, from the highest down. At the first
       ancestor that is not yet a cluster it opens a new cluster holding only itself (keyed by that ancestor); at the
       first ancestor whose cluster holds no box of ``G`` it joins that cluster; if no ancestor qualifies it becomes
       a singleton. Demoted boxes of other groups under the same ancestor may join it later. Since "not yet a
       cluster" and "holds no box of ``G``" together mean "holds no box of ``G``", each box's destination depends
       only on its own group's earlier boxes, so the order in which groups are processed (which the notes leave
       open) does not change the result; groups are processed in the leaf order of their first box.

    The guarantees hold for demoted clusters too: a demoted cluster only holds leaves of the ancestor that keys it,
    whose height is below ``T``, so all its pairs have IOU ``> min_iou``; and a box only joins a cluster that holds no
    box of its group. (Heights are compared exactly as computed from the IOU, so there is no floating-point slack.)

    Parameters
    ----------
    boxes : (N, 4) array
        ``(xmin, ymin, xmax, ymax)`` in pixels.
    groups : (N,) int array, optional
        Don't-link group of each box (one id per (set, participant)). ``None`` gives the unconstrained clustering
        (paper Figure 5b).
    min_iou : float
        Boxes in one cluster overlap pairwise with IOU strictly greater than this; in [0, 1).

    Returns
    -------
    (N,) int64 ndarray
        Cluster labels ``0..C-1``, numbered in the order of each cluster's first box in the input. The result is a
        deterministic function of the input order (scipy breaks distance ties by input order).
    """
    b = _as_boxes(boxes)
    n = len(b)
    if not 0.0 <= float(min_iou) < 1.0:
        raise ValueError(f"min_iou must be in [0, 1), got {min_iou}")
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must have shape ({n},) to match boxes, got {g.shape}")
        if g.dtype.kind not in "iu":
            raise ValueError(f"groups must be integers, got dtype {g.dtype}")
    if n <= 1:
        return np.zeros(n, dtype=np.int64)

    threshold = 1.0 - float(min_iou)
    z = linkage(condensed_iou_distance(b), method="complete")
    heights = z[:, 2]
    children = z[:, :2].astype(np.int64)
    n_nodes = 2 * n - 1
    parent = np.full(n_nodes, -1, dtype=np.int64)
    parent[children[:, 0]] = np.arange(n, n_nodes)
    parent[children[:, 1]] = np.arange(n, n_nodes)

    # Top node of each node: walk the merges from the root down (merge k creates node n + k; parents come later).
    top = np.full(n_nodes, -1, dtype=np.int64)  # -1: above the cut
    for k in range(n - 2, -1, -1):
        node = n + k
        if heights[k] < threshold:
            p = parent[node]
            top[node] = top[p] if p >= 0 and top[p] >= 0 else node
    # A leaf whose parent is above the cut is its own singleton.
    leaf_parent_top = np.where(parent[:n] >= 0, top[np.maximum(parent[:n], 0)], -1)
    keys = np.where(leaf_parent_top >= 0, leaf_parent_top, np.arange(n))

    if g is not None:
        keys = _demote(keys, g, parent, leaves_list(z), n)
    return _relabel_by_first_member(keys)


def _demote(keys: np.ndarray, groups: np.ndarray, parent: np.ndarray, order: np.ndarray, n: int) -> np.ndarray:
    """Apply the demotion step to cluster keys (node ids; a leaf id for singletons). Returns new keys.

    Demoted clusters are keyed by the ancestor node id they were opened at; singletons made by demotion are keyed
    by the leaf's own id, which cannot collide with any internal-node key.
    """
    keys = keys.copy()
    # Find (cluster, group) pairs with more than one box, vectorised; only those need the Python walk.
    in_internal = keys >= n
    if not in_internal.any():
        return keys
    _, g_codes = np.unique(groups, return_inverse=True)
    g_codes = g_codes.reshape(-1).astype(np.int64)
    pair = keys * (int(g_codes.max()) + 1) + g_codes
    uniq, counts = np.unique(pair[in_internal], return_counts=True)
    dup_pairs = uniq[counts > 1]
    if len(dup_pairs) == 0:
        return keys
    leaf_rank = np.empty(n, dtype=np.int64)
    leaf_rank[order] = np.arange(n)
    # Leaves involved, in dendrogram leaf order.
    involved = np.flatnonzero(in_internal & np.isin(pair, dup_pairs))
    involved = involved[np.argsort(leaf_rank[involved], kind="stable")]

    # Group the involved leaves by cluster, then by group in the order of the group's first leaf.
    by_cluster: dict[int, dict[int, list[int]]] = {}
    for leaf in involved.tolist():
        by_cluster.setdefault(int(keys[leaf]), {}).setdefault(int(g_codes[leaf]), []).append(leaf)

    demoted_members: dict[int, set[int]] = {}  # ancestor node -> groups present in the demoted cluster
    for top_node, per_group in by_cluster.items():
        for grp, leaves in per_group.items():  # dict preserves insertion order = leaf order of first box
            for leaf in leaves[1:]:
                # ancestors strictly below the top node, listed from the leaf upwards
                chain = []
                a = int(parent[leaf])
                while a != top_node:
                    chain.append(a)
                    a = int(parent[a])
                new_key = leaf  # singleton unless an ancestor qualifies
                for anc in reversed(chain):  # from the highest down
                    held = demoted_members.get(anc)
                    if held is None:
                        demoted_members[anc] = {grp}
                        new_key = anc
                        break
                    if grp not in held:
                        held.add(grp)
                        new_key = anc
                        break
                keys[leaf] = new_key
    return keys


def medoid(boxes: np.ndarray) -> int:
    """Index of the medoid box: the member with the highest mean IOU to the set's members.

    Parameters
    ----------
    boxes : (N, 4) array, N >= 1
        ``(xmin, ymin, xmax, ymax)`` in pixels.

    Returns
    -------
    int
        Position in ``boxes``; ties go to the lowest index. (Means are rounded to 12 decimals before the comparison,
        so that sums of the same IOU values in a different order still tie.)
    """
    b = _as_boxes(boxes)
    if len(b) == 0:
        raise ValueError("medoid of an empty set of boxes")
    if len(b) <= 2:
        return 0
    mean = np.round(box_iou(b, b).mean(axis=1), 12)
    return int(np.argmax(mean))
