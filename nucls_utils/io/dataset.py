"""Single-rater NuCLS dataset folders: ``rgb/``, ``csv/`` and ``mask/``, read into typed records.

Layout (official release, also written by the synthetic cohort)::

    <root>/rgb/<fovname>.png     FOV RGB at 0.2 microns per pixel, with a margin around the intended FOV
    <root>/csv/<fovname>.csv     one row per nucleus (columns below)
    <root>/mask/<fovname>.png    optional: channel 0 = GT code, channels 1-2 = instance id (see masks.py)
    <root>/ALL_FOV_LOCATIONS.csv optional: fovname, xmin, ymin, xmax, ymax of the intended FOV in RGB pixels

CSV columns: an unnamed index, ``raw_classification``, ``main_classification``, ``super_classification``,
``type`` (``rectangle`` = a box drawn by a participant, ``polyline`` = an approved boundary, ``point``),
``xmin, ymin, xmax, ymax`` and ``coords_x, coords_y`` (comma-separated boundary vertices; a box's corners).

Text rules (the same for every CSV this module reads): UTF-8, with or without a leading byte-order mark; CSV as
written by Python's ``csv`` module, read strictly (an unterminated quote or text after a closing quote is an
error); records end at ``\r\n``, ``\n`` or ``\r``; the header is the first non-blank record; blank records are
skipped but still counted in the 0-based data row numbers of error messages; surrounding whitespace of a field is
ignored; integers are ASCII decimals, optionally signed, optionally with a zero fraction (``12.0``, as pandas writes
integer columns); columns are found by name (each named once), so their order does not matter, and an unnamed or
unknown column (the release's index) is ignored. An exact duplicate nucleus (the same raw class, type, box and
boundary as an earlier row of the same file) is an error: the real sample has none, so a duplicate is a
copy-and-paste accident that would inflate the counts.

Coordinates are pixel-corner coordinates in the RGB frame: pixel ``(row, col)`` covers ``[col, col + 1) x
[row, row + 1)``, so a box may end at ``x = width``. The real release has boxes that end one pixel past the
image edge (4 of the 17 sample FOVs), so a box may lie up to ``tolerance_px`` (1 by default) outside the image;
anything further is an error. The same holds for intended FOV rectangles (``ALL_FOV_LOCATIONS.csv`` or the
core-set metadata), which must also be non-empty.
"""

from __future__ import annotations

import csv
import io as _io
import os
import re
import shutil
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from .. import taxonomy as tx
from .atomic import atomic_dir, atomic_path
from .errors import NuclsFormatError
from .naming import FovName, hospital_of, parse_fov_name

__all__ = [
    "CSV_COLUMNS",
    "ANNOTATION_TYPES",
    "Nucleus",
    "FovRecord",
    "read_fov_csv",
    "write_fov_csv",
    "read_dataset",
    "write_dataset",
    "read_fov_locations",
    "annotations_frame",
    "fovs_frame",
    "convert_dataset",
    "write_fov_files",
    "write_fov_locations",
    "validate_record",
    "FovRectangles",
]

CSV_COLUMNS: tuple[str, ...] = (
    "raw_classification", "main_classification", "super_classification", "type",
    "xmin", "ymin", "xmax", "ymax", "coords_x", "coords_y",
)
ANNOTATION_TYPES: tuple[str, ...] = ("rectangle", "polyline", "point")
_INT_FIELDS = ("xmin", "ymin", "xmax", "ymax")
_INT_RE = re.compile(r"[+-]?[0-9]+(?:\.0*)?\Z")
_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\udc80-\udcff]")  # an undecodable byte, as decoded with errors="surrogateescape"
# What PIL raises for a truncated or corrupt image (FileNotFoundError, an OSError, is handled before these).
_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


@dataclass(frozen=True)
class Nucleus:
    """One annotated nucleus. Coordinates are RGB pixel corners at 0.2 microns per pixel."""

    raw_classification: str
    main_classification: str
    super_classification: str
    type: str
    xmin: int
    ymin: int
    xmax: int
    ymax: int
    coords_x: tuple[int, ...]
    coords_y: tuple[int, ...]

    @property
    def raw_class(self) -> str:
        """Raw class without the ``correction_`` prefix."""
        return tx.strip_correction(self.raw_classification)

    @property
    def is_polygon(self) -> bool:
        """Whether the nucleus has a traced boundary (``polyline``) rather than a box."""
        return self.type == "polyline"

    @property
    def box(self) -> tuple[int, int, int, int]:
        """``(xmin, ymin, xmax, ymax)``."""
        return (self.xmin, self.ymin, self.xmax, self.ymax)

    @property
    def area(self) -> float:
        """Area in square pixels: the polygon's (shoelace formula) for polylines, the box's otherwise."""
        if self.is_polygon and len(self.coords_x) >= 3:
            x = np.asarray(self.coords_x, dtype=float)
            y = np.asarray(self.coords_y, dtype=float)
            return float(abs(np.dot(x[:-1], y[1:]) - np.dot(y[:-1], x[1:]) + x[-1] * y[0] - y[-1] * x[0]) / 2.0)
        return float((self.xmax - self.xmin) * (self.ymax - self.ymin))

    def relabelled(self, raw_class: str) -> Nucleus:
        """The same outline (or box) with another raw class; main and super classes follow."""
        if self.is_polygon:
            return Nucleus.from_polygon(raw_class, self.coords_x, self.coords_y)
        return Nucleus.from_box(raw_class, self.xmin, self.ymin, self.xmax, self.ymax)

    @classmethod
    def from_box(cls, raw_class: str, xmin: int, ymin: int, xmax: int, ymax: int) -> Nucleus:
        """A ``rectangle`` nucleus whose coordinates are the box corners (closed ring, as in the release)."""
        return cls(
            raw_class, tx.to_main(raw_class), tx.to_super(raw_class), "rectangle",
            int(xmin), int(ymin), int(xmax), int(ymax),
            (int(xmin), int(xmax), int(xmax), int(xmin), int(xmin)),
            (int(ymin), int(ymin), int(ymax), int(ymax), int(ymin)),
        )

    @classmethod
    def from_polygon(cls, raw_class: str, coords_x: Sequence[int], coords_y: Sequence[int]) -> Nucleus:
        """A ``polyline`` nucleus; the box is the vertices' extent."""
        xs = tuple(int(v) for v in coords_x)
        ys = tuple(int(v) for v in coords_y)
        return cls(raw_class, tx.to_main(raw_class), tx.to_super(raw_class), "polyline",
                   min(xs), min(ys), max(xs), max(ys), xs, ys)


@dataclass(frozen=True)
class FovRecord:
    """One field of view: its name, image size, nuclei and (if known) the intended FOV rectangle."""

    name: str
    image_shape: tuple[int, int]  # (height, width) of the RGB in pixels
    nuclei: tuple[Nucleus, ...]
    fov_rect: tuple[int, int, int, int] | None = None  # (xmin, ymin, xmax, ymax) in RGB pixels
    rgb_path: Path | None = field(default=None, compare=False)
    mask_path: Path | None = field(default=None, compare=False)

    @property
    def fov(self) -> FovName:
        return parse_fov_name(self.name)

    @property
    def slide(self) -> str:
        return self.fov.slide

    @property
    def hospital(self) -> str:
        return hospital_of(self.fov.slide)

    def read_rgb(self) -> np.ndarray:
        """The RGB image, ``(H, W, 3) uint8``.

        Raises
        ------
        FileNotFoundError
            If the record has no RGB file attached, or the file has gone.
        NuclsFormatError
            Naming the file, if it cannot be decoded (e.g. truncated after the dataset was read).
        """
        if self.rgb_path is None:
            raise FileNotFoundError(f"FOV {self.name} has no RGB file attached")
        try:
            with Image.open(self.rgb_path) as im:
                return np.asarray(im.convert("RGB"))
        except FileNotFoundError:
            raise
        except _IMAGE_ERRORS as e:
            raise NuclsFormatError(f"not a readable image ({e})", path=self.rgb_path) from None

    def read_mask(self) -> tuple[np.ndarray, np.ndarray]:
        """The official mask of this FOV, decoded: ``(codes, instances)``, both ``(H, W) int32``.

        Raises
        ------
        NuclsFormatError
            If the dataset has no ``mask/<fovname>.png`` or its size differs from the RGB's.
        """
        from .masks import decode_mask, read_mask_png

        if self.mask_path is None:
            raise NuclsFormatError("no mask for this FOV (the dataset has no mask/ folder)", path=self.name)
        mask = read_mask_png(self.mask_path)
        if mask.shape[:2] != tuple(self.image_shape):
            raise NuclsFormatError(f"mask is {mask.shape[1]} x {mask.shape[0]} px but the RGB is "
                                   f"{self.image_shape[1]} x {self.image_shape[0]} px", path=self.mask_path)
        return decode_mask(mask)


class FovRectangles(dict):
    """FOV name -> intended FOV rectangle ``(xmin, ymin, xmax, ymax)`` (RGB pixels), remembering its origin.

    A plain ``dict`` for every other purpose; :func:`read_dataset` names ``source`` (and, per FOV, ``rows``) in the
    error when a rectangle does not fit its image.

    Parameters
    ----------
    items : mapping or iterable of pairs, optional
    source : str, optional
        Where the rectangles were read (``ALL_FOV_LOCATIONS.csv``, ``<sqlite>:fov_meta``).
    rows : mapping fovname -> int, optional
        The 0-based data row of each FOV in ``source``, where it has rows.
    """

    def __init__(self, items: Mapping[str, tuple[int, int, int, int]] | Iterable = (), *,
                 source: str | os.PathLike[str] | None = None, rows: Mapping[str, int] | None = None) -> None:
        super().__init__(items)
        self.source = None if source is None else str(source)
        self.rows: dict[str, int] = dict(rows or {})


# ------------------------------------------------------------------------------------------------------------
# Parsing helpers
# ------------------------------------------------------------------------------------------------------------
def _parse_int(value: str, *, path: Path | str, row: int, fld: str) -> int:
    """An ASCII decimal integer (optionally signed, optionally with a zero fraction such as ``12.0``)."""
    text = value.strip()
    if _INT_RE.match(text) is None:
        raise NuclsFormatError(f"{value!r} is not an integer", path=path, row=row, field=fld)
    return int(text.split(".", 1)[0])


def _parse_coords(value: str, *, path: Path, row: int, fld: str) -> tuple[int, ...]:
    parts = value.split(",")
    if any(not p.strip() for p in parts):
        raise NuclsFormatError(f"{value!r} is not a comma-separated list of integers", path=path, row=row, field=fld)
    return tuple(_parse_int(p, path=path, row=row, fld=fld) for p in parts)


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Decode and split one CSV (see the module docstring for the rules).

    Returns
    -------
    header : list of str
    rows : list of (0-based data row, fields)
        Every non-blank record after the header.

    Raises
    ------
    NuclsFormatError
        A missing or unreadable file, bytes that are not UTF-8 (naming the row, field and byte offset of the first
        one), malformed CSV (naming the row) or no header.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise NuclsFormatError("file not found", path=path) from None
    except OSError as e:
        raise NuclsFormatError(f"cannot read the file ({e.strerror or e})", path=path) from None
    skip = len(_BOM) if data.startswith(_BOM) else 0
    bad: tuple[int, int, str] | None = None  # (byte offset, byte, reason) of the first undecodable byte
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as e:
        text = data[skip:].decode("utf-8", "surrogateescape")
        bad = (skip + e.start, data[skip + e.start], e.reason)
    records: list[list[str]] = []
    problem: csv.Error | None = None
    try:
        records.extend(csv.reader(_io.StringIO(text, newline=""), strict=True))
    except csv.Error as e:
        problem = e
    # the header is the first non-blank record; data row 0 is the record after it
    h = next((k for k, values in enumerate(records) if values), None)
    if bad is not None:
        raise _undecodable(path, records, h, *bad)
    if problem is not None:
        # the record after the last good one failed
        raise NuclsFormatError(f"malformed CSV ({problem})", path=path,
                               row=None if h is None else len(records) - h - 1)
    if h is None:
        raise NuclsFormatError("empty file: no header row", path=path)
    return records[h], [(k - h - 1, v) for k, v in enumerate(records) if k > h and v]


def _undecodable(path: Path, records: list[list[str]], h: int | None, offset: int, byte: int, reason: str
                 ) -> NuclsFormatError:
    """The error for a file that is not UTF-8, naming the record (and field) that holds the first bad byte;
    ``h`` is the header's record index."""
    message = f"not UTF-8 text: byte 0x{byte:02x} at byte offset {offset} ({reason})"
    header = records[h] if h is not None else []
    for k, values in enumerate(records):
        for i, value in enumerate(values):
            if _SURROGATE.search(value):
                if k == h:
                    return NuclsFormatError(message + " in the header", path=path)
                assert h is not None  # a record that holds a byte is not blank, so there is a header
                fld = header[i] if i < len(header) and header[i] else None
                return NuclsFormatError(message, path=path, row=k - h - 1, field=fld)
    return NuclsFormatError(message, path=path)


def _column_index(header: Sequence[str], columns: Sequence[str], path: Path) -> dict[str, int]:
    """Position of each required column; each must be present, and named once."""
    missing = [c for c in columns if c not in header]
    if missing:
        raise NuclsFormatError(f"missing column(s) {', '.join(missing)}; header is {list(header)}", path=path,
                               field=missing[0])
    twice = [c for c in columns if header.count(c) > 1]
    if twice:
        raise NuclsFormatError(f"column {twice[0]!r} is named {header.count(twice[0])} times in the header",
                               path=path, field=twice[0])
    return {c: header.index(c) for c in columns}


def _nucleus_key(n: Nucleus) -> tuple:
    """What makes two rows the same nucleus: raw class, type, box and boundary (main/super follow the raw class)."""
    return (n.raw_classification, n.type, n.box, n.coords_x, n.coords_y)


def _duplicate_error(n: Nucleus, first: int, *, path: Path | str, row: int) -> NuclsFormatError:
    return NuclsFormatError(
        f"duplicates row {first} (the same nucleus: raw class {n.raw_classification!r}, type {n.type!r}, box "
        f"{n.box} and the same boundary); an exact duplicate would be counted twice", path=path, row=row)


def _rect_ints(rect: Any) -> tuple[int, int, int, int] | None:
    """A rectangle's four integer corners, or None when it is not four integer values."""
    try:
        vals = tuple(int(v) for v in rect)
        if len(vals) != 4 or any(isinstance(v, bool) or float(v) != i for v, i in zip(rect, vals, strict=True)):
            return None
    except (TypeError, ValueError, OverflowError):
        return None
    return (vals[0], vals[1], vals[2], vals[3])


def _check_fov_rect(rect: tuple[int, int, int, int], image_shape: tuple[int, int] | None, tolerance_px: int, *,
                    name: str, path: str | os.PathLike[str] | None, row: int | None) -> None:
    """A FOV rectangle must be non-empty and (with ``image_shape``) lie inside the image within ``tolerance_px``."""
    x0, y0, x1, y1 = rect
    for fld, lo, hi, lo_name in (("xmax", x0, x1, "xmin"), ("ymax", y0, y1, "ymin")):
        if hi <= lo:
            raise NuclsFormatError(f"FOV rectangle {rect} of {name} is empty or inverted ({fld}={hi} is not larger "
                                   f"than {lo_name}={lo})", path=path, row=row, field=fld)
    if image_shape is None:
        return
    h, w = image_shape
    t = tolerance_px
    for fld, val, size in (("xmin", x0, w), ("ymin", y0, h), ("xmax", x1, w), ("ymax", y1, h)):
        if not -t <= val <= size + t:
            raise NuclsFormatError(f"FOV rectangle {rect} of {name} lies outside the {w} x {h} px image "
                                   f"({fld}={val})", path=path, row=row, field=fld)


def _check_nucleus(n: Nucleus, *, path: str | os.PathLike[str], row: int, image_shape: tuple[int, int] | None,
                   tolerance_px: int) -> None:
    """Validate one nucleus; raise NuclsFormatError naming the field."""
    try:
        raw = tx.to_raw(n.raw_classification)
    except tx.UnknownClassError as e:
        raise NuclsFormatError(str(e), path=path, row=row, field="raw_classification") from None
    if n.main_classification not in tx.accepted_labels(raw, "main"):
        raise NuclsFormatError(
            f"main class {n.main_classification!r} does not match raw class {raw!r} (expected "
            f"{tx.to_main(raw)!r})", path=path, row=row, field="main_classification")
    if n.super_classification not in tx.accepted_labels(raw, "super"):
        raise NuclsFormatError(
            f"super class {n.super_classification!r} does not match raw class {raw!r} (expected "
            f"{tx.to_super(raw)!r})", path=path, row=row, field="super_classification")
    if n.type not in ANNOTATION_TYPES:
        raise NuclsFormatError(f"unknown annotation type {n.type!r}; expected one of {', '.join(ANNOTATION_TYPES)}",
                               path=path, row=row, field="type")
    if n.xmax < n.xmin:
        raise NuclsFormatError(f"xmax={n.xmax} is smaller than xmin={n.xmin}", path=path, row=row, field="xmax")
    if n.ymax < n.ymin:
        raise NuclsFormatError(f"ymax={n.ymax} is smaller than ymin={n.ymin}", path=path, row=row, field="ymax")
    if len(n.coords_x) != len(n.coords_y):
        raise NuclsFormatError(
            f"coords_x has {len(n.coords_x)} values but coords_y has {len(n.coords_y)}",
            path=path, row=row, field="coords_y")
    if n.type == "polyline" and len(n.coords_x) < 3:
        raise NuclsFormatError(f"a polyline needs at least 3 vertices, got {len(n.coords_x)}",
                               path=path, row=row, field="coords_x")
    ext = (min(n.coords_x), min(n.coords_y), max(n.coords_x), max(n.coords_y))
    for fld, got, want in zip(_INT_FIELDS, n.box, ext, strict=True):
        if abs(got - want) > tolerance_px:
            raise NuclsFormatError(f"{fld}={got} does not match the boundary's extent ({want})",
                                   path=path, row=row, field=fld)
    if image_shape is not None:
        h, w = image_shape
        t = tolerance_px
        for fld, val, lo, hi in (("xmin", n.xmin, -t, w + t), ("ymin", n.ymin, -t, h + t),
                                 ("xmax", n.xmax, -t, w + t), ("ymax", n.ymax, -t, h + t)):
            if not lo <= val <= hi:
                raise NuclsFormatError(
                    f"box ({n.xmin}, {n.ymin}, {n.xmax}, {n.ymax}) lies outside the {w} x {h} px image "
                    f"({fld}={val})", path=path, row=row, field=fld)


# ------------------------------------------------------------------------------------------------------------
# One CSV
# ------------------------------------------------------------------------------------------------------------
def read_fov_csv(path: str | os.PathLike[str], *, image_shape: tuple[int, int] | None = None,
                 tolerance_px: int = 1) -> tuple[Nucleus, ...]:
    """Read and validate one per-FOV annotation CSV.

    Parameters
    ----------
    path : path-like
    image_shape : (height, width), optional
        When given, boxes must lie inside the image (within ``tolerance_px``).
    tolerance_px : int
        How far (pixels) a box may lie past the image edge, and may differ from its boundary's extent.

    Returns
    -------
    tuple of Nucleus, in file order.

    Raises
    ------
    NuclsFormatError
        Naming the file, the 0-based data row and the field of the first problem: bytes that are not UTF-8 (with
        the byte offset), malformed CSV, a missing or twice-named column, a ragged row, a bad value, an unknown or
        inconsistent class, a box that does not match its boundary or lies outside the image, or an exact duplicate
        of an earlier row (naming that row too). See the module docstring for the text rules.
    """
    path = Path(path)
    header, rows = _read_csv(path)
    idx = _column_index(header, CSV_COLUMNS, path)
    nuclei = []
    seen: dict[tuple, int] = {}
    for row, values in rows:
        if len(values) != len(header):
            raise NuclsFormatError(f"has {len(values)} fields but the header has {len(header)}", path=path, row=row)
        get = {c: values[i] for c, i in idx.items()}
        xmin, ymin, xmax, ymax = (_parse_int(get[c], path=path, row=row, fld=c) for c in _INT_FIELDS)
        n = Nucleus(
            get["raw_classification"].strip(), get["main_classification"].strip(),
            get["super_classification"].strip(), get["type"].strip(), xmin, ymin, xmax, ymax,
            _parse_coords(get["coords_x"], path=path, row=row, fld="coords_x"),
            _parse_coords(get["coords_y"], path=path, row=row, fld="coords_y"),
        )
        _check_nucleus(n, path=path, row=row, image_shape=image_shape, tolerance_px=tolerance_px)
        key = _nucleus_key(n)
        if key in seen:
            raise _duplicate_error(n, seen[key], path=path, row=row)
        seen[key] = row
        nuclei.append(n)
    return tuple(nuclei)


def _csv_text(nuclei: Iterable[Nucleus]) -> str:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(("",) + CSV_COLUMNS)
    for i, n in enumerate(nuclei):
        w.writerow((i, n.raw_classification, n.main_classification, n.super_classification, n.type,
                    n.xmin, n.ymin, n.xmax, n.ymax,
                    ",".join(map(str, n.coords_x)), ",".join(map(str, n.coords_y))))
    return buf.getvalue()


def write_fov_csv(nuclei: Iterable[Nucleus], path: str | os.PathLike[str]) -> None:
    """Write one per-FOV CSV in the official column order (atomically)."""
    with atomic_path(path) as tmp:
        tmp.write_text(_csv_text(nuclei), encoding="utf-8")


# ------------------------------------------------------------------------------------------------------------
# A dataset folder
# ------------------------------------------------------------------------------------------------------------
def _image_shape(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an RGB image, decoding it fully once so that a truncated or corrupt file fails here.

    Raises
    ------
    NuclsFormatError
        Naming the image: missing, not decodable (e.g. truncated: PIL reads only the header on open) or not RGB.
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            mode = im.mode
            im.load()
    except FileNotFoundError:
        raise NuclsFormatError("image not found", path=path) from None
    except _IMAGE_ERRORS as e:
        raise NuclsFormatError(f"not a readable image ({e})", path=path) from None
    if mode not in ("RGB", "RGBA", "P", "L"):
        raise NuclsFormatError(f"unexpected image mode {mode!r}; expected RGB", path=path)
    return (h, w)


def read_fov_locations(path: str | os.PathLike[str]) -> FovRectangles:
    """Read ``ALL_FOV_LOCATIONS.csv``: fovname -> intended FOV rectangle ``(xmin, ymin, xmax, ymax)``.

    Columns ``fovname, xmin, ymin, xmax, ymax`` (found by name; the text rules of the module docstring apply).

    Returns
    -------
    FovRectangles
        With ``source`` = ``path`` and the data row of each FOV, for the errors of :func:`read_dataset`.

    Raises
    ------
    NuclsFormatError
        Naming the file, row and field: a bad integer, an empty FOV name, an empty or inverted rectangle
        (``xmax <= xmin`` or ``ymax <= ymin``), or a FOV listed twice (naming the earlier row).
    """
    path = Path(path)
    header, rows = _read_csv(path)
    need = ("fovname", "xmin", "ymin", "xmax", "ymax")
    idx = _column_index(header, need, path)
    out = FovRectangles(source=path)
    for row, values in rows:
        if len(values) != len(header):
            raise NuclsFormatError(f"has {len(values)} fields but the header has {len(header)}", path=path, row=row)
        name = values[idx["fovname"]].strip()
        if not name:
            raise NuclsFormatError("empty FOV name", path=path, row=row, field="fovname")
        x0, y0, x1, y1 = (_parse_int(values[idx[c]], path=path, row=row, fld=c) for c in need[1:])
        for fld, lo, hi, lo_name in (("xmax", x0, x1, "xmin"), ("ymax", y0, y1, "ymin")):
            if hi <= lo:
                raise NuclsFormatError(f"{fld}={hi} is not larger than {lo_name}={lo}: an empty or inverted "
                                       "rectangle", path=path, row=row, field=fld)
        if name in out:
            raise NuclsFormatError(f"FOV {name!r} is listed twice (also row {out.rows[name]})", path=path, row=row,
                                   field="fovname")
        out[name] = (x0, y0, x1, y1)
        out.rows[name] = row
    return out


def read_dataset(root: str | os.PathLike[str], *, tolerance_px: int = 1,
                 fov_rects: Mapping[str, tuple[int, int, int, int]] | None = None) -> list[FovRecord]:
    """Read a single-rater dataset folder into :class:`FovRecord` objects, sorted by FOV name.

    Parameters
    ----------
    root : path-like
        A folder with ``csv/`` and ``rgb/`` (the official layout); when it also has ``mask/``, every FOV must have
        its mask there (read lazily with :meth:`FovRecord.read_mask`).
    tolerance_px : int
        See :func:`read_fov_csv`.
    fov_rects : mapping, optional
        Intended FOV rectangles by FOV name (e.g. :func:`nucls_utils.io.metadata.fov_rectangles` of the core-set
        metadata). When absent, they come from ``<root>/ALL_FOV_LOCATIONS.csv`` if that file exists, else stay
        ``None``. Each rectangle of a FOV of the dataset must be non-empty and lie inside its image (within
        ``tolerance_px``); rectangles of FOVs the dataset does not hold are ignored.

    Raises
    ------
    NuclsFormatError
        Wrong folder layout, a CSV without its image (or the reverse), a bad FOV name, an image that cannot be
        decoded (every image is decoded once, fully), any bad CSV row, or a FOV rectangle that is empty or outside
        its image (naming ``ALL_FOV_LOCATIONS.csv`` and its row, or the ``source`` of a :class:`FovRectangles`,
        else ``fov_rects``).
    """
    root = Path(root)
    if not root.is_dir():
        raise NuclsFormatError("dataset folder not found", path=root)
    csv_dir, rgb_dir = root / "csv", root / "rgb"
    for d in (csv_dir, rgb_dir):
        if not d.is_dir():
            present = sorted(p.name for p in root.iterdir() if p.is_dir())
            raise NuclsFormatError(
                f"wrong folder layout: no '{d.name}/' folder (found {present or 'no folders'}); a NuCLS dataset "
                "holds rgb/, csv/ and optionally mask/", path=root)
    csvs = {p.stem: p for p in csv_dir.glob("*.csv")}
    pngs = {p.stem: p for p in rgb_dir.glob("*.png")}
    if not csvs:
        raise NuclsFormatError("no CSV files in csv/", path=csv_dir)
    for name in sorted(csvs):
        if name not in pngs:
            raise NuclsFormatError(f"missing image: no rgb/{name}.png for this CSV", path=csvs[name])
    for name in sorted(pngs):
        if name not in csvs:
            raise NuclsFormatError(f"missing annotations: no csv/{name}.csv for this image", path=pngs[name])
    mask_dir = root / "mask"
    masks = {p.stem: p for p in mask_dir.glob("*.png")} if mask_dir.is_dir() else {}
    if mask_dir.is_dir():
        for name in sorted(csvs):
            if name not in masks:
                raise NuclsFormatError(f"missing mask: mask/ exists but has no {name}.png", path=csvs[name])
    if fov_rects is None and (root / "ALL_FOV_LOCATIONS.csv").exists():
        fov_rects = read_fov_locations(root / "ALL_FOV_LOCATIONS.csv")
    source = (getattr(fov_rects, "source", None) or "fov_rects") if fov_rects is not None else None
    rect_rows: Mapping[str, int] = getattr(fov_rects, "rows", {})
    records = []
    for name in sorted(csvs):
        try:
            parse_fov_name(name)
        except NuclsFormatError as e:
            raise NuclsFormatError(e.message, path=csvs[name]) from None
        shape = _image_shape(pngs[name])
        nuclei = read_fov_csv(csvs[name], image_shape=shape, tolerance_px=tolerance_px)
        rect = None if fov_rects is None else fov_rects.get(name)
        if rect is not None:
            given, rect = rect, _rect_ints(rect)
            if rect is None:
                raise NuclsFormatError(f"FOV rectangle {given!r} of {name} is not four integers "
                                       "(xmin, ymin, xmax, ymax)", path=source, row=rect_rows.get(name))
            _check_fov_rect(rect, shape, tolerance_px, name=name, path=source, row=rect_rows.get(name))
        records.append(FovRecord(name, shape, nuclei, rect, rgb_path=pngs[name], mask_path=masks.get(name)))
    return records


def write_dataset(records: Sequence[FovRecord], root: str | os.PathLike[str], *,
                  images: Mapping[str, np.ndarray] | None = None, masks: bool = True,
                  overwrite: bool = False, tolerance_px: int = 1) -> Path:
    """Write records as a single-rater dataset folder (``rgb/``, ``csv/``, ``mask/``).

    Everything is validated first and written into a temporary folder that is renamed onto ``root`` only when
    complete, so a failure leaves no half-written dataset.

    Parameters
    ----------
    records : sequence of FovRecord
    root : path-like
        The dataset folder to create.
    images : mapping fovname -> (H, W, 3) uint8 ndarray, optional
        RGB images; records not in it must have ``rgb_path`` set (the file is copied).
    masks : bool
        Also rasterise and write ``mask/<fovname>.png`` (official encoding, see :mod:`nucls_utils.io.masks`).
    overwrite : bool
        Replace an existing ``root``.
    """
    images = images or {}
    names = [r.name for r in records]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})[0]
        raise NuclsFormatError("duplicate FOV name in records", path=dup)
    for r in records:
        validate_record(r, tolerance_px=tolerance_px)
        if r.name in images:
            img = np.asarray(images[r.name])
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[:2] != tuple(r.image_shape):
                raise NuclsFormatError(
                    f"image must be a ({r.image_shape[0]}, {r.image_shape[1]}, 3) uint8 array, got "
                    f"{img.shape} {img.dtype}", path=f"rgb/{r.name}.png")
        elif r.rgb_path is None or not Path(r.rgb_path).exists():
            raise NuclsFormatError("missing image: no array given and no readable rgb_path",
                                   path=f"rgb/{r.name}.png")
    with atomic_dir(root, overwrite=overwrite) as tmp:
        for sub in ("rgb", "csv") + (("mask",) if masks else ()):
            (tmp / sub).mkdir()
        for r in records:
            write_fov_files(tmp, r, images.get(r.name), masks=masks)
        write_fov_locations(tmp, records)
    return Path(root)


def write_fov_files(root: Path, record: FovRecord, image: np.ndarray | None = None, *, masks: bool = True) -> None:
    """Write one FOV's ``rgb/``, ``csv/`` (and ``mask/``) files into an existing dataset folder.

    The RGB comes from ``image`` when given, else it is copied from ``record.rgb_path``. No validation: callers
    validate first (see :func:`write_dataset`).
    """
    from .masks import encode_mask, rasterize_instances, write_mask_png

    if image is not None:
        Image.fromarray(np.asarray(image)).save(root / "rgb" / f"{record.name}.png")
    elif record.rgb_path is not None:
        shutil.copyfile(record.rgb_path, root / "rgb" / f"{record.name}.png")
    else:
        raise ValueError(f"FOV {record.name}: no image given and the record has no rgb_path to copy")
    (root / "csv" / f"{record.name}.csv").write_text(_csv_text(record.nuclei), encoding="utf-8")
    if masks:
        inst = rasterize_instances(record.nuclei, record.image_shape)
        codes = [tx.gt_code(n.raw_classification) for n in record.nuclei]
        write_mask_png(encode_mask(inst, codes, fov_rect=record.fov_rect), root / "mask" / f"{record.name}.png")


def write_fov_locations(root: Path, records: Iterable[FovRecord]) -> None:
    """Write ``ALL_FOV_LOCATIONS.csv`` for the records that have an intended FOV rectangle."""
    rects = [(r.name, *r.fov_rect) for r in records if r.fov_rect is not None]
    if rects:
        pd.DataFrame(rects, columns=["fovname", "xmin", "ymin", "xmax", "ymax"]).to_csv(
            root / "ALL_FOV_LOCATIONS.csv", index=False)


def validate_record(record: FovRecord, *, tolerance_px: int = 1) -> None:
    """Check what :func:`read_dataset` would check of a record before it is written; raise NuclsFormatError.

    Its name, every nucleus (classes, box inside the image), no exact duplicate nucleus, and its FOV rectangle
    (non-empty, inside the image).
    """
    parse_fov_name(record.name)
    seen: dict[tuple, int] = {}
    path = f"csv/{record.name}.csv"
    for i, n in enumerate(record.nuclei):
        _check_nucleus(n, path=path, row=i, image_shape=record.image_shape, tolerance_px=tolerance_px)
        key = _nucleus_key(n)
        if key in seen:
            raise _duplicate_error(n, seen[key], path=path, row=i)
        seen[key] = i
    if record.fov_rect is not None:
        rect = _rect_ints(record.fov_rect)
        if rect is None:
            raise NuclsFormatError(f"FOV rectangle {record.fov_rect!r} of {record.name} is not four integers",
                                   path="fov_rect")
        _check_fov_rect(rect, record.image_shape, tolerance_px, name=record.name, path="fov_rect", row=None)


# ------------------------------------------------------------------------------------------------------------
# Tidy frames
# ------------------------------------------------------------------------------------------------------------
def annotations_frame(records: Iterable[FovRecord]) -> pd.DataFrame:
    """One row per nucleus: FOV, slide, hospital, classes at every level, type, box, size and area (pixels).

    ``main_class`` and ``super_class`` are derived from the raw class with the taxonomy (apoptotic bodies are
    AMBIGUOUS), whatever spelling the CSV used (see :data:`nucls_utils.taxonomy.RELEASE_CSV_ALIASES`).
    """
    rows = []
    for r in records:
        fov = r.fov
        for i, n in enumerate(r.nuclei):
            rows.append((r.name, fov.slide, hospital_of(fov.slide), i, n.raw_class,
                         tx.is_correction(n.raw_classification), tx.to_main(n.raw_class), tx.to_super(n.raw_class),
                         n.type, n.xmin, n.ymin, n.xmax, n.ymax, n.area))
    df = pd.DataFrame(rows, columns=["fovname", "slide_name", "hospital", "nucleus_index", "raw_class",
                                     "is_correction", "main_class", "super_class", "type",
                                     "xmin", "ymin", "xmax", "ymax", "area_px"])
    df["width"] = df["xmax"] - df["xmin"]
    df["height"] = df["ymax"] - df["ymin"]
    return df


def fovs_frame(records: Iterable[FovRecord]) -> pd.DataFrame:
    """One row per FOV: name, slide, hospital, image size, intended FOV rectangle (or NaN), nucleus count."""
    rows = []
    for r in records:
        rect = r.fov_rect if r.fov_rect is not None else (np.nan,) * 4
        rows.append((r.name, r.slide, r.hospital, r.image_shape[0], r.image_shape[1], *rect, len(r.nuclei)))
    return pd.DataFrame(rows, columns=["fovname", "slide_name", "hospital", "height", "width",
                                       "fov_xmin", "fov_ymin", "fov_xmax", "fov_ymax", "n_nuclei"])


def convert_dataset(src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                    fov_rects: Mapping[str, tuple[int, int, int, int]] | None = None, overwrite: bool = False,
                    tolerance_px: int = 1) -> list[FovRecord]:
    """Validate a dataset folder and write a normalised copy with rasterised ``mask/`` PNGs.

    Any bad input raises :class:`NuclsFormatError` before ``dst`` exists; ``dst`` appears only complete.
    Returns the records read from ``src``.
    """
    records = read_dataset(src, tolerance_px=tolerance_px, fov_rects=fov_rects)
    write_dataset(records, dst, masks=True, overwrite=overwrite, tolerance_px=tolerance_px)
    return records
