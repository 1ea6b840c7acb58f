"""A synthetic whole slide with exact truth: the phantom's tissue on glass, as a pyramidal TIFF.

:func:`make_slide` renders the slide at the model's 0.2 um/px in blocks of ``block_px`` (each block one ROI layout of
:mod:`.layout`: tumour nests, stroma, lymphocytic and plasmacytic infiltrates, ducts, necrosis), lays the blocks on
a tissue shape (a smooth random field over the slide, with glass around and between the fragments), and resamples
them to the scanner's ``mpp`` (0.25 um/px by default, a 40x scan), one row of blocks at a time into a memory-mapped
level 0. It writes:

``<name>.tif``
    Tiled (256 px), deflate-compressed, pyramidal TIFF (levels halve down to about 1,000 px; each level a page of
    the main chain, which both OpenSlide's generic-TIFF reader and tifffile read), microns per pixel in the
    resolution tags (centimetres) and in a JSON image description ``{"mpp": ...}``.
``<name>.truth.parquet``
    Every nucleus drawn whose centre lies on tissue: centroid, box and outline in level-0 pixels, raw / main /
    super class and the tissue region it lies in.
``<name>.regions.png``
    The region codes (:data:`~.layout.REGION_CODES`, 0 on glass) at ``region_downsample`` level-0 px per pixel.

Sizes by profile (:data:`SLIDE_SPECS`, from ``profiles.STAGES["slide"]``): smoke a few hundred microns a side,
cpu about 4,000 x 4,000 px (1 mm), paper 16,000 x 12,000 px (4 x 3 mm). The slide is a function of the seed.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import taxonomy as tx
from ..config import MICRONS_PER_PIXEL
from ..io.atomic import atomic_path
from ..io.pyramid import write_pyramid
from ..profiles import stage_settings
from ..progress import tqdm
from .layout import REGION_NAMES, make_roi
from .render import draw_stain_style, perturb_stain_style, render_crop

__all__ = ["SlideSpec", "SLIDE_SPECS", "SLIDE_VERSION", "make_slide", "ensure_slide", "read_truth"]

#: Version of the slide generator (bump when the pixels or the truth change).
SLIDE_VERSION = 1


@dataclass(frozen=True)
class SlideSpec:
    """Size and scan of a synthetic slide."""

    width_px: int
    height_px: int
    mpp: float = 0.25
    #: side of one rendered ROI layout, model px (0.2 um); ``block_px * 0.2 / mpp`` must be an integer
    block_px: int = 1000
    tissue_share: float = 0.5
    tile: int = 256
    region_downsample: int = 8

    def __post_init__(self):
        ratio = self.block_px * MICRONS_PER_PIXEL / self.mpp
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError(f"block_px * 0.2 / mpp must be a whole number of slide pixels, not {ratio}")
        if self.width_px < 64 or self.height_px < 64:
            raise ValueError(f"a slide needs at least 64 px a side, not {self.width_px} x {self.height_px}")


#: Synthetic slides of each compute profile.
SLIDE_SPECS: dict[str, SlideSpec] = {p: SlideSpec(**kw) for p, kw in stage_settings("slide").items()}


def _tissue_alpha(spec: SlideSpec, rng: np.random.Generator) -> np.ndarray:
    """Tissue opacity on a coarse grid (32 level-0 px per cell): 1 on tissue, 0 on glass, soft at the edges."""
    from scipy import ndimage as ndi

    gh, gw = math.ceil(spec.height_px / 32), math.ceil(spec.width_px / 32)
    field_ = ndi.gaussian_filter(rng.normal(size=(gh, gw)), sigma=max(min(gh, gw) / 6.0, 1.0), mode="reflect")
    yy, xx = np.mgrid[0:gh, 0:gw]
    edge = np.minimum.reduce([yy, xx, gh - 1 - yy, gw - 1 - xx]) / max(min(gh, gw) * 0.12, 1.0)
    field_ = field_ / (field_.std() + 1e-9) - 1.5 * np.exp(-edge)  # glass at the slide's borders
    thr = np.quantile(field_, 1 - spec.tissue_share)
    return np.clip((field_ - thr) * 6.0 + 0.5, 0.0, 1.0)


def _alpha_at(alpha: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear read of the coarse opacity at level-0 coordinates."""
    from scipy import ndimage as ndi

    return ndi.map_coordinates(alpha, [ys / 32.0 - 0.5, xs / 32.0 - 0.5], order=1, mode="nearest")


def _block_truth(layout, bx0: int, by0: int, f: float, alpha: np.ndarray, limits: tuple[int, int]) -> list[dict]:
    rows = []
    w_m, h_m = limits
    for nuc in layout.nuclei:
        cx, cy = nuc.cx + bx0, nuc.cy + by0
        if not (0 <= nuc.cx < layout.size and 0 <= nuc.cy < layout.size and cx < w_m and cy < h_m):
            continue
        xs = (np.clip(nuc.xs, 0, layout.size) + bx0) * f
        ys = (np.clip(nuc.ys, 0, layout.size) + by0) * f
        rows.append({"x": cx * f, "y": cy * f, "xmin": float(xs.min()), "ymin": float(ys.min()),
                     "xmax": float(xs.max()), "ymax": float(ys.max()),
                     "polygon_x": np.append(xs, xs[0]).astype(np.float32),
                     "polygon_y": np.append(ys, ys[0]).astype(np.float32),
                     "raw_class": nuc.raw_class, "main_class": tx.RAW_TO_MAIN[nuc.raw_class],
                     "super_class": tx.RAW_TO_SUPER[nuc.raw_class], "region": REGION_NAMES[nuc.region]})
    if rows:
        a = _alpha_at(alpha, np.array([r["y"] for r in rows]), np.array([r["x"] for r in rows]))
        rows = [r for r, v in zip(rows, a, strict=True) if v >= 0.5]
    return rows


def make_slide(path: str | os.PathLike[str], spec: SlideSpec | str = "cpu", seed: int = 0, *,
               progress: bool = True) -> Path:
    """Write the synthetic slide ``path`` (``.tif``) and its truth beside it (see the module docstring)."""
    import cv2
    import pandas as pd
    from PIL import Image

    if isinstance(spec, str):
        if spec not in SLIDE_SPECS:
            raise ValueError(f"unknown slide profile {spec!r}; choose one of {', '.join(SLIDE_SPECS)}")
        spec = SLIDE_SPECS[spec]
    path = Path(path)
    if path.suffix.lower() not in (".tif", ".tiff"):
        raise ValueError(f"{path}: the synthetic slide is a TIFF; name it .tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    f = MICRONS_PER_PIXEL / spec.mpp  # level-0 px per model px
    B = spec.block_px
    b_out = int(round(B * f))
    w_m, h_m = math.ceil(spec.width_px / f), math.ceil(spec.height_px / f)
    nbx, nby = math.ceil(w_m / B), math.ceil(h_m / B)
    root = np.random.SeedSequence([seed, 2026, 12, 6])
    ss_shape, ss_style, ss_blocks = root.spawn(3)
    alpha = _tissue_alpha(spec, np.random.default_rng(ss_shape))
    s_rng = np.random.default_rng(ss_style)
    style = perturb_stain_style(draw_stain_style(s_rng), s_rng)
    block_ss = ss_blocks.spawn(nbx * nby)
    rd = spec.region_downsample
    regions = np.zeros((math.ceil(spec.height_px / rd), math.ceil(spec.width_px / rd)), np.uint8)
    truth: list[dict] = []
    glass = np.array([244, 242, 246], np.float32)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.stem}.") as tmpdir:
        level0 = np.memmap(Path(tmpdir) / "level0.raw", dtype=np.uint8, mode="w+",
                           shape=(spec.height_px, spec.width_px, 3))
        bar = tqdm(total=nbx * nby, desc=f"synthetic slide {path.name}", unit="block", disable=not progress)
        for by in range(nby):
            y_out0 = by * b_out
            y_out1 = min(y_out0 + b_out, spec.height_px)
            strip = np.empty((B, nbx * B, 3), np.uint8)
            strip_regions = np.zeros((B, nbx * B), np.uint8)
            ys_out = np.arange(y_out0, y_out0 + b_out) + 0.5
            strip_alpha = _alpha_at(alpha, *np.meshgrid(ys_out, np.arange(nbx * b_out) + 0.5, indexing="ij"))
            for bx in range(nbx):
                rng = np.random.default_rng(block_ss[by * nbx + bx])
                a_block = strip_alpha[:, bx * b_out:(bx + 1) * b_out]
                if a_block.max() < 0.01:  # all glass: nothing to render
                    strip[:, bx * B:(bx + 1) * B] = 255
                    bar.update()
                    continue
                layout = make_roi(rng, B)
                outlines = {}
                for k, nuc in enumerate(layout.nuclei):
                    xs = np.clip(np.rint(nuc.xs), 0, B).astype(int)
                    ys = np.clip(np.rint(nuc.ys), 0, B).astype(int)
                    outlines[k] = (np.append(xs, xs[0]), np.append(ys, ys[0]))
                strip[:, bx * B:(bx + 1) * B] = render_crop(
                    layout, (0, 0, B, B), outlines, style, rng, blur_sigma=float(rng.uniform(0.6, 1.1)),
                    noise_sd=float(rng.uniform(1.0, 2.5)), jpeg_quality=None)
                strip_regions[:, bx * B:(bx + 1) * B] = layout.regions
                truth += _block_truth(layout, bx * B, by * B, f, alpha, (w_m, h_m))
                bar.update()
            small = cv2.resize(strip, (nbx * b_out, b_out), interpolation=cv2.INTER_AREA).astype(np.float32)
            noise = np.random.default_rng([seed, by, 1]).normal(0, 1.2, small.shape[:2])[..., None]
            a = strip_alpha[..., None]
            out = np.clip(small * a + (glass + noise) * (1 - a), 0, 255).astype(np.uint8)
            level0[y_out0:y_out1] = out[:y_out1 - y_out0, :spec.width_px]
            reg_small = cv2.resize(strip_regions, (nbx * b_out, b_out), interpolation=cv2.INTER_NEAREST)
            reg_small[strip_alpha < 0.5] = 0
            r0 = y_out0 // rd
            part = reg_small[(r0 * rd - y_out0) % rd::rd, ::rd][:, :regions.shape[1]]
            regions[r0:r0 + len(part)] = part[:regions.shape[0] - r0]
        bar.close()
        level0.flush()
        levels = [level0]
        while max(levels[-1].shape[:2]) > 1024:
            prev = levels[-1]
            levels.append(cv2.resize(np.asarray(prev), (max(prev.shape[1] // 2, 1), max(prev.shape[0] // 2, 1)),
                                     interpolation=cv2.INTER_AREA))
        write_pyramid(path, levels, spec.mpp, tile=spec.tile,
                      description={"generator": "nucls_utils.phantom.slide", "version": SLIDE_VERSION, "seed": int(seed),
                                   "spec": asdict(spec)})
        del level0, levels
    table = pd.DataFrame(truth, columns=["x", "y", "xmin", "ymin", "xmax", "ymax", "polygon_x", "polygon_y",
                                         "raw_class", "main_class", "super_class", "region"])
    table.insert(0, "nucleus_id", np.arange(1, len(table) + 1))
    with atomic_path(path.with_suffix(".truth.parquet")) as tmp:
        table.to_parquet(tmp, index=False)
    with atomic_path(path.with_suffix(".regions.png")) as tmp:
        Image.fromarray(regions).save(tmp, format="png")
    return path


def _slide_key(spec: SlideSpec, seed: int) -> dict:
    from .cohort import GENERATOR_VERSION

    return {"slide_version": SLIDE_VERSION, "generator_version": GENERATOR_VERSION, "seed": int(seed),
            "spec": asdict(spec)}


def ensure_slide(path: str | os.PathLike[str], profile: str = "cpu", seed: int = 0, *, progress: bool = True
                 ) -> Path:
    """The synthetic slide of ``profile`` at ``path``, generated unless the one there has the same key."""
    path = Path(path)
    spec = SLIDE_SPECS[profile]
    key_file = path.with_suffix(".key.json")
    key = _slide_key(spec, seed)
    if path.is_file() and key_file.is_file() and json.loads(key_file.read_text()) == key \
            and path.with_suffix(".truth.parquet").is_file():
        return path
    make_slide(path, spec, seed, progress=progress)
    with atomic_path(key_file) as tmp:
        tmp.write_text(json.dumps(key, indent=1, sort_keys=True))
    return path


def read_truth(slide_path: str | os.PathLike[str]):
    """The truth table written beside a synthetic slide."""
    import pandas as pd

    return pd.read_parquet(Path(slide_path).with_suffix(".truth.parquet"))
