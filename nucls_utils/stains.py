"""Stain measurements with HistomicsTK: hematoxylin and eosin densities of an RGB image."""

from __future__ import annotations

import functools

import numpy as np

__all__ = ["stain_matrix", "stain_densities"]


@functools.cache
def stain_matrix() -> np.ndarray:
    """HistomicsTK's reference stain vectors as columns: hematoxylin, eosin and null (RGB optical densities), (3, 3).

    A function, not a module constant, so that importing this module does not import HistomicsTK (read on first
    use, then cached; the array is read-only)."""
    from histomicstk.preprocessing.color_deconvolution import stain_color_map

    m = np.array([stain_color_map["hematoxylin"], stain_color_map["eosin"], stain_color_map["null"]]).T
    m.setflags(write=False)
    return m


def stain_densities(rgb: np.ndarray, background: float = 255.0) -> dict[str, float]:
    """Mean and 90th-percentile hematoxylin and eosin densities of an image.

    Colour deconvolution with :func:`stain_matrix` (``histomicstk...color_deconvolution``), then HistomicsTK's
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

    stains = color_deconvolution(np.asarray(rgb)[..., :3], stain_matrix(), background).StainsFloat
    sda = rgb_to_sda(stains, background)
    h, e = sda[..., 0], sda[..., 1]
    return {"h_mean": float(h.mean()), "e_mean": float(e.mean()), "h_p90": float(np.percentile(h, 90)),
            "e_p90": float(np.percentile(e, 90))}
