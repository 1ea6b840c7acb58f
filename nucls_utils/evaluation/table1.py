"""One Table-1 row for one model on one test set: detection, segmentation and classification accuracy of its
predictions against the ground truth of each test image (FOV)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from .classification import classification_scores
from .detection import coco_detection_ap
from .matching import match_boxes
from .segmentation import local_mask_box, local_mask_overlap, segmentation_scores

__all__ = ["ImageTruth", "ImagePrediction", "evaluate_model"]

_Masks = list[np.ndarray | None]


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
        # filled in by __post_init__
        t_ismask, t_masks, p_masks = cast(np.ndarray, t.ismask), cast(_Masks, t.masks), cast(_Masks, p.masks)
        for a, b, iou in zip(keep[ti], pi, ious, strict=True):
            inter = sums = -1
            ta, pb = t_masks[a], p_masks[b]
            scored = bool(t_ismask[a]) and ta is not None and pb is not None
            if ta is not None and pb is not None and scored:
                inter, sums = local_mask_overlap(local_mask_box(t.boxes[a]), _binary_mask(ta),
                                                 local_mask_box(p.boxes[b]), _binary_mask(pb))
            rows.append((i, int(a), int(b), float(iou), float(p.scores[b]), taxonomy.to_main(t.classes[a]),
                         bool(t_ismask[a]), scored, inter, sums))
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
