"""Bootstrapped nucleus suggestions: heuristic segmentation and region-based classes (paper, Methods
"Algorithmic suggestions"; notes section 2e).

Per tissue region: hematoxylin from HistomicsTK Macenko unmixing, a global Otsu threshold inside the region, Gaussian
smoothing of the binary mask (sigma 2 px = 0.4 microns in lymphocyte-rich regions, 5 px = 1 micron elsewhere),
a second Otsu threshold, the distance transform, ``peak_local_max`` (minimum distance 10 px) as watershed markers,
watershed, and removal of objects under 300 px. Each object then inherits the class of its region.

Stromal objects are kept as fibroblasts only when they look like spindles. The reference code keeps an object when
its aspect ratio (minor/major axis) < 0.40 **and** circularity (4 pi A / P^2) < 0.70, and drops it otherwise; the
paper's text gives "aspect 0.4-0.55 and circularity 0.7-0.8", which conflates that rule with a disabled "round =>
lymphocyte" rule. We use the code's rule (``fibroblast_rule='code'``); ``'paper'`` keeps stromal objects whose aspect
lies in [0.4, 0.55] and circularity in [0.7, 0.8] instead. Non-stromal objects that look like rectangular artefacts
(aspect < 0.5, circularity < 0.6, extent > 0.8) are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import approximate_polygon, find_contours, regionprops
from skimage.segmentation import watershed

from ..io.dataset import Nucleus

__all__ = ["HeuristicParams", "REGION_TO_CLASS", "LYMPHOCYTE_RICH_REGIONS", "hematoxylin", "segment_nuclei",
           "bootstrap_classes", "instances_to_nuclei", "bootstrap_suggestions", "region_inherited"]

#: The class a nucleus inherits from its tissue region (necrosis/debris gives no suggestion).
REGION_TO_CLASS: dict[str, str | None] = {
    "tumor": "tumor",
    "stroma": "fibroblast",
    "lymphocytic_infiltrate": "lymphocyte",
    "plasmacytic_infiltrate": "plasma_cell",
    "normal_ducts_other": "ductal_epithelium",
    "necrosis_debris": None,
}
LYMPHOCYTE_RICH_REGIONS = frozenset({"lymphocytic_infiltrate", "plasmacytic_infiltrate"})


@dataclass(frozen=True)
class HeuristicParams:
    """Parameters of the heuristic segmentation; lengths in microns are converted with ``mpp``."""

    mpp: float = 0.2
    sigma_lymphocyte_rich_um: float = 0.4  # 2 px at 0.2 microns/px
    sigma_other_um: float = 1.0  # 5 px
    min_distance_px: int = 10
    min_area_px: int = 300
    fibroblast_rule: str = "code"  # 'code' | 'paper'

    def sigma_px(self, region: str) -> float:
        um = self.sigma_lymphocyte_rich_um if region in LYMPHOCYTE_RICH_REGIONS else self.sigma_other_um
        return um / self.mpp


def hematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Hematoxylin image (nuclei bright, 0-255) by HistomicsTK Macenko stain separation of ``rgb``."""
    from histomicstk.preprocessing.color_deconvolution import (
        color_deconvolution,
        find_stain_index,
        rgb_separate_stains_macenko_pca,
        stain_color_map,
    )

    rgb = np.asarray(rgb)[..., :3]
    w = rgb_separate_stains_macenko_pca(rgb, 255)
    i = find_stain_index(stain_color_map["hematoxylin"], w)
    return 255.0 - color_deconvolution(rgb, w, 255).Stains[..., i].astype(float)


def _otsu(values: np.ndarray) -> float | None:
    values = values[np.isfinite(values)]
    if values.size < 2 or values.min() == values.max():
        return None
    return float(threshold_otsu(values))


def segment_nuclei(rgb: np.ndarray, regions: np.ndarray | None = None, region_names: dict[int, str] | None = None,
                   params: HeuristicParams = HeuristicParams()) -> tuple[np.ndarray, dict[int, int]]:
    """Heuristic instance segmentation of one image.

    Parameters
    ----------
    rgb : (H, W, 3) uint8
    regions : (H, W) int, optional
        Tissue-region codes; without it the image is one region segmented with the non-lymphocytic sigma.
    region_names : dict code -> name
        Names of the codes (see :data:`REGION_TO_CLASS`).
    params : HeuristicParams

    Returns
    -------
    instances : (H, W) int32
        0 = background, 1..K objects.
    object_region : dict
        Object id -> region code it was segmented in (0 when ``regions`` is None).
    """
    htx = hematoxylin(rgb)
    if regions is None:
        regions = np.zeros(htx.shape, dtype=np.int32)
        region_names = {0: "other"}
    region_names = region_names or {}
    instances = np.zeros(htx.shape, dtype=np.int32)
    object_region: dict[int, int] = {}
    next_id = 1
    for code in np.unique(regions):
        name = region_names.get(int(code), "other")
        inside = regions == code
        if inside.sum() < params.min_area_px:
            continue
        t = _otsu(htx[inside])
        if t is None:
            continue
        fg = inside & (htx > t)
        if fg.sum() < params.min_area_px:
            continue
        smooth = ndi.gaussian_filter(fg.astype(float), params.sigma_px(name))
        t2 = _otsu(smooth[smooth > 0])
        if t2 is None:
            continue
        mask = (smooth > t2) & inside
        dist = ndi.distance_transform_edt(mask)
        comps, _ = ndi.label(mask, structure=np.ones((3, 3)))
        peaks = peak_local_max(dist, min_distance=params.min_distance_px, labels=comps)
        markers = np.zeros(mask.shape, dtype=np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        markers, _ = ndi.label(markers > 0, structure=np.ones((3, 3)))
        ws = watershed(-dist, markers, mask=mask)
        sizes = np.bincount(ws.ravel())
        for obj in np.flatnonzero(sizes >= params.min_area_px):
            if obj == 0:
                continue
            instances[ws == obj] = next_id
            object_region[next_id] = int(code)
            next_id += 1
    return instances, object_region


def _keep_stromal(aspect: float, circularity: float, rule: str) -> bool:
    if rule == "code":
        return aspect < 0.40 and circularity < 0.70
    if rule == "paper":
        return 0.40 <= aspect <= 0.55 and 0.70 <= circularity <= 0.80
    raise ValueError(f"fibroblast_rule must be 'code' or 'paper', not {rule!r}")


def bootstrap_classes(instances: np.ndarray, object_region: dict[int, int], region_names: dict[int, str],
                      params: HeuristicParams = HeuristicParams()) -> dict[int, str]:
    """Region-inherited raw class of each object, after the stromal shape rule and the artefact rule.

    Objects whose region gives no class (necrosis) or that a rule rejects are left out.
    """
    out: dict[int, str] = {}
    for p in regionprops(instances):
        region = region_names.get(object_region.get(p.label, 0), "other")
        cls = REGION_TO_CLASS.get(region, "unlabeled")
        if cls is None:
            continue
        major = max(p.axis_major_length, 1e-6)
        aspect = p.axis_minor_length / major
        circularity = 4 * np.pi * p.area / max(p.perimeter, 1e-6) ** 2
        if region == "stroma":
            if not _keep_stromal(aspect, circularity, params.fibroblast_rule):
                continue
        elif aspect < 0.5 and circularity < 0.6 and p.extent > 0.8:
            continue
        out[p.label] = cls
    return out


def instances_to_nuclei(instances: np.ndarray, classes: dict[int, str], tolerance: float = 0.75,
                        return_labels: bool = False) -> list[Nucleus] | tuple[list[Nucleus], list[int]]:
    """Polyline nuclei (integer pixel-corner outlines) from an instance image and a class per object.

    Objects without a class, or whose outline collapses to fewer than 3 points, are left out; with
    ``return_labels`` the instance id of each returned nucleus comes too.
    """
    out, kept = [], []
    for p in regionprops(instances):
        if p.label not in classes:
            continue
        y0, x0, y1, x1 = p.bbox
        m = np.pad(p.image, 1)
        contours = find_contours(m.astype(float), 0.5)
        if not contours:
            continue
        c = approximate_polygon(max(contours, key=len), tolerance)
        # contour points lie between pixel centres; +0.5 moves them to pixel-corner coordinates
        ys = np.rint(c[:, 0] - 1 + y0 + 0.5).astype(int)
        xs = np.rint(c[:, 1] - 1 + x0 + 0.5).astype(int)
        if len(np.unique(np.stack([xs, ys], 1), axis=0)) < 3:
            continue
        out.append(Nucleus.from_polygon(classes[p.label], xs.tolist(), ys.tolist()))
        kept.append(p.label)
    return (out, kept) if return_labels else out


def bootstrap_suggestions(rgb: np.ndarray, regions: np.ndarray | None = None,
                          region_names: dict[int, str] | None = None,
                          params: HeuristicParams = HeuristicParams()) -> list[Nucleus]:
    """Segment, classify by region and return the bootstrapped suggestions of one FOV as nuclei."""
    instances, object_region = segment_nuclei(rgb, regions, region_names, params)
    names = region_names or {0: "other"}
    classes = bootstrap_classes(instances, object_region, names, params)
    return instances_to_nuclei(instances, classes)


def region_inherited(nuclei: Sequence[Nucleus], regions: np.ndarray, region_names: dict[int, str]) -> list[Nucleus]:
    """The same nuclei, each relabelled with the class of the tissue region under its box centre.

    This is the "region-inherited" class of Table S2, set beside the class a refinement model predicts. A centre in a
    region that suggests no class (necrosis/debris) or in an unknown region gives ``unlabeled``.
    """
    h, w = regions.shape
    out = []
    for n in nuclei:
        y = min(max(int((n.ymin + n.ymax) // 2), 0), h - 1)
        x = min(max(int((n.xmin + n.xmax) // 2), 0), w - 1)
        cls = REGION_TO_CLASS.get(region_names.get(int(regions[y, x]), "other"), "unlabeled") or "unlabeled"
        out.append(n.relabelled(cls))
    return out
