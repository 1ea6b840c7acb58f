"""Segmentation accuracy of matched nuclei: box-local masks, their overlap, and IOU / DICE per pair and pooled."""

from __future__ import annotations

import numpy as np

__all__ = ["local_mask_box", "local_mask_overlap", "dice_from_areas", "segmentation_scores"]


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


def dice_from_areas(intersection: np.typing.ArrayLike, sum_of_areas: np.typing.ArrayLike) -> float | np.ndarray:
    """DICE coefficient ``2 I / S`` of two regions from their intersection ``I`` and the sum of their areas ``S``,
    element-wise; NaN where ``S`` is 0 (two empty regions)."""
    i, s = np.asarray(intersection, dtype=float), np.asarray(sum_of_areas, dtype=float)
    out = np.divide(2 * i, s, out=np.full(np.broadcast(i, s).shape, np.nan), where=s > 0)
    return float(out) if out.ndim == 0 else out


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
    iou, dice = i / (s - i), dice_from_areas(i, s)
    n = int(kept.sum())
    nan = float("nan")
    return {
        "n": n,
        "median_iou": float(np.median(iou)) if n else nan,
        "median_dice": float(np.median(dice)) if n else nan,
        "pooled_iou": float(i.sum() / (s.sum() - i.sum())) if n else nan,
        "pooled_dice": float(dice_from_areas(i.sum(), s.sum())) if n else nan,
        "iou": iou,
        "dice": dice,
        "kept": kept,
    }

