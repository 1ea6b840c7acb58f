"""Internal-external cross-validation by hospital (paper Fig. 6c, Table 1).

The paper's five folds hold out whole hospitals (TCGA tissue-source sites). Its actual test hospitals are fixed
in :data:`PAPER_FOLDS` (fold 1 is the validation fold used for tuning). For any other cohort,
:func:`hospital_kfold` builds an analogous seeded split: the ``n_folds`` largest hospitals go one to a fold and
the remaining hospitals are shuffled and dealt into ``n_folds`` near-equal groups, so every test fold holds one
large hospital and some small ones.

Table 1's detection ``N`` counts, per test fold, the non-ambiguous nuclei whose box, clipped to the intended FOV
rectangle, keeps both sides > 8 px (:func:`detection_n`). On the public core-set metadata this gives
6102 / 15486 / 12672 / 8260 / 7295, against the paper's :data:`PAPER_TABLE1_N` (fold 2: 15442). The whole fold-2
difference is two FOVs stored twice in the sqlite (44 countable nuclei); without the duplicates
(``read_core_metadata(..., drop_duplicate_fovs=True)``) fold 2 gives 15442 too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper
from .. import taxonomy as tx
from .atomic import atomic_path
from .naming import hospital_of

__all__ = ["PAPER_FOLDS", "PAPER_TABLE1_N", "PAPER_FOLD_N_FOVS", "MIN_SIDE_PX", "paper_folds", "hospital_kfold",
           "fold_slides", "detection_mask", "detection_n", "fold_table", "save_fold_assignment",
           "load_fold_assignment", "FOLD_ASSIGNMENT_FILE", "core_table1_n"]

#: Where notebook 01 stores the slide -> fold assignment that notebooks 05-07 read (under its stage folder).
FOLD_ASSIGNMENT_FILE = "fold_assignment.csv"
_ASSIGNMENT_COLUMNS = ("slide_name", "hospital", "fold")

#: Test hospitals of each paper fold (reference splits; 124 slides in all).
PAPER_FOLDS: dict[int, frozenset[str]] = {
    1: frozenset({"A1", "AC", "BH", "OL"}),
    2: frozenset({"A2", "AN", "AQ", "S3"}),
    3: frozenset({"AO", "E2", "GM", "LL"}),
    4: frozenset({"AR", "C8", "D8"}),
    5: frozenset({"A7", "EW", "GI"}),
}
#: Table 1 (top half) detection N per test fold, as printed in the paper (:mod:`nucls_utils.paper`).
PAPER_TABLE1_N: dict[int, int] = paper.table1_n()
#: Test FOVs per fold in the reference splits (nucls_algorithms.md, "Data check").
PAPER_FOLD_N_FOVS: dict[int, int] = {1: 263, 2: 507, 3: 405, 4: 294, 5: 277}
#: Boxes with a side <= this many pixels (after clipping to the FOV) are dropped in evaluation.
MIN_SIDE_PX = 8


def _slides_frame(slides: Iterable[str]) -> pd.DataFrame:
    names = sorted(set(slides))
    return pd.DataFrame({"slide_name": names, "hospital": [hospital_of(s) for s in names]})


def paper_folds(slides: Iterable[str]) -> pd.DataFrame:
    """Assign each slide to the paper fold whose test set holds its hospital.

    Returns
    -------
    DataFrame with columns ``slide_name, hospital, fold`` (fold in 1..5), sorted by slide.

    Raises
    ------
    ValueError
        If a slide's hospital is in none of the paper's folds (use :func:`hospital_kfold` for other cohorts).
    """
    df = _slides_frame(slides)
    lookup = {h: k for k, hs in PAPER_FOLDS.items() for h in hs}
    unknown = sorted(set(df["hospital"]) - set(lookup))
    if unknown:
        raise ValueError(f"hospital(s) {unknown} are not in the paper's folds; use hospital_kfold() for this cohort")
    df["fold"] = df["hospital"].map(lookup).astype(int)
    return df


def hospital_kfold(slides: Iterable[str], n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Seeded by-hospital K-fold: no hospital is split across folds.

    The ``n_folds`` hospitals with most slides are shuffled and placed one per fold; the rest are shuffled and
    dealt into ``n_folds`` contiguous near-equal groups (the paper's big/small scheme).

    Returns
    -------
    DataFrame with columns ``slide_name, hospital, fold`` (fold in 1..n_folds).
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    df = _slides_frame(slides)
    sizes = df.groupby("hospital").size()
    if len(sizes) < n_folds:
        raise ValueError(f"{len(sizes)} hospital(s) cannot fill {n_folds} folds: need at least one per fold")
    rng = np.random.default_rng(seed)
    order = sorted(sizes.index, key=lambda h: (-sizes[h], h))
    big, small = order[:n_folds], sorted(order[n_folds:])
    fold_of = {h: k + 1 for k, h in enumerate(rng.permutation(big))}
    for k, chunk in enumerate(np.array_split(rng.permutation(np.array(small, dtype=object)), n_folds)):
        for h in chunk:
            fold_of[str(h)] = k + 1
    df["fold"] = df["hospital"].map(fold_of).astype(int)
    return df


def _check_assignment(df: pd.DataFrame, where: str) -> pd.DataFrame:
    missing = [c for c in _ASSIGNMENT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{where}: missing column(s) {missing}")
    df = df[list(_ASSIGNMENT_COLUMNS)].copy()
    for i, (slide, fold) in enumerate(zip(df["slide_name"], df["fold"], strict=True)):
        row = f"{where}, row {i + 2}"  # the CSV's line (after the header)
        if not isinstance(slide, str) or not slide:
            raise ValueError(f"{row}, field slide_name: empty")
        try:
            ok = float(fold) == int(float(fold)) and int(float(fold)) >= 1
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{row}, field fold: {fold!r} is not a fold number (1, 2, ...)")
    if df["slide_name"].duplicated().any():
        dup = df.loc[df["slide_name"].duplicated(), "slide_name"].iloc[0]
        raise ValueError(f"{where}: slide {dup} is assigned twice")
    return df.astype({"slide_name": object, "hospital": object}).assign(fold=df["fold"].astype(float).astype(int))


def save_fold_assignment(assignment: pd.DataFrame, stage_dir: str | os.PathLike[str]) -> Path:
    """Store notebook 01's slide -> fold assignment (``slide_name, hospital, fold``) in its stage folder,
    atomically, after checking it (see :func:`load_fold_assignment`); return the file."""
    path = Path(stage_dir) / FOLD_ASSIGNMENT_FILE
    df = _check_assignment(assignment, "the fold assignment to store")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return path


def load_fold_assignment(results_dir: str | os.PathLike[str], dataset_name: str) -> pd.DataFrame:
    """The assignment :func:`save_fold_assignment` stored for ``dataset_name`` under ``results_dir``: columns
    ``slide_name`` and ``hospital`` (text) and ``fold`` (int), one row per slide. A missing file says which notebook
    writes it; a bad row is named by line and field."""
    path = Path(results_dir) / dataset_name / "01_data_prep" / FOLD_ASSIGNMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no fold assignment at {path}: run notebook 01 first (same --out and profile)")
    return _check_assignment(pd.read_csv(path, dtype={"slide_name": str, "hospital": str}, keep_default_na=False),
                             str(path))


def fold_slides(assignment: pd.DataFrame, fold: int) -> tuple[list[str], list[str]]:
    """``(train_slides, test_slides)`` of one fold from an assignment frame."""
    test = assignment["fold"] == fold
    if not test.any():
        raise ValueError(f"fold {fold} has no slides")
    return sorted(assignment.loc[~test, "slide_name"]), sorted(assignment.loc[test, "slide_name"])


def detection_mask(annotations: pd.DataFrame, fovs: pd.DataFrame) -> pd.Series:
    """Which nuclei count in Table 1's detection N.

    A nucleus counts when its class is not AMBIGUOUS and its box, clipped to the FOV rectangle
    (``fov_xmin..fov_ymax`` of ``fovs``; the whole image when those are NaN and ``width/height`` exist), keeps
    both sides > :data:`MIN_SIDE_PX`.
    """
    cols = ["fov_xmin", "fov_ymin", "fov_xmax", "fov_ymax"]
    fv = fovs.drop_duplicates(subset=["fovname"] + cols)
    if fv["fovname"].duplicated().any():
        raise ValueError(f"FOV {fv.loc[fv['fovname'].duplicated(), 'fovname'].iloc[0]} has two different rectangles")
    rect = fv.set_index("fovname")[cols].astype(float).copy()
    if {"width", "height"} <= set(fv.columns):
        whole = fv.set_index("fovname")
        rect["fov_xmin"] = rect["fov_xmin"].fillna(0.0)
        rect["fov_ymin"] = rect["fov_ymin"].fillna(0.0)
        rect["fov_xmax"] = rect["fov_xmax"].fillna(whole["width"].astype(float))
        rect["fov_ymax"] = rect["fov_ymax"].fillna(whole["height"].astype(float))
    r = rect.reindex(annotations["fovname"]).to_numpy()
    if np.isnan(r).any():
        missing = annotations["fovname"][np.isnan(r).any(axis=1)].iloc[0]
        raise ValueError(f"no FOV rectangle for {missing}")
    x0 = np.maximum(annotations["xmin"].to_numpy(), r[:, 0])
    y0 = np.maximum(annotations["ymin"].to_numpy(), r[:, 1])
    x1 = np.minimum(annotations["xmax"].to_numpy(), r[:, 2])
    y1 = np.minimum(annotations["ymax"].to_numpy(), r[:, 3])
    keep = (x1 - x0 > MIN_SIDE_PX) & (y1 - y0 > MIN_SIDE_PX) & (annotations["super_class"] != tx.AMBIGUOUS).to_numpy()
    return pd.Series(keep, index=annotations.index, name="counts_for_detection")


def detection_n(annotations: pd.DataFrame, fovs: pd.DataFrame) -> int:
    """Table 1 detection N of a set of nuclei (see :func:`detection_mask`)."""
    return int(detection_mask(annotations, fovs).sum())


def fold_table(annotations: pd.DataFrame, fovs: pd.DataFrame, assignment: pd.DataFrame,
               paper_n: Mapping[int, int] | None = None) -> pd.DataFrame:
    """Per test fold: hospitals, slides, FOVs, nuclei, polylines, and Table 1 detection N.

    Parameters
    ----------
    annotations, fovs : DataFrame
        Tidy frames (from a dataset folder or the core-set metadata).
    assignment : DataFrame
        ``slide_name, hospital, fold`` (from :func:`paper_folds` or :func:`hospital_kfold`).
    paper_n : mapping, optional
        The paper's N per fold, added as a column with the difference.
    """
    fold_of = assignment.set_index("slide_name")["fold"]
    ann = annotations.assign(fold=annotations["slide_name"].map(fold_of))
    fv = fovs.assign(fold=fovs["slide_name"].map(fold_of))
    if ann["fold"].isna().any():
        raise ValueError(f"slide {ann.loc[ann['fold'].isna(), 'slide_name'].iloc[0]} has no fold")
    ann["counts"] = detection_mask(ann, fovs).to_numpy()
    rows = []
    for k in sorted(assignment["fold"].unique()):
        a, f, s = ann[ann["fold"] == k], fv[fv["fold"] == k], assignment[assignment["fold"] == k]
        rows.append({
            "fold": int(k),
            "role": "validation" if k == 1 else "test",
            "test_hospitals": ", ".join(sorted(s["hospital"].unique())),
            "n_slides": int(s["slide_name"].nunique()),
            "n_fovs": int(len(f)),
            "n_nuclei": int(len(a)),
            "n_polylines": int((a["type"] == "polyline").sum()),
            "n_ambiguous": int((a["super_class"] == tx.AMBIGUOUS).sum()),
            "N_detection": int(a["counts"].sum()),
        })
    out = pd.DataFrame(rows)
    if paper_n is not None:
        out["N_paper"] = out["fold"].map(paper_n).astype("Int64")
        out["N_difference"] = out["N_detection"] - out["N_paper"]
    return out


def core_table1_n(stored: pd.DataFrame, without_duplicates: pd.DataFrame) -> pd.DataFrame:
    """Table 1's detection N per paper fold on the core-set metadata, as stored (``stored``: :func:`fold_table` of
    the metadata with the paper's N) and without its duplicated FOVs (``without_duplicates``: the same of
    ``read_core_metadata(..., drop_duplicate_fovs=True)``), beside the paper's N (notebook 01's ``table1_folds_N``)."""
    return stored[["fold", "role", "test_hospitals", "n_slides", "n_fovs", "N_detection"]].assign(
        N_detection_without_duplicate_fovs=without_duplicates["N_detection"], N_paper=stored["N_paper"])
