"""Stain measurements with HistomicsTK: hematoxylin and eosin densities of an RGB image."""

from __future__ import annotations

import numpy as np

__all__ = ["STAIN_MATRIX", "stain_densities"]


def _stain_matrix() -> np.ndarray:
    from histomicstk.preprocessing.color_deconvolution import stain_color_map

    return np.array([stain_color_map["hematoxylin"], stain_color_map["eosin"], stain_color_map["null"]]).T


#: Columns: HistomicsTK's reference hematoxylin, eosin and null stain vectors (RGB optical densities).
STAIN_MATRIX = _stain_matrix()


def stain_densities(rgb: np.ndarray, background: float = 255.0) -> dict[str, float]:
    """Mean and 90th-percentile hematoxylin and eosin densities of an image.

    Colour deconvolution with :data:`STAIN_MATRIX` (``histomicstk...color_deconvolution``), then HistomicsTK's
    stain-darkness units (``rgb_to_sda``: 0 = no stain; proportional to optical density).

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
    background : float
        Intensity of unstained glass.

    Returns
    -------
    dict with ``h_mean``, ``e_mean``, ``h_p90``, ``e_p90``.
    """
    from histomicstk.preprocessing.color_conversion import rgb_to_sda
    from histomicstk.preprocessing.color_deconvolution import color_deconvolution

    stains = color_deconvolution(np.asarray(rgb)[..., :3], STAIN_MATRIX, background).StainsFloat
    sda = rgb_to_sda(stains, background)
    h, e = sda[..., 0], sda[..., 1]
    return {"h_mean": float(h.mean()), "e_mean": float(e.mean()), "h_p90": float(np.percentile(h, 90)),
            "e_p90": float(np.percentile(e, 90))}
