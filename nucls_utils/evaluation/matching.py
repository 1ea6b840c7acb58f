"""Box matching and detection counts: pairwise box IOU, Hungarian matching, TP/FP/FN and their F1.

Boxes are ``(xmin, ymin, xmax, ymax)`` in pixel-corner coordinates (see :mod:`nucls_utils.io.masks`), so a box's
area is ``(xmax - xmin) * (ymax - ymin)``; the reference code's HistomicsTK IOU adds 1 to each side (inclusive
pixels), which differs by a pixel's width and is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

__all__ = ["box_iou", "match_boxes", "f1_from_counts", "DetectionCounts", "detection_counts"]


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




def f1_from_counts(tp: np.typing.ArrayLike, fp: np.typing.ArrayLike, fn: np.typing.ArrayLike,
                   empty: float = 0.0) -> float | np.ndarray:
    """F1 score of detection counts, ``2 TP / (2 TP + FP + FN)`` (the harmonic mean of precision and recall, and
    the DICE coefficient of the detected and the true sets), element-wise on arrays.

    ``empty`` is the value where ``2 TP + FP + FN`` is 0 (nothing true, nothing detected): 0 by default, as
    scikit-learn's ``zero_division=0``; callers that must tell "no data" from "all wrong" pass ``nan``.

    Returns
    -------
    float, or an ndarray of the broadcast shape of the inputs.
    """
    tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
    den = 2 * tp + fp + fn
    out = np.divide(2 * tp, den, out=np.full(np.broadcast(tp, den).shape, float(empty)), where=den > 0)
    return float(out) if out.ndim == 0 else out
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
        return float(f1_from_counts(self.tp, self.fp, self.fn))

    def __add__(self, other: DetectionCounts) -> DetectionCounts:
        return DetectionCounts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)


def detection_counts(truth: np.ndarray, pred: np.ndarray, min_iou: float = 0.5) -> DetectionCounts:
    """TP/FP/FN of predicted boxes against true boxes after :func:`match_boxes`."""
    t, _, _ = match_boxes(truth, pred, min_iou)
    n_truth, n_pred = len(np.asarray(truth).reshape(-1, 4)), len(np.asarray(pred).reshape(-1, 4))
    return DetectionCounts(len(t), n_pred - len(t), n_truth - len(t))

