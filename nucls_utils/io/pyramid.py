"""Pyramidal TIFF: the levels of a whole-slide image (or a mask over one), written the way OpenSlide's generic-TIFF
reader and tifffile both read them."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import atomic_path

__all__ = ["write_pyramid"]


def write_pyramid(path: str | os.PathLike[str], levels: Sequence[np.ndarray], mpp: float, *,
                  description: dict | None = None, tile: int = 256) -> Path:
    """Write ``levels`` (level 0 first, each a reduction of the one before; RGB ``(H, W, 3)`` or grey ``(H, W)``
    uint8, memory-mapped arrays welcome) to ``path`` atomically: tiled, deflate-compressed, one page per level in
    the main chain (reduced levels flagged as such), microns per pixel in the resolution tags (centimetres) of every
    level and, with ``description``, in level 0's JSON image description (``{"mpp": ..., **description}``)."""
    import tifffile

    width = levels[0].shape[1]
    with atomic_path(path) as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=sum(lev.nbytes for lev in levels) > 2 ** 31) as tif:
            for i, lev in enumerate(levels):
                res = 1e4 / (mpp * width / lev.shape[1])  # pixels per centimetre at this level
                tif.write(lev, tile=(tile, tile), compression="zlib",
                          photometric="rgb" if lev.ndim == 3 else "minisblack", resolution=(res, res),
                          resolutionunit="CENTIMETER", subfiletype=1 if i else 0, metadata=None,
                          description=json.dumps({"mpp": mpp, **(description or {})}) if i == 0 else None)
    return Path(path)
