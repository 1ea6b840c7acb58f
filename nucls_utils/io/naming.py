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

# Coordinates are canonical ASCII integers (no leading zeros, no '-0'), so that a parsed name formats back to
# exactly the same text; ``\Z`` (not ``$``) so that a trailing newline is not silently dropped.
_INT = r"(?:0|-?[1-9][0-9]*)"
_BASE_RE = re.compile(
    r"(?P<slide>[^/]+?)_id-(?P<item_id>[^_/]+)"
    rf"_left-(?P<left>{_INT})_top-(?P<top>{_INT})_bottom-(?P<bottom>{_INT})_right-(?P<right>{_INT})\Z"
)
_SUFFIX_RE = re.compile(r"\.(?:png|csv)\Z")
PREFIX_SEPARATOR = "_#_"
_EXPECTED = "expected '<slide>_id-<id>_left-<L>_top-<T>_bottom-<B>_right-<R>'"


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
    """Parse a FOV name (a file stem; a folder and one ``.png``/``.csv`` suffix are accepted and ignored).

    The accepted grammar is strict, so that ``format_fov_name(parse_fov_name(stem)) == stem`` for every name it
    accepts:

    * an optional multi-rater prefix ``<participant>_#_<set>_#_``: when the name holds a ``#`` at all, it must
      split on ``_#_`` into exactly three parts, the participant and the set neither empty nor blank, and ``#``
      appears nowhere else;
    * ``<slide>_id-<item id>_left-<L>_top-<T>_bottom-<B>_right-<R>``: a non-blank slide, an item id without ``_``,
      coordinates written as canonical ASCII integers (no leading zeros, no ``-0``), ``right > left`` and
      ``bottom > top``.

    Raises
    ------
    NuclsFormatError
        Naming ``name`` as given, if it does not follow the pattern or its box is empty or inverted.
    """
    stem = _SUFFIX_RE.sub("", name.rsplit("/", 1)[-1])
    participant = evalset = None
    base = stem
    if "#" in stem:
        parts = stem.split(PREFIX_SEPARATOR)
        if len(parts) == 1:
            raise NuclsFormatError("'#' may appear only in the '_#_' separators of a multi-rater prefix "
                                   "'<participant>_#_<set>_#_'", path=name)
        if len(parts) != 3:
            raise NuclsFormatError(
                f"a multi-rater name splits on '_#_' into {len(parts)} part(s); expected "
                "'<participant>_#_<set>_#_<fovname>'", path=name)
        participant, evalset, base = parts
        for what, value in (("participant", participant), ("evaluation set", evalset)):
            if not value.strip():
                raise NuclsFormatError(f"empty {what} in the multi-rater prefix '<participant>_#_<set>_#_'",
                                       path=name)
        if any("#" in p for p in parts):
            raise NuclsFormatError("'#' may appear only in the '_#_' separators of a multi-rater prefix", path=name)
    m = _BASE_RE.match(base)
    if m is None or not m["slide"].strip():
        raise NuclsFormatError(f"not a NuCLS FOV name; {_EXPECTED}", path=name)
    fov = FovName(
        slide=m["slide"], item_id=m["item_id"], left=int(m["left"]), top=int(m["top"]),
        bottom=int(m["bottom"]), right=int(m["right"]), participant=participant, evalset=evalset,
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
