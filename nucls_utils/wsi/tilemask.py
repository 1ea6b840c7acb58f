"""Seed 002's mode on a whole slide: the tile classifier's sliding-window nuclei mask, as a pyramidal TIFF.

The slide is cut into blocks of ``block`` level-0 pixels; for each block with tissue, the model-pixel window under it
(0.2 um/px, with one classifier tile of context on each side) is read, the classifier's per-pixel probability
(:func:`nucls_utils.baselines.tile_classifier.probability_map`: the mean over the windows covering a pixel) is
computed (windows on one lattice of the whole slide) and sampled back at the block's level-0 pixel centres, and ``probability >= threshold`` is written into a
memory-mapped level 0 (``uint8``, 255 = nucleus). The lower levels halve it strip by strip (a pixel is nucleus when
any of its four children is), and tifffile writes all levels as a tiled pyramidal TIFF with the slide's microns
per pixel. Memory: one block and its context, whatever the slide's size.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from ..io.pyramid import write_pyramid
from ..progress import tqdm
from .predict import MODEL_MPP, read_model_window
from .reader import open_slide
from .tissue import tile_tissue_fraction, tissue_mask

__all__ = ["predict_tile_mask", "halve_mask"]


def halve_mask(mask: np.ndarray, out: np.ndarray, rows: int = 2048) -> np.ndarray:
    """``out[i, j] = max(mask[2i:2i+2, 2j:2j+2])``, strip by strip (``mask`` may be a memmap)."""
    h, w = out.shape
    for r0 in range(0, h, rows):
        r1 = min(r0 + rows, h)
        src = np.asarray(mask[2 * r0:2 * r1])
        pad = np.zeros((2 * (r1 - r0), 2 * w), np.uint8)
        pad[:src.shape[0], :min(src.shape[1], 2 * w)] = src[:, :2 * w]
        out[r0:r1] = pad.reshape(r1 - r0, 2, w, 2).max(axis=(1, 3))
    return out


def predict_tile_mask(slide_path: str | os.PathLike[str], model_path: str | os.PathLike[str],
                      out_dir: str | os.PathLike[str], *, mpp: float | None = None, reader: str = "auto",
                      block: int = 1024, threshold: float = 0.5, min_tissue: float = 0.05, tissue_method: str = "otsu",
                      thumbnail_side: int = 2048, progress: bool = True, overwrite: bool = False) -> dict:
    """Write ``out_dir/nuclei_mask.tif`` (see the module docstring).

    Returns ``{"mask": path, "blocks": blocks predicted, "nucleus_share": share of the predicted blocks' pixels
    called nucleus}``.
    """
    import cv2

    from ..baselines.tile_classifier import load_tile_classifier, probability_map

    model = load_tile_classifier(model_path)
    out_dir = Path(out_dir)
    target = out_dir / "nuclei_mask.tif"
    if target.exists() and not overwrite:
        raise FileExistsError(f"{target} exists; pass --overwrite to replace it")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open_slide(slide_path, mpp=mpp, reader=reader) as slide:
        thumb, ds = slide.thumbnail(thumbnail_side)
        tissue = tissue_mask(thumb, method=tissue_method, um_per_px=ds * slide.mpp)
        scale = slide.mpp / MODEL_MPP
        # windows on one lattice of the whole slide (stride half a tile, as probability_map), and a tile and two
        # pixels of context: every window covering a block's pixel is then a lattice window inside the read
        # window, so the mask does not depend on the block size (tests/test_wsi.py)
        stride = model.tile // 2
        context = model.tile + 2
        W, H = slide.width, slide.height
        blocks = [(x, y) for y in range(0, H, block) for x in range(0, W, block)
                  if tile_tissue_fraction(tissue, ds, x, y, min(block, W - x), min(block, H - y)) >= min_tissue]
        positive = block_px = 0
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".tilemask.") as tmpdir:
            level0 = np.memmap(Path(tmpdir) / "level0.raw", dtype=np.uint8, mode="w+", shape=(H, W))
            for x, y in tqdm(blocks, desc=f"tile mask of {Path(slide_path).name}", unit="block",
                             disable=not progress):
                w, h = min(block, W - x), min(block, H - y)
                # the model-pixel window under the block, with context for the classifier's windows
                mx0 = (int(math.floor((x + 0.5) * scale - 0.5)) - context) // stride * stride
                my0 = (int(math.floor((y + 0.5) * scale - 0.5)) - context) // stride * stride
                mx1 = int(math.ceil((x + w - 0.5) * scale - 0.5)) + context + 1
                my1 = int(math.ceil((y + h - 0.5) * scale - 0.5)) + context + 1
                rgb = read_model_window(slide, scale, mx0, my0, mx1, my1)
                prob = np.nan_to_num(probability_map(model, rgb, stride=stride), nan=0.0)
                # level-0 pixel (i, j) centre -> model coordinate (x + j + 0.5) * scale - 0.5, relative to mx0
                m = np.array([[scale, 0.0, (x + 0.5) * scale - 0.5 - mx0],
                              [0.0, scale, (y + 0.5) * scale - 0.5 - my0]])
                back = cv2.warpAffine(prob, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_REPLICATE)
                on = back >= threshold
                level0[y:y + h, x:x + w] = np.where(on, 255, 0).astype(np.uint8)
                positive += int(on.sum())
                block_px += w * h
            level0.flush()
            levels = [level0]
            while max(levels[-1].shape) > 1024:
                prev = levels[-1]
                nxt = np.memmap(Path(tmpdir) / f"level{len(levels)}.raw", dtype=np.uint8, mode="w+",
                                shape=(math.ceil(prev.shape[0] / 2), math.ceil(prev.shape[1] / 2)))
                levels.append(halve_mask(prev, nxt))
            write_pyramid(target, levels, slide.mpp,
                          description={"content": "nuclei mask (255 nucleus)", "threshold": threshold})
            del levels, level0
    return {"mask": str(target), "blocks": len(blocks), "nucleus_share": positive / max(block_px, 1)}
