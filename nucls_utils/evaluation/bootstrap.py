"""Percentile bootstrap of a statistic over jointly resampled rows."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["BootstrapCI", "bootstrap_ci"]


@dataclass(frozen=True)
class BootstrapCI:
    """Median and percentile interval of a bootstrapped statistic; ``values`` holds every resample's value."""

    median: float
    low: float
    high: float
    values: np.ndarray

    def __iter__(self):
        return iter((self.median, self.low, self.high))


def bootstrap_ci(
    fn: Callable[..., float], *arrays, n: int = 1000, rng: np.random.Generator, ci: tuple[float, float] = (5, 95)
) -> BootstrapCI:
    """Percentile bootstrap of ``fn(*arrays)`` over the rows (axis 0) of the arrays, resampled jointly.

    Parameters
    ----------
    fn : callable taking the resampled arrays and returning a float (NaN allowed, e.g. a one-class resample).
    *arrays : array-likes (numpy arrays, or pandas objects resampled with ``.iloc``) of one common length N.
    n : number of resamples.
    rng : numpy Generator (the only source of randomness).
    ci : lower and upper percentiles of the interval (the reference reports 5-95).

    Returns
    -------
    BootstrapCI(median, low, high, values) — median and percentiles ignore NaN resamples (all NaN -> NaN).
    """
    if not arrays:
        raise ValueError("bootstrap_ci needs at least one array")
    lengths = {len(a) for a in arrays}
    if len(lengths) != 1:
        raise ValueError(f"arrays differ in length: {sorted(lengths)}")
    size = lengths.pop()

    def take(a, idx):
        return a.iloc[idx] if hasattr(a, "iloc") else np.asarray(a)[idx]

    values = np.empty(n)
    for b in range(n):
        idx = rng.integers(0, size, size)
        values[b] = fn(*(take(a, idx) for a in arrays))
    ok = values[~np.isnan(values)]
    if ok.size == 0:
        return BootstrapCI(float("nan"), float("nan"), float("nan"), values)
    lo, hi = np.percentile(ok, ci)
    return BootstrapCI(float(np.median(ok)), float(lo), float(hi), values)
