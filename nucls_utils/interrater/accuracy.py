"""Accuracy of participants and of the inferred NP-label against the inferred P-truth (paper Figs 3a-c, 4e, S3,
S7; notes section 2c), and the statistical tests of the inter-rater analyses.

Inputs are plain pandas objects:

* a *wide label frame* (anchors x participants, strings; ``'undetected'`` = seen but not annotated,
  ``'DidNotAnnotateFOV'``/NaN = missing), grouped to the wanted class level by the caller;
* a *truth* Series (anchor -> P-truth label): a class for a real nucleus; NaN or ``'undetected'`` where the
  anchor is not a nucleus by the P-truth (fewer than two P detections, or EM said undetected);
* an *EM frame* (anchors x ``EM_prob_<label>`` columns plus ``label``), the output of
  :func:`nucls_utils.interrater.em.infer_labels` for the NPs (the "NP-label").

All metrics come from :mod:`nucls_utils.evaluation` (one definition of each metric).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from nucls_utils.evaluation import (
    DetectionCounts,
    average_precision,
    confusion_frame,
    mcc_multiclass,
    one_vs_rest_counts,
    precision_recall_curve,
    roc_auc_micro_macro,
)
from nucls_utils.interrater.agreement import NOT_ANNOTATED, UNDETECTED, usable_mask

__all__ = [
    "FALSE_LABEL",
    "EM_PROB_PREFIX",
    "is_real",
    "participant_detection",
    "participant_classification",
    "participant_confusion",
    "label_tally",
    "np_label_detection_ap",
    "np_label_roc_inputs",
    "np_label_roc",
    "StatTest",
    "mann_whitney",
    "wilcoxon_paired",
]

#: Truth row name for anchors that are not nuclei, in :func:`participant_confusion` (Fig S7a "non-existent").
FALSE_LABEL = "non-existent"
EM_PROB_PREFIX = "EM_prob_"


def is_real(truth: pd.Series) -> pd.Series:
    """Whether each anchor is a real nucleus by the P-truth: a label that is neither NaN nor ``'undetected'``."""
    return truth.notna() & (truth != UNDETECTED) & (truth != NOT_ANNOTATED)


def _aligned_truth(labels: pd.DataFrame, truth: pd.Series) -> pd.Series:
    missing = labels.index.difference(truth.index)
    if len(missing):
        raise ValueError(f"truth lacks {len(missing)} anchors of the label frame, e.g. {list(missing[:3])}")
    return truth.reindex(labels.index)


def participant_detection(
    labels: pd.DataFrame, truth: pd.Series, false_anchor_mask: pd.Series | None = None
) -> pd.DataFrame:
    """Detection counts of each participant against the P-truth (notes 2c).

    * TP = the participant gave a class (not ``'undetected'``) to a real anchor;
    * FN = the participant said ``'undetected'`` on a real anchor;
    * FP = the participant gave a class to a *false* anchor.

    Missing cells (``DidNotAnnotateFOV``/NaN) never count.

    Parameters
    ----------
    labels : anchors x participants labels.
    truth : anchor -> P-truth label (see :func:`is_real`).
    false_anchor_mask : anchor -> bool, the anchors that count as "not a nucleus" for FPs. In the reference these
        are anchors with fewer than two P detections, or at least two but an EM truth of ``'undetected'``.
        Default: every anchor that is not real. Anchors neither real nor false are ignored.

    Returns
    -------
    DataFrame indexed by participant: tp, fp, fn, precision, recall, f1.
    """
    truth = _aligned_truth(labels, truth)
    real = is_real(truth).to_numpy()
    if false_anchor_mask is None:
        false = ~real
    else:
        false = false_anchor_mask.reindex(labels.index, fill_value=False).to_numpy(dtype=bool)
        if np.any(false & real):
            raise ValueError("false_anchor_mask marks real anchors (the truth gives them a class)")
    v = labels.to_numpy(dtype=object)
    detected = usable_mask(v, "classification")
    undetected = v == UNDETECTED
    tp = (detected & real[:, None]).sum(axis=0)
    fn = (undetected & real[:, None]).sum(axis=0)
    fp = (detected & false[:, None]).sum(axis=0)
    rows = []
    for p, a, b, c in zip(labels.columns, tp, fp, fn, strict=True):
        dc = DetectionCounts(int(a), int(b), int(c))
        rows.append((p, dc.tp, dc.fp, dc.fn, dc.precision, dc.recall, dc.f1))
    cols = ["participant", "tp", "fp", "fn", "precision", "recall", "f1"]
    return pd.DataFrame(rows, columns=cols).set_index("participant")


def participant_classification(
    labels: pd.DataFrame, truth: pd.Series, classes: Sequence[str] | None = None, per_class: bool = False
) -> pd.DataFrame:
    """Classification accuracy of each participant on the real anchors they detected (notes 2c).

    One-vs-rest two-by-two tables per class are summed into one pooled table whose MCC is ``mcc`` (the
    reference's "classification" MCC, the paper's NP range 60.7-84.2). ``mcc_multiclass`` is the multi-class
    (Gorodkin) MCC of the same pairs, for comparison with the model evaluation.

    Parameters
    ----------
    labels, truth : as in :func:`participant_detection`.
    classes : the classes of the one-vs-rest tables; default the sorted classes seen in the truth (real anchors)
        and in the labels.
    per_class : also return ``mcc_<class>`` columns (one-vs-rest MCC per class).

    Returns
    -------
    DataFrame indexed by participant: n, accuracy, mcc, mcc_multiclass (+ per-class MCCs). n = 0 gives NaN.
    """
    truth = _aligned_truth(labels, truth)
    real = is_real(truth).to_numpy()
    t_all = truth.to_numpy(dtype=object)
    v = labels.to_numpy(dtype=object)
    detected = usable_mask(v, "classification")
    if classes is None:
        classes = sorted({str(x) for x in t_all[real]} | {str(x) for x in v[detected & real[:, None]]})
    classes = list(classes)
    rows = []
    for j, p in enumerate(labels.columns):
        keep = real & detected[:, j]
        t, pr = t_all[keep], v[keep, j]
        row: dict[str, object] = {"participant": p, "n": int(keep.sum())}
        if keep.any():
            table = one_vs_rest_counts(t, pr, classes)
            row["accuracy"] = float(np.mean(t == pr))
            row["mcc_pooled_ovr"] = float(table.loc["overall", "mcc"])
            row["mcc_multiclass"] = mcc_multiclass(t, pr)
            if per_class:
                row.update({f"mcc_{c}": float(table.loc[c, "mcc"]) for c in classes})
        else:
            row.update({"accuracy": np.nan, "mcc_pooled_ovr": np.nan, "mcc_multiclass": np.nan})
            if per_class:
                row.update({f"mcc_{c}": np.nan for c in classes})
        rows.append(row)
    return pd.DataFrame(rows).set_index("participant")


def participant_confusion(
    labels: pd.DataFrame,
    truth: pd.Series,
    participants: Sequence[str] | None = None,
    false_anchor_mask: pd.Series | None = None,
    normalize: str | None = "pred",
) -> pd.DataFrame:
    """Confusion of participants' labels against the P-truth, pooled over ``participants`` (Figs 3c, S7a).

    Rows: the truth class of real anchors, and :data:`FALSE_LABEL` for false anchors. Columns: what the
    participant said, including ``'undetected'`` (a missed nucleus). With the default ``normalize='pred'`` each
    column gives "of the anchors called X, the fraction truly Y".

    Returns
    -------
    DataFrame (truth x given label), counts or fractions (see :func:`nucls_utils.evaluation.confusion_frame`).
    """
    truth = _aligned_truth(labels, truth)
    real = is_real(truth)
    if false_anchor_mask is None:
        false = ~real
    else:
        false = false_anchor_mask.reindex(labels.index, fill_value=False).astype(bool)
    rows_truth = truth.astype(object).where(real, FALSE_LABEL)
    scope = (real | false).to_numpy()
    sub = labels if participants is None else labels[list(participants)]
    v = sub.to_numpy(dtype=object)[scope]
    t = np.repeat(rows_truth.to_numpy(dtype=object)[scope][:, None], v.shape[1], axis=1)
    ok = usable_mask(v, "detection_and_classification")
    t, p = t[ok], v[ok]
    true_classes = sorted({str(x) for x in t} - {FALSE_LABEL}) + (
        [FALSE_LABEL] if FALSE_LABEL in set(t) else []
    )
    pred_classes = sorted({str(x) for x in p} - {UNDETECTED}) + ([UNDETECTED] if UNDETECTED in set(p) else [])
    return confusion_frame(t, p, true_classes, pred_classes, normalize=normalize)


def label_tally(labels: pd.DataFrame) -> pd.DataFrame:
    """Per anchor, how many participants gave each label (Fig S7b, S8); missing cells are not counted.

    Returns
    -------
    DataFrame anchors x labels (int), columns sorted with ``'undetected'`` last.
    """
    v = labels.to_numpy(dtype=object)
    ok = usable_mask(v, "detection_and_classification")
    seen = {str(x) for x in v[ok]}
    cols = sorted(seen - {UNDETECTED}) + ([UNDETECTED] if UNDETECTED in seen else [])
    counts = {c: ((v == c) & ok).sum(axis=1).astype(int) for c in cols}
    out = pd.DataFrame(counts, index=labels.index, columns=cols, dtype=int)
    return out


def _prob_columns(em_frame: pd.DataFrame, prefix: str) -> dict[str, str]:
    return {c[len(prefix) :]: c for c in em_frame.columns if isinstance(c, str) and c.startswith(prefix)}


def np_label_detection_ap(
    em_frame: pd.DataFrame,
    truth: pd.Series,
    n_matches: pd.Series | None = None,
    min_matches: int = 2,
    label_col: str = "label",
    prefix: str = EM_PROB_PREFIX,
) -> dict:
    """Detection precision-recall of the NP-label against the P-truth (Fig 3a; paper AP = 0.68).

    Anchors: a non-null NP label and, when ``n_matches`` (NP detections per anchor) is given, at least
    ``min_matches`` of them. y = the anchor is real by the P-truth (:func:`is_real`; an anchor without P-truth
    counts as not a nucleus); score = 1 - ``EM_prob_undetected``.

    Returns
    -------
    dict: ap, n, n_positive, precision, recall (curve arrays as :func:`evaluation.precision_recall_curve`).
    """
    probs = _prob_columns(em_frame, prefix)
    if UNDETECTED not in probs:
        raise ValueError(f"EM frame has no {prefix}{UNDETECTED} column")
    keep = em_frame[label_col].notna()
    if n_matches is not None:
        keep &= n_matches.reindex(em_frame.index).fillna(0) >= min_matches
    sub = em_frame.loc[keep]
    y = is_real(truth.reindex(sub.index)).to_numpy()
    score = 1.0 - sub[probs[UNDETECTED]].to_numpy(dtype=float)
    out = {"ap": average_precision(y, score), "n": int(len(y)), "n_positive": int(y.sum())}
    if y.any():
        out["precision"], out["recall"], _ = precision_recall_curve(y, score)
    else:
        out["precision"] = out["recall"] = np.empty(0)
    return out


def np_label_roc_inputs(
    em_frame: pd.DataFrame,
    truth: pd.Series,
    classes: Sequence[str] | None = None,
    label_col: str = "label",
    prefix: str = EM_PROB_PREFIX,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The (truth, probability) pairs of the NP-label classification ROC (notes 2c).

    Steps: keep real anchors (by the P-truth) whose NP label is a class (drop NP ``'undetected'`` and NaN);
    keep the classes present in the truth of those anchors (in the order of ``classes`` when given, else sorted);
    renormalise the NP probabilities over them (a row with no mass on them becomes uniform).

    Returns
    -------
    y : (N,) object array of truth labels; prob : (N, K) float array; classes : the K kept classes.
    """
    probs = _prob_columns(em_frame, prefix)
    lab = em_frame[label_col]
    keep = lab.notna() & (lab != UNDETECTED)
    t = truth.reindex(em_frame.index)
    keep &= is_real(t)
    y = t[keep].to_numpy(dtype=object)
    present = {str(x) for x in y}
    order = list(classes) if classes is not None else sorted(present)
    kept = [c for c in order if c in present]
    if classes is not None and present - set(kept):
        raise ValueError(f"truth classes not in classes: {sorted(present - set(kept))}")
    sub = em_frame.loc[keep]
    prob = (
        np.column_stack(
            [sub[probs[c]].to_numpy(dtype=float) if c in probs else np.zeros(len(sub)) for c in kept]
        )
        if kept
        else np.empty((0, 0))
    )
    if prob.size:
        s = prob.sum(axis=1, keepdims=True)
        prob = np.where(s > 0, prob / np.where(s > 0, s, 1.0), 1.0 / len(kept))
    return y, prob, kept


def np_label_roc(em_frame: pd.DataFrame, truth: pd.Series, *args, **kwargs) -> dict:
    """Classification ROC of the NP-label against the P-truth (Figs 3b, 4e; paper AUROC 0.93 micro / 0.75 macro).

    Inputs are prepared by :func:`np_label_roc_inputs` (further arguments: its ``classes``, ``label_col`` and
    ``prefix``); the AUROCs are
    :func:`nucls_utils.evaluation.roc_auc_micro_macro` (``macro`` = area of the interpolated mean ROC curve;
    ``macro_mean_auc`` = mean of per-class AUROCs).

    Returns
    -------
    the dict of ``roc_auc_micro_macro`` plus n (anchors) and classes (kept classes).
    """
    y, prob, kept = np_label_roc_inputs(em_frame, truth, *args, **kwargs)
    if not kept:
        out = {"micro": np.nan, "macro": np.nan, "macro_mean_auc": np.nan, "per_class": {}, "curves": {}}
    else:
        out = roc_auc_micro_macro(y, prob, kept)
    out["n"] = int(len(y))
    out["classes"] = kept
    return out


class StatTest(NamedTuple):
    """Result of a two-sample test: the statistic, the two-sided p-value and the sample sizes used."""

    statistic: float
    pvalue: float
    n1: int
    n2: int


def _finite(x: np.typing.ArrayLike) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    return x[~np.isnan(x)]


def mann_whitney(a: np.typing.ArrayLike, b: np.typing.ArrayLike) -> StatTest:
    """Two-sided Mann-Whitney U test of two unpaired samples (``scipy.stats.mannwhitneyu``); NaNs dropped.

    NaN statistic and p-value when a sample is empty.
    """
    a, b = _finite(a), _finite(b)
    if a.size == 0 or b.size == 0:
        return StatTest(np.nan, np.nan, int(a.size), int(b.size))
    res = stats.mannwhitneyu(a, b, alternative="two-sided")
    return StatTest(float(res.statistic), float(res.pvalue), int(a.size), int(b.size))


def wilcoxon_paired(a: np.typing.ArrayLike, b: np.typing.ArrayLike) -> StatTest:
    """Two-sided Wilcoxon signed-rank test of paired samples (``scipy.stats.wilcoxon``).

    Pairs with a NaN on either side are dropped. When no pair is left, or every difference is 0 (the test is
    undefined), the statistic and p-value are NaN.
    """
    a = np.asarray(a, dtype=float).ravel()
    b = np.asarray(b, dtype=float).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired samples differ in length ({a.size} vs {b.size})")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n == 0 or np.all(a == b):
        return StatTest(np.nan, np.nan, n, n)
    res = stats.wilcoxon(a, b, alternative="two-sided")
    return StatTest(float(res.statistic), float(res.pvalue), n, n)
