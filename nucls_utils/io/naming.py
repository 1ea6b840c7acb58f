"""FOV names of the NuCLS release.

A FOV is named ``<slide>_id-<item id>_left-<L>_top-<T>_bottom-<B>_right-<R>``. Note the order: left, top,
**bottom, right**. L/T/B/R are slide coordinates at base (scan) magnification of the exported region, which
includes a margin around the intended FOV. Multi-rater files carry a prefix ``<participant>_#_<set>_#_``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import NuclsFormatError

__all__ = ["FovName", "parse_fov_name", "format_fov_name", "slide_of", "hospital_of"]

_FOV_RE = re.compile(
    r"^(?:(?P<participant>[^#/]+?)_#_(?P<evalset>[^#/]+?)_#_)?"
    r"(?P<slide>[^/]+?)_id-(?P<item_id>[^_/]+)"
    r"_left-(?P<left>-?\d+)_top-(?P<top>-?\d+)_bottom-(?P<bottom>-?\d+)_right-(?P<right>-?\d+)$"
)


@dataclass(frozen=True, order=True)
class FovName:
    """The parts of a FOV name. Coordinates are slide base-magnification pixels."""

    slide: str
    item_id: str
    left: int
    top: int
    bottom: int
    right: int
    participant: str | None = None
    evalset: str | None = None

    @property
    def hospital(self) -> str:
        """Tissue-source site: the second token of a TCGA slide name (``TCGA-A2-A0CM-DX1`` -> ``A2``)."""
        return hospital_of(self.slide)

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top

    def __str__(self) -> str:
        return format_fov_name(self)


def parse_fov_name(name: str) -> FovName:
    """Parse a FOV name (a file stem; a ``.png``/``.csv`` suffix is accepted and ignored).

    Raises
    ------
    NuclsFormatError
        If the name does not follow the official pattern or its box is empty or inverted.
    """
    stem = re.sub(r"\.(png|csv)$", "", name.rsplit("/", 1)[-1])
    m = _FOV_RE.match(stem)
    if m is None:
        raise NuclsFormatError(
            "not a NuCLS FOV name; expected '<slide>_id-<id>_left-<L>_top-<T>_bottom-<B>_right-<R>'",
            path=name,
        )
    fov = FovName(
        slide=m["slide"], item_id=m["item_id"], left=int(m["left"]), top=int(m["top"]),
        bottom=int(m["bottom"]), right=int(m["right"]), participant=m["participant"], evalset=m["evalset"],
    )
    if fov.right <= fov.left or fov.bottom <= fov.top:
        raise NuclsFormatError(
            f"FOV name has an empty or inverted box (left={fov.left}, right={fov.right}, top={fov.top}, "
            f"bottom={fov.bottom})", path=name,
        )
    return fov


def format_fov_name(fov: FovName) -> str:
    """Inverse of :func:`parse_fov_name`."""
    base = (f"{fov.slide}_id-{fov.item_id}_left-{fov.left}_top-{fov.top}"
            f"_bottom-{fov.bottom}_right-{fov.right}")
    if fov.participant is not None or fov.evalset is not None:
        return f"{fov.participant}_#_{fov.evalset}_#_{base}"
    return base


def slide_of(fovname: str) -> str:
    """Slide name of a FOV name: everything before the first ``_`` (after a multi-rater prefix, if any)."""
    return parse_fov_name(fovname).slide


def hospital_of(slide: str) -> str:
    """Hospital (TCGA tissue-source site) of a slide name: its second ``-`` token.

    Raises
    ------
    ValueError
        If the slide name has fewer than two ``-`` separated tokens.
    """
    parts = slide.split("-")
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"cannot read a hospital from slide name {slide!r}: expected 'TCGA-<hospital>-...'")
    return parts[1]
