"""Deterministic toy detectors for the tests of tiled and whole-slide inference (a subprocess or a Dask worker
imports them from here, so they pickle by reference)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage as ndi

from nucls_utils.model.detections import Detections

CLASSES = ("tumor_nonMitotic", "nonTILnonMQ_stromal", "lymphocyte")


def dark_components(rgb: np.ndarray, threshold: float, classes: Sequence[str],
                    class_of_area: Callable[[np.ndarray], np.ndarray], min_side: int = 0) -> Detections:
    """Connected components of pixels darker than ``threshold`` (mean of RGB) as detections: box, score = mean
    darkness, one-hot class ``class_of_area(pixel counts)``, a 28 x 28 mask sampled from the component. Deterministic
    and translation-equivariant: a component wholly inside the image gets the same detection wherever it lies."""
    grey = rgb[..., :3].astype(np.float32).mean(-1)
    lab, n = ndi.label(grey < threshold)
    if n == 0:
        return Detections.empty(classes)
    slices = ndi.find_objects(lab)
    boxes = np.array([(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in slices], np.float32)
    idx = np.arange(1, n + 1)
    scores = 1.0 - np.asarray(ndi.mean(grey, lab, idx)) / 255.0
    probs = np.zeros((n, len(classes)), np.float32)
    probs[np.arange(n), class_of_area(np.asarray(ndi.sum(np.ones_like(grey), lab, idx)))] = 1.0
    masks = np.zeros((n, 28, 28), np.float32)
    for k, s in enumerate(slices):
        m = lab[s] == k + 1
        yi = ((np.arange(28) + 0.5) * m.shape[0] / 28).astype(int)
        xi = ((np.arange(28) + 0.5) * m.shape[1] / 28).astype(int)
        masks[k] = m[yi][:, xi]
    det = Detections(boxes, scores, probs, classes, masks)
    if min_side:
        det = det.select((boxes[:, 2] - boxes[:, 0] >= min_side) & (boxes[:, 3] - boxes[:, 1] >= min_side))
    return det


def dark_blobs(rgb: np.ndarray) -> Detections:
    """The synthetic slide's dark nuclei as detections (class by size; components under 4 px a side dropped)."""
    return dark_components(rgb, 110, CLASSES, lambda area: np.where(area > 400, 0, np.where(area > 120, 1, 2)),
                           min_side=4)


def slow_dark_blobs(rgb: np.ndarray) -> Detections:
    """:func:`dark_blobs`, a quarter of a second per tile (for the kill-and-resume test)."""
    time.sleep(0.25)
    return dark_blobs(rgb)
