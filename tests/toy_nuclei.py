"""Planted toy nuclei for the baselines' tests: dark purple disks on a noisy pink background, with their mask."""

from __future__ import annotations

import numpy as np


def planted_disks(rng: np.random.Generator, n: int, size: int, radius: tuple[float, float], margin: int
                  ) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image (``size`` x ``size``, uint8) with ``n`` disks of radius drawn from ``radius``, centres at least
    ``margin`` px from the edge (disks may overlap), and the boolean mask of the disks."""
    img = np.empty((size, size, 3))
    img[:] = (235, 200, 215)
    img += rng.normal(0, 8, img.shape)
    yy, xx = np.mgrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(n):
        cy, cx = rng.integers(margin, size - margin, 2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.uniform(*radius) ** 2
    img[mask] = (110, 60, 150) + rng.normal(0, 12, (int(mask.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), mask
