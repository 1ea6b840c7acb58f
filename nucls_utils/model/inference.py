"""Inference on images of any size with bounded memory: overlapping tiles, core ownership, one final NMS.

An image several thousand pixels a side does not fit through the network at once (activations grow with the
area, four-fold more at ``scale_factor`` 2, sixteen-fold at 4). :func:`predict_tiled` cuts it into overlapping
``tile x tile`` windows, predicts each window separately and keeps, of each window's detections, only those whose
box centre lies in the window's *core*. Cores partition the image:

* along each axis, the boundary between two neighbouring tiles is the middle of their overlap (``overlap / 2``
  from either tile's edge; the last tile is aligned to the image edge, so its overlap with the one before can be
  larger, and its boundary lies further from both edges);
* a tile side on the image border keeps everything up to the border.

So every nucleus is kept by exactly one tile, and that tile sees it whole with at least ``overlap / 2`` pixels
of context on every side that borders another tile, provided ``overlap`` is at least twice the diameter of the
largest nucleus. The detections of the tile that owns a nucleus are then what the whole-image forward pass would
give, up to the network's receptive field reaching past the tile (padding) and the position of the tile relative
to the network's stride. A final class-agnostic greedy NMS on the scores across all kept detections removes the
residual duplicates: nuclei whose box centre moves across a core boundary between two tiles' predictions.

Memory: one tile's activations at a time, plus ``N x 28 x 28`` mask probabilities (and ``N x D`` features when
requested) for the ``N`` detections kept; masks are never pasted into full-image arrays (see
:class:`~nucls_utils.model.detections.Detections`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from ..progress import tqdm
from .detections import Detections

__all__ = ["tile_starts", "core_bounds", "iter_tiles", "nms", "predict_tiled", "predict_fovs",
           "DEFAULT_TILE", "DEFAULT_OVERLAP"]

#: Tile side in input pixels (0.2 microns per pixel): 102 microns.
DEFAULT_TILE = 512
#: Overlap between neighbouring tiles: 96 px = 19 microns, twice the model's largest anchor (48 px, 9.6 microns).
DEFAULT_OVERLAP = 96
#: Final NMS IoU when the predictor carries no ``config.nms_iou`` (the paper's NMS threshold).
_FALLBACK_NMS_IOU = 0.2


# ---------------------------------------------------------------------------------------------------------------
# Tile geometry
# ---------------------------------------------------------------------------------------------------------------
def _check_geometry(tile: int, overlap: int) -> None:
    if int(tile) != tile or tile < 1:
        raise ValueError(f"tile must be a positive integer number of pixels, not {tile!r}")
    if int(overlap) != overlap or overlap < 0:
        raise ValueError(f"overlap must be a non-negative integer number of pixels, not {overlap!r}")
    if overlap >= tile:
        raise ValueError(f"overlap ({overlap} px) must be smaller than the tile ({tile} px): the stride "
                         f"tile - overlap would be {tile - overlap} px")


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """First pixel of each tile along an axis of ``length`` pixels.

    Stride ``tile - overlap``; the last tile is aligned to the end of the axis (so it overlaps the one before by
    at least ``overlap``); an axis no longer than a tile has one tile starting at 0 (of side ``length``).
    """
    _check_geometry(tile, overlap)
    if length < 1:
        raise ValueError(f"cannot tile an axis of {length} pixels")
    if length <= tile:
        return [0]
    stride = tile - overlap
    n = math.ceil((length - tile) / stride) + 1
    return [min(i * stride, length - tile) for i in range(n)]


def core_bounds(starts: Sequence[int], tile: int, length: int) -> list[tuple[float, float]]:
    """``[lo, hi)`` of each tile's core along an axis: the tile up to the middle of its overlap with each neighbour.

    The first core starts at ``-inf`` and the last ends at ``+inf`` (the image border keeps everything), so the
    cores partition the real line and every box centre belongs to exactly one tile.
    """
    ends = [min(s + tile, length) for s in starts]
    cuts = [(starts[i + 1] + ends[i]) / 2.0 for i in range(len(starts) - 1)]
    lows = [-math.inf, *cuts]
    highs = [*cuts, math.inf]
    return list(zip(lows, highs, strict=True))


def iter_tiles(shape: tuple[int, int], tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP):
    """Yield ``(y0, x0, y1, x1, (ylo, yhi), (xlo, xhi))``: each tile's pixel window and its core, row by row."""
    h, w = int(shape[0]), int(shape[1])
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    ycores, xcores = core_bounds(ys, tile, h), core_bounds(xs, tile, w)
    for y0, yc in zip(ys, ycores, strict=True):
        for x0, xc in zip(xs, xcores, strict=True):
            yield y0, x0, min(y0 + tile, h), min(x0 + tile, w), yc, xc


# ---------------------------------------------------------------------------------------------------------------
# NMS that scales with the number of boxes, not its square
# ---------------------------------------------------------------------------------------------------------------
def _touching_pairs(boxes: np.ndarray, cell: float) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, of boxes that share at least one ``cell x cell`` grid cell.

    Every pair of intersecting boxes shares a cell; the work is proportional to the number of (box, cell) incidences
    plus the pairs within each cell, not to ``N^2``.
    """
    n = len(boxes)
    c0 = np.floor(boxes[:, :2] / cell).astype(np.int64)
    c1 = np.maximum(np.ceil(boxes[:, 2:] / cell).astype(np.int64) - 1, c0)  # last cell touched (inclusive)
    span = c1 - c0 + 1  # (N, 2): cells per box along x, y
    per_box = span[:, 0] * span[:, 1]
    box_of = np.repeat(np.arange(n), per_box)
    k = np.arange(len(box_of)) - np.repeat(np.cumsum(per_box) - per_box, per_box)  # rank within its box
    cx = c0[box_of, 0] + k % span[box_of, 0]
    cy = c0[box_of, 1] + k // span[box_of, 0]
    cx -= cx.min(initial=0)
    cy -= cy.min(initial=0)
    key = cy * (int(cx.max(initial=0)) + 1) + cx
    order = np.argsort(key, kind="stable")
    key, box_of = key[order], box_of[order]
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    counts = np.diff(np.r_[starts, len(key)])
    group_end = np.repeat(starts + counts, counts)
    # entry p pairs with the entries after it in its cell
    n_after = group_end - np.arange(len(key)) - 1
    first = np.repeat(np.arange(len(key)), n_after)
    offs = np.arange(len(first)) - np.repeat(np.cumsum(n_after) - n_after, n_after)
    second = first + 1 + offs
    a, b = box_of[first], box_of[second]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pair = np.unique(lo * n + hi)
    return pair // n, pair % n


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float, cell: float | None = None) -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, highest score first.

    Same result as :func:`torchvision.ops.nms` (a box is suppressed by a kept box of higher score with IoU
    ``> iou_threshold``), but candidate pairs come from a spatial grid, so tens of thousands of boxes over a
    large region cost about linear time instead of quadratic. Ties in score keep the earlier box first.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(boxes)
    order = np.argsort(-scores, kind="stable")
    if n < 2:
        return order
    if cell is None:
        sides = np.maximum(boxes[:, 2:] - boxes[:, :2], 0)
        cell = max(float(np.median(sides)) * 2.0, 1.0)
    i, j = _touching_pairs(boxes, cell)
    if len(i):
        ix0 = np.maximum(boxes[i, 0], boxes[j, 0])
        iy0 = np.maximum(boxes[i, 1], boxes[j, 1])
        ix1 = np.minimum(boxes[i, 2], boxes[j, 2])
        iy1 = np.minimum(boxes[i, 3], boxes[j, 3])
        inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        union = area[i] + area[j] - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = np.where(union > 0, inter / union, 0.0)
        hit = iou > iou_threshold
        i, j = i[hit], j[hit]
    if not len(i):
        return order
    # direct each edge from the higher-ranked box to the lower-ranked one
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    src = np.where(rank[i] < rank[j], i, j)
    dst = np.where(rank[i] < rank[j], j, i)
    by_src = np.argsort(src, kind="stable")
    src, dst = src[by_src], dst[by_src]
    ptr = np.searchsorted(src, np.arange(n + 1))
    suppressed = np.zeros(n, dtype=bool)
    # only boxes with outgoing edges can suppress; walk them in rank order
    for s in order[np.isin(order, np.unique(src))]:
        if not suppressed[s]:
            suppressed[dst[ptr[s]:ptr[s + 1]]] = True
    return order[~suppressed[order]]


# ---------------------------------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------------------------------
def _as_tile_predictor(model_or_fn, return_features: bool) -> Callable[[np.ndarray], Detections]:
    predict = getattr(model_or_fn, "predict", None)
    if predict is not None:
        return lambda rgb: predict(rgb, return_features=return_features)
    if callable(model_or_fn):
        return model_or_fn
    raise TypeError(f"expected a model with .predict(rgb) or a callable returning Detections, "
                    f"not {type(model_or_fn).__name__}")


def _check_rgb(rgb) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] not in (3, 4):
        raise ValueError(f"expected an RGB(A) image of shape (H, W, 3), not {rgb.shape}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, not {rgb.dtype}")
    if rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"empty image of shape {rgb.shape}")
    return rgb


def _default_nms_iou(model_or_fn) -> float:
    config = getattr(model_or_fn, "config", None)
    value = getattr(config, "nms_iou", None)
    return float(value) if value is not None else _FALLBACK_NMS_IOU


def _largest_nucleus(model_or_fn) -> float | None:
    """The largest nucleus a model is designed for: its largest anchor side (input pixels), if it has a config."""
    config = getattr(model_or_fn, "config", None)
    sizes = getattr(config, "anchor_sizes", None)
    return float(max(sizes)) if sizes else None


def _detection_cap(model_or_fn) -> int | None:
    config = getattr(model_or_fn, "config", None)
    cap = getattr(config, "detections_per_img", None)
    return int(cap) if cap else None


def _warn_capped(n_capped: int, n_passes: int, cap: int | None) -> None:
    if n_capped:
        warnings.warn(f"{n_capped} of {n_passes} forward passes returned the model's maximum of {cap} detections "
                      "(config.detections_per_img): nuclei may be missing there; use smaller tiles or a model with "
                      "a larger detections_per_img", RuntimeWarning, stacklevel=3)


def predict_tiled(model_or_fn, rgb: np.ndarray, tile: int = DEFAULT_TILE, overlap: int = DEFAULT_OVERLAP, *,
                  nms_iou: float | None = None, progress: bool = False, return_features: bool = False,
                  max_nucleus: float | None = None) -> Detections:
    """Detections on an RGB image of any size, predicted tile by tile with bounded memory.

    Parameters
    ----------
    model_or_fn : NucleusMaskRCNN or callable
        A model with ``predict(tile_rgb, return_features=...)``, or any function ``tile_rgb -> Detections``
        whose boxes are in the tile's pixels (it should be translation-equivariant: a nucleus wholly inside a
        tile is detected the same way wherever the tile lies).
    rgb : (H, W, 3) uint8
        The image (0.2 microns per pixel for a NuCLS model); an alpha channel is ignored by the model.
    tile : int
        Tile side in input pixels. Images no larger than a tile along an axis get one tile along that axis, so an
        image smaller than a tile is predicted in one pass. For a model, ``(tile - overlap) * scale_factor``
        divisible by the network stride (16 or 32) puts every tile but the last along each axis (that one is
        aligned to the image edge) on the feature grid of a whole-image pass (true for the defaults at any
        integer scale factor).
    overlap : int
        Pixels shared by neighbouring tiles; each tile keeps the detections whose box centre lies in its core
        (the tile minus ``overlap / 2`` on each side bordering another tile). **Must be at least twice the
        diameter of the largest nucleus** expected, so that the tile owning a nucleus sees it whole with context
        around it; must be smaller than ``tile``. Default 96 px = 19 microns at 0.2 microns per pixel, twice the
        NuCLS model's largest anchor (48 px).
    nms_iou : float, optional
        IoU of the final class-agnostic NMS over all kept detections; default: the model's ``config.nms_iou``,
        else 0.2.
    progress : bool
        Show a tqdm bar over the tiles.
    return_features : bool
        Ask the model for the classifier's input features (a callable decides for itself).
    max_nucleus : float, optional
        Diameter (input px) of the largest expected nucleus, checked against ``overlap``; default: the model's
        largest anchor side (``config.anchor_sizes``), no check for a plain callable.

    Returns
    -------
    Detections
        In image pixels, sorted by decreasing score.

    Raises
    ------
    ValueError
        For a bad image, a tile or overlap that is not a positive / non-negative integer, ``overlap >= tile``,
        or ``overlap < 2 * max_nucleus``.

    Warns
    -----
    RuntimeWarning
        When a tile returned the model's ``config.detections_per_img`` detections (300 for NuCLS): one forward pass
        never returns more, so nuclei may be missing in that tile (a single pass over a large image would lose
        most of them; this is one more reason to tile).
    """
    rgb = _check_rgb(rgb)
    _check_geometry(tile, overlap)
    if max_nucleus is None:
        max_nucleus = _largest_nucleus(model_or_fn)
    if max_nucleus is not None and overlap < 2 * max_nucleus:
        raise ValueError(f"overlap ({overlap} px) must be at least twice the largest nucleus ({max_nucleus:g} px, "
                         f"so >= {2 * max_nucleus:g} px): a tile must see every nucleus it keeps whole, with context")
    if nms_iou is None:
        nms_iou = _default_nms_iou(model_or_fn)
    if not 0.0 <= nms_iou <= 1.0:
        raise ValueError(f"nms_iou must lie in [0, 1], not {nms_iou}")
    predict = _as_tile_predictor(model_or_fn, return_features)
    h, w = rgb.shape[:2]
    windows = list(iter_tiles((h, w), tile, overlap))
    cap, n_capped = _detection_cap(model_or_fn), 0
    kept: list[Detections] = []
    with tqdm(total=len(windows), desc="tiles", unit="tile", disable=not progress) as bar:
        for y0, x0, y1, x1, (ylo, yhi), (xlo, xhi) in windows:
            det = predict(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
            if not isinstance(det, Detections):
                raise TypeError(f"the tile predictor returned {type(det).__name__}, not Detections")
            n_capped += cap is not None and len(det) >= cap
            det = det.shifted(x0, y0)
            cx = (det.boxes[:, 0] + det.boxes[:, 2]) / 2.0
            cy = (det.boxes[:, 1] + det.boxes[:, 3]) / 2.0
            inside = (cx >= xlo) & (cx < xhi) & (cy >= ylo) & (cy < yhi)
            kept.append(det.select(inside))
            bar.update()
    _warn_capped(n_capped, len(windows), cap)
    merged = Detections.concat(kept)
    if len(windows) == 1:
        return merged.select(np.argsort(-merged.scores, kind="stable"))
    return merged.select(nms(merged.boxes, merged.scores, nms_iou))


def predict_fovs(model_or_fn, rgbs: Sequence[np.ndarray], tile: int = DEFAULT_TILE,
                 overlap: int = DEFAULT_OVERLAP, *, nms_iou: float | None = None, progress: bool = True,
                 return_features: bool = False, max_nucleus: float | None = None) -> list[Detections]:
    """Detections of each image in ``rgbs``: one pass for images no larger than ``tile``, else :func:`predict_tiled`.

    A tqdm bar counts the images (``progress``); the other arguments are those of :func:`predict_tiled`.
    """
    predict = _as_tile_predictor(model_or_fn, return_features)
    cap = _detection_cap(model_or_fn)
    out = []
    for rgb in tqdm(rgbs, desc="images", unit="image", disable=not progress):
        rgb = _check_rgb(rgb)
        if max(rgb.shape[:2]) <= tile:
            det = predict(rgb)
            _warn_capped(int(cap is not None and len(det) >= cap), 1, cap)
            out.append(det.select(np.argsort(-det.scores, kind="stable")))
        else:
            out.append(predict_tiled(model_or_fn, rgb, tile, overlap, nms_iou=nms_iou, progress=False,
                                     return_features=return_features, max_nucleus=max_nucleus))
    return out
