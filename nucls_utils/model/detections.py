"""Detections of one image: boxes, objectness, class probabilities and low-resolution masks.

Masks are kept as the mask head's ``M x M`` probabilities in box coordinates and pasted box-locally on demand, so a
large region with thousands of nuclei costs ``N x M x M`` floats rather than ``N x H x W``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["Detections"]


def _paste_local(mask: np.ndarray, box: np.ndarray, threshold: float) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """Resample an ``M x M`` box-frame probability map onto the pixels of the box, rounded outward.

    Pixel ``(ix, iy)`` (centre ``ix + 0.5``) reads the map at ``u = (ix + 0.5 - x0) / (x1 - x0) * M - 0.5``
    (bilinear, edge-clamped); pixels whose centre lies outside the real-valued box are background.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    bx0, by0 = int(np.floor(x0)), int(np.floor(y0))
    bx1, by1 = max(int(np.ceil(x1)), bx0 + 1), max(int(np.ceil(y1)), by0 + 1)
    m = mask.shape[0]
    cx = (np.arange(bx0, bx1) + 0.5 - x0) / max(x1 - x0, 1e-6)
    cy = (np.arange(by0, by1) + 0.5 - y0) / max(y1 - y0, 1e-6)
    inside = (cy[:, None] >= 0) & (cy[:, None] <= 1) & (cx[None] >= 0) & (cx[None] <= 1)
    u = np.clip(cx * m - 0.5, 0, m - 1)
    v = np.clip(cy * m - 0.5, 0, m - 1)
    u0, v0 = np.floor(u).astype(int), np.floor(v).astype(int)
    u1, v1 = np.minimum(u0 + 1, m - 1), np.minimum(v0 + 1, m - 1)
    fu, fv = (u - u0)[None], (v - v0)[:, None]
    top = mask[v0][:, u0] * (1 - fu) + mask[v0][:, u1] * fu
    bot = mask[v1][:, u0] * (1 - fu) + mask[v1][:, u1] * fu
    prob = top * (1 - fv) + bot * fv
    return (bx0, by0, bx1, by1), (prob > threshold) & inside


@dataclass
class Detections:
    """Nuclei detected in one image.

    Attributes
    ----------
    boxes : (N, 4) float32
        ``(xmin, ymin, xmax, ymax)`` in input pixels (pixel corners, 0.2 microns per pixel).
    scores : (N,) float32
        Objectness (summed non-background probability; for per-class NMS models, the class probability).
    probs : (N, K) float32
        Class probabilities over :attr:`classes`, rows summing to 1.
    classes : tuple of K str
    mask_probs : (N, M, M) float32 or None
        Foreground probability in box coordinates.
    features : (N, D) float32 or None
        The classifier's input representation (only when requested).
    """

    boxes: np.ndarray
    scores: np.ndarray
    probs: np.ndarray
    classes: tuple[str, ...]
    mask_probs: np.ndarray | None = None
    features: np.ndarray | None = None

    def __post_init__(self):
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        self.probs = np.asarray(self.probs, dtype=np.float32).reshape(len(self.boxes), len(self.classes))
        self.classes = tuple(self.classes)
        n = len(self.boxes)
        if len(self.scores) != n:
            raise ValueError(f"{n} boxes but {len(self.scores)} scores")
        for name in ("mask_probs", "features"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{n} boxes but {len(arr)} rows of {name}")

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls, classes: Sequence[str], mask_size: int = 28) -> Detections:
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, len(classes))), tuple(classes),
                   np.zeros((0, mask_size, mask_size), np.float32))

    @classmethod
    def from_model_output(cls, out: dict, classes: Sequence[str]) -> Detections:
        """From one image's output dict of :class:`~nucls_utils.model.architecture.NucleusMaskRCNN`."""
        def arr(key):
            v = out.get(key)
            return None if v is None else v.detach().float().cpu().numpy()

        return cls(arr("boxes"), arr("scores"), arr("probs"), tuple(classes), arr("mask_probs"), arr("features"))

    @property
    def labels(self) -> np.ndarray:
        """Predicted class name of each detection (argmax of :attr:`probs`)."""
        if not len(self):
            return np.array([], dtype=object)
        return np.asarray(self.classes, dtype=object)[self.probs.argmax(1)]

    def select(self, index) -> Detections:
        """A subset (boolean mask or integer indices), in the given order."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)

        def take(a):
            return None if a is None else a[index]

        return Detections(self.boxes[index], self.scores[index], self.probs[index], self.classes,
                          take(self.mask_probs), take(self.features))

    def shifted(self, dx: float, dy: float) -> Detections:
        """The same detections with boxes translated by ``(dx, dy)`` pixels (tile -> region coordinates)."""
        boxes = self.boxes + np.array([dx, dy, dx, dy], dtype=np.float32)
        return Detections(boxes, self.scores, self.probs, self.classes, self.mask_probs, self.features)

    @classmethod
    def concat(cls, parts: Sequence[Detections], classes: Sequence[str] | None = None) -> Detections:
        """Detections of several parts as one (all parts share the class columns)."""
        parts = [p for p in parts if p is not None]
        if classes is None:
            if not parts:
                raise ValueError("concat of no detections needs the class names")
            classes = parts[0].classes
        if any(p.classes != tuple(classes) for p in parts):
            raise ValueError("cannot concatenate detections with different class columns")
        if not parts:
            return cls.empty(classes)

        def cat(name):
            arrs = [getattr(p, name) for p in parts]
            return None if any(a is None for a in arrs) else np.concatenate(arrs)

        return cls(cat("boxes"), cat("scores"), cat("probs"), tuple(classes), cat("mask_probs"), cat("features"))

    def local_masks(self, threshold: float = 0.5) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
        """Each detection's mask as ``(integer box, bool array of the box's shape)``; box rounded outward."""
        if self.mask_probs is None:
            raise ValueError("these detections carry no masks")
        return [_paste_local(m, b, threshold) for m, b in zip(self.mask_probs, self.boxes, strict=True)]

    def instance_map(self, shape: tuple[int, int], threshold: float = 0.5) -> np.ndarray:
        """``(H, W) int32`` label image: detection ``i`` painted as ``i + 1``, the most confident on top."""
        out = np.zeros(shape, dtype=np.int32)
        h, w = shape
        masks = self.local_masks(threshold)
        for i in np.argsort(self.scores, kind="stable"):
            (x0, y0, x1, y1), m = masks[i]
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            sub = m[cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
            out[cy0:cy1, cx0:cx1][sub] = i + 1
        return out

    def to_eval(self, threshold: float = 0.5):
        """As :class:`nucls_utils.evaluation.ImagePrediction` (box-local masks)."""
        from ..evaluation import ImagePrediction

        masks = [m for _, m in self.local_masks(threshold)] if self.mask_probs is not None else None
        return ImagePrediction(boxes=self.boxes.astype(float), scores=self.scores.astype(float),
                               probs=self.probs.astype(float), classes=self.classes, masks=masks)

    def to_frame(self) -> pd.DataFrame:
        """One row per detection: box, score, predicted class and one ``prob_<class>`` column per class."""
        df = pd.DataFrame(self.boxes, columns=["xmin", "ymin", "xmax", "ymax"])
        df["score"] = self.scores
        df["pred_class"] = self.labels
        for k, c in enumerate(self.classes):
            df[f"prob_{c}"] = self.probs[:, k]
        return df
