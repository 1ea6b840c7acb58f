"""How good are the suggestions? Table S2 / Figure S4 metrics, and the stratified choice of FOVs to annotate.

Detection: suggestions are matched one-to-one to the truth (box IOU >= 0.5, Hungarian); precision, recall, F1.
Classification, over matched pairs: accuracy and MCC of the suggested class against the true class, overall (raw
classes grouped to super-classes, as the paper's Table S2 reports) and one-vs-rest per super-class (tumor, stromal,
sTILs, other).

Classification scores are NaN, with the reason in ``classification_note``, when they are not defined: when the
suggestions carry no class (there are suggestions, and every suggested class is AMBIGUOUS, e.g. the ``unlabeled``
suggestions of FOVs without tissue-region maps) or no matched pair has a non-ambiguous true class (e.g. no
suggestion at all). A score of 0 is therefore a measured 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .. import paper
from .. import taxonomy as tx
from ..evaluation import DetectionCounts, detection_counts, match_boxes, mcc_multiclass
from ..io.dataset import Nucleus

__all__ = ["SUPER_GROUPS", "NO_CLASS", "NO_PAIRS", "carries_classes", "suggestion_table", "per_fov_scores",
           "fov_sampling_features", "stratified_fov_sample", "paper_vs_run"]

#: Super-classes reported per class in Table S2.
SUPER_GROUPS = ("tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus")
#: Why classification scores are not defined (``classification_note`` of :func:`suggestion_table`).
NO_CLASS = "not defined: the suggestions carry no class"
NO_PAIRS = "not defined: no matched pair with a non-ambiguous true class"


def carries_classes(suggestions: Sequence[Sequence[Nucleus]]) -> bool:
    """Whether any suggestion has a class (a super-class other than AMBIGUOUS)."""
    return any(tx.to_super(n.raw_class) != tx.AMBIGUOUS for fov in suggestions for n in fov)


def _boxes(nuclei: Sequence[Nucleus]) -> np.ndarray:
    return np.array([n.box for n in nuclei], dtype=float).reshape(-1, 4)


def _pairs(truth: Sequence[Sequence[Nucleus]], pred: Sequence[Sequence[Nucleus]]):
    counts = DetectionCounts(0, 0, 0)
    true_cls, pred_cls = [], []
    for t, p in zip(truth, pred, strict=True):
        counts = counts + detection_counts(_boxes(t), _boxes(p))
        ti, pi, _ = match_boxes(_boxes(t), _boxes(p))
        true_cls += [tx.to_super(t[i].raw_class) for i in ti]
        pred_cls += [tx.to_super(p[j].raw_class) for j in pi]
    return counts, np.array(true_cls), np.array(pred_cls)


def suggestion_table(truth: Sequence[Sequence[Nucleus]], suggestion_sets: dict[str, Sequence[Sequence[Nucleus]]]
                     ) -> pd.DataFrame:
    """Table S2: one row per suggestion set (e.g. bootstrap, refined) against the truth of the same FOVs.

    Columns: detection N (true nuclei), precision, recall, F1 (percent); classification N (matched, true class not
    AMBIGUOUS), accuracy and MCC overall (super-classes) and MCC per super-class (percent); ``classification_note``:
    empty, or why the classification scores are NaN (:data:`NO_CLASS`, :data:`NO_PAIRS`). An MCC is also NaN when
    the truth of the matched pairs holds a single class (overall) or does not hold both sides of a one-vs-rest split.
    """
    rows = []
    for name, pred in suggestion_sets.items():
        counts, t, p = _pairs(truth, pred)
        keep = t != tx.AMBIGUOUS
        t, p = t[keep], p[keep]
        if any(len(fov) for fov in pred) and not carries_classes(pred):
            note = NO_CLASS
        else:
            note = "" if len(t) else NO_PAIRS
        row = {"suggestions": name, "detection_N": counts.tp + counts.fn, "precision": 100 * counts.precision,
               "recall": 100 * counts.recall, "F1": 100 * counts.f1, "classification_N": int(keep.sum()),
               "accuracy": np.nan, "MCC": np.nan, **{f"MCC_{g}": np.nan for g in SUPER_GROUPS},
               "recall_sTIL": np.nan, "classification_note": note}
        if not note:
            row["accuracy"] = 100 * float((t == p).mean())
            row["MCC"] = 100 * mcc_multiclass(t, p) if len(set(t)) > 1 else np.nan
            for g in SUPER_GROUPS:
                yt, yp = t == g, p == g
                row[f"MCC_{g}"] = 100 * mcc_multiclass(yt, yp) if yt.any() and (~yt).any() else np.nan
            row["recall_sTIL"] = 100 * float((p[t == "sTIL"] == "sTIL").mean()) if (t == "sTIL").any() else np.nan
        rows.append(row)
    return pd.DataFrame(rows)


def per_fov_scores(truth: Sequence[Sequence[Nucleus]], pred: Sequence[Sequence[Nucleus]]) -> pd.DataFrame:
    """Per FOV: detection F1 and super-class accuracy of matched suggestions (Figure S4), AMBIGUOUS truth excluded as
    in :func:`suggestion_table`. Accuracy is NaN for a FOV without such a matched pair, and for every FOV when the
    suggestions carry no class (:func:`carries_classes`)."""
    defined = carries_classes(pred)
    rows = []
    for t, p in zip(truth, pred, strict=True):
        c = detection_counts(_boxes(t), _boxes(p))
        ti, pi, _ = match_boxes(_boxes(t), _boxes(p))
        agree = [tx.to_super(t[i].raw_class) == tx.to_super(p[j].raw_class) for i, j in zip(ti, pi, strict=True)
                 if tx.to_super(t[i].raw_class) != tx.AMBIGUOUS]
        rows.append({"F1": 100 * c.f1, "accuracy": 100 * float(np.mean(agree)) if agree and defined else np.nan})
    return pd.DataFrame(rows)


def fov_sampling_features(refined: Sequence[Sequence[Nucleus]], confidences: Sequence[Sequence[float]],
                          bootstrap: Sequence[Sequence[Nucleus]], low_confidence: float = 0.7) -> pd.DataFrame:
    """Per FOV, from its suggestions: count, predominant-class ratio, second-class ratio, bootstrap-vs-refined class
    discordance, low-confidence count and extreme-size count (top/bottom 5 % of areas over the cohort)."""
    areas = np.concatenate([[n.area for n in r] for r in refined if r]) if any(refined) else np.array([0.0])
    lo, hi = np.percentile(areas, [5, 95])
    rows = []
    for ref, conf, boot in zip(refined, confidences, bootstrap, strict=True):
        classes = pd.Series([n.raw_class for n in ref], dtype=object).value_counts(normalize=True)
        ti, pi, _ = match_boxes(_boxes(boot), _boxes(ref))
        rows.append({
            "n_suggestions": len(ref),
            "ratio_predominant": float(classes.iloc[0]) if len(classes) else 0.0,
            "ratio_second": float(classes.iloc[1]) if len(classes) > 1 else 0.0,
            "n_discordant": int(sum(boot[i].raw_class != ref[j].raw_class for i, j in zip(ti, pi, strict=True))),
            "n_low_confidence": int(sum(c < low_confidence for c in conf)),
            "n_extreme": int(sum(n.area < lo or n.area > hi for n in ref)),
        })
    return pd.DataFrame(rows)


def stratified_fov_sample(features: pd.DataFrame, n: int, rng: np.random.Generator, min_nuclei: int = 5
                          ) -> pd.DataFrame:
    """Choose ``n`` FOVs as the paper did: 1/6 favouring a single predominant class, 1/6 two co-dominant classes,
    1/6 bootstrap-vs-refined discordance, and 1/2 from the low-confidence and extreme-size pools.

    Each stratum takes the highest-ranked FOVs of its property from a shuffled order (ties broken at random), skipping
    FOVs already chosen and FOVs with fewer than ``min_nuclei`` suggestions. Returns the chosen rows with a
    ``stratum`` column, in choice order.
    """
    eligible = features[features["n_suggestions"] >= min_nuclei]
    if len(eligible) < n:
        eligible = features
    n = min(n, len(eligible))
    order = eligible.iloc[rng.permutation(len(eligible))]
    per6 = n // 6
    plan = [("single_class", "ratio_predominant", per6), ("two_class", "ratio_second", per6),
            ("discordance", "n_discordant", per6), ("low_confidence", "n_low_confidence", (n - 3 * per6 + 1) // 2),
            ("extreme_size", "n_extreme", n - 3 * per6 - (n - 3 * per6 + 1) // 2)]
    chosen: list[int] = []
    strata: list[str] = []
    for stratum, prop, k in plan:
        ranked = order.sort_values(prop, ascending=False, kind="stable")
        picks = [i for i in ranked.index if i not in chosen][:k]
        chosen += picks
        strata += [stratum] * len(picks)
    return features.loc[chosen].assign(stratum=strata)


def paper_vs_run(s2: pd.DataFrame, *, singlerater_types: pd.Series | None = None) -> pd.DataFrame:
    """Notebook 02's "paper vs this run" table: Table S2's headline cells, against the first reference in ``s2``
    (the output of :func:`suggestion_table` with a ``reference`` column), and the single-rater clicked-boundary share.
    (The E set's clicked share per participant, Fig 4b, is notebook 03's, measured on the inferred anchors:
    :func:`nucls_utils.interrater.analysis.clicked_share_table`.)

    Parameters
    ----------
    s2 : DataFrame
        Table S2 rows (``suggestions``, ``reference``, ``F1``, ``MCC``, ``recall_sTIL``); the first reference is used.
    singlerater_types : Series, optional
        Annotation type (``polyline`` / ``rectangle``) of every uncorrected single-rater annotation.

    Returns ``quantity, paper, this_run, note, role, source, paper_key`` (paper values from
    :mod:`nucls_utils.paper`; ``role``: whether the simulated crowd was fitted to the row).
    """
    first = s2[s2["reference"] == s2["reference"].iloc[0]].set_index("suggestions")
    refs = [("tableS2.bootstrap_f1", "bootstrap detection F1", "bootstrap", "F1"),
            ("tableS2.refined_f1", "refined detection F1", "refined", "F1"),
            ("tableS2.bootstrap_region_mcc", "bootstrap (region) class MCC", "bootstrap", "MCC"),
            ("tableS2.refined_model_mcc", "refined (model) class MCC", "refined", "MCC"),
            ("tableS2.refined_model_stil_recall", "refined (model) sTIL recall", "refined", "recall_sTIL"),
            ("tableS2.refined_region_mcc", "refined (region) class MCC", "refined, region class", "MCC"),
            ("tableS2.refined_region_stil_recall", "refined (region) sTIL recall", "refined, region class",
             "recall_sTIL")]
    rows = []
    if singlerater_types is not None:
        rows.append(("dataset.clicked_share_singlerater", "clicked boundaries, single-rater, %",
                     100 * float((singlerater_types == "polyline").mean())))
    rows += [(ref, q, float(first.at[name, col])) for ref, q, name, col in refs if name in first.index]
    from ..crowd.calibrate import role

    out = pd.DataFrame([paper.row(ref, q, round(v, 1) if np.isfinite(v) else v,
                                  "" if np.isfinite(v) else "not defined on this run") for ref, q, v in rows])
    out.insert(4, "role", [role(k) for k in out["paper_key"]])
    return out
