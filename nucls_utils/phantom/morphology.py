"""Class-specific nucleus morphology of the phantom: shape (outline) and appearance (chromatin, cytoplasm).

Sizes are set in pixels at 0.2 microns per pixel so that the tight bounding boxes of the outlines reproduce the
real per-class box medians and spreads (:mod:`.calibration`). Outlines are star-shaped polygons: an ellipse whose
radius is modulated by low-order harmonics (pleomorphism), lobes (neutrophils, eosinophils), an indentation (bean
-shaped macrophages), tapering (spindles) or a bend (endothelium along a vessel wall), then rotated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from .calibration import CLASS_BOX_STATS

__all__ = ["NucleusKind", "KINDS", "sample_outline", "box_equivalent_size"]


@dataclass(frozen=True)
class NucleusKind:
    """Morphology and appearance of one raw class.

    Attributes
    ----------
    size_px : float
        Median of ``sqrt((major^2 + minor^2) / 2)``, the box side of the outline at 45 degrees, in pixels.
    size_log_sd : float
        Log-normal spread of that size.
    aspect : (float, float)
        Range of minor/major axis ratio.
    irregularity : float
        Amplitude of random radial harmonics (0 = smooth ellipse).
    lobes : int
        Number of lobes (0 = none).
    lobe_depth : float
    bean : float
        Depth of a one-sided indentation (kidney/bean shape).
    taper : float
        0 = ellipse; 1 = pointed (spindle) ends.
    bend : float
        Curvature of the long axis (endothelium on a vessel wall).
    hema : float
        Mean hematoxylin concentration (optical density units) of the nucleus.
    chromatin : str
        Texture: 'dense', 'vesicular', 'clockface', 'clumped', 'fine', 'pale', 'smudged', 'condensed'.
    nucleoli : int
        Maximum number of nucleoli.
    cytoplasm : float
        Cytoplasm radius as a multiple of the nucleus radius (0 = none drawn).
    cytoplasm_eosin : float
        Eosin concentration of that cytoplasm.
    cytoplasm_hema : float
        Hematoxylin of that cytoplasm (the basophilic, RNA-rich cytoplasm of plasma cells; a little for macrophages).
    tail : float
        Length of the tapering cytoplasmic processes of a spindle cell, as a multiple of its half-length (0 = none).
    tail_hema : float
        Hematoxylin of those processes at their base is ``tail_hema`` times 0.25-0.55.
    eccentric : float
        Offset of the nucleus within its cytoplasm (fraction of the cytoplasm radius).
    halo : bool
        Pale perinuclear halo (plasma cells).
    """

    name: str
    size_px: float
    size_log_sd: float
    aspect: tuple[float, float]
    irregularity: float = 0.03
    lobes: int = 0
    lobe_depth: float = 0.0
    bean: float = 0.0
    taper: float = 0.0
    bend: float = 0.0
    hema: float = 0.6
    chromatin: str = "fine"
    nucleoli: int = 0
    cytoplasm: float = 0.0
    cytoplasm_eosin: float = 0.0
    cytoplasm_hema: float = 0.0
    tail: float = 0.0
    tail_hema: float = 0.0
    eccentric: float = 0.0
    halo: bool = False


def _size(cls: str, factor: float = 1.0) -> float:
    s = CLASS_BOX_STATS[cls]
    return factor * (s.width_median + s.height_median) / 2.0


def _sd(cls: str, factor: float = 1.0) -> float:
    s = CLASS_BOX_STATS[cls]
    return factor * (s.log_width_sd + s.log_height_sd) / 2.0


# ``size_px`` is the box side at 45 degrees; for elongated nuclei the box of a randomly oriented outline has a median
# close to it. The factors below were tuned by Monte Carlo (tests/test_phantom_calibration.py checks the outcome).
KINDS: dict[str, NucleusKind] = {
    "tumor": NucleusKind("tumor", _size("tumor", 1.0), _sd("tumor", 0.92), (0.55, 0.95), irregularity=0.14,
                         hema=0.6, chromatin="vesicular", nucleoli=2, cytoplasm=1.7, cytoplasm_eosin=0.32),
    "mitotic_figure": NucleusKind("mitotic_figure", _size("mitotic_figure", 0.95), _sd("mitotic_figure", 0.75),
                                  (0.45, 0.9), irregularity=0.22, hema=1.25, chromatin="clumped",
                                  cytoplasm=1.6, cytoplasm_eosin=0.28),
    "fibroblast": NucleusKind("fibroblast", _size("fibroblast", 1.1), _sd("fibroblast", 0.55), (0.33, 0.65),
                              irregularity=0.1, taper=0.8, bend=0.08, hema=0.66, chromatin="fine", tail=2.5,
                              tail_hema=0.55),
    "vascular_endothelium": NucleusKind("vascular_endothelium", _size("vascular_endothelium", 1.1),
                                        _sd("vascular_endothelium", 0.6), (0.25, 0.42), irregularity=0.03,
                                        taper=0.6, bend=0.25, hema=0.7, chromatin="fine", tail=1.5,
                                        tail_hema=0.7),
    "lymphocyte": NucleusKind("lymphocyte", _size("lymphocyte", 1.02), _sd("lymphocyte", 0.97), (0.72, 1.0),
                              irregularity=0.07, hema=0.8, chromatin="dense", cytoplasm=1.15,
                              cytoplasm_eosin=0.08),
    "plasma_cell": NucleusKind("plasma_cell", _size("plasma_cell", 1.0), _sd("plasma_cell", 0.97), (0.65, 0.92),
                               irregularity=0.09, hema=0.85, chromatin="clockface", cytoplasm=1.9,
                               cytoplasm_eosin=0.3, cytoplasm_hema=0.22, eccentric=0.4, halo=True),
    "macrophage": NucleusKind("macrophage", _size("macrophage", 1.06), _sd("macrophage", 0.9), (0.55, 0.8),
                              irregularity=0.06, bean=0.28, hema=0.5, chromatin="pale", cytoplasm=1.8,
                              cytoplasm_eosin=0.13, cytoplasm_hema=0.13),
    "neutrophil": NucleusKind("neutrophil", _size("neutrophil", 0.98), _sd("neutrophil", 0.9), (0.75, 0.95),
                              irregularity=0.03, lobes=3, lobe_depth=0.38, hema=1.0, chromatin="dense",
                              cytoplasm=1.5, cytoplasm_eosin=0.18),
    "eosinophil": NucleusKind("eosinophil", _size("eosinophil", 0.95), 0.15, (0.7, 0.9), irregularity=0.03,
                              lobes=2, lobe_depth=0.35, hema=0.95, chromatin="dense", cytoplasm=1.6,
                              cytoplasm_eosin=0.9),
    "apoptotic_body": NucleusKind("apoptotic_body", _size("apoptotic_body", 1.0), _sd("apoptotic_body", 0.95),
                                  (0.8, 1.0), irregularity=0.07, hema=1.35, chromatin="condensed", cytoplasm=1.5,
                                  cytoplasm_eosin=0.55, halo=True),
    "myoepithelium": NucleusKind("myoepithelium", _size("myoepithelium", 1.1), _sd("myoepithelium", 0.6),
                                 (0.28, 0.48), irregularity=0.03, taper=0.5, bend=0.15, hema=0.8, chromatin="fine"),
    "ductal_epithelium": NucleusKind("ductal_epithelium", _size("ductal_epithelium", 1.04),
                                     _sd("ductal_epithelium", 0.95), (0.7, 0.92), irregularity=0.03, hema=0.7,
                                     chromatin="fine", cytoplasm=1.6, cytoplasm_eosin=0.3),
    "unlabeled": NucleusKind("unlabeled", _size("unlabeled", 0.99), _sd("unlabeled", 0.88), (0.45, 0.95),
                             irregularity=0.2, hema=0.6, chromatin="smudged"),
}


def box_equivalent_size(major: float, minor: float) -> float:
    """Box side of an ellipse with full axes ``major``, ``minor`` rotated by 45 degrees."""
    return float(np.sqrt((major**2 + minor**2) / 2.0))


def sample_outline(kind: NucleusKind, rng: np.random.Generator, angle: float | None = None,
                   n_vertices: int = 32) -> tuple[np.ndarray, np.ndarray, dict]:
    """One nucleus outline around the origin.

    Parameters
    ----------
    kind : NucleusKind
    rng : numpy.random.Generator
    angle : float, optional
        Orientation of the long axis in radians; random when ``None``.
    n_vertices : int

    Returns
    -------
    xs, ys : (n_vertices,) float ndarrays
        Vertices in pixels relative to the nucleus centre (counter-clockwise).
    info : dict
        ``major``, ``minor`` (full axes, px), ``angle`` and ``radius`` (half of the box-equivalent size).
    """
    size = kind.size_px * float(np.exp(rng.normal(0.0, kind.size_log_sd)))
    rho = float(rng.uniform(*kind.aspect))
    major = size * np.sqrt(2.0 / (1.0 + rho**2))
    minor = rho * major
    if angle is None:
        angle = float(rng.uniform(0, np.pi))
    t = np.linspace(0.0, 2 * np.pi, n_vertices, endpoint=False)
    r = np.ones_like(t)
    for k in (2, 3, 4, 5):
        r += kind.irregularity / (k - 1) * rng.normal() * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    # fine roughness of the membrane (higher harmonics)
    r += ndi.gaussian_filter1d(rng.normal(0, 0.35 * kind.irregularity + 0.01, n_vertices), 1.2, mode="wrap")
    if kind.lobes:
        r += kind.lobe_depth * 0.5 * np.cos(kind.lobes * t + rng.uniform(0, 2 * np.pi))
    if kind.bean:
        side = rng.uniform(0, 2 * np.pi)
        d = np.angle(np.exp(1j * (t - side)))
        r -= kind.bean * np.exp(-(d**2) / 0.25)
    r = np.clip(r, 0.35, None)
    x = 0.5 * major * r * np.cos(t)
    y = 0.5 * minor * r * np.sin(t)
    if kind.taper:
        # narrow the ends of the long axis: a spindle
        y *= (1 - kind.taper) + kind.taper * np.sqrt(np.clip(1 - (x / (0.5 * major)) ** 2, 0, 1))
    if kind.bend:
        y += kind.bend * rng.choice([-1.0, 1.0]) * (x**2) / (0.5 * major)
    c, s = np.cos(angle), np.sin(angle)
    xs, ys = c * x - s * y, s * x + c * y
    return xs, ys, {"major": major, "minor": minor, "angle": angle, "radius": 0.5 * size}
