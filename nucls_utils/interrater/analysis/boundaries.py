"""Algorithmic boundaries: the medoid of the clicked suggestion polygons, the boundary EM's decision and its DICE
with the true boundary (Figs 4c, S5)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ...evaluation import (
    dice_from_areas,
    match_boxes,
)
from ...io.masks import nucleus_pixels
from ..clustering import medoid
from .truth import _BOX, MultiraterStudy, TruthTables, final_anchors

__all__ = [
    "boundary_share_per_fov", "boundary_table",
]


def _generator_index(anchors: pd.DataFrame, records: Sequence, min_iou: float = 0.5) -> pd.Series:
    """Position of the true nucleus (in its FOV record) matched to each anchor box; -1 for none."""
    by_name = {r.name: r for r in records}
    out = pd.Series(-1, index=anchors.index, dtype=np.int64)
    for fov, a in anchors.groupby("fovname", sort=True):
        rec = by_name.get(fov)
        if rec is None:
            continue
        tb = np.array([n.box for n in rec.nuclei], dtype=float).reshape(-1, 4)
        ti, ai, _ = match_boxes(tb, a[_BOX].to_numpy(dtype=float), min_iou)
        out.loc[a.index[ai]] = ti
    return out


def _dice(n1, n2) -> float:
    shape = (int(max(n1.ymax, n2.ymax)) + 2, int(max(n1.xmax, n2.xmax)) + 2)
    r1, c1 = nucleus_pixels(n1, shape)
    r2, c2 = nucleus_pixels(n2, shape)
    a, b = r1 * shape[1] + c1, r2 * shape[1] + c2
    return float(dice_from_areas(len(np.intersect1d(a, b)), len(a) + len(b)))


def boundary_table(tt: TruthTables, study: MultiraterStudy, records: Sequence | None = None,
                   evalsets: Sequence[str] = ("B-control", "E")) -> pd.DataFrame:
    """Algorithmic boundaries per (set, anchor): the medoid of the suggestion polygons participants clicked in the
    set, the boundary EM's decision, and (on the synthetic cohort) its DICE with the generator's true boundary, which
    stands in for the senior pathologist's manual traces of the paper (Figs 4c, S5b).

    Needs the in-memory clustering (``tt.table``). Returns evalset, anchor_id, fovname, n_clicks, p_truth_real
    (raw level), boundary_correct, boundary_probability, dice (NaN without ``records`` or without a matched true
    nucleus).
    """
    if tt.table is None:
        raise ValueError("boundary_table needs the clustering (TruthTables.table); build the truth tables in memory")
    boxes = tt.table.boxes
    gen_idx = _generator_index(tt.table.anchors, records) if records is not None else None
    by_name = {r.name: r for r in records} if records is not None else {}
    rows = []
    for s in [s for s in evalsets if s in tt.truth]:
        t = tt.truth[s]
        real = set(final_anchors(t, "raw"))
        poly = boxes[(boxes["evalset"] == s) & (boxes["type"] == "polyline")]
        for aid, grp in poly.groupby("anchor_id", sort=False):
            k = medoid(grp[_BOX].to_numpy(dtype=float))
            r = grp.iloc[k]
            nucleus = study.annotations[(s, r["participant"], r["fovname"])][int(r["index"])]
            dice = np.nan
            if gen_idx is not None and gen_idx.get(aid, -1) >= 0:
                dice = _dice(nucleus, by_name[r["fovname"]].nuclei[int(gen_idx[aid])])
            dec = t.at[aid, "EM_decision_boundary_is_correct"]
            rows.append({"evalset": s, "anchor_id": aid, "fovname": r["fovname"], "n_clicks": len(grp),
                         "p_truth_real": aid in real,
                         "boundary_correct": None if pd.isna(dec) else bool(dec),
                         "boundary_probability": t.at[aid, "EM_boundary_probability"], "dice": dice})
    return pd.DataFrame(rows)


def boundary_share_per_fov(tt: TruthTables, evalsets: Sequence[str] = ("B-control", "E")) -> pd.DataFrame:
    """Per FOV and set: nuclei (P-truth, raw level) and the share whose suggested boundary the EM judged correct
    (Fig S5a). Sets in which nobody clicked a suggestion are left out. Columns: evalset, fovname, n_nuclei,
    n_good_boundary, percent_good."""
    rows = []
    for s in [s for s in evalsets if s in tt.truth]:
        if tt.truth[s]["EM_decision_boundary_is_correct"].isna().all():
            continue  # no suggestion was clicked in this set: nothing to judge
        t = tt.truth[s].loc[final_anchors(tt.truth[s], "raw")]
        good = t["EM_decision_boundary_is_correct"].fillna(False).astype(bool)
        for fov, sub in t.groupby("fovname", sort=True):
            g = int(good.loc[sub.index].sum())
            rows.append({"evalset": s, "fovname": fov, "n_nuclei": len(sub), "n_good_boundary": g,
                         "percent_good": 100.0 * g / len(sub)})
    return pd.DataFrame(rows)
