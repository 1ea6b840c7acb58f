"""Accuracy of the participants and of the NP-label against the P-truth (Figs 3a-c, 4e, S3, S7), and how easily
nuclei are detected (Fig S8)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ...evaluation import (
    bootstrap_ci,
    roc_auc_micro_macro,
)
from ..accuracy import (
    label_tally,
    mann_whitney,
    np_label_detection_ap,
    np_label_roc,
    np_label_roc_inputs,
    participant_classification,
    participant_confusion,
    participant_detection,
    wilcoxon_paired,
)
from ..anchors import NOT_ANNOTATED
from .truth import TruthTables, _not_ambiguous, final_anchors, group_labels, np_label_frame, truth_series

__all__ = [
    "accuracy_by_set", "auroc_set_tests", "detected_by_at_least", "detection_tally", "ease_of_detection",
    "np_label_auroc_bootstrap", "np_label_detection", "np_label_detection_pooled", "np_label_roc_table",
    "paired_set_tests", "participant_accuracy", "pooled_confusion", "tally_by_truth",
]


def participant_accuracy(tt: TruthTables, evalset: str = "E", level: str = "main") -> pd.DataFrame:
    """Detection and classification accuracy of every participant against the set's P-truth (notes 2c).

    Anchors: all anchors of the set except those whose P-truth is AMBIGUOUS at ``level``; real = P-truth is a
    class; every other anchor is "false" (FP when a participant boxed it).

    Returns
    -------
    DataFrame, one row per participant who annotated in the set: participant, group, evalset, level, tp, fp, fn,
    precision, recall, f1, n (classified real anchors), accuracy, mcc (pooled one-vs-rest), mcc_multiclass.
    """
    t = tt.truth[evalset]
    keep = _not_ambiguous(t, level)
    truth = truth_series(t, "Ps", level).loc[keep]
    lab = group_labels(tt.labels[evalset].loc[keep], level)
    det = participant_detection(lab, truth)
    cls = participant_classification(lab, truth)
    out = det.join(cls).reset_index()
    out.insert(1, "group", out["participant"].map(tt.groups()))
    out.insert(2, "evalset", evalset)
    out.insert(3, "level", level)
    return out[(out["tp"] + out["fn"] + out["fp"]) > 0].reset_index(drop=True)


def accuracy_by_set(tt: TruthTables, evalsets: Sequence[str] | None = None, level: str = "main") -> pd.DataFrame:
    """:func:`participant_accuracy` of every set, stacked."""
    sets = [s for s in (evalsets or tt.evalsets) if s in tt.truth]
    return pd.concat([participant_accuracy(tt, s, level) for s in sets], ignore_index=True)


def paired_set_tests(acc: pd.DataFrame, metrics: Sequence[str] = ("f1", "mcc_pooled_ovr"), a: str = "E",
                     b: str = "U-control", by: str = "group_pn") -> pd.DataFrame:
    """Paired Wilcoxon tests of per-participant metrics between two sets, per participant group.

    ``by='group_pn'`` groups SP and JP as Ps. Returns metric, group, mean_a, mean_b, n, statistic, pvalue.
    """
    d = acc.copy()
    d["group_pn"] = np.where(d["group"].isin(("SP", "JP")), "Ps", "NPs")
    rows = []
    for metric in metrics:
        wide = d.pivot_table(index=["participant", by], columns="evalset", values=metric).reset_index()
        if a not in wide.columns or b not in wide.columns:
            continue
        for g, sub in wide.groupby(by, sort=False):
            res = wilcoxon_paired(sub[a], sub[b])
            rows.append({"metric": metric, "group": g, f"mean_{a}": sub[a].mean(), f"mean_{b}": sub[b].mean(),
                         "n": res.n1, "statistic": res.statistic, "pvalue": res.pvalue})
    return pd.DataFrame(rows)


def np_label_detection(tt: TruthTables, evalset: str = "E", min_matches: int = 2) -> dict:
    """NP-label detection precision-recall against the P-truth (Fig 3a; paper AP = 0.68): anchors with a non-blank
    NP label and at least ``min_matches`` NP detections in the set; score = 1 - P(undetected)."""
    t = tt.truth[evalset]
    return np_label_detection_ap(np_label_frame(t, "raw"), truth_series(t, "Ps", "raw"),
                                 n_matches=t["n_matches_NPs"], min_matches=min_matches)


def np_label_detection_pooled(truth_by_iou: Mapping[float, TruthTables], evalset: str = "E",
                              min_matches: int = 2) -> dict:
    """:func:`np_label_detection` on the anchors of every clustering threshold pooled together: the reference's
    query behind the paper's AP = 0.68 reads all thresholds at once (notes section 6, item 5)."""
    frames, truths, counts = [], [], []
    for iou, tt in truth_by_iou.items():
        if evalset not in tt.truth:
            continue
        t = tt.truth[evalset]
        tag = f"@{float(iou):g}"
        frames.append(np_label_frame(t, "raw").rename(index=lambda a, _t=tag: a + _t))
        truths.append(truth_series(t, "Ps", "raw").rename(index=lambda a, _t=tag: a + _t))
        counts.append(t["n_matches_NPs"].rename(index=lambda a, _t=tag: a + _t))
    cols = sorted(set().union(*(f.columns for f in frames)) - {"label"})
    em = pd.concat([f.reindex(columns=[*cols, "label"]) for f in frames]).fillna({c: 0.0 for c in cols})
    return np_label_detection_ap(em, pd.concat(truths), n_matches=pd.concat(counts), min_matches=min_matches)


def np_label_roc_table(tt: TruthTables, evalset: str = "E", level: str = "main") -> dict:
    """NP-label classification ROC against the P-truth at ``level`` (Figs 3b, 4e, S3; paper AUROC 0.93 micro,
    0.75 macro at main level): :func:`nucls_utils.interrater.accuracy.np_label_roc` on the anchors that are not
    AMBIGUOUS by the P-truth."""
    t = tt.truth[evalset]
    keep = _not_ambiguous(t, level)
    return np_label_roc(np_label_frame(t.loc[keep], level), truth_series(t, "Ps", level).loc[keep])


def np_label_auroc_bootstrap(tt: TruthTables, evalsets: Sequence[str] | None = None, level: str = "main",
                             n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """NP-label AUROC per set with percentile bootstrap intervals over anchors (Fig 4e; notes 2c).

    Each set's resamples use the same seed (so the sets' bootstrap distributions are comparable draw by draw).

    Returns
    -------
    summary : DataFrame, one row per set: evalset, level, n, micro, macro (point estimates), micro_median,
        micro_low, micro_high, macro_median, macro_low, macro_high (5-95 % interval).
    values : dict set -> (n_boot,) bootstrap micro-AUROCs (for :func:`auroc_set_tests`).
    """
    rows, values = [], {}
    for s in [s for s in (evalsets or tt.evalsets) if s in tt.truth]:
        t = tt.truth[s]
        keep = _not_ambiguous(t, level)
        y, prob, kept = np_label_roc_inputs(np_label_frame(t.loc[keep], level),
                                            truth_series(t, "Ps", level).loc[keep])
        row = {"evalset": s, "level": level, "n": len(y)}
        if len(kept) < 2:
            rows.append(row)
            continue
        point = roc_auc_micro_macro(y, prob, kept)
        row.update(micro=point["micro"], macro=point["macro"])
        for name in ("micro", "macro"):
            ci = bootstrap_ci(lambda yy, pp, _n=name, _k=kept: roc_auc_micro_macro(yy, pp, _k)[_n], y, prob, n=n_boot,
                              rng=np.random.default_rng(seed))
            row.update({f"{name}_median": ci.median, f"{name}_low": ci.low, f"{name}_high": ci.high})
            if name == "micro":
                values[s] = ci.values
        rows.append(row)
    return pd.DataFrame(rows), values


def auroc_set_tests(values: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]] = (("E", "U-control"),
                                                                                         ("E", "B-control"),
                                                                                         ("B-control", "U-control"))
                    ) -> pd.DataFrame:
    """Mann-Whitney U between two sets' bootstrap AUROC distributions, as the reference's ``roc_pvals`` (its
    p-value shrinks with the number of resamples; read the intervals as well). Also the share of resamples in
    which the first set's AUROC is higher (the draws share the seed, so they pair up)."""
    rows = []
    for a, b in pairs:
        if a not in values or b not in values:
            continue
        res = mann_whitney(values[a], values[b])
        rows.append({"set_a": a, "set_b": b, "median_a": float(np.nanmedian(values[a])),
                     "median_b": float(np.nanmedian(values[b])), "U": res.statistic, "pvalue": res.pvalue,
                     "share_a_higher": float(np.nanmean(values[a] > values[b]))})
    return pd.DataFrame(rows)


def pooled_confusion(tt: TruthTables, evalset: str = "E", level: str = "main", who: str = "Ps",
                     normalize: str | None = "pred") -> pd.DataFrame:
    """Confusion of the labels of ``who`` against the P-truth, pooled over participants (Figs 3c, S7a): rows are
    the truth (``non-existent`` for false anchors), columns what participants said (``undetected`` = missed)."""
    t = tt.truth[evalset]
    keep = _not_ambiguous(t, level)
    lab = group_labels(tt.labels[evalset].loc[keep, tt.members(who)], level)
    return participant_confusion(lab, truth_series(t, "Ps", level).loc[keep], normalize=normalize)


def tally_by_truth(tt: TruthTables, evalset: str = "E", level: str = "main", who: str = "Ps") -> pd.DataFrame:
    """Per true class (P-truth), the mean number of participants of ``who`` giving each label to an anchor of that
    class, ``undetected`` included (Fig S7b)."""
    t = tt.truth[evalset]
    real = final_anchors(t, level)
    lab = group_labels(tt.labels[evalset].loc[real, tt.members(who)], level)
    tally = label_tally(lab)
    tally["truth"] = truth_series(t, "Ps", level).loc[real].to_numpy()
    out = tally.groupby("truth").mean()
    out.insert(0, "n_anchors", tally.groupby("truth").size())
    return out


def detection_tally(tt: TruthTables, evalset: str = "E", level: str = "main") -> pd.DataFrame:
    """One row per real anchor (P-truth at ``level``, AMBIGUOUS left out): anchor_id, fovname, truth, n_matches_Ps,
    n_matches_NPs, and how many pathologists / NPs annotated the FOV in the set (n_annotators_Ps/NPs)."""
    t = tt.truth[evalset]
    real = final_anchors(t, level)
    lab = tt.labels[evalset]
    out = pd.DataFrame({"anchor_id": real, "fovname": t.loc[real, "fovname"].to_numpy(),
                        "truth": truth_series(t, "Ps", level).loc[real].to_numpy(),
                        "n_matches_Ps": t.loc[real, "n_matches_Ps"].to_numpy(),
                        "n_matches_NPs": t.loc[real, "n_matches_NPs"].to_numpy()})
    for who in ("Ps", "NPs"):
        saw = (lab[tt.members(who)] != NOT_ANNOTATED) & lab[tt.members(who)].notna()
        out[f"n_annotators_{who}"] = saw.loc[real].sum(axis=1).to_numpy()
    return out


def ease_of_detection(tally: pd.DataFrame, who: str = "NPs") -> pd.DataFrame:
    """Per true class and x: how many real anchors ``who`` detected at least x times, and the percent of the
    class (Fig S8b). Columns: truth, min_detections, n, n_class, percent."""
    col = f"n_matches_{who}"
    rows = []
    top = int(tally[col].max()) if len(tally) else 0
    for cls, sub in tally.groupby("truth", sort=True):
        for x in range(top + 1):
            n = int((sub[col] >= x).sum())
            rows.append({"truth": cls, "min_detections": x, "n": n, "n_class": len(sub),
                         "percent": 100.0 * n / len(sub)})
    return pd.DataFrame(rows)


def detected_by_at_least(tt: TruthTables, evalset: str = "E", who: str = "NPs", x: int = 16,
                         classes: Mapping[str, tuple[str, str]] | None = None) -> pd.DataFrame:
    """Percent of the real nuclei of a class detected by at least ``x`` members of ``who`` (paper: 53.3 % of
    sTILs vs 21.4 % of fibroblasts by 16+ NPs). ``classes`` maps a display name to (level, class); default sTILs
    (super) and fibroblasts (raw). Also gives the percent among nuclei whose FOV had at least ``x`` annotators
    of the group (the only ones that can reach x)."""
    classes = classes or {"sTILs": ("super", "sTIL"), "fibroblasts": ("raw", "fibroblast")}
    rows = []
    for name, (level, cls) in classes.items():
        tally = detection_tally(tt, evalset, level)
        sub = tally[tally["truth"] == cls]
        hit = sub[f"n_matches_{who}"] >= x
        reach = sub[f"n_annotators_{who}"] >= x
        rows.append({"class": name, "level": level, "truth_class": cls, "who": who, "x": x, "n": len(sub),
                     "percent": 100.0 * hit.mean() if len(sub) else np.nan,
                     "n_in_fovs_reaching_x": int(reach.sum()),
                     "percent_in_fovs_reaching_x": 100.0 * hit[reach].mean() if reach.any() else np.nan})
    return pd.DataFrame(rows)
