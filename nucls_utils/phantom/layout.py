"""Tissue layout of a region of interest (ROI): region map, structures, and where every nucleus lies.

An ROI is a square canvas (pixels at 0.2 microns per pixel). Its region map holds tumor nests, stroma, lymphocytic
and plasmacytic infiltrates (preferentially at the tumor-stroma border, as sTILs are), necrosis/debris in the core of
large nests, and normal ducts; small vessels run through the stroma. Nuclei are then placed region by region: a
Poisson number per region from its density, classes drawn from the region's mix, sizes and outlines from
:mod:`.morphology`, and a greedy spacing rule that lets neighbours touch and sometimes overlap (crowded tumor nests).
Ducts get rings of ductal epithelium inside myoepithelium; vessels get endothelial nuclei along their walls;
fibroblasts follow the local collagen direction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from .morphology import KINDS, sample_outline

__all__ = ["ARCHETYPES", "REGION_CODES", "REGION_NAMES", "REGION_COLORS", "RegionParams", "REGION_PARAMS", "PlacedNucleus", "Structure", "RoiLayout",
           "make_roi"]

#: Region codes of the ROI region maps (0 is unused).
REGION_CODES: dict[str, int] = {
    "tumor": 1,
    "stroma": 2,
    "lymphocytic_infiltrate": 3,
    "plasmacytic_infiltrate": 4,
    "normal_ducts_other": 5,
    "necrosis_debris": 6,
}
REGION_NAMES: dict[int, str] = {v: k for k, v in REGION_CODES.items()}
#: One colour per region code, for figures.
REGION_COLORS: dict[int, str] = {1: "#e41a1c", 2: "#f0c419", 3: "#1f5fd1", 4: "#41b6e6", 5: "#4daf4a", 6: "#7f7f7f"}

UM2_PER_PX2 = 0.2**2


@dataclass(frozen=True)
class RegionParams:
    """Nucleus density (per 100 square microns), class mix, and how close neighbours may sit."""

    density: float
    mix: dict[str, float]
    spacing: float  # minimum centre distance as a multiple of the sum of the two radii
    overlap_prob: float = 0.0  # chance that a candidate is kept regardless of spacing (touching/overlap)
    chain: float = 0.0  # chance that a fibroblast sits end to end with the previous one (streams of spindle cells)


# Spacing and overlap (generator 2.5, fitted): how crowded the nuclei are is a calibration target, the real core set's
# share of boxes overlapping a neighbour by IOU > 0.1 / 0.2 / 0.3 / 0.4 (calibration.NEIGHBOUR_OVERLAP_SHARE: 10.1 /
# 2.1 / 0.54 / 0.17 %). Generator 2.4 placed nuclei at 0.05 less spacing (but around ducts) and with ten
# times the overlap chances: 32 / 11 / 5.7 / 2.9 % of boxes. `python scripts/fit_crowding.py` (seed 101, 2026-12-05)
# chose one factor on every overlap chance and one step added to every spacing below 1 from a grid (factor 0.05-0.3,
# step 0.05-0.12; 30 layouts of 1024 px each, then the four best on 150): factor 0.1, step 0.05, cost 0.52 (the squared
# log ratios to the four real shares), 15.7 / 1.3 / 0.51 / 0.23 %. The study's cpu cohort (seed 0) has 15.9 / 1.8 /
# 0.51 / 0.33 % and 7 % fewer nuclei (35.6 per FOV; real 34.0).
REGION_PARAMS: dict[str, RegionParams] = {
    "tumor": RegionParams(1.18, {"tumor": 0.85, "mitotic_figure": 0.011, "lymphocyte": 0.045, "unlabeled": 0.07,
                                 "apoptotic_body": 0.012, "macrophage": 0.01}, spacing=0.77, overlap_prob=0.012),
    "stroma": RegionParams(0.72, {"fibroblast": 0.64, "lymphocyte": 0.10, "plasma_cell": 0.06, "macrophage": 0.07,
                                  "unlabeled": 0.17, "vascular_endothelium": 0.01, "neutrophil": 0.007,
                                  "eosinophil": 0.003, "tumor": 0.027}, spacing=1.0, chain=0.8),
    "lymphocytic_infiltrate": RegionParams(2.6, {"lymphocyte": 0.74, "plasma_cell": 0.09, "macrophage": 0.03,
                                                 "unlabeled": 0.11, "fibroblast": 0.03}, spacing=0.67,
                                           overlap_prob=0.015),
    "plasmacytic_infiltrate": RegionParams(2.1, {"plasma_cell": 0.56, "lymphocyte": 0.28, "macrophage": 0.03,
                                                 "unlabeled": 0.1, "fibroblast": 0.03}, spacing=0.7,
                                           overlap_prob=0.01),
    "normal_ducts_other": RegionParams(0.25, {"fibroblast": 0.5, "lymphocyte": 0.3, "unlabeled": 0.2}, spacing=1.0),
    "necrosis_debris": RegionParams(1.0, {"unlabeled": 0.62, "apoptotic_body": 0.1, "neutrophil": 0.04,
                                          "tumor": 0.14, "lymphocyte": 0.1}, spacing=0.85, overlap_prob=0.005),
}


@dataclass
class PlacedNucleus:
    """One nucleus in ROI pixel coordinates (its outline is a float polygon; see cohort.py for the integer one)."""

    raw_class: str
    region: int
    cx: float
    cy: float
    xs: np.ndarray  # outline vertices (absolute ROI px, float)
    ys: np.ndarray
    radius: float
    angle: float
    seed: int  # appearance seed (chromatin texture, nucleoli)


@dataclass(frozen=True)
class Structure:
    """A duct or a vessel: centre, radius (px) and lumen radius (px)."""

    kind: str  # 'duct' | 'vessel'
    cx: float
    cy: float
    radius: float
    lumen: float


@dataclass
class RoiLayout:
    """Everything about one ROI except its pixels."""

    size: int
    regions: np.ndarray  # (size, size) uint8 region codes
    fibre_angle: np.ndarray  # (size // 8, size // 8) float radians, collagen direction (coarse grid)
    structures: list[Structure] = field(default_factory=list)
    nuclei: list[PlacedNucleus] = field(default_factory=list)
    composition: dict[str, float] = field(default_factory=dict)

    def fibre_angle_at(self, x: float, y: float) -> float:
        g = self.fibre_angle
        i = int(np.clip(y / 8, 0, g.shape[0] - 1))
        j = int(np.clip(x / 8, 0, g.shape[1] - 1))
        return float(g[i, j])


def _smooth_field(rng: np.random.Generator, size: int, sigma_px: float, coarse: int = 8) -> np.ndarray:
    """A smooth random field in [0, 1]-ish, made at 1/coarse resolution and upsampled (bilinear)."""
    n = size // coarse + 2
    f = ndi.gaussian_filter(rng.normal(size=(n, n)), sigma_px / coarse, mode="wrap")
    f = ndi.zoom(f, coarse, order=1)[:size, :size]
    f -= f.mean()
    return f / (f.std() + 1e-12)


def _quantile_mask(field_: np.ndarray, allowed: np.ndarray, fraction: float) -> np.ndarray:
    """The top ``fraction`` (of the whole canvas area) of ``field_`` within ``allowed``."""
    n = int(round(fraction * field_.size))
    vals = field_[allowed]
    if n <= 0 or vals.size == 0:
        return np.zeros_like(allowed)
    n = min(n, vals.size)
    thr = np.partition(vals, vals.size - n)[vals.size - n]
    return allowed & (field_ >= thr)


#: ROI archetypes and their probabilities: tumor-rich, stroma-rich, TIL-rich and mixed ROIs.
ARCHETYPES: dict[str, float] = {"tumor": 0.5, "stroma": 0.18, "til": 0.13, "mixed": 0.19}


def _draw_composition(rng: np.random.Generator) -> dict[str, float]:
    """Area fractions of one ROI, drawn from one of :data:`ARCHETYPES`."""
    names = list(ARCHETYPES)
    arche = names[int(rng.choice(len(names), p=np.array(list(ARCHETYPES.values()))))]
    if arche == "tumor":
        tumor, infil = float(rng.uniform(0.55, 0.85)), float(rng.uniform(0.0, 0.25))
    elif arche == "stroma":
        tumor, infil = float(rng.uniform(0.0, 0.15)), float(rng.uniform(0.0, 0.15))
    elif arche == "til":
        tumor, infil = float(rng.uniform(0.05, 0.3)), float(rng.uniform(0.35, 0.7))
    else:
        tumor, infil = float(rng.uniform(0.25, 0.55)), float(rng.uniform(0.15, 0.45))
    infil *= 1 - tumor
    plasma_share = float(rng.beta(2.0, 3.5))
    necrosis = float(rng.uniform(0.08, 0.3)) * tumor if rng.random() < 0.22 else 0.0
    return {"archetype": arche, "tumor": tumor, "infiltrate": infil, "plasma_share": plasma_share,
            "necrosis": necrosis, "n_ducts": int(rng.poisson(0.15)), "n_vessels": int(rng.poisson(1.5)),
            "cellularity": float(np.exp(rng.normal(0.15, 0.3)))}


def _place_structures(rng: np.random.Generator, regions: np.ndarray, comp: dict) -> list[Structure]:
    size = regions.shape[0]
    out: list[Structure] = []
    stroma = regions == REGION_CODES["stroma"]
    for kind, n, (rlo, rhi) in (("duct", comp["n_ducts"], (70, 130)), ("vessel", comp["n_vessels"], (14, 32))):
        for _ in range(n):
            for _try in range(20):
                r = float(rng.uniform(rlo, rhi))
                cx, cy = rng.uniform(r, size - r, size=2)
                yy, xx = int(cy), int(cx)
                if not stroma[yy, xx]:
                    continue
                if any(np.hypot(cx - s.cx, cy - s.cy) < r + s.radius + 10 for s in out):
                    continue
                lumen = r * (0.45 if kind == "duct" else 0.7)
                out.append(Structure(kind, float(cx), float(cy), r, lumen))
                if kind == "duct":
                    yy, xx = np.ogrid[:size, :size]
                    disk = (xx - cx) ** 2 + (yy - cy) ** 2 <= (r + 6) ** 2
                    regions[disk & stroma] = REGION_CODES["normal_ducts_other"]
                break
    return out


def _ring_nuclei(rng: np.random.Generator, s: Structure, cls: str, radius: float, spacing: float,
                 region: int) -> list[PlacedNucleus]:
    kind = KINDS[cls]
    n = max(2, int(2 * np.pi * radius / spacing))
    phase = rng.uniform(0, 2 * np.pi)
    out = []
    for k in range(n):
        t = phase + 2 * np.pi * k / n + rng.normal(0, 0.04)
        cx, cy = s.cx + radius * np.cos(t), s.cy + radius * np.sin(t)
        tangent = t + np.pi / 2 if cls != "ductal_epithelium" else None
        xs, ys, info = sample_outline(kind, rng, angle=None if tangent is None else tangent + rng.normal(0, 0.1))
        out.append(PlacedNucleus(cls, region, cx, cy, xs + cx, ys + cy, info["radius"], info["angle"],
                           int(rng.integers(2**31))))
    return out


def make_roi(rng: np.random.Generator, size: int = 1024) -> RoiLayout:
    """Generate one ROI: region map, structures and nuclei.

    Parameters
    ----------
    rng : numpy.random.Generator
    size : int
        Side of the square ROI in pixels (0.2 microns per pixel).
    """
    comp = _draw_composition(rng)
    regions = np.full((size, size), REGION_CODES["stroma"], dtype=np.uint8)
    everywhere = np.ones((size, size), bool)
    tumor = _quantile_mask(_smooth_field(rng, size, 70), everywhere, comp["tumor"])
    regions[tumor] = REGION_CODES["tumor"]
    # infiltrates favour the stroma next to tumor nests
    dist = ndi.distance_transform_edt(~tumor) if tumor.any() else np.full((size, size), 1e3)
    near = _smooth_field(rng, size, 40) - dist / 120.0
    infil = _quantile_mask(near, ~tumor, comp["infiltrate"])
    pf = _smooth_field(rng, size, 30)
    plasma = infil & (pf > np.quantile(pf[infil], 1 - comp["plasma_share"])) if infil.any() else infil
    regions[infil] = REGION_CODES["lymphocytic_infiltrate"]
    regions[plasma] = REGION_CODES["plasmacytic_infiltrate"]
    if comp["necrosis"] > 0 and tumor.any():
        core = ndi.distance_transform_edt(tumor)
        nec = _quantile_mask(core + 3 * _smooth_field(rng, size, 20), tumor, comp["necrosis"])
        regions[nec] = REGION_CODES["necrosis_debris"]
    structures = _place_structures(rng, regions, comp)
    # collagen direction: a smooth angle field on a coarse grid
    base = rng.uniform(0, np.pi)
    fibre = base + 0.6 * _smooth_field(rng, size, 160)[::8, ::8]
    layout = RoiLayout(size, regions, fibre, structures, [], comp)
    layout.nuclei = _place_nuclei(rng, layout)
    return layout


def _place_nuclei(rng: np.random.Generator, layout: RoiLayout) -> list[PlacedNucleus]:
    size = layout.size
    placed: list[PlacedNucleus] = []
    for s in layout.structures:
        if s.kind == "duct":
            placed += _ring_nuclei(rng, s, "ductal_epithelium", s.lumen + 0.5 * (s.radius - s.lumen) - 4, 34,
                                   REGION_CODES["normal_ducts_other"])
            placed += _ring_nuclei(rng, s, "myoepithelium", s.radius - 2, 80, REGION_CODES["normal_ducts_other"])
        else:
            placed += _ring_nuclei(rng, s, "vascular_endothelium", s.radius, 70, REGION_CODES["stroma"])
    # candidates per region
    cands = []
    flat = layout.regions.ravel()
    for name, code in REGION_CODES.items():
        idx = np.flatnonzero(flat == code)
        if idx.size == 0:
            continue
        p = REGION_PARAMS[name]
        n = int(rng.poisson(p.density * layout.composition["cellularity"] * idx.size * UM2_PER_PX2 / 100.0))
        if n == 0:
            continue
        pick = rng.choice(idx, size=n, replace=True)
        ys, xs = np.divmod(pick, size)
        classes = list(p.mix)
        probs = np.array([p.mix[c] for c in classes])
        cls = rng.choice(len(classes), size=n, p=probs / probs.sum())
        jitter = rng.uniform(0, 1, size=(n, 2))
        xs, ys = xs + jitter[:, 0], ys + jitter[:, 1]
        if p.chain > 0:
            # spindle cells run in streams: some sit end to end with the previous one along the fibres
            spindle = np.flatnonzero(np.array(classes)[cls] == "fibroblast")
            follow = rng.random(spindle.size) < p.chain
            # centre-to-centre step: 1.25 box sizes is about one long axis at the fibroblast's median aspect (0.5),
            # so neighbours in a stream touch end to end or leave a gap of up to a quarter of a nucleus
            step = rng.uniform(1.0, 1.25, spindle.size) * KINDS["fibroblast"].size_px * 1.25
            side = rng.choice([-1.0, 1.0], spindle.size)
            for a in range(1, spindle.size):
                if not follow[a]:
                    continue
                if follow[a - 1]:
                    side[a] = side[a - 1]  # a stream goes on in one direction, not back onto its first cell
                i, j = spindle[a], spindle[a - 1]
                theta = layout.fibre_angle_at(xs[j], ys[j])
                nx, ny = xs[j] + side[a] * step[a] * np.cos(theta), ys[j] + side[a] * step[a] * np.sin(theta)
                if 0 <= nx < size and 0 <= ny < size and layout.regions[int(ny), int(nx)] == code:
                    xs[i], ys[i] = nx, ny
        for x, y, c in zip(xs, ys, cls, strict=True):
            cands.append((x, y, classes[c], code, p))
    order = rng.permutation(len(cands))
    # lumens of ducts and vessels stay empty
    lumens = [(s.cx, s.cy, s.lumen) for s in layout.structures]
    # spatial hash of accepted nuclei
    cell = 48.0
    grid: dict[tuple[int, int], list[int]] = {}
    for k, n in enumerate(placed):
        grid.setdefault((int(n.cx // cell), int(n.cy // cell)), []).append(k)
    for i in order:
        x, y, cls, code, p = cands[i]
        if any((x - lx) ** 2 + (y - ly) ** 2 < (lr + 4) ** 2 for lx, ly, lr in lumens):
            continue
        kind = KINDS[cls]
        angle = None
        if cls in ("fibroblast", "vascular_endothelium"):
            angle = layout.fibre_angle_at(x, y) + rng.normal(0, 0.35)
        xs_, ys_, info = sample_outline(kind, rng, angle=angle)
        r = info["radius"]
        free = True
        if rng.random() >= p.overlap_prob:
            gx, gy = int(x // cell), int(y // cell)
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for k in grid.get((gx + dx, gy + dy), ()):
                        o = placed[k]
                        if (x - o.cx) ** 2 + (y - o.cy) ** 2 < (p.spacing * (r + o.radius)) ** 2:
                            free = False
                            break
                    if not free:
                        break
                if not free:
                    break
        if not free:
            continue
        grid.setdefault((int(x // cell), int(y // cell)), []).append(len(placed))
        placed.append(PlacedNucleus(cls, code, float(x), float(y), xs_ + x, ys_ + y, r, info["angle"],
                              int(rng.integers(2**31))))
    inside = [n for n in placed if 0 <= n.cx < size and 0 <= n.cy < size]
    return inside
