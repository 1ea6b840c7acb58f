"""Multi-rater annotation folders: one CSV per (participant, set, FOV).

Layout written by the study (and read back)::

    <root>/<set>/raw/csv/<participant>_#_<set>_#_<fovname>.csv   same columns as a single-rater CSV
    <root>/<set>/rgb/<fovname>.png                                the FOV image (once per set)

An empty CSV (header only) means the participant annotated the FOV and found no nucleus; a missing file means they
did not annotate it. :func:`read_multirater` reads every ``*.csv`` below a folder whose name holds a ``#``, so it
also reads the release's per-participant files whatever the sub-folder names; such a name must be a valid
multi-rater FOV name (see :func:`nucls_utils.io.naming.parse_fov_name`). CSVs without ``#`` in their name (e.g. the
study's ``fovs.csv``) are not annotations and are ignored.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from .atomic import atomic_dir
from .dataset import Nucleus, _csv_text, _image_shape, read_fov_csv
from .errors import NuclsFormatError
from .naming import FovName, format_fov_name, parse_fov_name

__all__ = ["write_multirater", "read_multirater", "multirater_frame"]


def write_multirater(annotations: Mapping[tuple[str, str, str], Sequence[Nucleus]], root: str | os.PathLike[str],
                     images: Mapping[str, str | os.PathLike[str]] | None = None, *, overwrite: bool = False) -> Path:
    """Write ``(set, participant, fovname) -> nuclei`` in the multi-rater layout (atomically).

    ``images`` maps fovname -> RGB path; each set gets a copy of the images of its FOVs.
    """
    with atomic_dir(root, overwrite=overwrite) as tmp:
        for (evalset, participant, fovname), nuclei in sorted(annotations.items()):
            base = parse_fov_name(fovname)
            name = format_fov_name(FovName(base.slide, base.item_id, base.left, base.top, base.bottom, base.right,
                                           participant=participant, evalset=evalset))
            d = tmp / evalset / "raw" / "csv"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{name}.csv").write_text(_csv_text(nuclei), encoding="utf-8")
            if images is not None and fovname in images:
                rgb = tmp / evalset / "rgb" / f"{fovname}.png"
                if not rgb.exists():
                    rgb.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(images[fovname], rgb)
    return Path(root)


def _fov_image(csv_path: Path, root: Path, fovname: str) -> Path | None:
    """``rgb/<fovname>.png`` in the CSV's folder or its nearest ancestor up to ``root`` (``<set>/rgb/`` as written by
    :func:`write_multirater`, beside ``<set>/raw/``), or None."""
    folder = csv_path.parent
    while True:
        png = folder / "rgb" / f"{fovname}.png"
        if png.is_file():
            return png
        if folder == root or folder == folder.parent:
            return None
        folder = folder.parent


def read_multirater(root: str | os.PathLike[str], *, tolerance_px: int = 1
                    ) -> dict[tuple[str, str, str], tuple[Nucleus, ...]]:
    """Read every per-participant CSV below ``root``: ``(set, participant, fovname) -> nuclei``.

    Parameters
    ----------
    root : path-like
    tolerance_px : int
        When a FOV's image is present (``rgb/<fovname>.png`` in the CSV's folder or the nearest ancestor that has
        it, up to ``root``: ``<set>/rgb/`` in the layout of :func:`write_multirater`), its boxes must lie inside it
        within this many pixels (see :func:`nucls_utils.io.dataset.read_fov_csv`). Without the image they are not
        checked against it.

    Raises
    ------
    NuclsFormatError
        For a missing folder, no multi-rater CSV at all, a CSV whose name holds ``#`` but is not
        ``<participant>_#_<set>_#_<fovname>.csv`` (naming its full path), a duplicated (set, participant, FOV), an
        unreadable image, or any bad row.
    """
    root = Path(root)
    if not root.is_dir():
        raise NuclsFormatError("multi-rater folder not found", path=root)
    out: dict[tuple[str, str, str], tuple[Nucleus, ...]] = {}
    paths: dict[tuple[str, str, str], Path] = {}
    shapes: dict[Path, tuple[int, int]] = {}
    for path in sorted(p for p in root.rglob("*.csv") if "#" in p.name and p.is_file()):
        try:
            f = parse_fov_name(path.name)
        except NuclsFormatError as e:
            raise NuclsFormatError(e.message, path=path) from None
        base = format_fov_name(FovName(f.slide, f.item_id, f.left, f.top, f.bottom, f.right))
        assert f.evalset is not None and f.participant is not None  # a name with '#' always has both
        key = (f.evalset, f.participant, base)
        if key in out:
            raise NuclsFormatError(f"duplicate annotations of {key} (also in {paths[key]})", path=path)
        png = _fov_image(path, root, base)
        if png is not None and png not in shapes:
            shapes[png] = _image_shape(png)
        out[key] = read_fov_csv(path, image_shape=None if png is None else shapes[png], tolerance_px=tolerance_px)
        paths[key] = path
    if not out:
        raise NuclsFormatError("no multi-rater CSV ('<participant>_#_<set>_#_<fovname>.csv') below this folder",
                               path=root)
    return out


def multirater_frame(annotations: Mapping[tuple[str, str, str], Sequence[Nucleus]]) -> pd.DataFrame:
    """Tidy frame, one row per annotation: ``evalset, participant, fovname, index, raw_class, type`` and the box.

    (set, participant, FOV) triples with no annotation appear once with ``index`` -1 and an empty class, so the frame
    keeps the difference between "found nothing" and "did not annotate".
    """
    rows = []
    for (evalset, participant, fovname), nuclei in sorted(annotations.items()):
        if not nuclei:
            rows.append((evalset, participant, fovname, -1, "", "", -1, -1, -1, -1))
        for i, n in enumerate(nuclei):
            rows.append((evalset, participant, fovname, i, n.raw_class, n.type, n.xmin, n.ymin, n.xmax, n.ymax))
    return pd.DataFrame(rows, columns=["evalset", "participant", "fovname", "index", "raw_class", "type",
                                       "xmin", "ymin", "xmax", "ymax"])
