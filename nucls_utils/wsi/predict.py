"""The NuCLS model on a whole slide: tissue tiles, core ownership, resumable per-tile outputs, one merge.

:func:`predict_slide` is what ``python -m nucls_utils.wsi predict`` runs:

1. **Plan** (the caller's process): open the slide, read a thumbnail, find tissue (:mod:`.tissue`), estimate the
   slide's H&E stain vectors on a few full-resolution tissue regions (one Macenko estimate for the whole slide, so
   neighbouring tiles are normalised alike), and lay the tiles of :func:`nucls_utils.model.inference.iter_tiles`
   over the slide *in model pixels* (0.2 microns per pixel). Tiles whose core holds less than ``min_tissue`` of
   tissue are skipped.
2. **Tiles** (in this process, or one task per tile on a Dask cluster): read the level-0 pixels under the tile and
   resample them to 0.2 um/px with one affine map of the whole slide (so a model pixel has the same value whichever
   tile reads it), normalise, predict, keep the detections whose box centre lies in the tile's core, and write them
   to ``tiles/r<row>_c<col>.parquet`` (level-0 coordinates, polygons traced from the mask head). Each file is
   written atomically and flushed: a killed run loses only the tiles in flight, and a re-run under the same run key
   (:func:`run_key`: slide, weights, settings, device, threads) skips every tile already written.
3. **Merge** (the caller's process): one class-agnostic greedy NMS over every kept box (the residual duplicates of
   nuclei whose box centre moves across a core boundary between two tiles' predictions), reading only boxes and
   scores; then the kept rows are streamed tile by tile into ``nuclei.parquet``, ``nuclei.geojson`` (QuPath),
   ``annotations_dsa.json`` (HistomicsUI / DSA), the density grids of ``heatmap.png`` and ``summary.json``
   (:mod:`.export`).

The result is, by construction, :func:`~nucls_utils.model.inference.predict_tiled` applied to the whole slide
resampled to 0.2 um/px (tests/test_wsi.py checks it), computed with memory bounded by one tile plus the boxes of
the slide's nuclei.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from ..config import MICRONS_PER_PIXEL
from ..io.atomic import atomic_path
from ..io.manifest import sha256_file
from ..progress import tqdm
from .reader import SlideError, open_slide
from .tissue import TISSUE_METHODS, tile_tissue_fraction, tissue_mask

__all__ = ["WSI_VERSION", "MODEL_MPP", "WsiConfig", "TileJob", "SlidePlan", "plan_slide", "read_model_window",
           "mask_polygons", "tile_table", "run_tile", "predict_slide", "tile_path", "run_key", "check_model_dir",
           "merged_keep", "predict_cohort", "RunMismatch", "TileContext", "ModelFacts", "model_facts",
           "close_cached"]

#: Version of the outputs' layout; part of the run key (a change starts a run over).
WSI_VERSION = 1
#: Microns per pixel the NuCLS model works at.
MODEL_MPP = MICRONS_PER_PIXEL


class RunMismatch(RuntimeError):
    """The output folder holds tiles of another slide, model or setting."""


@dataclass(frozen=True)
class WsiConfig:
    """Settings of a whole-slide prediction (sizes in model pixels, 0.2 um/px)."""

    #: tile side and overlap: those of :func:`nucls_utils.model.inference.predict_tiled` (``DEFAULT_TILE``,
    #: ``DEFAULT_OVERLAP``; not imported here, so that reading this module does not load torch; a test keeps them
    #: equal)
    tile: int = 512
    overlap: int = 96
    tissue_method: str = "otsu"
    #: a tile with less than this share of tissue (on the thumbnail's mask) is not predicted (0: every tile)
    min_tissue: float = 0.05
    thumbnail_side: int = 2048
    #: Macenko-normalise every tile with the slide's stain vectors, as the study normalised its FOVs
    normalise: bool = True
    mask_threshold: float = 0.5
    #: Douglas-Peucker tolerance of the traced outlines, in mask-head cells (28 per box side)
    polygon_tolerance: float = 0.5
    #: side of the cells of the heatmap and of the stroma rule, microns
    grid_um: float = 50.0

    def __post_init__(self):
        if self.tissue_method not in TISSUE_METHODS:
            raise ValueError(f"tissue_method must be one of {', '.join(TISSUE_METHODS)}, not {self.tissue_method!r}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ValueError(f"min_tissue must lie in [0, 1], not {self.min_tissue}")
        if self.overlap >= self.tile or self.tile < 32:
            raise ValueError(f"need 32 <= tile and overlap < tile, not tile {self.tile}, overlap {self.overlap}")

    def with_(self, **changes) -> WsiConfig:
        return replace(self, **changes)


@dataclass(frozen=True)
class TileJob:
    """One tile: its window and core in model pixels, and the file its nuclei go to."""

    row: int
    col: int
    window: tuple[int, int, int, int]  # x0, y0, x1, y1
    core: tuple[float, float, float, float]  # xlo, xhi, ylo, yhi
    tissue: float


@dataclass
class SlidePlan:
    """Everything the tiles need, computed once in the caller's process (small; pickled to the workers)."""

    slide_path: str
    reader: str
    mpp: float
    mpp_source: str
    width: int
    height: int
    model_scale: float  # model pixels per level-0 pixel (mpp / 0.2)
    config: WsiConfig
    stain_matrix: np.ndarray | None
    thumbnail: np.ndarray
    thumb_downsample: float  # level-0 pixels per thumbnail pixel
    tissue: np.ndarray
    jobs: list[TileJob] = field(default_factory=list)
    n_tiles_total: int = 0
    seconds: dict = field(default_factory=dict)

    @property
    def model_shape(self) -> tuple[int, int]:
        return _model_shape(self.width, self.height, self.model_scale)


def _model_shape(width: int, height: int, scale: float) -> tuple[int, int]:
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def _slide_stain_matrix(slide, thumbnail: np.ndarray, thumbnail_ds: float, mask: np.ndarray, n_regions: int = 8
                        ) -> np.ndarray | None:
    """The slide's Macenko stain vectors, estimated on ``n_regions`` level-0 regions (512 px, or 256 or 128 on a
    small slide) that are at least 80 % tissue on the thumbnail's mask, spread over the slide in reading order, so
    that hematoxylin and eosin are resolved as in a field of view rather than averaged in thumbnail pixels; on the
    thumbnail's tissue pixels when no such region exists. None without enough tissue."""
    from scipy import ndimage as ndi

    from ..model.data import _macenko_w, _od

    for side in (512, 256, 128):
        cell = max(int(round(side / thumbnail_ds)), 1)
        share = ndi.uniform_filter(mask.astype(np.float32), size=cell, mode="constant")  # tissue around each pixel
        rows, cols = np.nonzero(share[cell // 2::cell, cell // 2::cell] >= 0.8)
        if len(rows):
            pick = np.linspace(0, len(rows) - 1, min(n_regions, len(rows))).round().astype(int)
            pixels = [slide.read(int(c * cell * thumbnail_ds), int(r * cell * thumbnail_ds), side, side).reshape(-1, 3)
                      for r, c in zip(rows[pick], cols[pick], strict=True)]
            return _macenko_w(_od(np.concatenate(pixels).reshape(-1, 1, 3)), min_tissue_fraction=0.01)
    pixels = thumbnail[mask]
    if len(pixels) < 100:
        return None
    return _macenko_w(_od(pixels.reshape(-1, 1, 3)), min_tissue_fraction=0.01)


def plan_slide(slide_path: str | os.PathLike[str], config: WsiConfig | None = None, *, mpp: float | None = None,
               reader: str = "auto") -> SlidePlan:
    """Open the slide, find its tissue and lay out the tiles (step 1 of the module docstring). A tile is predicted
    when its *core* (the part whose nuclei it keeps) holds at least ``min_tissue`` of tissue."""
    from ..model.inference import iter_tiles, tile_starts

    config = config or WsiConfig()
    t0 = time.perf_counter()
    with open_slide(slide_path, mpp=mpp, reader=reader) as slide:
        t_open = time.perf_counter()
        thumb, ds = slide.thumbnail(config.thumbnail_side)
        t_thumb = time.perf_counter()
        mask = tissue_mask(thumb, method=config.tissue_method, um_per_px=ds * slide.mpp)
        t_tissue = time.perf_counter()
        stain = _slide_stain_matrix(slide, thumb, ds, mask) if config.normalise else None
        if config.normalise and stain is None:
            import warnings

            warnings.warn(f"{slide.path.name}: too little tissue for a slide-level stain estimate; tiles are not "
                          "normalised", RuntimeWarning, stacklevel=2)
        scale = slide.mpp / MODEL_MPP
        plan = SlidePlan(str(slide.path), slide.reader, slide.mpp, slide.mpp_source, slide.width, slide.height, scale,
                         config, stain, thumb, ds, mask)
    h, w = plan.model_shape
    n_cols = len(tile_starts(w, config.tile, config.overlap))
    for i, (y0, x0, y1, x1, (ylo, yhi), (xlo, xhi)) in enumerate(iter_tiles((h, w), config.tile, config.overlap)):
        row, col = divmod(i, n_cols)
        plan.n_tiles_total += 1
        cx0, cx1 = max(xlo, x0), min(xhi, x1)
        cy0, cy1 = max(ylo, y0), min(yhi, y1)
        frac = tile_tissue_fraction(mask, ds, cx0 / scale, cy0 / scale, (cx1 - cx0) / scale, (cy1 - cy0) / scale)
        if frac >= config.min_tissue:
            plan.jobs.append(TileJob(int(row), int(col), (x0, y0, x1, y1), (xlo, xhi, ylo, yhi), round(frac, 4)))
    plan.seconds = {"open": t_open - t0, "thumbnail": t_thumb - t_open, "tissue": t_tissue - t_thumb,
                    "stain estimate": time.perf_counter() - t_tissue}
    return plan


# ---------------------------------------------------------------------------------------------------------------
# Pixels of a tile
# ---------------------------------------------------------------------------------------------------------------
def _axis_weights(start: int, stop: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """For model pixels ``start .. stop - 1`` of an axis: the level-0 pixel left of the sample and the weight of
    the one right of it (bilinear, pixel centres aligned), from absolute coordinates only."""
    src = (np.arange(start, stop, dtype=np.float64) + 0.5) / scale - 0.5
    left = np.floor(src).astype(np.int64)
    return left, (src - left).astype(np.float32)


def read_model_window(slide, scale: float, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """RGB of the model-pixel window ``[x0, x1) x [y0, y1)``: level-0 pixels resampled by ``scale``.

    Model pixel ``(X, Y)`` (centre ``X + 0.5``) is the bilinear interpolation of the slide at
    ``((X + 0.5) / scale - 0.5, (Y + 0.5) / scale - 0.5)``; beyond the slide is white. The weights come from the
    absolute coordinates alone, so a model pixel has the same value, to the bit, whichever window reads it (tiles
    agree on their overlaps, and a slide predicted tile by tile is the resampled slide predicted tile by tile). A
    slide finer than the model (``scale < 1``) is first smoothed against aliasing (Gaussian, sigma
    ``sqrt(1/scale^2 - 1) / 2`` level-0 px); there the agreement holds to the smoothing's rounding.
    """
    if abs(scale - 1.0) < 1e-9:
        return slide.read(x0, y0, x1 - x0, y1 - y0)
    lx, fx = _axis_weights(x0, x1, scale)
    ly, fy = _axis_weights(y0, y1, scale)
    pad = 0
    if scale < 1.0:
        sigma = float(np.sqrt(1.0 / scale ** 2 - 1.0) / 2.0)
        pad = int(np.ceil(3 * sigma)) + 1
    sx0, sy0 = int(lx[0]) - pad, int(ly[0]) - pad
    region = slide.read(sx0, sy0, int(lx[-1]) + 2 + pad - sx0, int(ly[-1]) + 2 + pad - sy0)
    if pad:
        import cv2

        region = cv2.GaussianBlur(region, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    region = region.astype(np.float32)
    cx, cy = lx - sx0, ly - sy0
    wx = fx[None, :, None]
    top = region[cy][:, cx] * (1 - wx) + region[cy][:, cx + 1] * wx
    bottom = region[cy + 1][:, cx] * (1 - wx) + region[cy + 1][:, cx + 1] * wx
    wy = fy[:, None, None]
    out = top * (1 - wy) + bottom * wy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _normalise(rgb: np.ndarray, stain: np.ndarray | None) -> np.ndarray:
    """A tile Macenko-normalised with the slide's stain vectors (unchanged without them)."""
    if stain is None:
        return rgb
    from ..model.data import macenko_normalise

    return macenko_normalise(rgb, source_stain_matrix=stain)


# ---------------------------------------------------------------------------------------------------------------
# Detections -> rows
# ---------------------------------------------------------------------------------------------------------------
def mask_polygons(det, threshold: float = 0.5, tolerance: float = 0.5
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Outline ``(xs, ys)`` of each detection, traced on its mask-head probabilities at ``threshold``.

    The contour (marching squares on the ``M x M`` map, padded so it closes) is mapped from mask cells to the box
    (cell ``i`` centred at ``x0 + (i + 0.5) (x1 - x0) / M``), simplified (Douglas-Peucker, ``tolerance`` cells) and
    closed (first vertex repeated). The largest contour is kept; a mask with none above the threshold gives the box.
    """
    from skimage.measure import approximate_polygon, find_contours

    out = []
    for k, box in enumerate(det.boxes):
        x0, y0, x1, y1 = (float(v) for v in box)
        ring = None
        if det.mask_probs is not None:
            m = det.mask_probs[k]
            contours = find_contours(np.pad(m, 1), threshold)
            if contours:
                c = max(contours, key=len)
                c = approximate_polygon(c, tolerance) if tolerance > 0 else c
                if len(c) >= 4:
                    size = m.shape[0]
                    ys = y0 + (c[:, 0] - 1 + 0.5) * (y1 - y0) / size
                    xs = x0 + (c[:, 1] - 1 + 0.5) * (x1 - x0) / size
                    ring = (np.append(xs, xs[0]) if (xs[0], ys[0]) != (xs[-1], ys[-1]) else xs,
                            np.append(ys, ys[0]) if (xs[0], ys[0]) != (xs[-1], ys[-1]) else ys)
        if ring is None:
            ring = (np.array([x0, x1, x1, x0, x0]), np.array([y0, y0, y1, y1, y0]))
        out.append(ring)
    return out


def _ring_area_centroid(xs: np.ndarray, ys: np.ndarray) -> tuple[float, float, float]:
    cross = xs[:-1] * ys[1:] - xs[1:] * ys[:-1]
    a = cross.sum() / 2.0
    if abs(a) < 1e-9:
        return 0.0, float(xs.mean()), float(ys.mean())
    cx = ((xs[:-1] + xs[1:]) * cross).sum() / (6.0 * a)
    cy = ((ys[:-1] + ys[1:]) * cross).sum() / (6.0 * a)
    return abs(a), float(cx), float(cy)


def tile_table(det, scale: float, mpp: float, row: int = 0, col: int = 0, *,
               mask_threshold: float = 0.5, tolerance: float = 0.5):
    """One tile's detections (model pixels of the slide) as a pyarrow Table in level-0 pixels (see :mod:`.export`)."""
    import pyarrow as pa

    from .. import taxonomy as tx

    rings = mask_polygons(det, mask_threshold, tolerance)
    n = len(det)
    cx, cy, area = np.zeros(n), np.zeros(n), np.zeros(n)
    px, py = [], []
    for k, (xs, ys) in enumerate(rings):
        xs, ys = xs / scale, ys / scale
        a, cx[k], cy[k] = _ring_area_centroid(xs, ys)
        area[k] = a * mpp ** 2
        px.append(xs.astype(np.float32))
        py.append(ys.astype(np.float32))
    labels = [str(v) for v in det.labels]
    boxes = det.boxes.astype(np.float64) / scale
    cols = {
        "x": pa.array(cx, pa.float64()), "y": pa.array(cy, pa.float64()),
        "xmin": pa.array(boxes[:, 0]), "ymin": pa.array(boxes[:, 1]),
        "xmax": pa.array(boxes[:, 2]), "ymax": pa.array(boxes[:, 3]),
        "polygon_x": pa.array(px, pa.list_(pa.float32())), "polygon_y": pa.array(py, pa.list_(pa.float32())),
        "area_um2": pa.array(area, pa.float64()),
        "class": pa.array(labels, pa.string()),
        "super_class": pa.array([tx.MAIN_TO_SUPER.get(c, c) for c in labels], pa.string()),
        "objectness": pa.array(det.scores.astype(np.float64)),
    }
    for j, c in enumerate(det.classes):
        cols[f"prob_{c}"] = pa.array(det.probs[:, j].astype(np.float64))
    cols["tile_row"] = pa.array(np.full(n, row, np.int32))
    cols["tile_col"] = pa.array(np.full(n, col, np.int32))
    return pa.table(cols)


# ---------------------------------------------------------------------------------------------------------------
# One tile (in this process or on a worker)
# ---------------------------------------------------------------------------------------------------------------
def tile_path(out_dir: str | os.PathLike[str], job: TileJob) -> Path:
    return Path(out_dir) / "tiles" / f"r{job.row:04d}_c{job.col:04d}.parquet"


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class TileContext:
    """What a tile needs of its slide and run (small: sent with every task, without the thumbnail or the mask)."""

    slide_path: str
    reader: str
    mpp: float
    model_scale: float
    config: WsiConfig
    stain_matrix: np.ndarray | None
    slide_stamp: tuple[int, int]  # size and mtime of the slide file: a replaced file is opened again
    model_stamp: tuple[int, int] | None  # of model.pt, for a model directory
    device: str
    threads: int | None
    detection_cap: int | None


#: per process: the open slide and the loaded models, so a worker pays for them once, not once per tile
_STATE: dict = {}


def _predictor(model, ctx: TileContext):
    """``tile_rgb -> Detections`` for a model directory (loaded once per process, again when model.pt changes) or a
    callable."""
    if ctx.threads:
        import torch

        if torch.get_num_threads() != ctx.threads:
            torch.set_num_threads(ctx.threads)
    if callable(model) and not isinstance(model, (str, os.PathLike)):
        return model
    key = ("model", str(model), ctx.device, ctx.model_stamp)
    if key not in _STATE:
        from ..model.train import load_trained

        for old in [k for k in _STATE if k[0] == "model"][:-1]:  # keep the newest model and this one
            del _STATE[old]
        net = load_trained(model, device=ctx.device)
        _STATE[key] = lambda rgb, _net=net: _net.predict(rgb)
    return _STATE[key]


def _slide(ctx: TileContext):
    """The slide of ``ctx``, open (one at a time per process: the previous one is closed)."""
    key = ("slide", ctx.slide_path, ctx.reader, ctx.mpp, ctx.slide_stamp)
    if key not in _STATE:
        for old in [k for k in _STATE if k[0] == "slide"]:
            _STATE.pop(old).close()
        _STATE[key] = open_slide(ctx.slide_path, mpp=ctx.mpp, reader=ctx.reader)
    return _STATE[key]


def close_cached() -> None:
    """Close the slides and drop the models this process keeps open between tiles."""
    for key in list(_STATE):
        value = _STATE.pop(key)
        if key[0] == "slide":
            value.close()


def _write_tile(table, target: Path) -> None:
    """Write a tile's table to ``target`` through a temporary in the same folder, flushed to disk before the rename
    (a tile file that exists is complete, even after a power cut)."""
    import pyarrow.parquet as pq

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _reused(target: Path) -> int | None:
    """Rows of a finished tile file, or None (no file, or an unreadable one, which is removed to be predicted
    again, with a warning naming it)."""
    import pyarrow.parquet as pq

    if not target.is_file():
        return None
    try:
        return pq.read_metadata(target).num_rows
    except Exception as exc:  # a truncated or foreign file: predict the tile again
        import warnings

        warnings.warn(f"{target}: unreadable tile file ({type(exc).__name__}: {exc}); predicting the tile again",
                      RuntimeWarning, stacklevel=3)
        target.unlink()
        return None


def run_tile(ctx: TileContext, job: TileJob, model, out_dir: str | os.PathLike[str]) -> dict:
    """Predict one tile and write its kept nuclei (step 2 of the module docstring); returns its counts and times.

    A failure names the slide and the tile (:class:`~nucls_utils.wsi.reader.SlideError`)."""
    target = tile_path(out_dir, job)
    rows = _reused(target)
    if rows is not None:
        return {"row": job.row, "col": job.col, "nuclei": rows, "reused": True}
    try:
        return _predict_tile(ctx, job, model, target)
    except SlideError:
        raise
    except Exception as exc:
        raise SlideError(f"{Path(ctx.slide_path).name}: tile row {job.row}, column {job.col} (model pixels "
                         f"{job.window}): {type(exc).__name__}: {exc}") from exc


def _predict_tile(ctx: TileContext, job: TileJob, model, target: Path) -> dict:
    from ..model.detections import Detections

    predict = _predictor(model, ctx)
    t0 = time.perf_counter()
    x0, y0, x1, y1 = job.window
    rgb = read_model_window(_slide(ctx), ctx.model_scale, x0, y0, x1, y1)
    t1 = time.perf_counter()
    rgb = _normalise(rgb, ctx.stain_matrix)
    t2 = time.perf_counter()
    det = predict(rgb)
    if not isinstance(det, Detections):
        raise TypeError(f"the tile predictor returned {type(det).__name__}, not Detections")
    capped = ctx.detection_cap is not None and len(det) >= ctx.detection_cap
    t3 = time.perf_counter()
    det = det.shifted(x0, y0)
    xlo, xhi, ylo, yhi = job.core
    cx = (det.boxes[:, 0] + det.boxes[:, 2]) / 2.0
    cy = (det.boxes[:, 1] + det.boxes[:, 3]) / 2.0
    det = det.select((cx >= xlo) & (cx < xhi) & (cy >= ylo) & (cy < yhi))
    det = det.select(np.argsort(-det.scores, kind="stable"))
    table = tile_table(det, ctx.model_scale, ctx.mpp, job.row, job.col, mask_threshold=ctx.config.mask_threshold,
                       tolerance=ctx.config.polygon_tolerance)
    _write_tile(table, target)
    t4 = time.perf_counter()
    return {"row": job.row, "col": job.col, "nuclei": len(det), "reused": False, "capped": bool(capped),
            "read_s": t1 - t0, "normalise_s": t2 - t1, "model_s": t3 - t2, "write_s": t4 - t3}


def _run_tile_task(job: TileJob, ctx: TileContext, model, out_dir: str) -> dict:
    return run_tile(ctx, job, model, out_dir)


# ---------------------------------------------------------------------------------------------------------------
# The whole slide
# ---------------------------------------------------------------------------------------------------------------
def _head_sha256(path: Path, limit: int = 1 << 20) -> str:
    """sha256 of a file's first ``limit`` bytes (a slide's header and first tiles: cheap, and changes with it)."""
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read(limit)).hexdigest()[:16]


def _model_identity(model) -> str:
    """The weights' sha256 for a model directory; for a callable, the sha256 of its cloudpickle (a function by
    reference, a ``functools.partial`` or an object with its arguments and state)."""
    if isinstance(model, (str, os.PathLike)):
        return f"model.pt:{sha256_file(Path(model) / 'model.pt')[:16]}"
    import cloudpickle

    name = getattr(model, "__qualname__", None) or type(model).__qualname__
    return f"callable:{name}:{hashlib.sha256(cloudpickle.dumps(model)).hexdigest()[:16]}"


@dataclass(frozen=True)
class ModelFacts:
    """What the client checks and uses of a model before any tile runs (read once from ``model.pt``)."""

    nms_iou: float
    largest_anchor: float | None
    detection_cap: int | None


def model_facts(model) -> ModelFacts:
    """:class:`ModelFacts` of a model directory (its saved configuration) or a callable (its ``config``, if any)."""
    if isinstance(model, (str, os.PathLike)):
        import torch

        cfg = torch.load(Path(model) / "model.pt", map_location="cpu", weights_only=False)["model_config"]
        get = cfg.get
    else:
        config = getattr(model, "config", None)

        def get(name, default=None):
            return getattr(config, name, default)
    nms_iou = get("nms_iou", None)
    anchors = get("anchor_sizes", None)
    cap = get("detections_per_img", None)
    return ModelFacts(0.2 if nms_iou is None else float(nms_iou),
                      float(max(anchors)) if anchors else None, int(cap) if cap else None)


def run_key(plan: SlidePlan, model, device: str = "cpu", threads: int | None = None) -> dict:
    """What the tiles in an output folder were computed from (the slide's size and head bytes, the model's weights,
    the settings, the device and torch's thread count, on which float results depend): tiles are reused only
    under the same key."""
    path = Path(plan.slide_path)
    return {"wsi_version": WSI_VERSION, "slide": path.name, "slide_bytes": path.stat().st_size,
            "slide_head_sha256": _head_sha256(path), "mpp": plan.mpp, "level0": [plan.width, plan.height],
            "model": _model_identity(model), "config": asdict(plan.config), "device": device, "threads": threads}


def check_model_dir(model) -> None:
    if isinstance(model, (str, os.PathLike)):
        d = Path(model)
        if not d.is_dir():
            raise FileNotFoundError(f"{d}: no such model directory")
        if not (d / "model.pt").is_file():
            raise FileNotFoundError(f"{d}: no model.pt in the model directory (the weights notebook 05 writes, e.g. "
                                    "results/<data>/05_training/models/config3_fold1)")
    elif not callable(model):
        raise TypeError(f"model must be a model directory or a callable tile_rgb -> Detections, not "
                        f"{type(model).__name__}")


def _prepare_out(out_dir: Path, key: dict, overwrite: bool) -> None:
    """Create ``out_dir`` and record the run key; refuse tiles of another run (or of an unknown one) unless
    ``overwrite``; remove temporaries of killed runs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    key_file = out_dir / "run.json"
    tiles = out_dir / "tiles"
    old = None
    if key_file.is_file():
        try:
            old = json.loads(key_file.read_text())
        except json.JSONDecodeError:
            old = {"unreadable run.json": True}
    has_tiles = tiles.is_dir() and any(tiles.glob("*.parquet"))
    if (old is not None and old != key) or (old is None and has_tiles):
        if not overwrite:
            if old is None:
                why = "tiles without a run.json saying what they were computed from"
            else:
                why = "differs in: " + ", ".join(sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k)))
            raise RunMismatch(f"{out_dir} holds tiles of another run ({why}); pass --overwrite (overwrite=True) to "
                              "start over, or choose another output folder")
        shutil.rmtree(tiles, ignore_errors=True)
    tiles.mkdir(exist_ok=True)
    for tmp in tiles.glob(".*.tmp"):  # a tile in flight when a run was killed
        tmp.unlink()
    with atomic_path(key_file) as tmp:
        tmp.write_text(json.dumps(key, indent=1, sort_keys=True))


def _execute(pairs: Sequence[tuple[TileContext, list[TileJob], Path]], model, *, workers: int,
             scheduler: str | None, progress: bool) -> list[list[dict]]:
    """Run every tile of every ``(context, jobs, out_dir)``: in this process, or as tasks of one Dask cluster."""
    results: list[list[dict]] = [[] for _ in pairs]
    n_jobs = sum(len(jobs) for _, jobs, _ in pairs)
    name = Path(pairs[0][0].slide_path).name if len(pairs) == 1 else f"{len(pairs)} slides"
    bar = tqdm(total=n_jobs, desc=f"tiles of {name}", unit="tile", disable=not progress)
    found = 0

    def record(i: int, res: dict) -> None:
        nonlocal found
        results[i].append(res)
        found += res["nuclei"]
        bar.set_postfix(nuclei=found, refresh=False)
        bar.update()

    try:
        if not scheduler and workers <= 0:
            import torch

            before = torch.get_num_threads()
            try:
                for i, (ctx, jobs, out_dir) in enumerate(pairs):
                    for job in jobs:
                        record(i, run_tile(ctx, job, model, out_dir))
            finally:
                torch.set_num_threads(before)
                close_cached()
        else:
            from distributed import as_completed

            from .cluster import dask_client

            threads = pairs[0][0].threads if pairs else None
            with dask_client(workers=workers, scheduler=scheduler, threads=threads) as client:
                model_ref = model if isinstance(model, (str, os.PathLike)) else client.scatter(model, broadcast=True)
                owner, futures = {}, []
                for i, (ctx, jobs, out_dir) in enumerate(pairs):
                    fs = client.map(_run_tile_task, jobs, ctx=ctx, model=model_ref, out_dir=str(out_dir), pure=False)
                    owner.update({f.key: i for f in fs})
                    futures += fs
                for fut in as_completed(futures):
                    record(owner[fut.key], fut.result())
                    fut.release()
    finally:
        bar.close()
    return results


def predict_cohort(slide_paths: Sequence[str | os.PathLike[str]], model, out_dir: str | os.PathLike[str],
                   config: WsiConfig | None = None, *, mpp: float | None = None, reader: str = "auto",
                   workers: int = 0, threads: int | None = None, scheduler: str | None = None,
                   device: str | None = None, overwrite: bool = False, progress: bool = True) -> list[dict]:
    """:func:`predict_slide` for several slides on one cluster: every tile of every slide is a task; slide ``s``
    goes to ``out_dir/<s's name without suffix>/``. Returns the slides' summaries."""
    names = [Path(p).stem for p in slide_paths]
    if len(set(names)) != len(names):
        raise ValueError("two slides share a name; their outputs would collide: " + ", ".join(sorted(
            n for n in set(names) if names.count(n) > 1)))
    return _predict_many([(p, Path(out_dir) / n) for p, n in zip(slide_paths, names, strict=True)], model,
                         config, mpp=mpp, reader=reader, workers=workers, threads=threads, scheduler=scheduler,
                         device=device, overwrite=overwrite, progress=progress)


def _resolve_threads(threads: int | None, workers: int, scheduler: str | None) -> int:
    """Torch threads per tile: given, or the cores shared out over the local workers (one on a given cluster,
    whose cores this process cannot see), or this process's torch threads when predicting in process."""
    if threads:
        return int(threads)
    if scheduler:
        return 1
    if workers > 0:
        from .cluster import default_threads

        return default_threads(workers)
    import torch

    return torch.get_num_threads()


def _predict_many(targets, model, config, *, mpp, reader, workers, threads, scheduler, device, overwrite,
                  progress, plans: Sequence[SlidePlan] | None = None) -> list[dict]:
    import warnings

    from .export import write_outputs, write_summary

    t_start = time.perf_counter()
    check_model_dir(model)
    if device is None:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = _resolve_threads(threads, workers, scheduler)
    facts = model_facts(model)
    plans = list(plans) if plans is not None else [plan_slide(p, config, mpp=mpp, reader=reader) for p, _ in targets]
    pairs = []
    for plan, (_, out) in zip(plans, targets, strict=True):
        if facts.largest_anchor is not None and plan.config.overlap < 2 * facts.largest_anchor:
            raise ValueError(f"overlap ({plan.config.overlap} model px) must be at least twice the model's largest "
                             f"anchor ({facts.largest_anchor:g} px): a tile must see every nucleus it keeps whole")
        _prepare_out(Path(out), run_key(plan, model, device, threads), overwrite)
        path = Path(plan.slide_path)
        ctx = TileContext(plan.slide_path, plan.reader, plan.mpp, plan.model_scale, plan.config, plan.stain_matrix,
                          _stamp(path), _stamp(Path(model) / "model.pt") if isinstance(model, (str, os.PathLike))
                          else None, device, threads, facts.detection_cap)
        pairs.append((ctx, plan.jobs, Path(out)))
    t_tiles = time.perf_counter()
    results = _execute(pairs, model, workers=workers, scheduler=scheduler, progress=progress)
    t_merge = time.perf_counter()
    summaries = []
    for plan, (_, _, out), res in zip(plans, pairs, results, strict=True):
        t0 = time.perf_counter()
        summary = write_outputs(plan, out, nms_iou=facts.nms_iou)
        fresh = [r for r in res if not r.get("reused")]
        capped = sum(bool(r.get("capped")) for r in fresh)
        if capped:
            warnings.warn(f"{Path(plan.slide_path).name}: {capped} of {len(fresh)} tiles returned the model's maximum "
                          f"of {facts.detection_cap} detections: nuclei may be missing there; use a smaller --tile",
                          RuntimeWarning, stacklevel=3)
        summary["run"] = {
            "tiles_predicted": len(fresh), "tiles_reused": len(res) - len(fresh), "capped_tiles": capped,
            "workers": workers,
            "scheduler": "given" if scheduler else ("local cluster" if workers > 0 else "in process"),
            "threads": threads, "device": device,
            "seconds": {**{k: round(v, 3) for k, v in plan.seconds.items()},
                        **{k: round(sum(r.get(f"{k}_s", 0.0) for r in fresh), 3)
                           for k in ("read", "normalise", "model", "write")},
                        "tiles_wall": round(t_merge - t_tiles, 3), "merge": round(time.perf_counter() - t0, 3),
                        "total": round(time.perf_counter() - t_start, 3)},
        }
        write_summary(summary, out)
        summaries.append({**summary, "out_dir": str(out)})
    return summaries


def predict_slide(slide_path: str | os.PathLike[str], model, out_dir: str | os.PathLike[str],
                  config: WsiConfig | None = None, *, mpp: float | None = None, reader: str = "auto",
                  workers: int = 0, threads: int | None = None, scheduler: str | None = None,
                  device: str | None = None, overwrite: bool = False, progress: bool = True,
                  plan: SlidePlan | None = None) -> dict:
    """Predict every nucleus of a slide (see the module docstring); returns the slide summary (:mod:`.export`).

    Parameters
    ----------
    slide_path : path
        Any slide :func:`~nucls_utils.wsi.reader.open_slide` reads.
    model : path or callable
        A model directory holding ``model.pt`` (notebook 05's ``results/<data>/05_training/models/<experiment>``)
        or a function ``tile_rgb -> Detections`` (boxes in the tile's pixels; picklable to run on a cluster).
    out_dir : path
        Output folder (created): the files of :mod:`.export` and ``tiles/``, kept for resumption.
    config : WsiConfig, optional
        Tile size and overlap, tissue detection, normalisation, outline tracing, the summary's grid.
    mpp, reader :
        Microns per level-0 pixel overriding the slide's metadata; the reader (:func:`.reader.open_slide`).
    workers, threads, scheduler :
        ``workers=0`` (default) predicts in this process; ``workers=N`` starts a local Dask cluster of N worker
        processes; ``scheduler="tcp://host:8786"`` uses an existing cluster (its workers must see ``slide_path``,
        the model and ``out_dir`` at the same paths). ``threads``: torch threads per worker (default: torch's).
    device : ``cpu`` | ``cuda``, optional
        Default: cuda when available.
    overwrite : bool
        Start over when ``out_dir`` holds tiles of another slide, model or setting (else :class:`RunMismatch`).
    plan : SlidePlan, optional
        A plan of :func:`plan_slide` to reuse (its slide and settings win over ``slide_path`` and ``config``).

    Returns
    -------
    dict
        The summary written to ``summary.json`` (see :func:`.export.format_summary`), plus ``out_dir``.
    """
    return _predict_many([(slide_path, out_dir)], model, config, mpp=mpp, reader=reader, workers=workers,
                         threads=threads, scheduler=scheduler, device=device, overwrite=overwrite,
                         progress=progress, plans=None if plan is None else [plan])[0]


def merged_keep(out_dir: Path, jobs: Sequence[TileJob], nms_iou: float, *, single_tile: bool = False
                ) -> dict[tuple[int, int], np.ndarray]:
    """Per tile, the rows kept by the class-agnostic NMS over every tile's boxes (reads boxes and scores only).
    ``single_tile``: the slide is one tile, whose detections are kept as the model gave them (as
    :func:`~nucls_utils.model.inference.predict_tiled` does)."""
    import pyarrow.parquet as pq

    from ..model.inference import nms

    parts, owners = [], []
    for job in jobs:
        t = pq.read_table(tile_path(out_dir, job), columns=["xmin", "ymin", "xmax", "ymax", "objectness"])
        arr = np.column_stack([t.column(c).to_numpy() for c in t.column_names]) if t.num_rows else np.zeros((0, 5))
        parts.append(arr)
        owners.append(np.full(len(arr), len(owners), np.int64))
    if not parts:
        return {}
    allrows = np.concatenate(parts)
    owner = np.concatenate(owners)
    local = np.concatenate([np.arange(len(p)) for p in parts])
    keep = np.zeros(len(allrows), bool)
    if single_tile:
        keep[:] = True
    elif len(allrows):
        keep[nms(allrows[:, :4], allrows[:, 4], nms_iou)] = True
    return {(job.row, job.col): local[(owner == i) & keep] for i, job in enumerate(jobs)}

