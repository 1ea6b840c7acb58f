"""H&E rendering of a FOV crop of an ROI layout (Beer-Lambert absorption of hematoxylin and eosin).

Per pixel, hematoxylin (H) and eosin (E) concentrations are built up from the tissue regions (collagen fibres in
stroma, cytoplasm and cell borders in tumor nests, granular debris in necrosis, empty lumens) and from every nucleus
(class-specific chromatin: vesicular with nucleoli, dense, clock-face, clumped mitoses, pale, smudged; cytoplasm,
eccentric nuclei and perinuclear halos), with out-of-plane nuclei that nobody annotates (faint, blurred) and a matrix
that is granular at the scale of pixels. Optical density ``OD = H * h + E * e + r`` with stain vectors ``h, e``
that vary by hospital and slide, intensity ``I = I0 * 10 ** -OD``, then optical blur (occasionally out of focus) and
sensor noise.

Nucleus pixels come from the same integer outline that is written as ground truth, so image and annotation agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ..io.masks import polygon_pixels
from .layout import REGION_CODES, RoiLayout
from .morphology import KINDS

__all__ = ["StainStyle", "draw_stain_style", "perturb_stain_style", "render_crop", "BASE_H", "BASE_E"]

#: Reference optical-density vectors (R, G, B) of hematoxylin and eosin (Ruifrok & Johnston; HistomicsTK's map).
BASE_H = np.array([0.65, 0.70, 0.29])
BASE_E = np.array([0.07, 0.99, 0.11])
#: Eosin as it renders in tissue: the reference vector with some blue absorption (fitted: the median optical-density
#: direction of lightly stained tissue in the 17 real sample FOVs is about (0.41, 0.79, 0.42), the reference gives 0.29
#: for blue). Together with :data:`_NEUTRAL_OD` it brings rendered tissue to that direction.
TISSUE_E = np.array([0.16, 0.93, 0.33])


@dataclass(frozen=True)
class StainStyle:
    """Stain appearance of a hospital or slide."""

    h_vector: tuple[float, float, float]
    e_vector: tuple[float, float, float]
    h_scale: float
    e_scale: float
    background: float  # I0, the light through an empty slide (0-255)
    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)  # the scanner's per-channel gain

    def as_dict(self) -> dict:
        return {"h_vector": list(self.h_vector), "e_vector": list(self.e_vector), "h_scale": self.h_scale,
                "e_scale": self.e_scale, "background": self.background, "white_balance": list(self.white_balance)}


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    v = np.clip(v, 0.02, None)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def draw_stain_style(rng: np.random.Generator) -> StainStyle:
    """A hospital's stain style: stain vectors rotated (hematoxylin from blue to purple), intensities scaled, the
    scanner's white balance (batch effects)."""
    purple = float(rng.uniform(0.0, 0.09))  # hematoxylin takes up some eosin's colour: purple rather than blue
    h = BASE_H + purple * (BASE_E - BASE_H) * 0.5 + rng.normal(0, 0.04, 3)
    return StainStyle(
        _unit(h), _unit(TISSUE_E + rng.normal(0, 0.05, 3)),
        float(np.clip(np.exp(rng.normal(0, 0.12)), *_H_SCALE_RANGE)),
        float(np.clip(np.exp(rng.normal(0, 0.2)), *_E_SCALE_RANGE)),
        float(rng.uniform(236, 256)), tuple(float(v) for v in np.clip(1 + rng.normal(0, 0.025, 3), 0.94, 1.06)),
    )


def perturb_stain_style(style: StainStyle, rng: np.random.Generator) -> StainStyle:
    """A slide's style: its hospital's, with a smaller perturbation."""
    return StainStyle(
        _unit(np.array(style.h_vector) + rng.normal(0, 0.02, 3)), _unit(np.array(style.e_vector) + rng.normal(0, 0.02, 3)),
        float(np.clip(style.h_scale * np.exp(rng.normal(0, 0.05)), *_H_SCALE_RANGE)),
        float(np.clip(style.e_scale * np.exp(rng.normal(0, 0.08)), *_E_SCALE_RANGE)),
        float(np.clip(style.background + rng.normal(0, 2), 232, 258)), style.white_balance,
    )


# Calibration targets (fitted, generator 2.4): the colour of the rendered FOVs. The constants below were set so
# that the per-patch colour statistics (channel means, SDs, 5th/95th percentiles) of 64 px nucleus-centred patches
# and the pixel quantiles of whole FOVs fall on those of the 17 real sample FOVs, on cpu cohort seeds 0 and 1.
# Generator 2.3 rendered a saturated, dark, purple-grey tissue (real FOVs have brighter highlights, more white and
# a pinker matrix): fifteen per-patch colour statistics alone told the two apart (gradient-boosting C2ST 0.99).
#
# overall hematoxylin gain (stain unmixing of synthetic FOVs gives hematoxylin densities in the real range,
# tests/test_phantom.py)
_H_GAIN = 1.1
# grey absorption per unit of stain (section thickness, mounting medium, scatter): real H&E is less saturated than
# two pure dyes
_NEUTRAL_OD = 0.2
# optical density of the empty slide and mounting medium
_BASE_OD = 0.005
# the ranges hospitals' and slides' stain intensities are clipped to
_H_SCALE_RANGE = (0.85, 1.12)
_E_SCALE_RANGE = (0.65, 1.15)

# eosin (cytoplasm/matrix) and hematoxylin background level of each region (2.3's eosin x 1.45, hematoxylin x 0.12:
# the matrix is pink, not purple-grey); with the eosin intensities of hospitals capped at x 1.15 (2.3: 1.25) the
# FOVs' eosin densities stay in the real range (tests/test_phantom.py)
_REGION_E = {k: 1.45 * v for k, v in {"tumor": 0.17, "stroma": 0.16, "lymphocytic_infiltrate": 0.08,
                                     "plasmacytic_infiltrate": 0.12, "normal_ducts_other": 0.14,
                                     "necrosis_debris": 0.3}.items()}
_REGION_H = {k: 0.12 * v for k, v in {"tumor": 0.2, "stroma": 0.13, "lymphocytic_infiltrate": 0.08,
                                      "plasmacytic_infiltrate": 0.08, "normal_ducts_other": 0.1,
                                      "necrosis_debris": 0.14}.items()}
# Consequences of the colour above (fitted on the heuristic bootstrap's F1 and the feature SMDs, not on colour):
# nuclear hematoxylin (x all kinds' ``hema``; fibroblasts a further x 0.88) and the fine texture of the background
# (eosin and hematoxylin modulated by pixel-scale noise), which makes thresholded outlines as ragged as real ones
_NUCLEAR_H = 0.85
_FIBROBLAST_H = 0.88
_MATRIX_TEXTURE = (0.3, 0.7)  # relative SD of the eosin and of the hematoxylin modulation, noise scale 1.3 px
# out-of-plane nuclei (cut at a cap, or above or below the focal plane): faint, blurred, never annotated; per drawn
# nucleus, and their hematoxylin
_GHOST_RATE = 0.35
_GHOST_H = 0.35
# plasma cells' clock-face chromatin: the level under the clumps
_CLOCKFACE_LEVEL = 0.65


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = ndi.gaussian_filter(rng.normal(size=shape), sigma)
    return f / (f.std() + 1e-12)


def _fibres(rng: np.random.Generator, shape: tuple[int, int], angle: float) -> np.ndarray:
    """Collagen texture in [0, 1]: noise stretched along ``angle`` (radians), then warped into wavy bundles."""
    h, w = shape
    side = int(np.ceil(np.hypot(h, w))) + 4
    f = ndi.gaussian_filter(rng.normal(size=(side, side)), (1.6, 9.0))
    f = ndi.rotate(f, np.degrees(angle), reshape=False, order=1, mode="reflect")
    oy, ox = (side - h) // 2, (side - w) // 2
    f = f[oy:oy + h, ox:ox + w]
    dy = _noise(rng, (h, w), 14.0) * 3.0
    dx = _noise(rng, (h, w), 14.0) * 3.0
    yy, xx = np.mgrid[:h, :w].astype(float)
    f = ndi.map_coordinates(f, [yy + dy, xx + dx], order=1, mode="reflect")
    f = (f - f.mean()) / (f.std() + 1e-12)
    return 1.0 / (1.0 + np.exp(-2.0 * f))


def _cell_map(centres: np.ndarray, shape: tuple[int, int], reach: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi cells around nucleus centres: ``(cell index or -1 beyond reach, distance to the cell's centre)``."""
    h, w = shape
    seeds = np.ones((h, w), bool)
    idx = np.full((h, w), -1, np.int64)
    cy = np.clip(np.rint(centres[:, 1]).astype(int), 0, h - 1)
    cx = np.clip(np.rint(centres[:, 0]).astype(int), 0, w - 1)
    seeds[cy, cx] = False
    idx[cy, cx] = np.arange(len(centres))
    dist, (iy, ix) = ndi.distance_transform_edt(seeds, return_indices=True)
    cell = idx[iy, ix]
    cell = np.where(dist <= reach[cell], cell, -1)
    return cell, dist


def render_crop(layout: RoiLayout, crop: tuple[int, int, int, int], outlines: dict[int, tuple[np.ndarray, np.ndarray]],
                style: StainStyle, rng: np.random.Generator, *, blur_sigma: float = 0.8,
                noise_sd: float = 2.0, jpeg_quality: int | None = None) -> np.ndarray:
    """Render one crop of an ROI.

    Parameters
    ----------
    layout : RoiLayout
    crop : (x0, y0, x1, y1)
        The crop in ROI pixels.
    outlines : dict
        Index into ``layout.nuclei`` -> integer outline ``(xs, ys)`` in crop pixels, for every nucleus to draw
        (the true nucleus outlines; annotations are drawn from them, see cohort.py).
    style : StainStyle
    rng : numpy.random.Generator
    blur_sigma : float
        Optical blur (pixels) at the sharpest point; focus varies across the field up to about twice that.
        About 2.5 for an out-of-focus FOV.
    noise_sd : float
        Sensor noise (intensity units).
    jpeg_quality : int, optional
        JPEG compression of the scanner (the TCGA slides are JPEG-compressed); ``None`` leaves it out.

    Returns
    -------
    rgb : (H, W, 3) uint8 ndarray
    """
    x0, y0, x1, y1 = crop
    h, w = y1 - y0, x1 - x0
    regions = layout.regions[y0:y1, x0:x1]
    E = np.zeros((h, w))
    H = np.zeros((h, w))
    soft = {}
    for name, code in REGION_CODES.items():
        m = ndi.gaussian_filter((regions == code).astype(float), 2.0)
        soft[name] = m
        E += _REGION_E[name] * m
        H += _REGION_H[name] * m
    fine = _noise(rng, (h, w), 1.2)
    coarse = _noise(rng, (h, w), 3.0)
    broad = _noise(rng, (h, w), 25.0)
    # tissue density varies over the field (section thickness, fixation)
    E *= np.exp(0.4 * broad)
    H *= np.exp(0.4 * broad)
    # stroma: collagen fibres with white clefts
    angle = float(layout.fibre_angle_at((x0 + x1) / 2, (y0 + y1) / 2))
    fib = _fibres(rng, (h, w), angle)
    stromal = np.clip(soft["stroma"] + soft["normal_ducts_other"], 0, 1)
    fibre_gain = float(rng.uniform(0.12, 0.25))
    E += stromal * (fibre_gain * fib - 0.06 + 0.02 * coarse)
    H += stromal * float(rng.uniform(0.006, 0.024)) * fib  # collagen takes up a little hematoxylin (purple fibres)
    E -= stromal * 0.08 * (fib < float(rng.uniform(0.05, 0.15)))
    # necrosis: granular eosin and karyorrhectic hematoxylin dust
    nec = soft["necrosis_debris"]
    E += nec * 0.12 * coarse
    H += nec * 0.5 * ndi.gaussian_filter((fine > 2.0).astype(float), 0.8)

    # cells: every nucleus owns a Voronoi cell of cytoplasm (tumor nests, infiltrates); cell borders are membranes
    # or retraction gaps
    keys = list(outlines)
    if keys:
        cent = np.array([[layout.nuclei[k].cx - x0, layout.nuclei[k].cy - y0] for k in keys])
        rad = np.array([layout.nuclei[k].radius for k in keys])
        cyto_mult = np.array([max(KINDS[layout.nuclei[k].raw_class].cytoplasm, 1.2) for k in keys])
        cell, dist = _cell_map(cent, (h, w), rad * cyto_mult * 1.25)
        # membranes are not straight: warp the cell map with a smooth displacement
        gy, gx = np.mgrid[:h, :w].astype(float)
        cell = ndi.map_coordinates(cell, [gy + 3.0 * _noise(rng, (h, w), 7.0), gx + 3.0 * _noise(rng, (h, w), 7.0)],
                                   order=0, mode="nearest")
        inside = cell >= 0
        level = np.array([KINDS[layout.nuclei[k].raw_class].cytoplasm_eosin for k in keys])
        level = level * np.exp(rng.normal(0, 0.25, len(keys)))
        pale = rng.random(len(keys)) < 0.25  # clear or vacuolated cytoplasm
        level[pale] *= 0.5
        cyt = np.where(inside, level[np.clip(cell, 0, None)], 0.0)
        cyt = ndi.gaussian_filter(cyt, 1.0) * (1 + 0.25 * coarse)
        epithelial = np.clip(soft["tumor"] + 0.6 * soft["lymphocytic_infiltrate"] + 0.6 * soft["plasmacytic_infiltrate"]
                             + soft["normal_ducts_other"] * 0.5, 0, 1)
        E = E * (1 - epithelial * inside) + np.maximum(E, cyt) * epithelial * inside
        # basophilic cytoplasm (plasma cells, macrophages): hematoxylin around the nucleus, which joins crowded cells
        # for a threshold
        hlevel = np.array([KINDS[layout.nuclei[k].raw_class].cytoplasm_hema for k in keys])
        hlevel = hlevel * np.exp(rng.normal(0, 0.3, len(keys)))
        H += ndi.gaussian_filter(np.where(inside, hlevel[np.clip(cell, 0, None)], 0.0), 1.5)
        border = np.zeros((h, w), bool)
        border[:, 1:] |= cell[:, 1:] != cell[:, :-1]
        border[1:, :] |= cell[1:, :] != cell[:-1, :]
        border &= inside | np.roll(inside, 1, 0) | np.roll(inside, 1, 1)
        gap_cells = rng.random(len(keys)) < float(rng.uniform(0.1, 0.5))
        gap = border & gap_cells[np.clip(cell, 0, None)] & inside
        b = ndi.gaussian_filter(border.astype(float), 0.7)
        g = ndi.gaussian_filter(ndi.binary_dilation(gap).astype(float), 1.0)
        E += epithelial * 0.12 * b
        E *= 1 - 0.8 * g * epithelial
        H *= 1 - 0.6 * g * epithelial
    # retraction spaces and vacuoles: white gaps in nests and stroma
    gaps = ndi.gaussian_filter(_noise(rng, (h, w), 9.0), 1.0) > float(rng.uniform(0.6, 1.4))
    clear = 1.0 - 0.85 * ndi.gaussian_filter(gaps.astype(float), 1.5) * np.clip(soft["tumor"] + stromal, 0, 1)
    E *= clear
    H *= clear
    tissue = clear.copy()  # where there is tissue to hold an out-of-plane nucleus
    # lumens of ducts and vessels are empty (vessels hold a few red cells)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    for s in layout.structures:
        if s.cx + s.radius < x0 or s.cx - s.radius > x1 or s.cy + s.radius < y0 or s.cy - s.radius > y1:
            continue
        d = np.hypot(xx - s.cx, yy - s.cy)
        with np.errstate(over="ignore"):  # far from a small lumen exp overflows to inf: the lumen is 0 there
            lumen = 1.0 / (1.0 + np.exp((d - s.lumen) / 1.5))
        E *= 1 - 0.9 * lumen
        H *= 1 - 0.9 * lumen
        tissue *= 1 - lumen
        if s.kind == "vessel":
            E += 0.9 * lumen * (coarse > 0.6)
    # spindle cells (fibroblasts, endothelium): tapering purple processes along the long axis, which join
    # neighbouring cells into streams
    for k in outlines:
        nuc = layout.nuclei[k]
        kind = KINDS[nuc.raw_class]
        if kind.tail <= 0:
            continue
        cx, cy = nuc.cx - x0, nuc.cy - y0
        ca, sa = np.cos(nuc.angle), np.sin(nuc.angle)
        u_n = (nuc.xs - nuc.cx) * ca + (nuc.ys - nuc.cy) * sa
        v_n = -(nuc.xs - nuc.cx) * sa + (nuc.ys - nuc.cy) * ca
        half, width = float(np.ptp(u_n)) / 2, max(float(np.ptp(v_n)) / 2, 1.0)
        own = np.random.default_rng([nuc.seed, 1])  # the cell's own draws: the same cell in overlapping FOVs
        length = half * (1 + kind.tail * float(own.uniform(0.5, 1.5)))
        reach = int(length + 3 * width) + 1
        bx0, bx1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, w)
        by0, by1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, h)
        if bx1 <= bx0 or by1 <= by0:
            continue
        py, px = np.mgrid[by0:by1, bx0:bx1].astype(float)
        u = (px - cx) * ca + (py - cy) * sa
        v = -(px - cx) * sa + (py - cy) * ca
        along = np.clip(1 - np.abs(u) / length, 0, 1)
        streak = along ** 1.5 * np.exp(-0.5 * (v / (0.7 * width * (0.4 + 0.6 * along))) ** 2)
        amp = kind.tail_hema * float(own.uniform(0.25, 0.55))
        H[by0:by1, bx0:bx1] += amp * streak
        E[by0:by1, bx0:bx1] += 0.1 * streak
    # out-of-plane nuclei: blurred ellipses of hematoxylin where there is tissue, drawn from the crop's stream (FOVs of
    # an ROI do not overlap)
    if outlines and _GHOST_RATE > 0:
        radii = np.array([layout.nuclei[k].radius for k in outlines])
        ghosts = np.zeros((h, w))
        for _ in range(int(rng.poisson(_GHOST_RATE * len(outlines)))):
            gy, gx = rng.uniform(0, h), rng.uniform(0, w)
            gr = float(rng.choice(radii)) * float(rng.uniform(0.5, 1.0))
            ga, ge, amp = float(rng.uniform(0, np.pi)), float(rng.uniform(0.6, 1.0)), float(rng.uniform(0.5, 1.2))
            reach = int(2 * gr + 4)
            ya, yb, xa, xb = max(int(gy) - reach, 0), min(int(gy) + reach + 1, h), max(int(gx) - reach, 0), \
                min(int(gx) + reach + 1, w)
            if yb <= ya or xb <= xa:
                continue
            py, px = np.mgrid[ya:yb, xa:xb].astype(float)
            u = (px - gx) * np.cos(ga) + (py - gy) * np.sin(ga)
            v = (-(px - gx) * np.sin(ga) + (py - gy) * np.cos(ga)) / ge
            ghosts[ya:yb, xa:xb] = np.maximum(ghosts[ya:yb, xa:xb],
                                              _GHOST_H * amp / (1 + np.exp((np.hypot(u, v) - gr) / 1.5)))
        H += ndi.gaussian_filter(ghosts, 1.5) * (1 + 0.2 * coarse) * tissue
    # the matrix is fibrillar and granular at the scale of pixels
    e_tex, h_tex = _MATRIX_TEXTURE
    E *= np.clip(1 + e_tex * _noise(rng, (h, w), 1.3), 0.2, None)
    H *= np.clip(1 + h_tex * _noise(rng, (h, w), 1.3), 0.2, None)
    E = np.clip(E, 0.0, None)

    # nuclei ------------------------------------------------------------------------------------------------------
    Hn = np.zeros((h, w))
    En = np.zeros((h, w))
    cover = np.zeros((h, w))
    # chromatin: mottled at about 1.5 px in most nuclei (real chromatin is not pixel noise); spindle nuclei keep a
    # pixel-scale grain, which makes their thresholded outlines ragged, as real ones are
    grain = 0.5 * _noise(rng, (h, w), 1.5)
    grain_fine = _noise(rng, (h, w), 0.7)
    for k, (xs, ys) in outlines.items():
        nuc = layout.nuclei[k]
        kind = KINDS[nuc.raw_class]
        nr = np.random.default_rng(nuc.seed)
        cx, cy = nuc.cx - x0, nuc.cy - y0
        r = nuc.radius
        if kind.halo:
            bx0, bx1 = max(int(cx - 2 * r), 0), min(int(cx + 2 * r + 1), w)
            by0, by1 = max(int(cy - 2 * r), 0), min(int(cy + 2 * r + 1), h)
            if bx1 > bx0 and by1 > by0:
                py, px = np.mgrid[by0:by1, bx0:bx1]
                dn = np.hypot(px - cx, py - cy)
                E[by0:by1, bx0:bx1] *= 1 - 0.5 * np.exp(-((dn - 1.2 * r) ** 2) / 5.0)
        rr, cc = polygon_pixels(xs, ys, (h, w))
        if rr.size == 0:
            continue
        by0, by1, bx0, bx1 = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
        m = np.zeros((by1 - by0, bx1 - bx0), bool)
        m[rr - by0, cc - bx0] = True
        d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        f = fine[by0:by1, bx0:bx1]
        g = coarse[by0:by1, bx0:bx1]
        ch = kind.chromatin
        q = (grain_fine if ch == "fine" else grain)[by0:by1, bx0:bx1]
        base = _NUCLEAR_H * (_FIBROBLAST_H if nuc.raw_class == "fibroblast" else 1.0) * kind.hema \
            * float(np.exp(nr.normal(0, 0.2)))
        py, px = np.mgrid[by0:by1, bx0:bx1]
        if ch == "vesicular":
            # pale, open chromatin with a darker membrane, coarse clumps and one or two nucleoli
            rim = np.exp(-(d - 1) / float(nr.uniform(1.2, 2.2)))
            val = base * (0.55 + 0.4 * rim + 0.2 * g + 0.18 * f + 0.4 * q + 0.09 * (q > 0.5))
            for _ in range(int(nr.integers(0, kind.nucleoli + 1))):
                ny, nx = cy + nr.normal(0, 0.25 * r), cx + nr.normal(0, 0.25 * r)
                val += 0.7 * base * np.exp(-((py - ny) ** 2 + (px - nx) ** 2) / (2 * float(nr.uniform(1.0, 2.0)) ** 2))
        elif ch == "dense":
            val = base * (0.9 + 0.15 * f + 0.1 * g + 0.3 * q)
        elif ch == "clockface":
            # a dark membrane all round, and heterochromatin clumps in a ring a few pixels inside it
            theta = np.arctan2(py - cy, px - cx)
            ring = np.exp(-0.5 * ((d - 3.0) / 1.5) ** 2)
            val = base * (_CLOCKFACE_LEVEL + 0.3 * np.exp(-(d - 1) / 1.5)
                          + 0.35 * ring * (0.5 + 0.5 * np.cos(5 * theta + nr.uniform(0, 6)))
                          + 0.27 * f + 0.45 * q)
        elif ch == "clumped":
            val = base * (0.45 + 0.7 / (1 + np.exp(-3 * g)) + 0.15 * f)
        elif ch == "pale":
            val = base * (0.7 + 0.35 * np.exp(-(d - 1) / 1.5) + 0.2 * f + 0.1 * g)
        elif ch == "smudged":
            val = base * (0.7 + 0.3 * g + 0.1 * f) * float(nr.uniform(0.6, 1.3))
        elif ch == "condensed":
            val = base * (1.0 + 0.08 * f)
        else:  # fine
            val = base * (0.85 + 0.15 * f + 0.1 * g + 0.4 * q)
        # soft edge: the outermost pixels are lighter
        val = np.clip(val, 0.05, None) * np.clip(0.5 + 0.4 * d, 0.0, 1.0)
        Hn[by0:by1, bx0:bx1] = np.maximum(Hn[by0:by1, bx0:bx1], np.where(m, val, 0.0))
        En[by0:by1, bx0:bx1] = np.maximum(En[by0:by1, bx0:bx1], np.where(m, 0.1 + 0.05 * f, 0.0))
        cover[by0:by1, bx0:bx1] = np.maximum(cover[by0:by1, bx0:bx1], m)
    cover_s = ndi.gaussian_filter(cover, 0.8)
    H = H * (1 - cover_s) + ndi.gaussian_filter(Hn, 0.8)
    E = E * (1 - 0.4 * cover_s) + ndi.gaussian_filter(En, 0.8)

    # Beer-Lambert ------------------------------------------------------------------------------------------------
    hv, ev = np.array(style.h_vector), np.array(style.e_vector)
    od = (_H_GAIN * style.h_scale * H[..., None] * hv + style.e_scale * E[..., None] * ev + _BASE_OD
          + _NEUTRAL_OD * (0.5 * H + E)[..., None] / np.sqrt(3.0))
    rgb = style.background * np.power(10.0, -od) * np.array(style.white_balance)
    # focus varies across the field: a sharp and a blurred rendering blended by a smooth field
    far = float(np.clip(blur_sigma * rng.uniform(1.3, 1.8), blur_sigma, 4.0))
    wfield = np.clip(0.5 + 0.5 * _noise(rng, (h, w), 60.0), 0, 1)[..., None]
    # line-scan optics blur the two axes differently
    aniso = float(rng.uniform(0.65, 1.0))
    sharp = np.stack([ndi.gaussian_filter(rgb[..., c], (blur_sigma * aniso, blur_sigma)) for c in range(3)], -1)
    soft_img = np.stack([ndi.gaussian_filter(rgb[..., c], (far * aniso, far)) for c in range(3)], -1)
    rgb = sharp * (1 - wfield) + soft_img * wfield
    # the scanner sharpens (unsharp mask), which makes edges crisp and gradients heavy-tailed
    amount = float(rng.uniform(0.1, 0.5))
    rgb = rgb + amount * (rgb - np.stack([ndi.gaussian_filter(rgb[..., c], 1.5) for c in range(3)], -1))
    rgb += rng.normal(0, noise_sd, rgb.shape)
    out = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    if jpeg_quality is not None:
        import io as _io

        from PIL import Image

        buf = _io.BytesIO()
        Image.fromarray(out).save(buf, format="JPEG", quality=int(jpeg_quality), subsampling=2)
        buf.seek(0)
        with Image.open(buf) as im:
            out = np.asarray(im.convert("RGB")).copy()
    return out
