"""Dataset summaries for notebook 01: counts by class level, instances per FOV, object sizes, classes by fold.

All functions take the tidy frames of :func:`nucls_utils.io.annotations_frame` / :func:`fovs_frame` (or
:func:`nucls_utils.io.read_core_metadata`), so the same code summarises a dataset folder and the core-set
metadata.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from . import paper
from . import taxonomy as tx
from .config import MICRONS_PER_PIXEL

__all__ = ["COCO_REFERENCE", "COCO_SIZE_BINS_PX", "fov_areas", "dataset_summary", "class_counts",
           "instances_per_fov", "object_sizes", "size_categories", "class_by_fold", "PAPER_DATASET_FACTS", "paper_vs_run", "calibration_comparison", "stain_table"]

#: Values quoted from the COCO paper (Lin et al. 2014, Fig. 5) and the COCO detection-evaluation page, for the
#: Figure S9 comparison. They are quoted, not recomputed: COCO is not part of this study.
COCO_REFERENCE = {
    "instances_per_image_mean": {"COCO": 7.7, "ImageNet (detection)": 3.0, "PASCAL VOC": 2.3},
    "size_share_percent": {"small": 41.0, "medium": 34.0, "large": 24.0},
}
#: COCO size categories by object area in pixels: small < 32^2 <= medium < 96^2 <= large.
COCO_SIZE_BINS_PX = (32**2, 96**2)


def fov_areas(fovs: pd.DataFrame) -> pd.Series:
    """Area (px) of each FOV, indexed by fovname: the intended FOV rectangle if known, else the whole image."""
    f = fovs.drop_duplicates("fovname").set_index("fovname")
    area = (f["fov_xmax"] - f["fov_xmin"]) * (f["fov_ymax"] - f["fov_ymin"])
    if {"width", "height"} <= set(f.columns):
        area = area.fillna(f["width"] * f["height"])
    return area.astype(float)


def dataset_summary(annotations: pd.DataFrame, fovs: pd.DataFrame) -> pd.DataFrame:
    """Headline counts: slides, hospitals, FOVs, nuclei, share of polylines and corrections, nuclei per FOV."""
    per_fov = instances_per_fov(annotations, fovs)
    side_um = np.sqrt(fov_areas(fovs)) * MICRONS_PER_PIXEL
    rows = [
        ("hospitals", annotations["hospital"].nunique() if len(annotations) else fovs["hospital"].nunique()),
        ("slides", fovs["slide_name"].nunique()),
        ("FOVs", fovs["fovname"].nunique()),
        ("nuclei", len(annotations)),
        ("nuclei, non-ambiguous", int((annotations["super_class"] != tx.AMBIGUOUS).sum())),
        ("polyline (traced boundary) share, %", 100 * float((annotations["type"] == "polyline").mean())),
        ("rectangle (box) share, %", 100 * float((annotations["type"] == "rectangle").mean())),
        ("point share, %", 100 * float((annotations["type"] == "point").mean())),
        ("QC-corrected (correction_) share, %", 100 * float(annotations["is_correction"].mean())),
        ("nuclei per FOV, mean", float(per_fov.mean())),
        ("nuclei per FOV, median", float(per_fov.median())),
        ("FOV side (sqrt of area), median microns", float(side_um.median())),
    ]
    return pd.DataFrame(rows, columns=["quantity", "value"])


def class_counts(annotations: pd.DataFrame) -> pd.DataFrame:
    """Nuclei per class at every level (raw, main, super): ``level, class, n, percent``, taxonomy order."""
    out = []
    for level, col, order in (("raw", "raw_class", tx.RAW_CLASSES), ("main", "main_class", tx.MAIN_CLASSES),
                              ("super", "super_class", tx.SUPER_CLASSES)):
        counts = annotations[col].value_counts().reindex(list(order), fill_value=0)
        total = max(int(counts.sum()), 1)
        for cls, n in counts.items():
            out.append((level, cls, int(n), 100.0 * n / total))
    return pd.DataFrame(out, columns=["level", "class", "n", "percent"])


def instances_per_fov(annotations: pd.DataFrame, fovs: pd.DataFrame) -> pd.Series:
    """Number of nuclei in each FOV (FOVs without nuclei count 0), indexed by fovname."""
    names = fovs["fovname"].drop_duplicates()
    return annotations.groupby("fovname").size().reindex(names, fill_value=0).rename("n_nuclei")


def object_sizes(annotations: pd.DataFrame, fovs: pd.DataFrame) -> pd.DataFrame:
    """Per nucleus: area in px and microns^2, and percent of its FOV's area (COCO's 'percent of image size')."""
    fa = fov_areas(fovs)
    area = annotations["area_px"].astype(float)
    return pd.DataFrame({
        "fovname": annotations["fovname"],
        "super_class": annotations["super_class"],
        "area_px": area,
        "area_um2": area * MICRONS_PER_PIXEL**2,
        "percent_of_fov": 100.0 * area / annotations["fovname"].map(fa).to_numpy(),
    })


def size_categories(annotations: pd.DataFrame) -> pd.DataFrame:
    """Share of nuclei in COCO's size categories (small/medium/large by area in pixels at 0.2 microns/px)."""
    area = annotations["area_px"].astype(float)
    lo, hi = COCO_SIZE_BINS_PX
    cats = pd.cut(area, [-np.inf, lo, hi, np.inf], right=False, labels=["small", "medium", "large"])
    share = cats.value_counts(normalize=True).reindex(["small", "medium", "large"], fill_value=0) * 100
    return pd.DataFrame({"category": share.index.astype(str), "nuclei_percent": share.to_numpy(),
                         "COCO_percent": [COCO_REFERENCE["size_share_percent"][c] for c in share.index]})


def class_by_fold(annotations: pd.DataFrame, assignment: pd.DataFrame, level: str = "super") -> pd.DataFrame:
    """Nuclei per (test fold, class) at ``level``: ``fold, class, n, percent`` (percent within fold)."""
    col = {"raw": "raw_class", "main": "main_class", "super": "super_class"}[level]
    order = {"raw": tx.RAW_CLASSES, "main": tx.MAIN_CLASSES, "super": tx.SUPER_CLASSES}[level]
    fold = annotations["slide_name"].map(assignment.set_index("slide_name")["fold"])
    tab = pd.crosstab(fold, annotations[col]).reindex(columns=list(order), fill_value=0)
    long = tab.stack().rename("n").reset_index()
    long.columns = ["fold", "class", "n"]
    long["percent"] = 100.0 * long["n"] / long.groupby("fold")["n"].transform("sum").clip(lower=1)
    long["fold"] = long["fold"].astype(int)
    return long


#: This dataset's quantity -> the paper number it is compared with (:mod:`nucls_utils.paper`) and a note.
PAPER_DATASET_FACTS = {
    "hospitals": ("dataset.hospitals", "TCGA institutions"),
    "slides / patients": ("dataset.slides", "one slide per patient; the public core set has 124 slides"),
    "single-rater nuclei, corrected (core set)": ("dataset.corrected_nuclei",
                                                  "about half of the ~128,000 single-rater annotations"),
    "polyline (clicked boundary) share, %": ("dataset.clicked_share_singlerater", "single-rater data"),
    "FOV side, microns": ("dataset.fov_side_um", "'~65 x 65 um field'"),
}


def paper_vs_run(annotations: pd.DataFrame, fovs: pd.DataFrame, core_annotations: pd.DataFrame | None = None,
                 core_fovs: pd.DataFrame | None = None, core_folds: pd.DataFrame | None = None,
                 core_folds_dedup: pd.DataFrame | None = None) -> pd.DataFrame:
    """Paper numbers next to this run's: the dataset given, and the core-set metadata when available.

    Returns ``quantity, paper, this_dataset, core_set, note, source, paper_key``; cells that do not apply are NaN.
    """
    def stats(ann: pd.DataFrame, fv: pd.DataFrame) -> dict[str, float]:
        return {
            "hospitals": fv["hospital"].nunique(),
            "slides / patients": fv["slide_name"].nunique(),
            "single-rater nuclei, corrected (core set)": len(ann),
            "polyline (clicked boundary) share, %": 100 * float((ann["type"] == "polyline").mean()),
            "FOV side, microns": float((np.sqrt(fov_areas(fv)) * MICRONS_PER_PIXEL).median()),
        }

    ds = stats(annotations, fovs)
    core = stats(core_annotations, core_fovs) if core_annotations is not None else {}
    rows = []
    for q, (key, note) in PAPER_DATASET_FACTS.items():
        r = paper.row(key, q, ds[q], note)
        rows.append({**r, "this_dataset": r.pop("this_run"), "core_set": core.get(q, np.nan)})
    for k in paper.table1_n():
        got = np.nan if core_folds is None else float(core_folds.set_index("fold").loc[k, "N_detection"])
        note = "as stored"
        if core_folds_dedup is not None:
            dd = int(core_folds_dedup.set_index("fold").loc[k, "N_detection"])
            note = f"as stored; {dd} without the duplicated FOVs"
        r = paper.row(f"table1.n.fold{k}", f"Table 1 N, fold {k}", np.nan, note)
        rows.append({**r, "this_dataset": r.pop("this_run"), "core_set": got})
    out = pd.DataFrame(rows, columns=["quantity", "paper", "this_dataset", "core_set", "note", "source", "paper_key"])
    for col in ("paper", "this_dataset", "core_set"):
        out[col] = out[col].astype(float).round(1)
    return out


def calibration_comparison(annotations: pd.DataFrame, fovs: pd.DataFrame) -> pd.DataFrame:
    """This dataset next to the real core set (the phantom's calibration constants): per raw class, the share of
    nuclei and the median box width/height; then nuclei per FOV (mean) and the share of nuclei whose box overlaps a
    neighbour's by more than IOU 0.1-0.4 (how crowded they are).

    Returns ``quantity, class, real_core_set, this_dataset, difference``.
    """
    from .phantom.calibration import (
        CLASS_BOX_STATS,
        NEIGHBOUR_OVERLAP_SHARE,
        NUCLEI_PER_FOV,
        class_proportions,
        neighbour_overlap_share,
    )

    real_p = class_proportions()
    ann = annotations[annotations["type"] != "point"]
    share = ann["raw_class"].value_counts(normalize=True)
    rows = []
    for cls in tx.RAW_CLASSES:
        st = CLASS_BOX_STATS[cls]
        sub = ann[ann["raw_class"] == cls]
        rows.append(("class share, %", cls, 100 * real_p[cls], 100 * float(share.get(cls, 0.0))))
        rows.append(("median box width, px", cls, st.width_median,
                     float(sub["width"].median()) if len(sub) else np.nan))
        rows.append(("median box height, px", cls, st.height_median,
                     float(sub["height"].median()) if len(sub) else np.nan))
    rows.append(("nuclei per FOV, mean", "all", NUCLEI_PER_FOV["mean"], float(instances_per_fov(ann, fovs).mean())))
    overlap = neighbour_overlap_share(ann)
    for t, real in NEIGHBOUR_OVERLAP_SHARE.items():
        rows.append((f"boxes overlapping a neighbour, IOU > {t:g}, %", "all", 100 * real, 100 * overlap[t]))
    out = pd.DataFrame(rows, columns=["quantity", "class", "real_core_set", "this_dataset"])
    out["difference"] = out["this_dataset"] - out["real_core_set"]
    return out.round(2)


def stain_table(records) -> pd.DataFrame:
    """Per FOV: hospital and HistomicsTK hematoxylin/eosin densities (see :func:`nucls_utils.stains.stain_densities`)."""
    from .stains import stain_densities

    rows = [{"fovname": r.name, "hospital": r.hospital, **stain_densities(r.read_rgb())} for r in records]
    return pd.DataFrame(rows)
