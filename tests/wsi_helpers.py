"""Helpers of tests/test_wsi.py that a subprocess or a Dask worker imports (so they pickle by reference)."""

from __future__ import annotations

import time

import numpy as np
from scipy import ndimage as ndi

from nucls_utils.model.detections import Detections

CLASSES = ("tumor_nonMitotic", "nonTILnonMQ_stromal", "lymphocyte")


def dark_blobs(rgb: np.ndarray) -> Detections:
    """Dark connected components of a tile as nuclei: deterministic and translation-equivariant (a component wholly
    inside the tile gets the same box, score, class and mask wherever the tile lies). Class by size."""
    grey = rgb[..., :3].astype(np.float32).mean(-1)
    lab, n = ndi.label(grey < 110)
    if n == 0:
        return Detections.empty(CLASSES)
    slices = ndi.find_objects(lab)
    boxes = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices], np.float32)
    idx = np.arange(1, n + 1)
    scores = 1.0 - np.asarray(ndi.mean(grey, lab, idx)) / 255.0
    area = np.asarray(ndi.sum(np.ones_like(grey), lab, idx))
    probs = np.zeros((n, 3), np.float32)
    probs[np.arange(n), np.where(area > 400, 0, np.where(area > 120, 1, 2))] = 1.0
    masks = np.zeros((n, 28, 28), np.float32)
    for k, s in enumerate(slices):
        m = lab[s] == k + 1
        yi = ((np.arange(28) + 0.5) * m.shape[0] / 28).astype(int)
        xi = ((np.arange(28) + 0.5) * m.shape[1] / 28).astype(int)
        masks[k] = m[yi][:, xi]
    keep = (boxes[:, 2] - boxes[:, 0] >= 4) & (boxes[:, 3] - boxes[:, 1] >= 4)
    return Detections(boxes, scores, probs, CLASSES, masks).select(keep)


def slow_dark_blobs(rgb: np.ndarray) -> Detections:
    """:func:`dark_blobs`, a quarter of a second per tile (for the kill-and-resume test)."""
    time.sleep(0.25)
    return dark_blobs(rgb)
