"""Clustering of the participants' boxes into anchors: the constraint's effect and worked examples (Figs 2, 5b,
S16)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...evaluation import (
    box_iou,
    match_boxes,
)
from ..accuracy import is_real
from ..clustering import cluster_boxes, condensed_iou_distance
from .truth import _BOX, _UNBIASED, MultiraterStudy, TruthTables, final_anchors, truth_series

__all__ = [
    "clustering_example", "constraint_effect", "dendrogram_example",
]


def constraint_effect(con: TruthTables, uncon: TruthTables, evalset: str = "E", level: str = "super",
                      records: Sequence | None = None, match_iou: float = 0.5
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Constrained vs unconstrained clustering at one threshold (Fig 5b).

    Returns
    -------
    summary : one row per clustering: anchors, anchors detected by >= 2 pathologists in U-control, P-truth
        nuclei; on the synthetic cohort also the recall of true nuclei by P-truth anchors (one-to-one box matching
        at ``match_iou``), for all nuclei and separately for *overlapping* ones (box IOU > 0 with another true
        nucleus) and isolated ones.
    crosstab : P-truth label (``level``; ``not a nucleus`` for undetected/blank) of matched anchors, constrained
        (rows) vs unconstrained (columns), counts. Anchors are matched one-to-one per FOV by box IOU.
    """
    summary = []
    true_boxes = {}
    if records is not None:
        fovs = set(con.truth[evalset]["fovname"])
        for r in records:
            if r.name in fovs:
                b = np.array([n.box for n in r.nuclei], dtype=float).reshape(-1, 4)
                iou = box_iou(b, b)
                np.fill_diagonal(iou, 0.0)
                true_boxes[r.name] = (b, iou.max(axis=1) > 0 if len(b) else np.zeros(0, bool))
    for name, tt in (("constrained", con), ("unconstrained", uncon)):
        t = tt.truth[evalset]
        real = final_anchors(t, level)
        row = {"clustering": name, "n_anchors": len(t),
               "n_anchors_2Ps": int((t.get("UNBIASED_n_matches_Ps", t["n_matches_Ps"]) >= 2).sum()),
               "n_ptruth": len(real)}
        if true_boxes:
            found_all, found_ov, n_all, n_ov = 0, 0, 0, 0
            treal = t.loc[real]
            for fov, (b, overlapping) in true_boxes.items():
                a = treal.loc[treal["fovname"] == fov, _BOX].to_numpy(dtype=float)
                ti, _, _ = match_boxes(b, a, match_iou)
                hit = np.zeros(len(b), bool)
                hit[ti] = True
                found_all += int(hit.sum())
                found_ov += int(hit[overlapping].sum())
                n_all += len(b)
                n_ov += int(overlapping.sum())
            row.update(n_true=n_all, n_true_overlapping=n_ov,
                       recall=100.0 * found_all / max(n_all, 1),
                       recall_overlapping=100.0 * found_ov / max(n_ov, 1),
                       recall_isolated=100.0 * (found_all - found_ov) / max(n_all - n_ov, 1))
        summary.append(row)
    tc, tu = con.truth[evalset], uncon.truth[evalset]

    def lab(t: pd.DataFrame) -> pd.Series:
        s = truth_series(t, "Ps", level)
        return s.where(is_real(s), "not a nucleus")

    lc, lu = lab(tc), lab(tu)
    pairs = []
    for fov, a in tc.groupby("fovname", sort=True):
        b = tu[tu["fovname"] == fov]
        ai, bi, _ = match_boxes(a[_BOX].to_numpy(dtype=float), b[_BOX].to_numpy(dtype=float), match_iou)
        pairs += list(zip(lc.loc[a.index[ai]], lu.loc[b.index[bi]], strict=True))
    ct = pd.crosstab(pd.Series([p[0] for p in pairs], name="constrained"),
                     pd.Series([p[1] for p in pairs], name="unconstrained"))
    return pd.DataFrame(summary), ct


def clustering_example(tt: TruthTables, study: MultiraterStudy | None = None, fovname: str | None = None,
                       evalset: str = "E", level: str = "super") -> dict:
    """One FOV's boxes and anchors for Fig 2: by default the FOV with the most P-truth nuclei.

    Returns a dict: fovname, image (RGB array or None), boxes (the FOV's boxes in ``evalset`` with participant,
    group, anchor_id), anchors (the FOV's anchors with ``ptruth`` at ``level``, ``n_boxes``), evalset, level.
    """
    if tt.table is None:
        raise ValueError("clustering_example needs the clustering (TruthTables.table)")
    t = tt.truth[evalset]
    if fovname is None:
        real = t.loc[final_anchors(t, level)]
        fovname = real["fovname"].value_counts().sort_index().idxmax() if len(real) else t["fovname"].iloc[0]
    boxes = tt.table.boxes
    b = boxes[(boxes["fovname"] == fovname) & (boxes["evalset"] == evalset)].copy()
    b["group"] = b["participant"].map(tt.groups())
    a = t[t["fovname"] == fovname].copy()
    s = truth_series(a, "Ps", level)
    a["ptruth"] = s.where(is_real(s), None)
    a["n_boxes_in_set"] = b.groupby("anchor_id").size().reindex(a.index).fillna(0).astype(int)
    image = None
    if study is not None and fovname in study.images:
        from skimage.io import imread

        image = imread(study.images[fovname])[..., :3]
    return {"fovname": fovname, "image": image, "boxes": b, "anchors": a, "evalset": evalset, "level": level}


def dendrogram_example(tt: TruthTables, fovname: str | None = None, evalset: str = _UNBIASED, who: str = "Ps",
                       margin: float = 12.0, max_boxes: int = 40) -> dict:
    """A small neighbourhood of one FOV for the clustering diagram of Fig S16: the boxes of ``who`` in ``evalset``
    around a spot where the constraint splits a cluster (two boxes of one participant that unconstrained complete
    linkage would merge), else around the largest cluster.

    Returns a dict: boxes (N, 4), participants (N,), groups (N,) don't-link codes, linkage (scipy Z), labels
    (constrained clusters), labels_unconstrained, min_iou, window (xmin, ymin, xmax, ymax), fovname.
    """
    from scipy.cluster.hierarchy import linkage

    if tt.table is None:
        raise ValueError("dendrogram_example needs the clustering (TruthTables.table)")
    boxes = tt.table.boxes
    b = boxes[(boxes["evalset"] == evalset) & boxes["participant"].isin(tt.members(who))]
    fovs = [fovname] if fovname else sorted(b["fovname"].unique())
    best = None
    for fov in fovs:
        sub = b[b["fovname"] == fov]
        xy = sub[_BOX].to_numpy(dtype=float)
        if len(xy) < 3:
            continue
        free = cluster_boxes(xy, None, tt.min_iou)
        parts = sub["participant"].to_numpy()
        for c in np.unique(free):
            idx = np.flatnonzero(free == c)
            dup = len(idx) != len(set(parts[idx]))
            score = (int(dup), len(idx))
            if best is None or score > best[0]:
                best = (score, fov, xy[idx])
        if best is not None and best[0][0] and fovname is None:
            break
    if best is None:
        raise ValueError("no FOV has enough boxes for a dendrogram example")
    _, fov, cluster_xy = best
    x0, y0 = cluster_xy[:, 0].min() - margin, cluster_xy[:, 1].min() - margin
    x1, y1 = cluster_xy[:, 2].max() + margin, cluster_xy[:, 3].max() + margin
    sub = b[b["fovname"] == fov]
    inside = ((sub["xmax"] > x0) & (sub["xmin"] < x1) & (sub["ymax"] > y0) & (sub["ymin"] < y1)).to_numpy()
    sub = sub[inside].iloc[:max_boxes]
    xy = sub[_BOX].to_numpy(dtype=float)
    parts = sub["participant"].astype(str).to_numpy()
    codes = pd.factorize(parts)[0].astype(np.int64)
    z = linkage(condensed_iou_distance(xy), method="complete")
    return {"boxes": xy, "participants": parts, "groups": codes, "linkage": z,
            "labels": cluster_boxes(xy, codes, tt.min_iou), "labels_unconstrained": cluster_boxes(xy, None, tt.min_iou),
            "min_iou": tt.min_iou, "window": (x0, y0, x1, y1), "fovname": fov}
