"""Class-agnostic COCO bounding-box average precision (AP@.5 and mAP@.5:.95 of Table 1), with pycocotools'
semantics (checked against it in the tests and ``bench/``). Coordinates are pixels of the 0.2 microns-per-pixel
images."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["COCO_IOU_THRESHOLDS", "COCO_RECALL_LEVELS", "coco_detection_ap"]

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
    out: dict[str, Any] = {"iou_thresholds": thresholds, "n_truth": n_truth, "n_pred": n_pred}
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

