"""Metrics of the study, defined once: box IOU, Hungarian matching, detection counts.

Boxes are ``(xmin, ymin, xmax, ymax)`` in pixel-corner coordinates (see :mod:`nucls_utils.io.masks`), so a box's
area is ``(xmax - xmin) * (ymax - ymin)``; the reference code's HistomicsTK IOU adds 1 to each side (inclusive
pixels), which differs by a pixel's width and is not used here.

Classification metrics (MCC of a two-by-two table, pooled one-vs-rest and multi-class MCC, confusion tables,
precision-recall and ROC curves, average precision, AUROC micro/macro, percentile bootstrap) follow
scikit-learn's definitions, which the tests check; :func:`roc_auc_micro_macro` documents the two "macro" AUROCs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

__all__ = ["box_iou", "match_boxes", "DetectionCounts", "detection_counts"]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IOU of two sets of boxes.

    Parameters
    ----------
    a : (N, 4) array, b : (M, 4) array
        ``(xmin, ymin, xmax, ymax)``.

    Returns
    -------
    (N, M) float ndarray in [0, 1].
    """
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(truth: np.ndarray, pred: np.ndarray, min_iou: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One-to-one matching that maximises total IOU (Hungarian assignment on ``1 - IOU``).

    Pairs below ``min_iou`` are rejected after the assignment, as in the reference evaluation.

    Returns
    -------
    truth_idx, pred_idx : (K,) int ndarrays
        Matched pairs.
    ious : (K,) float ndarray
    """
    iou = box_iou(truth, pred)
    if iou.size == 0:
        empty = np.empty(0, dtype=int)
        return empty, empty, np.empty(0)
    rows, cols = linear_sum_assignment(1.0 - iou)
    keep = iou[rows, cols] >= min_iou
    return rows[keep], cols[keep], iou[rows[keep], cols[keep]]


@dataclass(frozen=True)
class DetectionCounts:
    """True positives, false positives and false negatives, with the derived rates."""

    tp: int
    fp: int
    fn: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else 0.0

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def detection_counts(truth: np.ndarray, pred: np.ndarray, min_iou: float = 0.5) -> DetectionCounts:
    """TP/FP/FN of predicted boxes against true boxes after :func:`match_boxes`."""
    t, _, _ = match_boxes(truth, pred, min_iou)
    n_truth, n_pred = len(np.asarray(truth).reshape(-1, 4)), len(np.asarray(pred).reshape(-1, 4))
    return DetectionCounts(len(t), n_pred - len(t), n_truth - len(t))


# ---------------------------------------------------------------------------------------------------------------
# Classification metrics: MCC (two-by-two, one-vs-rest pooled, multi-class), precision-recall and ROC curves,
# average precision, AUROC micro/macro, and bootstrap intervals. Each is defined once here and used by the
# inter-rater analyses (notebooks 03-04) and the model evaluation (notebook 06).
# ---------------------------------------------------------------------------------------------------------------

__all__ += [
    "mcc_from_counts",
    "one_vs_rest_counts",
    "pooled_mcc",
    "multiclass_mcc",
    "confusion_frame",
    "precision_recall_curve",
    "average_precision",
    "roc_curve",
    "roc_auc",
    "roc_auc_micro_macro",
    "BootstrapCI",
    "bootstrap_ci",
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
    :func:`pooled_mcc`. Predicted or true labels outside ``classes`` count as "not c" for every class.

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


def pooled_mcc(truth: np.typing.ArrayLike, pred: np.typing.ArrayLike, classes: Sequence | None = None) -> float:
    """MCC of the pooled one-vs-rest table (the ``overall`` row of :func:`one_vs_rest_counts`)."""
    return float(one_vs_rest_counts(truth, pred, classes).loc["overall", "mcc"])


def multiclass_mcc(truth: np.typing.ArrayLike, pred: np.typing.ArrayLike) -> float:
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
    out = {"micro": float("nan"), "macro": float("nan"), "macro_mean_auc": float("nan")}
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


@dataclass(frozen=True)
class BootstrapCI:
    """Median and percentile interval of a bootstrapped statistic; ``values`` holds every resample's value."""

    median: float
    low: float
    high: float
    values: np.ndarray

    def __iter__(self):
        return iter((self.median, self.low, self.high))


def bootstrap_ci(
    fn: Callable[..., float], *arrays, n: int = 1000, rng: np.random.Generator, ci: tuple[float, float] = (5, 95)
) -> BootstrapCI:
    """Percentile bootstrap of ``fn(*arrays)`` over the rows (axis 0) of the arrays, resampled jointly.

    Parameters
    ----------
    fn : callable taking the resampled arrays and returning a float (NaN allowed, e.g. a one-class resample).
    *arrays : array-likes (numpy arrays, or pandas objects resampled with ``.iloc``) of one common length N.
    n : number of resamples.
    rng : numpy Generator (the only source of randomness).
    ci : lower and upper percentiles of the interval (the reference reports 5-95).

    Returns
    -------
    BootstrapCI(median, low, high, values) — median and percentiles ignore NaN resamples (all NaN -> NaN).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"arrays differ in length: {sorted(lengths)}")
    size = lengths.pop()

    def take(a, idx):
        return a.iloc[idx] if hasattr(a, "iloc") else np.asarray(a)[idx]

    values = np.empty(n)
    for b in range(n):
        idx = rng.integers(0, size, size)
        values[b] = fn(*(take(a, idx) for a in arrays))
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return BootstrapCI(float("nan"), float("nan"), float("nan"), values)
    lo, hi = np.percentile(ok, ci)
    return BootstrapCI(float(np.median(ok)), float(lo), float(hi), values)


# ---------------------------------------------------------------------------------------------------------------
# Model evaluation (Table 1): COCO-style detection AP, segmentation of matched nuclei, classification of matched
# nuclei at the main- and super-class levels, and one bundle that gives a Table-1 row for one model and test set.
# Coordinates are pixels of the 0.2 microns-per-pixel images.
# ---------------------------------------------------------------------------------------------------------------

__all__ += [
    "coco_detection_ap",
    "local_mask_box",
    "local_mask_overlap",
    "segmentation_scores",
    "classification_scores",
    "ImageTruth",
    "ImagePrediction",
    "evaluate_model",
]

#: COCO's IOU thresholds .50:.05:.95 and its 101 recall levels 0:.01:1.
COCO_IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
COCO_RECALL_LEVELS = np.linspace(0.0, 1.0, 101)


def _coco_overlaps(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) COCO box overlaps: IOU against regular GT, intersection / area(det) against crowd GT."""
    ix = np.clip(np.minimum(det[:, None, 2], gt[None, :, 2]) - np.maximum(det[:, None, 0], gt[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(det[:, None, 3], gt[None, :, 3]) - np.maximum(det[:, None, 1], gt[None, :, 1]), 0, None)
    inter = ix * iy
    area_d = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    area_g = (gt[:, 2] - gt[:, 0]) * (gt[:, 3] - gt[:, 1])
    den = np.where(crowd[None, :], area_d[:, None], area_d[:, None] + area_g[None, :] - inter)
    return np.divide(inter, den, out=np.zeros_like(inter), where=den > 0)


def _coco_match_image(
    det: np.ndarray, gt: np.ndarray, crowd: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy COCO matching of one image's detections (already in descending score order).

    For each threshold, each detection in turn takes the GT of highest overlap (>= threshold; on ties the later
    GT) among the regular GT not yet taken; failing that, among the crowd GT, which may be taken many times.

    Returns
    -------
    matched, ignored : (T, D) bool ndarrays
        Whether a detection matched a GT, and whether that GT was a crowd one (the detection is then ignored).
    """
    n_t, n_d, n_g = len(thresholds), len(det), len(gt)
    matched = np.zeros((n_t, n_d), dtype=bool)
    ignored = np.zeros((n_t, n_d), dtype=bool)
    if n_d == 0 or n_g == 0:
        return matched, ignored
    overlap = _coco_overlaps(det, gt, crowd)
    regular = ~crowd
    taken = np.zeros((n_t, n_g), dtype=bool)  # regular GT already matched, per threshold
    for d in np.flatnonzero(overlap.max(axis=1) >= thresholds.min()):
        row = overlap[d]
        above = row[None, :] >= thresholds[:, None]  # (T, G)
        cand_regular = above & regular[None, :] & ~taken
        cand = np.where(cand_regular.any(axis=1)[:, None], cand_regular, above & crowd[None, :])
        hit = np.flatnonzero(cand.any(axis=1))
        if hit.size == 0:
            continue
        values = np.where(cand[hit], row[None, :], -np.inf)
        best = n_g - 1 - np.argmax(values[:, ::-1], axis=1)  # the last GT reaching the maximum
        matched[hit, d] = True
        ignored[hit, d] = crowd[best]
        reg = ~crowd[best]
        taken[hit[reg], best[reg]] = True
    return matched, ignored


def _coco_precision(
    scores: list[np.ndarray], matched: list[np.ndarray], ignored: list[np.ndarray], n_truth: int, max_dets: int
) -> np.ndarray:
    """(T, R) interpolated precision at COCO's recall levels, keeping each image's first ``max_dets``."""
    n_t = matched[0].shape[0]
    s = np.concatenate([x[:max_dets] for x in scores])
    order = np.argsort(-s, kind="mergesort")
    m = np.concatenate([x[:, :max_dets] for x in matched], axis=1)[:, order]
    ig = np.concatenate([x[:, :max_dets] for x in ignored], axis=1)[:, order]
    tp = np.cumsum(m & ~ig, axis=1, dtype=float)
    fp = np.cumsum(~m & ~ig, axis=1, dtype=float)
    n_d = s.size
    q = np.zeros((n_t, COCO_RECALL_LEVELS.size))
    if n_d == 0:
        return q
    for t in range(n_t):
        rc = tp[t] / n_truth
        pr = tp[t] / (tp[t] + fp[t] + np.spacing(1))
        pr = np.maximum.accumulate(pr[::-1])[::-1]  # precision envelope (non-increasing in rank)
        idx = np.searchsorted(rc, COCO_RECALL_LEVELS, side="left")
        ok = idx < n_d
        q[t, ok] = pr[idx[ok]]
    return q


def coco_detection_ap(
    truth_boxes: Sequence[np.ndarray],
    truth_ignore: Sequence[np.ndarray],
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    iou_thresholds: np.typing.ArrayLike = COCO_IOU_THRESHOLDS,
    max_dets: int = 300,
    map_max_dets: int | None = 100,
) -> dict:
    """Class-agnostic COCO bounding-box average precision (pycocotools ``COCOeval(iouType='bbox')`` semantics).

    One category, area range "all", 101-point interpolated precision. Per image, detections are taken in
    descending score order (stable for ties) up to ``max_dets``; each is matched greedily to the regular GT of
    highest IOU not yet matched, and only when none qualifies to an ignored ("iscrowd") GT, whose overlap is
    intersection / area(detection) and which can absorb any number of detections. Detections matched to an
    ignored GT count neither as true nor false positives; ignored GT do not count in recall. Box overlaps use
    continuous ``(xmin, ymin, xmax, ymax)`` coordinates, i.e. the same IOU as :func:`box_iou`.

    Parameters
    ----------
    truth_boxes : sequence over images of (N_i, 4) float arrays
        GT boxes ``(xmin, ymin, xmax, ymax)`` in pixels.
    truth_ignore : sequence over images of (N_i,) bool arrays
        Ignored (crowd) GT, e.g. the AMBIGUOUS nuclei.
    pred_boxes : sequence over images of (M_i, 4) float arrays
    pred_scores : sequence over images of (M_i,) float arrays
    iou_thresholds : (T,) floats
        Default COCO's 0.50, 0.55, ..., 0.95.
    max_dets : int
        Detections kept per image for ``ap50`` and ``ap_per_iou`` (``maxDets[2]`` = 300 in the reference).
    map_max_dets : int or None
        Detections kept per image for ``map``. pycocotools' ``summarize`` computes ``stats[0]`` (mAP@.5:.95) at
        100 detections per image whatever ``params.maxDets`` says (only ``stats[1:]`` use ``maxDets[2]``), so the
        default 100 reproduces the reference's ``stats[0]``; None means ``max_dets``.

    Returns
    -------
    dict
        ``ap50`` (AP at IOU 0.5 = ``stats[1]``; NaN when 0.5 is not a threshold), ``map`` (mean AP over the
        thresholds at ``map_max_dets`` = ``stats[0]``), ``ap_per_iou`` ((T,) AP per threshold at ``max_dets``),
        ``iou_thresholds`` ((T,)), ``n_truth`` (int, the non-ignored GT) and ``n_pred`` (detections evaluated).
        The APs are fractions in [0, 1], NaN when there is no non-ignored GT (COCO's -1).
    """
    thresholds = np.asarray(iou_thresholds, dtype=float).ravel()
    effective = np.minimum(thresholds, 1 - 1e-10)  # as COCO: an IOU of exactly 1 still matches at threshold 1
    n_img = len(truth_boxes)
    if not (len(truth_ignore) == len(pred_boxes) == len(pred_scores) == n_img):
        raise ValueError("truth_boxes, truth_ignore, pred_boxes and pred_scores must have one entry per image")
    keep = max(max_dets, map_max_dets or 0)
    scores, matched, ignored = [], [], []
    n_truth = n_pred = 0
    for gt, ig, det, sc in zip(truth_boxes, truth_ignore, pred_boxes, pred_scores, strict=True):
        gt = np.asarray(gt, dtype=float).reshape(-1, 4)
        ig = np.asarray(ig, dtype=bool).ravel()
        det = np.asarray(det, dtype=float).reshape(-1, 4)
        sc = np.asarray(sc, dtype=float).ravel()
        if len(ig) != len(gt) or len(sc) != len(det):
            raise ValueError("boxes and their ignore flags / scores differ in length")
        order = np.argsort(-sc, kind="mergesort")[:keep]
        m, i = _coco_match_image(det[order], gt, ig, effective)
        scores.append(sc[order])
        matched.append(m)
        ignored.append(i)
        n_truth += int(np.sum(~ig))
        n_pred += min(len(sc), max_dets)
    out = {"iou_thresholds": thresholds, "n_truth": n_truth, "n_pred": n_pred}
    at_half = np.flatnonzero(np.isclose(thresholds, 0.5))
    if n_truth == 0 or n_img == 0:
        out.update(ap50=float("nan"), map=float("nan"), ap_per_iou=np.full(thresholds.size, np.nan))
        return out
    q = _coco_precision(scores, matched, ignored, n_truth, max_dets)
    q_map = q if map_max_dets in (None, max_dets) else _coco_precision(scores, matched, ignored, n_truth, map_max_dets)
    out["ap_per_iou"] = q.mean(axis=1)
    out["ap50"] = float(out["ap_per_iou"][at_half[0]]) if at_half.size else float("nan")
    out["map"] = float(q_map.mean())
    return out


def local_mask_box(box: np.typing.ArrayLike) -> np.ndarray:
    """Integer box that a box-local mask covers: the box rounded outward (floor xmin, ymin; ceil xmax, ymax).

    Parameters
    ----------
    box : (4,) ``(xmin, ymin, xmax, ymax)`` in pixels.

    Returns
    -------
    (4,) int ndarray; the local mask has shape ``(ymax - ymin, xmax - xmin)``.
    """
    b = np.asarray(box, dtype=float).ravel()
    return np.r_[np.floor(b[:2]), np.ceil(b[2:])].astype(int)


def _check_local_mask(box: np.ndarray, mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    shape = (int(box[3] - box[1]), int(box[2] - box[0]))
    if mask.shape != shape:
        raise ValueError(f"a mask over box {box.tolist()} must have shape {shape}, not {mask.shape}")
    return mask


def local_mask_overlap(
    box_a: np.typing.ArrayLike, mask_a: np.ndarray, box_b: np.typing.ArrayLike, mask_b: np.ndarray
) -> tuple[int, int]:
    """Intersection and sum of areas of two box-local masks.

    Parameters
    ----------
    box_a, box_b : (4,) int ``(x0, y0, x1, y1)``
        Pixel-corner boxes in a common image frame (pixels).
    mask_a, mask_b : bool arrays of shapes ``(y1 - y0, x1 - x0)`` of their boxes
        Pixel ``[r, c]`` of a mask is image pixel ``(y0 + r, x0 + c)``.

    Returns
    -------
    intersection : int
        Pixels in both masks (only the overlap window of the boxes is read).
    sum_of_areas : int
        ``area(a) + area(b)`` in pixels (so the union is ``sum_of_areas - intersection``).
    """
    a, b = np.asarray(box_a).astype(int).ravel(), np.asarray(box_b).astype(int).ravel()
    ma, mb = _check_local_mask(a, mask_a), _check_local_mask(b, mask_b)
    total = int(ma.sum()) + int(mb.sum())
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    if x1 <= x0 or y1 <= y0:
        return 0, total
    wa = ma[y0 - a[1]:y1 - a[1], x0 - a[0]:x1 - a[0]]
    wb = mb[y0 - b[1]:y1 - b[1], x0 - b[0]:x1 - b[0]]
    return int(np.count_nonzero(wa & wb)), total


def segmentation_scores(intersection: np.typing.ArrayLike, sum_of_areas: np.typing.ArrayLike) -> dict:
    """Per-nucleus and summary segmentation accuracy of matched (truth, prediction) mask pairs.

    Per pair: IOU = I / (S - I) and DICE = 2 I / S; pairs are kept only where S > 0 and I > 0 (as the
    reference; a matched pair whose masks do not touch is left out rather than scored 0).

    Parameters
    ----------
    intersection, sum_of_areas : (P,) int arrays
        From :func:`local_mask_overlap` (pixels).

    Returns
    -------
    dict
        ``n`` (kept pairs), ``median_iou``, ``median_dice`` (NaN when none kept), ``pooled_iou`` =
        sum I / (sum S - sum I) and ``pooled_dice`` = 2 sum I / sum S over the kept pairs, ``iou`` and ``dice``
        ((n,) per kept pair) and ``kept`` ((P,) bool).
    """
    inter = np.asarray(intersection, dtype=float).ravel()
    sums = np.asarray(sum_of_areas, dtype=float).ravel()
    if inter.shape != sums.shape:
        raise ValueError("intersection and sum_of_areas differ in length")
    kept = (sums > 0) & (inter > 0)
    i, s = inter[kept], sums[kept]
    iou, dice = i / (s - i), 2 * i / s
    n = int(kept.sum())
    nan = float("nan")
    return {
        "n": n,
        "median_iou": float(np.median(iou)) if n else nan,
        "median_dice": float(np.median(dice)) if n else nan,
        "pooled_iou": float(i.sum() / (s.sum() - i.sum())) if n else nan,
        "pooled_dice": float(2 * i.sum() / s.sum()) if n else nan,
        "iou": iou,
        "dice": dice,
        "kept": kept,
    }


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

    * ``accuracy``, ``mcc`` (multi-class MCC, :func:`multiclass_mcc`) over all rows.
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
    auc = {"micro": nan, "macro": nan, "macro_mean_auc": nan, "per_class": {}}
    if len(present) >= 2:
        sub = grouped[:, [groups.index(g) for g in present]]
        if softmax_again:
            sub = _softmax(sub)
        auc = roc_auc_micro_macro(truth, sub, present)
    per_class["auroc"] = [auc["per_class"].get(g, nan) for g in groups] + [nan]
    return {
        "n": n,
        "accuracy": float(np.mean(truth == pred)) if n else nan,
        "mcc": multiclass_mcc(truth, pred) if n else nan,
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


def _optional_masks(masks, n: int, what: str) -> list:
    if masks is None:
        return [None] * n
    masks = list(masks)
    if len(masks) != n:
        raise ValueError(f"{what}: {len(masks)} masks for {n} boxes")
    return masks


@dataclass
class ImageTruth:
    """Ground truth of one test image (FOV).

    Attributes
    ----------
    boxes : (N, 4) float ndarray
        ``(xmin, ymin, xmax, ymax)`` in pixels (0.2 microns per pixel).
    classes : list of N str
        Main-class names (raw names are mapped), AMBIGUOUS included (those are ignored GT in detection and left
        out of matching).
    ismask : (N,) bool ndarray, optional
        Whether the nucleus was traced (a polygon) rather than only boxed; default: where a mask is given.
    masks : list of N (bool ndarray or None), optional
        Box-local masks over :func:`local_mask_box` of each box.
    """

    boxes: np.ndarray
    classes: list[str]
    ismask: np.ndarray | None = None
    masks: list[np.ndarray | None] | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=float).reshape(-1, 4)
        self.classes = [str(c) for c in self.classes]
        n = len(self.boxes)
        if len(self.classes) != n:
            raise ValueError(f"ImageTruth: {len(self.classes)} classes for {n} boxes")
        self.masks = _optional_masks(self.masks, n, "ImageTruth")
        if self.ismask is None:
            self.ismask = np.array([m is not None for m in self.masks], dtype=bool)
        self.ismask = np.asarray(self.ismask, dtype=bool).ravel()
        if len(self.ismask) != n:
            raise ValueError(f"ImageTruth: {len(self.ismask)} ismask flags for {n} boxes")


@dataclass
class ImagePrediction:
    """Model output on one test image.

    Attributes
    ----------
    boxes : (M, 4) float ndarray
        ``(xmin, ymin, xmax, ymax)`` in pixels.
    scores : (M,) float ndarray
        Detection (objectness) scores that rank the detections for AP.
    probs : (M, K) float ndarray
        Class probabilities over ``classes``.
    classes : tuple of K str
        Column names of ``probs`` (main classes, AMBIGUOUS optional and ignored).
    masks : list of M (ndarray or None), optional
        Box-local masks over :func:`local_mask_box` of each box: bool, or probabilities thresholded at > 0.5.
    """

    boxes: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]
    masks: list[np.ndarray | None] | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=float).reshape(-1, 4)
        m = len(self.boxes)
        self.scores = np.asarray(self.scores, dtype=float).ravel()
        self.classes = tuple(str(c) for c in self.classes)
        self.probs = np.asarray(self.probs, dtype=float).reshape(m, len(self.classes))
        if len(self.scores) != m:
            raise ValueError(f"ImagePrediction: {len(self.scores)} scores for {m} boxes")
        self.masks = _optional_masks(self.masks, m, "ImagePrediction")


def _binary_mask(mask: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask)
    return mask if mask.dtype == bool else mask > 0.5


def evaluate_model(truths: Sequence[ImageTruth], preds: Sequence[ImagePrediction], min_iou: float = 0.5) -> dict:
    """One Table-1 row for one model on one test set: detection, segmentation and classification accuracy.

    * **Detection**: :func:`coco_detection_ap` with AMBIGUOUS GT as ignored (crowd) boxes and its defaults
      (``ap50`` keeps 300 detections per image, ``map`` 100, as pycocotools' ``stats[1]`` and ``stats[0]`` with
      ``maxDets=[1, 100, 300]``); ``det_n`` counts the non-ambiguous GT.
    * **Matching**: per image, AMBIGUOUS GT are dropped and :func:`match_boxes` (Hungarian, IOU >= ``min_iou``)
      pairs the rest with the predictions.
    * **Segmentation**: matched pairs whose GT ``ismask`` and both masks are given; :func:`local_mask_overlap`
      and :func:`segmentation_scores`.
    * **Classification**: all matched pairs, :func:`classification_scores` at the main and super levels.

    Parameters
    ----------
    truths, preds : sequences of :class:`ImageTruth` and :class:`ImagePrediction`, one per image, same order.
        Every prediction must have the same ``classes``.
    min_iou : float
        Matching threshold (box IOU).

    Returns
    -------
    dict
        Table-1 fields (fractions in [0, 1], NaN where undefined): ``det_n``, ``ap50``, ``map``; ``seg_n``,
        ``seg_median_iou``, ``seg_median_dice``, ``seg_pooled_iou``, ``seg_pooled_dice``; ``cls_n``;
        ``main_accuracy``, ``main_mcc``, ``main_auroc_micro``, ``main_auroc_macro``; the same with ``super_``.
        Also ``n_pred`` (int), ``detection``, ``segmentation``, ``main`` and ``super`` (the full dicts of the
        functions above) and ``pairs``: a DataFrame with one row per matched pair -- ``image``, ``truth_idx``,
        ``pred_idx`` (indices into the image's boxes), ``iou`` (box IOU), ``score``, ``true_class``,
        ``pred_class``, ``true_super``, ``pred_super``, ``ismask``, ``seg_scored`` (both masks given and GT
        ``ismask``), ``seg_intersection``, ``seg_sum`` (pixels; -1 where not scored) and one ``prob_<class>``
        column per prediction class.
    """
    from nucls_utils import taxonomy  # local import: taxonomy does not depend on this module

    truths, preds = list(truths), list(preds)
    if len(truths) != len(preds):
        raise ValueError(f"{len(truths)} truths but {len(preds)} predictions")
    class_sets = {p.classes for p in preds}
    if len(class_sets) > 1:
        raise ValueError("predictions disagree on their class columns")
    classes = class_sets.pop() if class_sets else tuple(c for c in taxonomy.MAIN_CLASSES if c != taxonomy.AMBIGUOUS)

    ambiguous = [np.array([taxonomy.is_ambiguous(c) for c in t.classes], dtype=bool) for t in truths]
    det = coco_detection_ap([t.boxes for t in truths], ambiguous, [p.boxes for p in preds], [p.scores for p in preds])

    rows, probs = [], []
    for i, (t, p, amb) in enumerate(zip(truths, preds, ambiguous, strict=True)):
        keep = np.flatnonzero(~amb)
        ti, pi, ious = match_boxes(t.boxes[keep], p.boxes, min_iou)
        for a, b, iou in zip(keep[ti], pi, ious, strict=True):
            inter = sums = -1
            scored = bool(t.ismask[a]) and t.masks[a] is not None and p.masks[b] is not None
            if scored:
                inter, sums = local_mask_overlap(
                    local_mask_box(t.boxes[a]), _binary_mask(t.masks[a]),
                    local_mask_box(p.boxes[b]), _binary_mask(p.masks[b]),
                )
            rows.append((i, int(a), int(b), float(iou), float(p.scores[b]), taxonomy.to_main(t.classes[a]),
                         bool(t.ismask[a]), scored, inter, sums))
        probs.append(p.probs[pi])
    pairs = pd.DataFrame(rows, columns=["image", "truth_idx", "pred_idx", "iou", "score", "true_class", "ismask",
                                        "seg_scored", "seg_intersection", "seg_sum"])
    prob = np.vstack(probs) if probs else np.empty((0, len(classes)))

    scored = pairs["seg_scored"].to_numpy(dtype=bool)
    seg = segmentation_scores(pairs["seg_intersection"].to_numpy()[scored], pairs["seg_sum"].to_numpy()[scored])
    main = classification_scores(pairs["true_class"].tolist(), prob, classes, level="main")
    sup = classification_scores(pairs["true_class"].tolist(), prob, classes, level="super")
    pairs["pred_class"] = main["pred"]
    pairs["true_super"] = sup["true"]
    pairs["pred_super"] = sup["pred"]
    for k, c in enumerate(classes):
        pairs[f"prob_{c}"] = prob[:, k]

    row = {
        "det_n": det["n_truth"],
        "ap50": det["ap50"],
        "map": det["map"],
        "seg_n": seg["n"],
        "seg_median_iou": seg["median_iou"],
        "seg_median_dice": seg["median_dice"],
        "seg_pooled_iou": seg["pooled_iou"],
        "seg_pooled_dice": seg["pooled_dice"],
        "cls_n": main["n"],
    }
    for name, res in (("main", main), ("super", sup)):
        for key in ("accuracy", "mcc", "auroc_micro", "auroc_macro"):
            row[f"{name}_{key}"] = res[key]
    row.update(n_pred=det["n_pred"], detection=det, segmentation=seg, main=main, super=sup, pairs=pairs)
    return row
