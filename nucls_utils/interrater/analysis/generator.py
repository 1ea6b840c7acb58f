"""On the synthetic cohort: the inferred truth and the NP-labels scored against the generator's own truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ... import taxonomy as tx
from ...evaluation import f1_from_counts
from ..accuracy import np_label_roc
from ..anchors import UNDETECTED
from ..em import majority_vote
from .accuracy import np_label_roc_table
from .truth import _UNBIASED, TruthTables, _label_col, _map_one, _not_ambiguous, np_label_frame, truth_series

__all__ = [
    "generator_confusion", "np_label_accuracy_vs_generator", "np_label_roc_vs_generator",
    "suggestion_effect", "truth_vs_generator",
]


def _gen_labels(t: pd.DataFrame, level: str) -> pd.Series:
    if "generator_truth_raw" not in t.columns:
        raise KeyError("no generator_truth_raw column: call attach_generator_truth first (synthetic cohort only)")
    g = t["generator_truth_raw"].astype(object)
    return g.map(lambda v: _map_one(v, level) if isinstance(v, str) else UNDETECTED).astype(object)


def np_label_roc_vs_generator(tt: TruthTables, evalset: str = "E", level: str = "main") -> dict:
    """:func:`np_label_roc_table` with the generator's truth in place of the P-truth: the NP-label's classification
    ROC on the anchors the P-truth calls real nuclei and that match a true nucleus whose class is not AMBIGUOUS at
    ``level``. What the analysis infers about a set (against that set's own P-truth) next to what is true of it
    (synthetic cohort; call :func:`attach_generator_truth` first)."""
    t = tt.truth[evalset]
    g = _gen_labels(t, level)
    keep = t.index[((g != UNDETECTED) & (g != tx.AMBIGUOUS)).to_numpy()]
    keep = keep.intersection(_not_ambiguous(t, level))
    return np_label_roc(np_label_frame(t.loc[keep], level), g.loc[keep])


def np_label_accuracy_vs_generator(tt: TruthTables, evalset: str = "E", level: str = "main") -> float:
    """The generator's true accuracy of a set's NP-label: the share of true nuclei that the NP EM label calls a
    nucleus and gives their true class at ``level`` (``class_accuracy`` of :func:`truth_vs_generator`)."""
    v = truth_vs_generator(tt, (level,), (evalset,), ("NPs",))
    v = v[(v["method"] == "EM") & (v["metric"] == "class_accuracy")]["value"]
    return float(v.iloc[0]) if len(v) else np.nan


def suggestion_effect(tt: TruthTables, sets: Sequence[str] = ("E", "B-control"), reference: str = _UNBIASED,
                      level: str = "main") -> pd.DataFrame:
    """The effect of suggestions on the NP-label (Fig 4e), as the analysis infers it (micro AUROC of each set
    against its own P-truth) and as it is (against the generator's truth; synthetic cohort): the AUROC of the same
    EM probabilities against the generator's classes, and the NP-label's true class accuracy
    (:func:`np_label_accuracy_vs_generator`). One row per set with suggestions: ``evalset, reference,
    inferred_auroc, inferred_reference_auroc, inferred_effect, true_auroc, true_reference_auroc, true_effect,
    same_sign, true_accuracy, true_reference_accuracy, true_accuracy_effect``."""
    rows = []
    for s in [s for s in sets if s in tt.truth and reference in tt.truth]:
        inf_a, inf_b = np_label_roc_table(tt, s, level)["micro"], np_label_roc_table(tt, reference, level)["micro"]
        true_a = np_label_roc_vs_generator(tt, s, level)["micro"]
        true_b = np_label_roc_vs_generator(tt, reference, level)["micro"]
        acc_a = np_label_accuracy_vs_generator(tt, s, level)
        acc_b = np_label_accuracy_vs_generator(tt, reference, level)
        rows.append({"evalset": s, "reference": reference, "inferred_auroc": inf_a, "inferred_reference_auroc": inf_b,
                     "inferred_effect": inf_a - inf_b, "true_auroc": true_a, "true_reference_auroc": true_b,
                     "true_effect": true_a - true_b,
                     "same_sign": bool(np.sign(inf_a - inf_b) == np.sign(true_a - true_b)),
                     "true_accuracy": acc_a, "true_reference_accuracy": acc_b, "true_accuracy_effect": acc_a - acc_b})
    return pd.DataFrame(rows)


def truth_vs_generator(tt: TruthTables, levels: Sequence[str] = ("raw", "main", "super"),
                       evalsets: Sequence[str] | None = None, whos: Sequence[str] = ("Ps", "NPs")) -> pd.DataFrame:
    """P-truth and NP-label, by EM and by majority vote, against the generator's truth (synthetic cohort).

    Items: per set and group, the anchors on which EM ran (detected by >= 2 members of the group in U-control and
    boxed by at least one of them in the set). The generator label of an anchor is the class of its matched true
    nucleus, or ``undetected`` when it matches none. Methods: ``EM`` (the study's EM label, ``undetected`` a class)
    and ``MV`` (the most frequent of the group's answers, ``undetected`` counted as an answer, ties alphabetical).

    Metrics (long format): ``label_accuracy`` (class or not-a-nucleus, all items); ``detection_f1`` (nucleus vs
    not); ``class_accuracy`` (items that are true nuclei and that the method calls a nucleus).

    ``evalsets`` and ``whos`` restrict the sets and groups (default: all).

    Returns DataFrame: evalset, who, method, level, metric, n, value.
    """
    rows = []
    for s, t in tt.truth.items():
        if evalsets is not None and s not in evalsets:
            continue
        for who in whos:
            col = _label_col(who, "raw")
            if col not in t.columns:
                continue
            items = t.index[t[col].notna().to_numpy()]
            if not len(items):
                continue
            mv_raw = majority_vote(tt.labels[s].loc[items, tt.members(who)])["label"]
            for level in levels:
                g = _gen_labels(t.loc[items], level)
                preds = {"EM": truth_series(t, who, level).loc[items],
                         "MV": mv_raw.map(lambda v, _l=level: _map_one(v, _l))}
                for method, p in preds.items():
                    p = p.astype(object)
                    g_real, p_real = g != UNDETECTED, (p != UNDETECTED) & p.notna()
                    tp = int((g_real & p_real).sum())
                    fp = int((~g_real & p_real).sum())
                    fn = int((g_real & ~p_real).sum())
                    both = g_real & p_real
                    vals = {"label_accuracy": (len(items), float((p == g).mean())),
                            "detection_f1": (len(items), f1_from_counts(tp, fp, fn)),
                            "class_accuracy": (int(both.sum()), float((p[both] == g[both]).mean()) if both.any()
                                               else np.nan)}
                    for metric, (n, v) in vals.items():
                        rows.append({"evalset": s, "who": who, "method": method, "level": level, "metric": metric,
                                     "n": n, "value": v})
    return pd.DataFrame(rows)


def generator_confusion(tt: TruthTables, evalset: str = "E", who: str = "Ps", level: str = "main") -> pd.DataFrame:
    """Crosstab of the generator's class (rows; ``undetected`` = no true nucleus) vs the EM label of ``who``
    (columns) on the anchors where EM ran (synthetic cohort)."""
    t = tt.truth[evalset]
    items = t.index[truth_series(t, who, "raw").notna().to_numpy()]
    g = _gen_labels(t.loc[items], level).rename("generator")
    p = truth_series(t, who, level).loc[items].rename(f"EM {who}")
    return pd.crosstab(g, p)
