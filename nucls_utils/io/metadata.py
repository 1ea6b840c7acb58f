"""The core-set metadata sqlite (``fov_meta`` + ``annotation_elements``), read into the same tidy frames as a
dataset folder (see :func:`nucls_utils.io.dataset.annotations_frame` / :func:`fovs_frame`)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from .. import taxonomy as tx
from .dataset import FovRectangles
from .errors import NuclsFormatError
from .naming import hospital_of

__all__ = ["read_core_metadata", "find_core_metadata", "fov_rectangles", "CORE_METADATA_NAME"]

CORE_METADATA_NAME = "nucls_core_metadata.sqlite"

_FOV_COLUMNS = ("fov_id", "fovname", "slide_name", "xmin", "ymin", "xmax", "ymax")
_ANN_COLUMNS = ("fov_id", "group", "type", "xmin", "ymin", "xmax", "ymax")


def _table_columns(con: sqlite3.Connection, table: str) -> list[str]:
    return [r[1] for r in con.execute(f"PRAGMA table_info('{table}')")]


def read_core_metadata(path: str | os.PathLike[str], *, drop_duplicate_fovs: bool = False
                       ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read the core-set metadata sqlite.

    The public sqlite stores two FOVs twice (same ``fovname``, two ``fov_id`` values, identical annotations:
    ``TCGA-A2-A3XX-DX1 ..._left-72501_top-44109...`` and ``..._left-71971_top-44111...``). Read as stored, fold 2's
    Table 1 N is 15486; with ``drop_duplicate_fovs=True`` (keep the lowest ``fov_id`` of each name) it is 15442,
    exactly the paper's number.

    Parameters
    ----------
    path : path-like
    drop_duplicate_fovs : bool
        Keep only the first ``fov_id`` of each FOV name, and its annotations.

    Returns
    -------
    fovs : DataFrame
        One row per FOV: ``fov_id, fovname, slide_name, hospital, fov_xmin, fov_ymin, fov_xmax, fov_ymax`` (the intended
        FOV rectangle in the FOV's RGB pixel frame), ``n_nuclei``, ``is_duplicate_name``.
    annotations : DataFrame
        One row per nucleus (plus ``fov_id``), schema of :func:`nucls_utils.io.dataset.annotations_frame` (``area_px`` is the box
        area: the sqlite has no boundaries). FOV-outline rows (``group`` containing 'fov'), if any, are dropped.

    Raises
    ------
    NuclsFormatError
        Missing file, tables or columns; an unknown class (naming the ``ann_id`` row).
    """
    path = Path(path)
    if not path.is_file():
        raise NuclsFormatError("metadata sqlite not found", path=path)
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        for table, cols in (("fov_meta", _FOV_COLUMNS), ("annotation_elements", _ANN_COLUMNS)):
            if table not in tables:
                raise NuclsFormatError(f"no table {table!r} (tables: {sorted(tables)})", path=path)
            have = _table_columns(con, table)
            missing = [c for c in cols if c not in have]
            if missing:
                raise NuclsFormatError(f"table {table!r} lacks column(s) {', '.join(missing)}", path=path,
                                       field=missing[0])
        fov = pd.read_sql_query('SELECT fov_id, fovname, slide_name, xmin, ymin, xmax, ymax FROM fov_meta', con)
        ann = pd.read_sql_query(
            'SELECT rowid AS _row, fov_id, "group", type, xmin, ymin, xmax, ymax FROM annotation_elements', con)
    except sqlite3.DatabaseError as e:
        raise NuclsFormatError(f"not a readable sqlite database ({e})", path=path) from None
    finally:
        con.close()

    fov["is_duplicate_name"] = fov["fovname"].duplicated(keep="first")
    if drop_duplicate_fovs:
        ann = ann[ann["fov_id"].isin(fov.loc[~fov["is_duplicate_name"], "fov_id"])]
        fov = fov[~fov["is_duplicate_name"]]
    ann = ann[~ann["group"].map(tx.is_fov_group)]
    unknown = ~ann["group"].map(lambda g: tx.strip_correction(g) in tx.RAW_TO_MAIN)
    if unknown.any():
        bad = ann[unknown].iloc[0]
        raise NuclsFormatError(f"unknown class {bad['group']!r}", path=f"{path}:annotation_elements",
                               row=int(bad["_row"]), field="group")
    orphan = ~ann["fov_id"].isin(fov["fov_id"])
    if orphan.any():
        bad = ann[orphan].iloc[0]
        raise NuclsFormatError(f"fov_id {bad['fov_id']} is not in fov_meta", path=f"{path}:annotation_elements",
                               row=int(bad["_row"]), field="fov_id")

    fov = fov.rename(columns={"xmin": "fov_xmin", "ymin": "fov_ymin", "xmax": "fov_xmax", "ymax": "fov_ymax"})
    fov["hospital"] = fov["slide_name"].map(hospital_of)
    raw = ann["group"].map(tx.strip_correction)
    out = pd.DataFrame({
        "fov_id": ann["fov_id"].to_numpy(),
        "raw_class": raw.to_numpy(),
        "is_correction": ann["group"].map(tx.is_correction).to_numpy(),
        "main_class": raw.map(tx.RAW_TO_MAIN).to_numpy(),
        "super_class": raw.map(tx.RAW_TO_SUPER).to_numpy(),
        "type": ann["type"].to_numpy(),
        "xmin": ann["xmin"].to_numpy(), "ymin": ann["ymin"].to_numpy(),
        "xmax": ann["xmax"].to_numpy(), "ymax": ann["ymax"].to_numpy(),
    })
    out = out.merge(fov[["fov_id", "fovname", "slide_name", "hospital"]], on="fov_id", how="left")
    out["nucleus_index"] = out.groupby("fov_id").cumcount()
    counts = out.groupby("fov_id").size()
    out["width"] = out["xmax"] - out["xmin"]
    out["height"] = out["ymax"] - out["ymin"]
    out["area_px"] = (out["width"] * out["height"]).astype(float)
    out = out[["fov_id", "fovname", "slide_name", "hospital", "nucleus_index", "raw_class", "is_correction", "main_class",
               "super_class", "type", "xmin", "ymin", "xmax", "ymax", "area_px", "width", "height"]]
    fov["n_nuclei"] = fov["fov_id"].map(counts).fillna(0).astype(np.int64)
    fov = fov[["fov_id", "fovname", "slide_name", "hospital", "fov_xmin", "fov_ymin", "fov_xmax", "fov_ymax",
               "n_nuclei", "is_duplicate_name"]]
    fov = fov.reset_index(drop=True)
    fov.attrs["source"] = f"{path}:fov_meta"  # named by read_dataset when a rectangle does not fit its image
    return fov, out.reset_index(drop=True)


def find_core_metadata(spec: str | None, data_dir: str | os.PathLike[str] | None,
                       extra_dirs: tuple[str | os.PathLike[str], ...] = ()) -> Path | None:
    """Resolve a ``core_metadata`` parameter.

    ``'none'`` -> ``None``; ``'auto'`` or empty -> ``nucls_core_metadata.sqlite`` in ``data_dir``, its parent or one
    of ``extra_dirs``, the first that exists, else ``None``; anything else is a path that must exist.
    """
    if spec is not None and spec.strip().lower() == "none":
        return None
    if spec in (None, "", "auto"):
        folders = [Path(data_dir), Path(data_dir).parent] if data_dir is not None else []
        for folder in folders + [Path(d) for d in extra_dirs]:
            if (folder / CORE_METADATA_NAME).is_file():
                return (folder / CORE_METADATA_NAME).resolve()
        return None
    path = Path(spec).expanduser()
    if not path.is_file():
        raise NuclsFormatError("core-set metadata sqlite not found", path=path)
    return path.resolve()


def fov_rectangles(fovs: pd.DataFrame) -> FovRectangles:
    """FOV name -> intended FOV rectangle ``(xmin, ymin, xmax, ymax)`` from a metadata ``fovs`` frame.

    Returns
    -------
    FovRectangles
        A dict whose ``source`` is the frame's ``attrs['source']`` (``<sqlite>:fov_meta`` for a frame from
        :func:`read_core_metadata`), so that :func:`nucls_utils.io.dataset.read_dataset` names the metadata when a
        rectangle does not fit its image. The first row of a FOV name stored twice wins.
    """
    f = fovs.dropna(subset=["fov_xmin", "fov_ymin", "fov_xmax", "fov_ymax"]).drop_duplicates("fovname")
    return FovRectangles({r.fovname: (int(r.fov_xmin), int(r.fov_ymin), int(r.fov_xmax), int(r.fov_ymax))
                          for r in f.itertuples(index=False)}, source=fovs.attrs.get("source", "core-set metadata"))
