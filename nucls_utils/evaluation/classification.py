"""Classification metrics, each defined once: MCC of a two-by-two table, pooled one-vs-rest MCC and multi-class
MCC, confusion tables, precision-recall and ROC curves, average precision, AUROC (micro, and the two macro
variants), and the per-level scores of matched nuclei.

They follow scikit-learn's definitions, which the tests check; :func:`roc_auc_micro_macro` documents the two
"macro" AUROCs, and :func:`auroc_macro_curve` / :func:`auroc_macro_mean` name them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "mcc_from_counts",
    "one_vs_rest_counts",
    "mcc_pooled_ovr",
    "mcc_multiclass",
    "confusion_frame",
    "precision_recall_curve",
    "average_precision",
    "roc_curve",
    "roc_auc",
    "roc_auc_micro_macro",
    "auroc_micro",
    "auroc_macro_curve",
    "auroc_macro_mean",
    "classification_scores",
]


def mcc_from_counts(
    tp: np.typing.ArrayLike, fp: np.typing.ArrayLike, tn: np.typing.ArrayLike, fn: np.typing.ArrayLike
) -> float | np.ndarray:
    """Matthews correlation coefficient of a two-by-two table.

    ``(tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn))``, and 0 where the denominator is 0 (a row or column
    of the table is empty), as scikit-learn does. Works element-wise on arrays of counts.

    Returns
    -------
    float, or an ndarray of the broadcast shape of the inputs.
    """
    tp, fp, tn, fn = (np.asarray(x, dtype=float) for x in (tp, fp, tn, fn))
    num = tp * tn - fp * fn
    den = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    out = np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)
    return float(out) if out.ndim == 0 else out


def _as_label_array(x) -> np.ndarray:
    return np.asarray(x, dtype=object).ravel()


def one_vs_rest_counts(
    truth: np.typing.ArrayLike, pred: np.typing.ArrayLike, classes: Sequence | None = None
) -> pd.DataFrame:
    """One-vs-rest two-by-two counts per class, and their pooled sum ("overall").

    For class ``c``: TP = truth c and pred c; FP = pred c, truth not c; FN = truth c, pred not c; TN = the rest.
    The ``overall`` row sums the per-class tables (notes 2c: the participants' "classification" 2x2); its MCC is
    :func:`mcc_pooled_ovr`. Predicted or true labels outside ``classes`` count as "not c" for every class.

    Parameters
    ----------
    truth, pred : (N,) label arrays (any hashable labels).
    classes : sequence of labels, optional
        Default: the sorted union of the labels in ``truth`` and ``pred``.

    Returns
    -------
    DataFrame indexed by the classes then ``'overall'``; columns tp, fp, tn, fn (int) and mcc (float).
    """
    t, p = _as_label_array(truth), _as_label_array(pred)
    if len(t) != len(p):
        raise ValueError(f"truth and pred differ in length ({len(t)} vs {len(p)})")
    if classes is None:
        classes = sorted(set(t.tolist()) | set(p.tolist()), key=str)
    classes = list(classes)
    rows = []
    for c in classes:
        is_t, is_p = t == c, p == c
        tp = int(np.sum(is_t & is_p))
        fp = int(np.sum(~is_t & is_p))
        fn = int(np.sum(is_t & ~is_p))
        rows.append((tp, fp, len(t) - tp - fp - fn, fn))
    table = pd.DataFrame(rows, index=pd.Index(classes, dtype=object), columns=["tp", "fp", "tn", "fn"], dtype=int)
    table.loc["overall"] = table.sum(axis=0)
    table["mcc"] = mcc_from_counts(table["tp"], table["fp"], table["tn"], table["fn"])
    return table


def mcc_pooled_ovr(truth: np.typing.ArrayLike, pred: np.typing.ArrayLike, classes: Sequence | None = None) -> float:
    """MCC of the pooled one-vs-rest table (the ``overall`` row of :func:`one_vs_rest_counts`)."""
    return float(one_vs_rest_counts(truth, pred, classes).loc["overall", "mcc"])


def mcc_multiclass(truth: np.typing.ArrayLike, pred: np.typing.ArrayLike) -> float:
    """Multi-class MCC (Gorodkin's R_K), the same definition as ``sklearn.metrics.matthews_corrcoef``.

    With the confusion matrix C (n samples, c correct, t_k true and p_k predicted counts of class k):
    ``(c*n - t.p) / sqrt((n^2 - p.p)(n^2 - t.t))``; 0 when the denominator is 0.
    """
    t, p = _as_label_array(truth), _as_label_array(pred)
    if len(t) != len(p):
        raise ValueError(f"truth and pred differ in length ({len(t)} vs {len(p)})")
    if len(t) == 0:
        return 0.0
    _, codes = np.unique(np.concatenate([t, p]).astype(str), return_inverse=True)
    ti, pi = codes[: len(t)], codes[len(t):]
    k = int(codes.max()) + 1
    tk = np.bincount(ti, minlength=k).astype(float)
    pk = np.bincount(pi, minlength=k).astype(float)
    c = float(np.sum(ti == pi))
    n = float(len(t))
    den = np.sqrt((n * n - pk @ pk) * (n * n - tk @ tk))
    return float((c * n - tk @ pk) / den) if den > 0 else 0.0


def confusion_frame(
    truth: np.typing.ArrayLike,
    pred: np.typing.ArrayLike,
    true_classes: Sequence | None = None,
    pred_classes: Sequence | None = None,
    normalize: str | None = None,
) -> pd.DataFrame:
    """Confusion counts as a labelled table: rows = true labels, columns = predicted labels.

    Parameters
    ----------
    truth, pred : (N,) label arrays.
    true_classes, pred_classes : sequences, optional
        Row and column order; default the sorted labels seen. Pairs outside them are left out.
    normalize : {None, 'true', 'pred', 'all'}
        Divide by row sums, column sums or the total (empty rows/columns stay 0).

    Returns
    -------
    DataFrame (int counts, or float fractions when normalised).
    """
    t, p = _as_label_array(truth), _as_label_array(pred)
    if true_classes is None:
        true_classes = sorted(set(t.tolist()), key=str)
    if pred_classes is None:
        pred_classes = sorted(set(p.tolist()), key=str)
    ct = pd.crosstab(pd.Series(t, name="truth"), pd.Series(p, name="pred"))
    ct = ct.reindex(index=list(true_classes), columns=list(pred_classes), fill_value=0).fillna(0).astype(int)
    ct.index.name, ct.columns.name = "truth", "pred"
    if normalize is None:
        return ct
    if normalize == "true":
        den = ct.sum(axis=1).to_numpy()[:, None]
    elif normalize == "pred":
        den = ct.sum(axis=0).to_numpy()[None, :]
    elif normalize == "all":
        den = np.array([[ct.to_numpy().sum()]])
    else:
        raise ValueError(f"normalize must be None, 'true', 'pred' or 'all', not {normalize!r}")
    vals = ct.to_numpy().astype(float)
    frac = np.divide(vals, den, out=np.zeros_like(vals), where=den > 0)
    return pd.DataFrame(frac, index=ct.index, columns=ct.columns)


def _binary_inputs(y_true, score) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true).ravel()
    s = np.asarray(score, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"y_true and score differ in length ({y.size} vs {s.size})")
    if np.isnan(s).any():
        raise ValueError("score contains NaN")
    return y.astype(bool), s


def _cumulative_counts(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives at each distinct threshold, in decreasing order of score."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    ends = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]  # last index of each run of tied scores
    tps = np.cumsum(y)[ends].astype(float)
    fps = (ends + 1) - tps
    return tps, fps, s[ends]


def precision_recall_curve(
    y_true: np.typing.ArrayLike, score: np.typing.ArrayLike
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall curve, as ``sklearn.metrics.precision_recall_curve``.

    One point per distinct score (threshold = "score >= t"), ordered by increasing threshold (so decreasing
    recall), ending with the point (recall 0, precision 1); scikit-learn's default ``drop_intermediate=False``.

    Returns
    -------
    precision, recall : (T+1,) float ndarrays
    thresholds : (T,) float ndarray
    """
    y, s = _binary_inputs(y_true, score)
    if y.size == 0:
        raise ValueError("empty input")
    tps, fps, thr = _cumulative_counts(y, s)
    if tps[-1] == 0:
        raise ValueError("y_true has no positive: recall is undefined")
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def average_precision(y_true: np.typing.ArrayLike, score: np.typing.ArrayLike) -> float:
    """Average precision, the same definition as ``sklearn.metrics.average_precision_score``.

    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the distinct score thresholds (a step-wise area, no interpolation).
    NaN when ``y_true`` has no positive.
    """
    y, _ = _binary_inputs(y_true, score)
    if not y.any():
        return float("nan")
    precision, recall, _ = precision_recall_curve(y_true, score)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def roc_curve(
    y_true: np.typing.ArrayLike, score: np.typing.ArrayLike, drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Receiver operating characteristic, as ``sklearn.metrics.roc_curve``.

    Points at every distinct score, starting at (0, 0) with threshold +inf. With ``drop_intermediate`` the
    points lying on a straight segment of equal steps are dropped (the same rule as scikit-learn; the area and
    the piecewise-linear curve are unchanged).

    Returns
    -------
    fpr, tpr, thresholds : float ndarrays of one length.

    Raises
    ------
    ValueError when ``y_true`` holds only one class (the curve is undefined).
    """
    y, s = _binary_inputs(y_true, score)
    if y.all() or not y.any():
        raise ValueError("ROC is undefined when y_true holds only one class")
    tps, fps, thr = _cumulative_counts(y, s)
    if drop_intermediate and tps.size > 2:
        keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
        tps, fps, thr = tps[keep], fps[keep], thr[keep]
    tps, fps, thr = np.r_[0.0, tps], np.r_[0.0, fps], np.r_[np.inf, thr]
    return fps / fps[-1], tps / tps[-1], thr


def roc_auc(y_true: np.typing.ArrayLike, score: np.typing.ArrayLike) -> float:
    """Area under the ROC curve (trapezoids; ties count one half), as ``sklearn.metrics.roc_auc_score``.

    NaN when ``y_true`` holds only one class.
    """
    y, _ = _binary_inputs(y_true, score)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(np.trapezoid(tpr, fpr))


def roc_auc_micro_macro(y_true_labels: np.typing.ArrayLike, prob: np.typing.ArrayLike, classes: Sequence) -> dict:
    """One-vs-rest AUROC of a multi-class probability matrix: micro, macro and per class.

    Definitions (the two "macro" variants differ and the project reports ``macro``):

    * ``per_class[c]``: AUROC of column c against ``y_true == c``; NaN for a class absent from (or the only class
      of) ``y_true``.
    * ``micro``: the (N*K) one-hot truth matrix and ``prob`` raveled into one binary problem (scikit-learn's
      ``roc_auc_score(label_binarize(y, classes=classes), prob, average='micro')``).
    * ``macro``: the area under the *mean ROC curve*: each defined per-class curve's TPR is linearly interpolated
      at the union of all per-class FPR points, the TPRs are averaged, and the area of that curve is taken (the
      recipe of scikit-learn's ROC example; used by the reference for the NP-label curves, notes 2c).
    * ``macro_mean_auc``: the plain mean of the defined per-class AUROCs (scikit-learn's
      ``roc_auc_score(..., average='macro')``; the reference model evaluation's macro, notes 2g). Given for
      comparison; it is *not* ``macro``.

    Parameters
    ----------
    y_true_labels : (N,) labels, each one of ``classes`` (others are negatives for every column).
    prob : (N, K) float array; column k scores ``classes[k]``.
    classes : (K,) sequence of labels.

    Returns
    -------
    dict with keys ``micro``, ``macro``, ``macro_mean_auc`` (floats), ``per_class`` ({class: float}) and
    ``curves`` ({'micro': (fpr, tpr), 'macro': (fpr, mean_tpr), class: (fpr, tpr)} for the defined curves).
    """
    y = _as_label_array(y_true_labels)
    prob = np.asarray(prob, dtype=float)
    classes = list(classes)
    if prob.ndim != 2 or prob.shape != (len(y), len(classes)):
        raise ValueError(f"prob must have shape (N, K) = ({len(y)}, {len(classes)}), not {prob.shape}")
    onehot = np.stack([y == c for c in classes], axis=1)
    per_class, curves = {}, {}
    for k, c in enumerate(classes):
        col = onehot[:, k]
        if col.all() or not col.any():
            per_class[c] = float("nan")
            continue
        fpr, tpr, _ = roc_curve(col, prob[:, k])
        curves[c] = (fpr, tpr)
        per_class[c] = float(np.trapezoid(tpr, fpr))
    out: dict[str, Any] = {"micro": float("nan"), "macro": float("nan"), "macro_mean_auc": float("nan")}
    if onehot.any() and not onehot.all():
        fpr, tpr, _ = roc_curve(onehot.ravel(), prob.ravel())
        curves["micro"] = (fpr, tpr)
        out["micro"] = float(np.trapezoid(tpr, fpr))
    defined = [c for c in classes if c in curves]
    if defined:
        all_fpr = np.unique(np.concatenate([curves[c][0] for c in defined]))
        mean_tpr = np.mean([np.interp(all_fpr, *curves[c]) for c in defined], axis=0)
        curves["macro"] = (all_fpr, mean_tpr)
        out["macro"] = float(np.trapezoid(mean_tpr, all_fpr))
        out["macro_mean_auc"] = float(np.mean([per_class[c] for c in defined]))
    out["per_class"] = per_class
    out["curves"] = curves
    return out

def auroc_micro(y_true_labels: np.typing.ArrayLike, prob: np.typing.ArrayLike, classes: Sequence) -> float:
    """Micro-averaged one-vs-rest AUROC: the one-hot truth and ``prob`` raveled into one binary problem
    (``micro`` of :func:`roc_auc_micro_macro`)."""
    return float(roc_auc_micro_macro(y_true_labels, prob, classes)["micro"])


def auroc_macro_curve(y_true_labels: np.typing.ArrayLike, prob: np.typing.ArrayLike, classes: Sequence) -> float:
    """Macro AUROC as the area under the *mean ROC curve* of the defined classes (``macro`` of
    :func:`roc_auc_micro_macro`; the reference's NP-label curves, Fig 3b)."""
    return float(roc_auc_micro_macro(y_true_labels, prob, classes)["macro"])


def auroc_macro_mean(y_true_labels: np.typing.ArrayLike, prob: np.typing.ArrayLike, classes: Sequence) -> float:
    """Macro AUROC as the *mean of the per-class AUROCs* (scikit-learn's ``average='macro'``; ``macro_mean_auc``
    of :func:`roc_auc_micro_macro`; the reference's Table 1)."""
    return float(roc_auc_micro_macro(y_true_labels, prob, classes)["macro_mean_auc"])


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def classification_scores(
    true_labels: Sequence[str],
    probs: np.typing.ArrayLike,
    classes: Sequence[str],
    level: str = "main",
    softmax_again: bool = False,
) -> dict:
    """Classification accuracy of matched nuclei from the model's class probabilities.

    The probability columns are first grouped to ``level`` by summing children
    (:func:`nucls_utils.taxonomy.group_probabilities`; identity for main-class columns at ``level='main'``) and
    the AMBIGUOUS column, if any, is dropped without renormalising the rows (the reference zeroes it). Labels
    are mapped to ``level`` (``to_main`` / ``to_super``). The prediction is the column of highest probability
    (the first on ties).

    * ``accuracy``, ``mcc`` (multi-class MCC, :func:`mcc_multiclass`) over all rows.
    * AUROC uses the columns of the classes present in the truth (as the reference): ``auroc_micro`` and
      ``auroc_macro`` from :func:`roc_auc_micro_macro` -- ``auroc_macro`` is its ``macro_mean_auc`` (mean of the
      per-class AUROCs, scikit-learn's ``average='macro'``, which the reference's Table 1 reports);
      ``auroc_macro_curve`` is the area under the mean ROC curve. Both are NaN when fewer than two classes with a
      column are present in the truth.
    * A true label with no probability column (e.g. AMBIGUOUS) still counts, always misclassified, in accuracy
      and MCC; for AUROC its rows are negatives of every column, and its own AUROC is NaN.

    Parameters
    ----------
    true_labels : (N,) class names (raw, main or super names that map to ``level``).
    probs : (N, K) float array
        Rows of probabilities over ``classes`` (summing to 1).
    classes : (K,) class names of the columns (model classes, e.g. main classes without AMBIGUOUS).
    level : {'main', 'super'}
    softmax_again : bool
        Pass the present-class columns through a softmax before the AUROCs, the reference's quirk (notes 6.6).

    Returns
    -------
    dict
        ``n``, ``accuracy``, ``mcc``, ``auroc_micro``, ``auroc_macro``, ``auroc_macro_curve`` (floats, NaN when
        n = 0); ``classes`` (the grouped column names), ``probs`` ((N, G) grouped probabilities), ``true``,
        ``pred`` ((N,) labels); ``per_class`` (DataFrame indexed by the classes then ``'overall'``: one-vs-rest
        tp, fp, tn, fn, mcc, accuracy and auroc); ``confusion`` (DataFrame, rows truth, columns prediction).
    """
    from nucls_utils import taxonomy  # local import: taxonomy does not depend on this module

    if level not in ("main", "super"):
        raise ValueError(f"level must be 'main' or 'super', not {level!r}")
    mapper = taxonomy.to_main if level == "main" else taxonomy.to_super
    truth = np.array([mapper(str(x)) for x in true_labels], dtype=object)
    probs = np.asarray(probs, dtype=float).reshape(len(truth), len(classes))
    grouped, groups = taxonomy.group_probabilities(probs, list(classes), level)
    cols = [k for k, g in enumerate(groups) if g != taxonomy.AMBIGUOUS]
    grouped, groups = grouped[:, cols], [groups[k] for k in cols]
    if not groups:
        raise ValueError("no probability column besides AMBIGUOUS")
    pred = np.array(groups, dtype=object)[np.argmax(grouped, axis=1)] if len(truth) else truth[:0]
    n = len(truth)
    nan = float("nan")
    extra = sorted(set(truth.tolist()) - set(groups), key=str)
    per_class = one_vs_rest_counts(truth, pred, groups)
    per_class["accuracy"] = (per_class["tp"] + per_class["tn"]) / n if n else nan
    present = [g for g in groups if g in set(truth.tolist())]
    auc: dict[str, Any] = {"micro": nan, "macro": nan, "macro_mean_auc": nan, "per_class": {}}
    if len(present) >= 2:
        sub = grouped[:, [groups.index(g) for g in present]]
        if softmax_again:
            sub = _softmax(sub)
        auc = roc_auc_micro_macro(truth, sub, present)
    per_class["auroc"] = [auc["per_class"].get(g, nan) for g in groups] + [nan]
    return {
        "n": n,
        "accuracy": float(np.mean(truth == pred)) if n else nan,
        "mcc": mcc_multiclass(truth, pred) if n else nan,
        "auroc_micro": auc["micro"],
        "auroc_macro": auc["macro_mean_auc"],
        "auroc_macro_curve": auc["macro"],
        "classes": groups,
        "probs": grouped,
        "true": truth,
        "pred": pred,
        "per_class": per_class,
        "confusion": confusion_frame(truth, pred, true_classes=groups + extra, pred_classes=groups),
    }
