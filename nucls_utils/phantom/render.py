"""H&E rendering of a FOV crop of an ROI layout (Beer-Lambert absorption of hematoxylin and eosin).

Per pixel, hematoxylin (H) and eosin (E) concentrations are built up from the tissue regions (collagen fibres in
stroma, cytoplasm and cell borders in tumor nests, granular debris in necrosis, empty lumens) and from every nucleus
(class-specific chromatin: vesicular with nucleoli, dense, clock-face, clumped mitoses, pale, smudged; cytoplasm,
eccentric nuclei and perinuclear halos). Optical density ``OD = H * h + E * e + r`` with stain vectors ``h, e``
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


@dataclass(frozen=True)
class StainStyle:
    """Stain appearance of a hospital or slide."""

    h_vector: tuple[float, float, float]
    e_vector: tuple[float, float, float]
    h_scale: float
    e_scale: float
    background: float  # I0, the light through an empty slide (0-255)

    def as_dict(self) -> dict:
        return {"h_vector": list(self.h_vector), "e_vector": list(self.e_vector), "h_scale": self.h_scale,
                "e_scale": self.e_scale, "background": self.background}


def _unit(v: np.ndarray) -> tuple[float, float, float]:
    v = np.clip(v, 0.02, None)
    return tuple(float(x) for x in v / np.linalg.norm(v))


def draw_stain_style(rng: np.random.Generator) -> StainStyle:
    """A hospital's stain style: stain vectors rotated a little, intensities scaled (batch effects)."""
    return StainStyle(
        _unit(BASE_H + rng.normal(0, 0.045, 3)), _unit(BASE_E + rng.normal(0, 0.05, 3)),
        float(np.clip(np.exp(rng.normal(0, 0.1)), 0.9, 1.18)), float(np.clip(np.exp(rng.normal(0, 0.15)), 0.72, 1.25)),
        float(rng.uniform(236, 252)),
    )


def perturb_stain_style(style: StainStyle, rng: np.random.Generator) -> StainStyle:
    """A slide's style: its hospital's, with a smaller perturbation."""
    return StainStyle(
        _unit(np.array(style.h_vector) + rng.normal(0, 0.02, 3)), _unit(np.array(style.e_vector) + rng.normal(0, 0.02, 3)),
        float(np.clip(style.h_scale * np.exp(rng.normal(0, 0.05)), 0.9, 1.18)),
        float(np.clip(style.e_scale * np.exp(rng.normal(0, 0.06)), 0.72, 1.25)),
        float(np.clip(style.background + rng.normal(0, 2), 230, 254)),
    )


# overall hematoxylin gain: calibrated so that HistomicsTK stain unmixing of synthetic FOVs gives hematoxylin
# densities in the range of the 17 real sample FOVs (tests/test_phantom.py)
_H_GAIN = 1.12

# eosin (cytoplasm/matrix) and hematoxylin background level of each region
_REGION_E = {"tumor": 0.17, "stroma": 0.16, "lymphocytic_infiltrate": 0.08, "plasmacytic_infiltrate": 0.12,
             "normal_ducts_other": 0.14, "necrosis_debris": 0.3}
_REGION_H = {"tumor": 0.13, "stroma": 0.13, "lymphocytic_infiltrate": 0.08, "plasmacytic_infiltrate": 0.08,
             "normal_ducts_other": 0.1, "necrosis_debris": 0.14}


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


def render_crop(layout: RoiLayout, crop: tuple[int, int, int, int], outlines: dict[int, tuple[np.ndarray, np.ndarray]],
                style: StainStyle, rng: np.random.Generator, *, blur_sigma: float = 0.8,
                noise_sd: float = 2.0) -> np.ndarray:
    """Render one crop of an ROI.

    Parameters
    ----------
    layout : RoiLayout
    crop : (x0, y0, x1, y1)
        The crop in ROI pixels.
    outlines : dict
        Index into ``layout.nuclei`` -> integer outline ``(xs, ys)`` in crop pixels, for every nucleus to draw
        (the same outlines that become the ground truth).
    style : StainStyle
    rng : numpy.random.Generator
    blur_sigma : float
        Optical blur (pixels); about 2.5 for an out-of-focus FOV.
    noise_sd : float
        Sensor noise (intensity units).

    Returns
    -------
    rgb : (H, W, 3) uint8 ndarray
    """
    x0, y0, x1, y1 = crop
    h, w = y1 - y0, x1 - x0
    regions = layout.regions[y0:y1, x0:x1]
    E = np.zeros((h, w))
    H = np.zeros((h, w))
    for name, code in REGION_CODES.items():
        m = ndi.gaussian_filter((regions == code).astype(float), 2.0)
        E += _REGION_E[name] * m
        H += _REGION_H[name] * m
    fine = _noise(rng, (h, w), 0.7)
    coarse = _noise(rng, (h, w), 2.0)
    # stroma: collagen fibres with white clefts
    angle = float(layout.fibre_angle_at((x0 + x1) / 2, (y0 + y1) / 2))
    fib = _fibres(rng, (h, w), angle)
    stromal = ndi.gaussian_filter(np.isin(regions, [REGION_CODES["stroma"], REGION_CODES["normal_ducts_other"]])
                                  .astype(float), 2.0)
    E += stromal * (0.2 * fib - 0.06 + 0.04 * fine)
    E -= stromal * 0.08 * (fib < 0.08)
    # necrosis: granular eosin and karyorrhectic hematoxylin dust
    nec = ndi.gaussian_filter((regions == REGION_CODES["necrosis_debris"]).astype(float), 2.0)
    E += nec * 0.12 * coarse
    H += nec * 0.5 * ndi.gaussian_filter((fine > 2.2).astype(float), 0.8)
    # tumor nests: cytoplasm varies cell to cell, cell borders a little darker
    tum = ndi.gaussian_filter((regions == REGION_CODES["tumor"]).astype(float), 2.0)
    E += tum * 0.06 * coarse
    # retraction spaces and vacuoles: white gaps in nests and stroma
    gaps = ndi.gaussian_filter(_noise(rng, (h, w), 6.0), 1.0) > 1.6
    clear = 1.0 - 0.85 * ndi.gaussian_filter(gaps.astype(float), 1.5) * np.clip(tum + stromal, 0, 1)
    E *= clear
    H *= clear
    # lumens of ducts and vessels are empty (vessels hold a few red cells)
    yy, xx = np.mgrid[y0:y1, x0:x1]
    for s in layout.structures:
        if s.cx + s.radius < x0 or s.cx - s.radius > x1 or s.cy + s.radius < y0 or s.cy - s.radius > y1:
            continue
        d = np.hypot(xx - s.cx, yy - s.cy)
        lumen = 1.0 / (1.0 + np.exp((d - s.lumen) / 1.5))
        E *= 1 - 0.9 * lumen
        H *= 1 - 0.9 * lumen
        if s.kind == "vessel":
            E += 0.9 * lumen * (coarse > 0.6)
    E = np.clip(E, 0.0, None)

    # nuclei (and their cytoplasm) -------------------------------------------------------------------------------
    Hn = np.zeros((h, w))
    cover = np.zeros((h, w))
    for k, (xs, ys) in outlines.items():
        nuc = layout.nuclei[k]
        kind = KINDS[nuc.raw_class]
        nr = np.random.default_rng(nuc.seed)
        cx, cy = nuc.cx - x0, nuc.cy - y0
        r = nuc.radius
        if kind.cytoplasm > 0 and nuc.raw_class not in ("tumor", "mitotic_figure"):
            rc = r * kind.cytoplasm
            ang = nr.uniform(0, 2 * np.pi)
            ccx, ccy = cx - kind.eccentric * rc * np.cos(ang), cy - kind.eccentric * rc * np.sin(ang)
            bx0, bx1 = max(int(ccx - rc - 2), 0), min(int(ccx + rc + 3), w)
            by0, by1 = max(int(ccy - rc - 2), 0), min(int(ccy + rc + 3), h)
            if bx1 > bx0 and by1 > by0:
                py, px = np.mgrid[by0:by1, bx0:bx1]
                dc = np.hypot(px - ccx, py - ccy)
                cyto = 1.0 / (1.0 + np.exp((dc - rc) / 2.0))
                add = kind.cytoplasm_eosin * cyto
                if nuc.raw_class == "eosinophil":
                    add *= 1 + 0.5 * (fine[by0:by1, bx0:bx1] > 0.5)
                E[by0:by1, bx0:bx1] = np.maximum(E[by0:by1, bx0:bx1], add)
                if kind.halo:
                    dn = np.hypot(px - cx, py - cy)
                    E[by0:by1, bx0:bx1] *= 1 - 0.6 * np.exp(-((dn - 1.15 * r) ** 2) / 4.0)
        rr, cc = polygon_pixels(xs, ys, (h, w))
        if rr.size == 0:
            continue
        by0, by1, bx0, bx1 = rr.min(), rr.max() + 1, cc.min(), cc.max() + 1
        m = np.zeros((by1 - by0, bx1 - bx0), bool)
        m[rr - by0, cc - bx0] = True
        d = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
        f = fine[by0:by1, bx0:bx1]
        g = coarse[by0:by1, bx0:bx1]
        base = kind.hema * float(np.exp(nr.normal(0, 0.12)))
        ch = kind.chromatin
        if ch == "vesicular":
            val = base * (0.6 + 0.45 * np.exp(-(d - 1) / 2.5) + 0.22 * g + 0.1 * f)
            for _ in range(int(nr.integers(1, kind.nucleoli + 1))):
                ny, nx = nr.uniform(0.3, 0.7) * m.shape[0], nr.uniform(0.3, 0.7) * m.shape[1]
                py, px = np.mgrid[:m.shape[0], :m.shape[1]]
                val += 0.9 * base * np.exp(-((py - ny) ** 2 + (px - nx) ** 2) / (2 * 1.3**2))
        elif ch == "dense":
            val = base * (0.95 + 0.1 * f)
        elif ch == "clockface":
            py, px = np.mgrid[by0:by1, bx0:bx1]
            theta = np.arctan2(py - cy, px - cx)
            val = base * (0.55 + 0.6 * np.exp(-(d - 1) / 2.2) * (0.5 + 0.5 * np.cos(6 * theta + nr.uniform(0, 6)))
                          + 0.1 * f)
        elif ch == "clumped":
            val = base * (0.55 + 0.6 / (1 + np.exp(-3 * g)) + 0.1 * f)
        elif ch == "pale":
            val = base * (0.75 + 0.35 * np.exp(-(d - 1) / 1.5) + 0.15 * f)
        elif ch == "smudged":
            val = base * (0.7 + 0.25 * g) * float(nr.uniform(0.6, 1.3))
        elif ch == "condensed":
            val = base * (1.0 + 0.05 * f)
        else:  # fine
            val = base * (0.9 + 0.12 * f)
        # soft edge: the outermost pixel is lighter
        val = np.clip(val, 0.05, None) * np.clip(0.55 + 0.45 * d, 0.0, 1.0)
        Hn[by0:by1, bx0:bx1] += np.where(m, val, 0.0)
        cover[by0:by1, bx0:bx1] = np.maximum(cover[by0:by1, bx0:bx1], m)
    H = H * (1 - cover) + ndi.gaussian_filter(Hn, 0.9)
    E = E * (1 - 0.35 * cover)

    # Beer-Lambert ------------------------------------------------------------------------------------------------
    hv, ev = np.array(style.h_vector), np.array(style.e_vector)
    od = (_H_GAIN * style.h_scale * H[..., None] * hv + style.e_scale * E[..., None] * ev + 0.02)
    rgb = style.background * np.power(10.0, -od)
    for c in range(3):
        rgb[..., c] = ndi.gaussian_filter(rgb[..., c], blur_sigma)
    rgb += rng.normal(0, noise_sd, rgb.shape)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
