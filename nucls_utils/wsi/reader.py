"""Whole-slide readers: OpenSlide for the scanners' formats, tifffile for plain and pyramidal TIFF.

:func:`open_slide` returns a :class:`Slide`: level-0 size, microns per pixel, ``read(x, y, w, h)`` of level-0 RGB
pixels (memory proportional to the region, never to the slide) and ``thumbnail(max_side)`` from the smallest level
that is large enough. Microns per pixel come from, in order: the caller (``mpp=``), OpenSlide's
``openslide.mpp-x`` / ``openslide.mpp-y``, an Aperio-style ``MPP = 0.25`` or a JSON ``{"mpp": 0.25}`` image
description, or the TIFF resolution tags when their unit is a centimetre or an inch. A slide with none of these
raises :class:`SlideError`: guessing the scale would put every nucleus at the wrong size for the model.

A reader object holds an open file; it is not shared between processes (each Dask worker opens its own, see
:mod:`nucls_utils.wsi.predict`) and guards its file handle with a lock between threads.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["SlideError", "Slide", "open_slide", "READERS", "OPENSLIDE_SUFFIXES"]

#: Readers :func:`open_slide` knows; ``auto`` picks OpenSlide for its own formats and tifffile for ``.tif(f)``.
READERS = ("auto", "openslide", "tifffile")
#: File suffixes that OpenSlide reads and tifffile does not (or not as a slide).
OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".vms", ".vmu", ".scn", ".mrxs", ".svslide", ".bif", ".dcm")


class SlideError(ValueError):
    """A slide that cannot be used: unreadable, unknown scale, not RGB."""


@dataclass(frozen=True)
class _Level:
    width: int
    height: int
    downsample: float


def _mpp_from_description(text: str | None) -> float | None:
    if not text:
        return None
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text).get("mpp")
        except (json.JSONDecodeError, AttributeError):
            value = None
        return float(value) if value else None
    match = re.search(r"\bMPP\s*=\s*([0-9.]+)", text, flags=re.IGNORECASE)
    return float(match.group(1)) if match else None


def _mpp_from_resolution(xres, unit) -> float | None:
    """Microns per pixel from a TIFF XResolution (pixels per unit) and ResolutionUnit (2 inch, 3 centimetre)."""
    if xres is None or unit is None:
        return None
    if isinstance(xres, tuple):
        xres = xres[0] / xres[1] if xres[1] else 0.0
    xres = float(xres)
    unit = int(unit)
    if xres <= 0 or unit not in (2, 3):
        return None
    return (25400.0 if unit == 2 else 10000.0) / xres


def _check_mpp(mpp, source: str, path: Path) -> float:
    try:
        value = float(mpp)
    except (TypeError, ValueError):
        raise SlideError(f"{path}: microns per pixel from {source} is not a number: {mpp!r}") from None
    if not math.isfinite(value) or not 0.05 <= value <= 20:
        raise SlideError(f"{path}: microns per pixel from {source} is {value!r}, outside 0.05-20 um/px (scanners "
                         "give 0.1-2); pass the right value with --mpp")
    return value


class Slide:
    """One whole-slide image: level-0 pixels on demand (see the module docstring)."""

    reader: str = ""

    def __init__(self, path: Path, levels: list[_Level], mpp: float, mpp_source: str):
        self.path = path
        self.levels = levels
        self.mpp = mpp
        self.mpp_source = mpp_source
        self._lock = threading.Lock()

    @property
    def width(self) -> int:
        return self.levels[0].width

    @property
    def height(self) -> int:
        return self.levels[0].height

    @property
    def dimensions(self) -> tuple[int, int]:
        """``(width, height)`` of level 0."""
        return self.width, self.height

    def read(self, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Level-0 RGB pixels ``[y, y + h) x [x, x + w)`` as ``(h, w, 3) uint8``; outside the slide is white."""
        x, y, w, h = int(x), int(y), int(w), int(h)
        if w < 1 or h < 1:
            raise ValueError(f"empty region {w} x {h}")
        out = np.full((h, w, 3), 255, np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + w, self.width), min(y + h, self.height)
        if x1 > x0 and y1 > y0:
            with self._lock:
                out[y0 - y:y1 - y, x0 - x:x1 - x] = self._read_level(0, x0, y0, x1 - x0, y1 - y0)
        return out

    def thumbnail(self, max_side: int = 1024) -> tuple[np.ndarray, float]:
        """``(rgb, downsample)``: the slide at most ``max_side`` px a side, from the smallest adequate level, read
        and reduced in strips (a single-level slide is never read whole)."""
        import cv2

        target = max(self.width, self.height) / float(max_side)
        pick = max((i for i, lv in enumerate(self.levels) if lv.downsample <= max(target, 1.0)),
                   key=lambda i: self.levels[i].downsample)
        lv = self.levels[pick]
        scale = max(max(lv.width, lv.height) / float(max_side), 1.0)
        out_w, out_h = max(1, round(lv.width / scale)), max(1, round(lv.height / scale))
        out = np.empty((out_h, out_w, 3), np.uint8)
        step = max(1, int(4096 * 1024 // max(lv.width, 1) // max(int(np.ceil(scale)), 1)))  # output rows per strip
        for r0 in range(0, out_h, step):
            r1 = min(r0 + step, out_h)
            y0, y1 = int(round(r0 * scale)), min(int(round(r1 * scale)), lv.height)
            with self._lock:
                strip = self._read_level(pick, 0, y0, lv.width, max(y1 - y0, 1))
            out[r0:r1] = strip if scale == 1.0 else cv2.resize(strip, (out_w, r1 - r0), interpolation=cv2.INTER_AREA)
        return out, self.width / out_w

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.path.name!r}, {self.width} x {self.height} px, {self.mpp:g} um/px "
                f"from {self.mpp_source}, {len(self.levels)} levels)")


class _OpenSlideSlide(Slide):
    reader = "openslide"

    def __init__(self, path: Path, mpp: float | None):
        import openslide

        try:
            self._osr = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, OSError) as exc:
            raise SlideError(f"{path}: OpenSlide cannot read it ({type(exc).__name__}: {exc})") from None
        try:
            levels, value, source = self._describe(path, mpp)
        except BaseException:
            self._osr.close()
            raise
        super().__init__(path, levels, value, source)

    def _describe(self, path: Path, mpp: float | None):
        props = self._osr.properties
        levels = [_Level(int(w), int(h), float(d)) for (w, h), d in
                  zip(self._osr.level_dimensions, self._osr.level_downsamples, strict=True)]
        if mpp is not None:
            value, source = _check_mpp(mpp, "--mpp", path), "--mpp"
        elif props.get("openslide.mpp-x"):
            value, source = _check_mpp(props["openslide.mpp-x"], "openslide.mpp-x", path), "openslide.mpp-x"
            mpp_y = props.get("openslide.mpp-y")
            if mpp_y and abs(float(mpp_y) - value) > 0.02 * value:
                raise SlideError(f"{path}: pixels are not square ({value:g} x {float(mpp_y):g} um); resample the "
                                 "slide to square pixels first")
        else:
            raise SlideError(f"{path}: the slide's metadata give no microns per pixel (no openslide.mpp-x); pass "
                             "--mpp (the scanner's resolution, e.g. 0.25 for 40x, 0.5 for 20x)")
        return levels, value, source

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        ds = self.levels[level].downsample
        img = self._osr.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h))
        rgba = np.asarray(img)
        # OpenSlide returns premultiplied-then-unpremultiplied RGBA; transparent (no data) pixels become white
        rgb = rgba[..., :3].copy()
        rgb[rgba[..., 3] == 0] = 255
        return rgb

    def close(self) -> None:
        self._osr.close()


class _TiffSlide(Slide):
    reader = "tifffile"

    def __init__(self, path: Path, mpp: float | None):
        import tifffile

        try:
            self._tif = tifffile.TiffFile(str(path))
        except Exception as exc:  # tifffile raises several types for a damaged or non-TIFF file
            raise SlideError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
        try:
            try:
                series = self._tif.series[0]
            except Exception as exc:
                raise SlideError(f"{path}: not a readable TIFF ({type(exc).__name__}: {exc})") from None
            levels, value, source = self._describe(path, series, mpp)
        except BaseException:
            self._tif.close()
            raise
        super().__init__(path, levels, value, source)

    def _describe(self, path: Path, series, mpp: float | None):
        self._pages = [lv.keyframe for lv in series.levels]
        first = self._pages[0]
        if first.samplesperpixel not in (3, 4) or first.dtype != np.uint8 or first.planarconfig != 1:
            raise SlideError(f"{path}: expected 8-bit interleaved RGB(A), got {first.samplesperpixel} samples of "
                             f"{first.dtype} (planar configuration {first.planarconfig})")
        w0 = first.imagewidth
        levels = [_Level(p.imagewidth, p.imagelength, w0 / p.imagewidth) for p in self._pages]
        if mpp is not None:
            value, source = _check_mpp(mpp, "--mpp", path), "--mpp"
        else:
            desc = _mpp_from_description(first.description)
            tags = first.tags
            res = _mpp_from_resolution(tags["XResolution"].value if "XResolution" in tags else None,
                                       tags["ResolutionUnit"].value if "ResolutionUnit" in tags else None)
            if desc is not None:
                value, source = _check_mpp(desc, "the image description", path), "image description"
            elif res is not None:
                value, source = _check_mpp(res, "the TIFF resolution tags", path), "TIFF resolution tags"
            else:
                raise SlideError(f"{path}: the TIFF gives no microns per pixel (no mpp in its description, no "
                                 "resolution tags in centimetres or inches); pass --mpp (the scanner's resolution, "
                                 "e.g. 0.25 for 40x, 0.5 for 20x)")
        return levels, value, source

    def _read_level(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        page = self._pages[level]
        if page.is_tiled:
            sh, sw = page.tilelength, page.tilewidth
        else:
            sh, sw = page.rowsperstrip or page.imagelength, page.imagewidth
        per_row = -(-page.imagewidth // sw)
        out = np.empty((h, w, 3), np.uint8)
        fh = self._tif.filehandle
        for ty in range(y // sh, (y + h - 1) // sh + 1):
            for tx in range(x // sw, (x + w - 1) // sw + 1):
                index = ty * per_row + tx
                offset, count = page.dataoffsets[index], page.databytecounts[index]
                if count:
                    fh.seek(offset)
                    seg = page.decode(fh.read(count), index, jpegtables=page.jpegtables)[0]
                    seg = seg.reshape(seg.shape[-3:])[..., :3]
                else:  # a sparse TIFF: a segment never written is background
                    seg = np.full((sh, sw, 3), 255, np.uint8)
                sy0, sx0 = ty * sh, tx * sw
                ay0, ax0 = max(y, sy0), max(x, sx0)
                ay1, ax1 = min(y + h, sy0 + sh, page.imagelength), min(x + w, sx0 + sw, page.imagewidth)
                out[ay0 - y:ay1 - y, ax0 - x:ax1 - x] = seg[ay0 - sy0:ay1 - sy0, ax0 - sx0:ax1 - sx0]
        return out

    def close(self) -> None:
        self._tif.close()


def open_slide(path: str | os.PathLike[str], *, mpp: float | None = None, reader: str = "auto") -> Slide:
    """Open a whole-slide image (see the module docstring).

    Parameters
    ----------
    path : path
        The slide: any format OpenSlide reads (``.svs``, ``.ndpi``, ``.mrxs``, generic tiled TIFF ...) or a plain or
        pyramidal TIFF.
    mpp : float, optional
        Microns per level-0 pixel, overriding the metadata (required when the slide has none).
    reader : ``auto`` | ``openslide`` | ``tifffile``
        ``auto``: tifffile for ``.tif`` / ``.tiff`` files that it can read as RGB, OpenSlide for everything else.

    Raises
    ------
    SlideError
        Missing or unreadable file, no microns per pixel, not 8-bit RGB.
    """
    path = Path(path)
    if reader not in READERS:
        raise ValueError(f"reader must be one of {', '.join(READERS)}, not {reader!r}")
    if not path.is_file():
        raise SlideError(f"{path}: no such slide file")
    if reader == "openslide":
        return _OpenSlideSlide(path, mpp)
    if reader == "tifffile":
        return _TiffSlide(path, mpp)
    if path.suffix.lower() in (".tif", ".tiff", ".btf"):
        try:
            slide = _TiffSlide(path, mpp)
        except SlideError as exc:  # OpenSlide may know this TIFF's vendor metadata (and its scale)
            try:
                return _OpenSlideSlide(path, mpp)
            except SlideError:
                raise exc from None
        try:  # a TIFF compressed in a way tifffile cannot decode alone (JPEG 2000 in some scanners' files)
            slide.read(0, 0, 1, 1)
        except Exception:
            slide.close()
            return _OpenSlideSlide(path, mpp)
        return slide
    return _OpenSlideSlide(path, mpp)
