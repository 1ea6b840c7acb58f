"""Tissue detection on a slide thumbnail, and which prediction tiles hold tissue.

``otsu`` (the default): Otsu's threshold on the logarithm of the thumbnail's optical density summed over the
channels, smoothed (sigma 2 px): glass absorbs almost nothing, and on the log scale pale stroma sits with the
nuclei, not with the glass (on the linear scale Otsu splits nuclei from stroma); the threshold is clipped to
0.15-0.4, between glass and pale tissue, so a view without glass stays tissue. Then a closing, and holes and
components below ``min_area_um2`` removed (a lumen or a gap larger than that stays glass).
``histomicstk``: HistomicsTK's ``get_tissue_mask`` (its own thresholds on a deconvolved thumbnail), for users who
want the DSA's behaviour. Both return a boolean mask at the thumbnail's resolution.
"""

from __future__ import annotations

import numpy as np

__all__ = ["TISSUE_METHODS", "tissue_mask", "tile_tissue_fraction"]

TISSUE_METHODS = ("otsu", "histomicstk")


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, dtype=np.float64)[..., :3]
    return -np.log(np.clip(rgb, 1.0, 255.0) / 255.0).sum(axis=-1)


def tissue_mask(thumbnail: np.ndarray, *, method: str = "otsu", um_per_px: float | None = None,
                min_area_um2: float = 2_000.0) -> np.ndarray:
    """Boolean tissue mask of an RGB thumbnail.

    ``um_per_px`` (microns per thumbnail pixel) scales the speck removal (``min_area_um2``, default 2,000 um^2, a 45 um square);
    without it, components under 0.1 % of the thumbnail are removed.
    """
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_holes, remove_small_objects

    rgb = np.asarray(thumbnail)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an RGB thumbnail, not an array of shape {rgb.shape}")
    if method == "histomicstk":
        from histomicstk.saliency.tissue_detection import get_tissue_mask

        labeled, _ = get_tissue_mask(rgb[..., :3], deconvolve_first=False, n_thresholding_steps=1, sigma=1.5,
                                     min_size=10)
        mask = labeled > 0
    elif method == "otsu":
        od = ndi.gaussian_filter(_optical_density(rgb), 2.0)
        if float(od.max()) < 0.15:  # nothing absorbs: all glass
            return np.zeros(od.shape, bool)
        log_od = np.log(np.maximum(od, 1e-3))
        if float(log_od.max() - log_od.min()) < 1e-3:  # uniform and absorbing: all tissue
            return np.ones(od.shape, bool)
        # the threshold is kept between glass (optical density summed over RGB about 0.05-0.3) and pale tissue
        # (0.5 and up): without glass in the view Otsu would split the tissue itself
        mask = od > float(np.clip(np.exp(threshold_otsu(log_od)), 0.15, 0.4))
        mask = ndi.binary_closing(mask, iterations=2, border_value=0)
    else:
        raise ValueError(f"tissue method must be one of {', '.join(TISSUE_METHODS)}, not {method!r}")
    min_px = max(int((min_area_um2 / um_per_px ** 2) if um_per_px else 0.001 * mask.size) - 1, 0)
    mask = remove_small_holes(mask, max_size=min_px)  # glass inside tissue smaller than a speck is tissue
    return remove_small_objects(mask, max_size=min_px)


def tile_tissue_fraction(mask: np.ndarray, downsample: float, x: float, y: float, w: float, h: float) -> float:
    """Share of tissue in the level-0 window ``[x, x + w) x [y, y + h)``, read off a mask of ``downsample``."""
    H, W = mask.shape
    c0, r0 = int(np.floor(x / downsample)), int(np.floor(y / downsample))
    c1, r1 = int(np.ceil((x + w) / downsample)), int(np.ceil((y + h) / downsample))
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(max(c1, c0 + 1), W), min(max(r1, r0 + 1), H)
    if c1 <= c0 or r1 <= r0:
        return 0.0
    return float(mask[r0:r1, c0:c1].mean())
