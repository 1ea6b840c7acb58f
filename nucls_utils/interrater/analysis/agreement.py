"""Agreement between participants: Krippendorff's alpha, pairwise and self-agreement kappa, MDS, clicked suggestions
(Figs 3d, 4b, 4d, 5a, 5c, 5d)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..accuracy import mann_whitney
from ..agreement import MODES, alpha_by_min_detections, mds_of_kappa, pairwise_kappa, self_agreement
from .truth import _SPECIAL, _UNBIASED, TruthTables, final_anchors, group_labels

__all__ = [
    "alpha_table", "anchor_counts", "clicked_share_table", "group_summary", "kappa_group_tests",
    "kappa_mds", "kappa_pairs", "self_agreement_table",
]


def alpha_table(truth_by_iou: Mapping[float, TruthTables], evalset: str = "E", levels: Sequence[str] = ("main",
                                                                                                           "super"),
                raters: Sequence[str] = ("Ps", "NPs"), truth_who: str = "Ps", mode: str = "classification"
                ) -> pd.DataFrame:
    """Krippendorff's alpha on cumulative anchor subsets, per clustering threshold, level and rater group
    (Figs 5a, 5c; notes 2c).

    Anchors: the real nuclei by the P-truth at that threshold and level (the reference's ``v2.1_consensus``
    anchors), AMBIGUOUS left out. For each x, the anchors detected by at least x pathologists in the set
    (``n_matches_Ps``); both rater groups are measured on the same anchors. The paper's headline is the row
    (IOU 0.25, main, Ps, x = 2): 1,238 anchors, alpha 55.5.

    Returns
    -------
    DataFrame: min_iou, level, raters, min_detections, n_anchors, alpha.
    """
    rows = []
    for iou, tt in truth_by_iou.items():
        if evalset not in tt.truth:
            continue
        t = tt.truth[evalset]
        for level in levels:
            real = final_anchors(t, level, truth_who)
            lab = group_labels(tt.labels[evalset].loc[real], level)
            n_matches = t.loc[real, f"n_matches_{truth_who}"]
            xs = range(int(n_matches.max()) + 1 if len(n_matches) else 1)
            for r in raters:
                res = alpha_by_min_detections(lab[tt.members(r)], n_matches, mode=mode, xs=xs)
                res.insert(0, "raters", r)
                res.insert(0, "level", level)
                res.insert(0, "min_iou", float(iou))
                rows.append(res)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["min_iou", "level", "raters", "min_detections", "n_anchors", "alpha"])


def anchor_counts(truth_by_iou: Mapping[float, TruthTables], evalset: str = "E", who: str = "Ps") -> pd.DataFrame:
    """Anchors detected by at least x members of ``who`` in the set, per clustering threshold (Fig 5a): all anchor
    proposals, and those the P-truth calls nuclei (main level). Columns: min_iou, min_detections, n_proposals,
    n_ptruth."""
    rows = []
    for iou, tt in truth_by_iou.items():
        if evalset not in tt.truth:
            continue
        t = tt.truth[evalset]
        n = t[f"n_matches_{who}"]
        real = t.index.isin(final_anchors(t, "main"))
        for x in range(int(n.max()) + 1):
            rows.append({"min_iou": float(iou), "min_detections": x, "n_proposals": int((n >= x).sum()),
                         "n_ptruth": int(((n >= x) & real).sum())})
    return pd.DataFrame(rows)


def kappa_pairs(tt: TruthTables, evalsets: Sequence[str] = ("E", "U-control"), level: str = "main",
                modes: Sequence[str] = MODES) -> pd.DataFrame:
    """Cohen's kappa of every pair of participants on each set's final anchors (Figs 3d, 5d; notes 2c).

    Returns the rows of :func:`~nucls_utils.interrater.agreement.pairwise_kappa` with evalset, level and mode.
    """
    parts = []
    groups = tt.groups()
    for s in [s for s in evalsets if s in tt.truth]:
        lab = group_labels(tt.labels[s].loc[final_anchors(tt.truth[s], level)], level)
        for mode in modes:
            p = pairwise_kappa(lab, groups=groups, mode=mode)
            p.insert(0, "mode", mode)
            p.insert(0, "level", level)
            p.insert(0, "evalset", s)
            parts.append(p)
    return pd.concat(parts, ignore_index=True)


def kappa_group_tests(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mann-Whitney tests between the pair groups (Ps-Ps, Ps-NPs, NPs-NPs) of :func:`kappa_pairs`, per set and
    mode (Fig 5d's stars)."""
    rows = []
    combos = (("Ps-Ps", "Ps-NPs"), ("Ps-Ps", "NPs-NPs"), ("Ps-NPs", "NPs-NPs"))
    for (s, mode), sub in pairs.groupby(["evalset", "mode"], sort=False):
        for a, b in combos:
            ka, kb = sub.loc[sub["pair_group"] == a, "kappa"], sub.loc[sub["pair_group"] == b, "kappa"]
            res = mann_whitney(ka, kb)
            rows.append({"evalset": s, "mode": mode, "group_a": a, "group_b": b, "median_a": ka.median(),
                         "median_b": kb.median(), "n_a": res.n1, "n_b": res.n2, "U": res.statistic,
                         "pvalue": res.pvalue})
    return pd.DataFrame(rows)


def kappa_mds(pairs: pd.DataFrame, evalset: str = "E", mode: str = "classification", seed: int = 0
              ) -> pd.DataFrame:
    """Two-dimensional MDS of the participants with distance 1 - kappa (Fig 3d)."""
    sub = pairs[(pairs["evalset"] == evalset) & (pairs["mode"] == mode)]
    return mds_of_kappa(sub, random_state=seed).reset_index()


def self_agreement_table(tt: TruthTables, reference: str = _UNBIASED, others: Sequence[str] = ("E", "B-control"),
                         level: str = "main", mode: str = "classification") -> pd.DataFrame:
    """Each participant's agreement with themselves between U-control (no suggestions) and a set with suggestions,
    on the anchors final in both (Fig 4d; paper kappa 87.4 +- 7.9 Ps, 74.0 +- 12.6 NPs, E vs U-control), plus the
    share of their detections in the other set that were clicked suggestions (``psegmented``).

    Returns one row per (set, participant): evalset, participant, group, kappa, n, n_detected_b, n_clicks_b,
    psegmented.
    """
    if reference not in tt.truth:
        return pd.DataFrame(columns=["evalset", "participant", "group", "kappa", "n", "n_detected_b", "n_clicks_b",
                                     "psegmented"])
    a = group_labels(tt.labels[reference].loc[final_anchors(tt.truth[reference], level)], level)
    parts = []
    for s in [s for s in others if s in tt.truth]:
        b = group_labels(tt.labels[s].loc[final_anchors(tt.truth[s], level)], level)
        res = self_agreement(a, b, mode=mode, clicks_b=tt.clicks[s], groups=tt.groups()).reset_index()
        res.insert(0, "evalset", s)
        parts.append(res[res["n"] > 0])
    return pd.concat(parts, ignore_index=True)


def clicked_share_table(tt: TruthTables, evalsets: Sequence[str] = ("B-control", "E"), level: str = "main"
                        ) -> pd.DataFrame:
    """Per participant and set: detections of final anchors, how many were clicked suggestions, and the share
    (``psegmented``, percent) (Fig 4b; paper 41.7 +- 17.3 % in E)."""
    rows = []
    groups = tt.groups()
    for s in [s for s in evalsets if s in tt.truth]:
        final = final_anchors(tt.truth[s], level)
        lab = tt.labels[s].loc[final]
        det = ~lab.isin(list(_SPECIAL)) & lab.notna()
        clk = tt.clicks[s].loc[final] & det
        for p in lab.columns:
            n = int(det[p].sum())
            if n:
                rows.append({"evalset": s, "participant": p, "group": groups[p], "n_detected": n,
                             "n_clicked": int(clk[p].sum()), "psegmented": 100.0 * clk[p].sum() / n})
    return pd.DataFrame(rows)


def group_summary(df: pd.DataFrame, value: str, by: Sequence[str] = ("evalset", "group"), pn: bool = True
                  ) -> pd.DataFrame:
    """Mean, SD, median and n of ``value`` per group; with ``pn`` SP and JP are pooled as Ps (and NP shown as
    NPs)."""
    d = df.copy()
    if pn and "group" in d.columns:
        d["group"] = np.where(d["group"].isin(("SP", "JP", "Ps")), "Ps", "NPs")
    out = d.groupby(list(by), sort=False)[value].agg(["mean", "std", "median", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "n"})
