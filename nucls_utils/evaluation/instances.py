"""Scores of whole label images, as the nucleus-segmentation field reports them: pixel overlap of the nuclei mask,
the Aggregated Jaccard Index (AJI) and panoptic quality (PQ) of the instances.

A label image is an integer array, 0 for background and one id per nucleus (ids need not be consecutive). All
three scores read one table, :func:`instance_overlaps`: the pixels every true instance shares with every predicted
one, counted in a single pass over the pixels (``numpy.bincount`` on joint ids), so a whole FOV with hundreds of
nuclei costs one pass, not one per pair.

Definitions (Kumar et al. 2017 for AJI; Kirillov et al. 2019 for PQ):

* **AJI**: each true instance G is paired with the predicted instance S of highest IOU with it (ties: the lowest
  id); the intersections of the pairs are summed into C and their unions into U; every predicted instance paired
  with no true one adds its area to U; AJI = C / U. A predicted instance may be the best of several true ones (as
  in the original). A true instance that overlaps no prediction adds only its own area to U (it is not paired
  with an arbitrary prediction of IOU 0).
* **PQ**: a true and a predicted instance match when their IOU exceeds 0.5 (such a match is unique, as
  instances of one image do not overlap); SQ = the mean IOU of the matches, RQ (also called DQ) = TP / (TP + FP / 2
  + FN / 2), PQ = SQ x RQ. With no instance in either image all three are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["InstanceOverlaps", "instance_overlaps", "aggregated_jaccard_index", "panoptic_quality", "pixel_scores"]


@dataclass(frozen=True)
class InstanceOverlaps:
    """Pixels shared by the true and predicted instances of one image."""

    true_ids: np.ndarray  # (T,) the true instances' ids
    pred_ids: np.ndarray  # (P,) the predicted instances' ids
    intersection: np.ndarray  # (T, P) int64: pixels of true instance i inside predicted instance j
    true_area: np.ndarray  # (T,) int64
    pred_area: np.ndarray  # (P,) int64

    @property
    def iou(self) -> np.ndarray:
        """(T, P) intersection over union of every pair."""
        union = self.true_area[:, None] + self.pred_area[None, :] - self.intersection
        return np.divide(self.intersection, union, out=np.zeros(union.shape), where=union > 0)


def _labels(name: str, a: np.typing.ArrayLike) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name}: a label image is 2-D, not of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == bool:
            arr = arr.astype(np.int64)
        else:
            raise ValueError(f"{name}: a label image holds integer ids, not {arr.dtype}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name}: negative id {int(arr.min())} (0 is background, nuclei are 1, 2, ...)")
    return arr


def instance_overlaps(true: np.typing.ArrayLike, pred: np.typing.ArrayLike) -> InstanceOverlaps:
    """The overlap table of two label images of the same shape (0 = background)."""
    t, p = _labels("true", true), _labels("pred", pred)
    if t.shape != p.shape:
        raise ValueError(f"true and pred label images differ in shape: {t.shape} vs {p.shape}")
    t_ids, t_idx = np.unique(t.ravel(), return_inverse=True)  # index 0 is the background where there is any
    p_ids, p_idx = np.unique(p.ravel(), return_inverse=True)
    t_bg, p_bg = bool(t_ids.size and t_ids[0] == 0), bool(p_ids.size and p_ids[0] == 0)
    # the background always at row / column 0 of the joint table, present or not
    t_idx = t_idx + (0 if t_bg else 1)
    p_idx = p_idx + (0 if p_bg else 1)
    n_t, n_p = len(t_ids) + (0 if t_bg else 1), len(p_ids) + (0 if p_bg else 1)
    joint = np.bincount(t_idx.astype(np.int64) * n_p + p_idx, minlength=n_t * n_p).reshape(n_t, n_p)
    return InstanceOverlaps(true_ids=t_ids[1:] if t_bg else t_ids, pred_ids=p_ids[1:] if p_bg else p_ids,
                            intersection=joint[1:, 1:].astype(np.int64), true_area=joint[1:, :].sum(1),
                            pred_area=joint[:, 1:].sum(0))


def aggregated_jaccard_index(true: np.typing.ArrayLike, pred: np.typing.ArrayLike) -> float:
    """AJI of a predicted label image against the true one (see the module docstring); NaN when neither image has
    an instance."""
    ov = instance_overlaps(true, pred)
    if not len(ov.true_ids) and not len(ov.pred_ids):
        return math.nan
    if not len(ov.pred_ids):
        return 0.0
    iou = ov.iou
    best = iou.argmax(axis=1)  # the first maximum: the lowest predicted id
    rows = np.arange(len(ov.true_ids))
    paired = iou[rows, best] > 0
    inter = ov.intersection[rows, best]
    c = int(inter[paired].sum())
    u = int((ov.true_area[paired] + ov.pred_area[best[paired]] - inter[paired]).sum() + ov.true_area[~paired].sum())
    unused = np.ones(len(ov.pred_ids), dtype=bool)
    unused[best[paired]] = False
    u += int(ov.pred_area[unused].sum())
    return c / u if u else math.nan


def panoptic_quality(true: np.typing.ArrayLike, pred: np.typing.ArrayLike, iou_threshold: float = 0.5) -> dict:
    """PQ, SQ and RQ of a predicted label image against the true one, with the counts behind them.

    Returns a dict: ``pq``, ``sq``, ``rq`` (floats; NaN with no instance in either image; SQ NaN with no match),
    ``tp``, ``fp``, ``fn`` (ints). ``iou_threshold`` must be >= 0.5 for a match to be unique."""
    if iou_threshold < 0.5:
        raise ValueError(f"iou_threshold {iou_threshold} < 0.5: a match would not be unique")
    ov = instance_overlaps(true, pred)
    iou = ov.iou
    matched = iou > iou_threshold
    tp = int(matched.sum())
    fp, fn = len(ov.pred_ids) - tp, len(ov.true_ids) - tp
    if tp + fp + fn == 0:
        return {"pq": math.nan, "sq": math.nan, "rq": math.nan, "tp": 0, "fp": 0, "fn": 0}
    sq = float(iou[matched].mean()) if tp else math.nan
    rq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"pq": sq * rq if tp else 0.0, "sq": sq, "rq": rq, "tp": tp, "fp": fp, "fn": fn}


def pixel_scores(true: np.typing.ArrayLike, pred: np.typing.ArrayLike) -> dict:
    """Pixel overlap of two nuclei masks (any non-zero pixel is nucleus): ``tp``, ``fp``, ``fn`` as fractions of the
    true nucleus pixels, ``dice`` and ``iou`` (NaN when neither mask has a nucleus pixel)."""
    t, p = np.asarray(true) != 0, np.asarray(pred) != 0
    if t.shape != p.shape:
        raise ValueError(f"true and pred masks differ in shape: {t.shape} vs {p.shape}")
    tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
    n_true = tp + fn
    return {"tp": tp / n_true if n_true else math.nan, "fp": fp / n_true if n_true else math.nan,
            "fn": fn / n_true if n_true else math.nan,
            "dice": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan,
            "iou": tp / (tp + fp + fn) if tp + fp + fn else math.nan}
