"""Numbers the synthetic cohort is calibrated to, derived once from the real NuCLS core set.

Source: ``nucls_core_metadata.sqlite`` (the public corrected single-rater core set; in this project at
``../shared/data/``), read with ``read_core_metadata(drop_duplicate_fovs=True)``: 1,744 unique FOVs and 59,374 nuclei
with a box (the 111 degenerate ``point`` rows are left out). :func:`derive_calibration` recomputes every constant
below from that file, and ``tests/test_phantom.py`` checks that they agree, so a fresh machine needs no
``../shared`` while the numbers stay traceable.

Box sizes are in pixels at 0.2 microns per pixel. Real boxes are a mix of hand-drawn rectangles and the bounding
boxes of approved boundaries; the phantom's nuclei are sized so that their tight bounding boxes reproduce these
distributions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

__all__ = ["ClassBoxStats", "CLASS_BOX_STATS", "NUCLEI_PER_FOV", "FOV_RECT_SIDE_PX", "POLYLINE_SHARE",
           "HOSPITAL_SLIDE_COUNTS", "OVERLAP_THRESHOLDS", "NEIGHBOUR_OVERLAP_SHARE",
           "class_proportions", "neighbour_overlap_share", "drawn_box_spread", "derive_calibration"]


@dataclass(frozen=True)
class ClassBoxStats:
    """Per raw class: number of nuclei, median box width/height (px) and SD of log width/height."""

    n: int
    width_median: float
    height_median: float
    log_width_sd: float
    log_height_sd: float


#: Derived by ``derive_calibration('../shared/data/nucls_core_metadata.sqlite')``.
CLASS_BOX_STATS: dict[str, ClassBoxStats] = {
    "tumor": ClassBoxStats(21052, 43.0, 43.0, 0.337, 0.338),
    "lymphocyte": ClassBoxStats(13563, 25.0, 25.0, 0.246, 0.254),
    "fibroblast": ClassBoxStats(8615, 34.0, 33.0, 0.396, 0.399),
    "unlabeled": ClassBoxStats(7509, 28.0, 27.0, 0.381, 0.386),
    "plasma_cell": ClassBoxStats(5552, 27.0, 26.0, 0.264, 0.275),
    "macrophage": ClassBoxStats(1351, 35.0, 34.0, 0.276, 0.260),
    "vascular_endothelium": ClassBoxStats(512, 35.0, 33.0, 0.374, 0.398),
    "ductal_epithelium": ClassBoxStats(498, 32.0, 31.0, 0.298, 0.296),
    "apoptotic_body": ClassBoxStats(391, 28.0, 29.0, 0.305, 0.328),
    "mitotic_figure": ClassBoxStats(229, 35.0, 36.0, 0.291, 0.318),
    "myoepithelium": ClassBoxStats(54, 36.0, 32.0, 0.386, 0.356),
    "neutrophil": ClassBoxStats(45, 28.0, 32.0, 0.218, 0.201),
    "eosinophil": ClassBoxStats(3, 33.0, 35.0, 0.046, 0.062),
}

#: Nuclei per FOV (every FOV, zeros included): mean, median, SD.
NUCLEI_PER_FOV = {"mean": 34.04, "median": 29.0, "sd": 19.78}
#: Side of the intended FOV rectangle (px): median and quartiles (most FOVs are 316-318 px, about 63 microns).
FOV_RECT_SIDE_PX = {"median": 317.0, "q25": 316.0, "q75": 318.0}
#: Share of nuclei with an approved boundary (polyline) rather than a drawn box.
POLYLINE_SHARE = 0.331
#: IOU thresholds of :data:`NEIGHBOUR_OVERLAP_SHARE`.
OVERLAP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4)
#: Share of nuclei whose box overlaps another box of the same FOV by more than each IOU threshold: how crowded the
#: annotated nuclei are. It matters to the detector: the paper's model suppresses boxes overlapping a higher-scoring
#: one by IOU > 0.2 (NMS), so a cohort more crowded than the real one loses true nuclei to NMS.
NEIGHBOUR_OVERLAP_SHARE = {0.1: 0.1008, 0.2: 0.021, 0.3: 0.0054, 0.4: 0.0017}
#: Slides per hospital in the core set, largest first (18 hospitals, 124 slides).
HOSPITAL_SLIDE_COUNTS = (18, 15, 13, 12, 9, 8, 8, 7, 6, 6, 5, 5, 4, 2, 2, 2, 1, 1)


def class_proportions() -> dict[str, float]:
    """Share of each raw class among the core set's nuclei (sums to 1)."""
    total = sum(s.n for s in CLASS_BOX_STATS.values())
    return {c: s.n / total for c, s in CLASS_BOX_STATS.items()}


def neighbour_overlap_share(ann, thresholds=OVERLAP_THRESHOLDS) -> dict[float, float]:
    """Share of the boxes in ``ann`` (columns ``fovname, xmin, ymin, xmax, ymax``) whose highest IOU with another box
    of the same FOV exceeds each threshold (rounded to 4 decimals)."""
    from ..evaluation import box_iou

    highest = []
    for _, g in ann.groupby("fovname", sort=False):
        iou = box_iou(g[["xmin", "ymin", "xmax", "ymax"]].to_numpy(float), g[["xmin", "ymin", "xmax", "ymax"]]
                      .to_numpy(float))
        np.fill_diagonal(iou, 0.0)
        highest.append(iou.max(axis=1) if len(g) > 1 else np.zeros(len(g)))
    best = np.concatenate(highest) if highest else np.zeros(0)
    return {float(t): round(float((best > t).mean()), 4) if best.size else float("nan") for t in thresholds}


def drawn_box_spread(ann: pd.DataFrame, min_each: int = 500) -> pd.DataFrame:
    """How much noisier hand-drawn boxes are than the boxes of approved boundaries, per raw class: the SD of log box
    width and height of ``rectangle`` and ``polyline`` annotations (columns ``raw_class, type, width, height``), and
    the extra SD of the rectangles, ``sqrt(max(var_rect - var_poly, 0))`` averaged over width and height, for classes
    with at least ``min_each`` of both.

    An independent check of the crowd's box jitter (a participant's box edges move by a relative SD ``j``, which adds
    about ``j * sqrt(2)`` to the SD of a box's log width): if the boundaries' boxes were the true sizes, the extra SD
    would be the drawn boxes' noise. Approved boundaries are the easier nuclei (clicked only when the suggestion was
    right), so the extra SD also holds a selection effect and reads as an upper bound rather than a measurement."""
    rows = []
    for cls, g in ann[ann["type"].isin(["rectangle", "polyline"])].groupby("raw_class"):
        by = {t: g[g["type"] == t] for t in ("rectangle", "polyline")}
        if min(len(v) for v in by.values()) < min_each:
            continue
        sd = {(t, k): float(np.log(v[k].clip(lower=1)).std()) for t, v in by.items() for k in ("width", "height")}
        extra = np.mean([np.sqrt(max(sd[("rectangle", k)] ** 2 - sd[("polyline", k)] ** 2, 0.0))
                         for k in ("width", "height")])
        rows.append({"raw_class": cls, "rectangles": len(by["rectangle"]), "polylines": len(by["polyline"]),
                     "log_width_sd_rectangle": sd[("rectangle", "width")],
                     "log_width_sd_polyline": sd[("polyline", "width")], "extra_log_sd": float(extra)})
    return pd.DataFrame(rows).sort_values("rectangles", ascending=False).reset_index(drop=True)


def derive_calibration(sqlite_path: str | os.PathLike[str]) -> dict:
    """Recompute the constants of this module from the core-set metadata sqlite.

    Returns a dict with keys ``class_box_stats`` (raw class -> :class:`ClassBoxStats`, rounded as above),
    ``nuclei_per_fov``, ``fov_rect_side_px``, ``polyline_share``, ``neighbour_overlap_share`` and
    ``hospital_slide_counts``.
    """
    from ..io.metadata import read_core_metadata

    fovs, ann = read_core_metadata(sqlite_path, drop_duplicate_fovs=True)
    ann = ann[ann["type"] != "point"]
    stats = {}
    for cls, s in ann.groupby("raw_class"):
        lw = np.log(s["width"].clip(lower=1))
        lh = np.log(s["height"].clip(lower=1))
        stats[cls] = ClassBoxStats(int(len(s)), round(float(s["width"].median()), 1),
                                   round(float(s["height"].median()), 1), round(float(lw.std()), 3),
                                   round(float(lh.std()), 3))
    per = ann.groupby("fovname").size().reindex(fovs["fovname"], fill_value=0)
    sides = np.concatenate([(fovs["fov_xmax"] - fovs["fov_xmin"]).to_numpy(),
                            (fovs["fov_ymax"] - fovs["fov_ymin"]).to_numpy()])
    return {
        "class_box_stats": stats,
        "nuclei_per_fov": {"mean": round(float(per.mean()), 2), "median": float(per.median()),
                           "sd": round(float(per.std()), 2)},
        "fov_rect_side_px": {"median": float(np.median(sides)), "q25": float(np.percentile(sides, 25)),
                             "q75": float(np.percentile(sides, 75))},
        "polyline_share": round(float((ann["type"] == "polyline").mean()), 3),
        "neighbour_overlap_share": neighbour_overlap_share(ann),
        "hospital_slide_counts": tuple(int(v) for v in fovs.drop_duplicates("slide_name").groupby("hospital")
                                       .size().sort_values(ascending=False)),
    }
