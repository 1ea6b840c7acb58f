"""Timing helper shared by the benchmarks (they run as scripts, so this folder is on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_of(fn: Callable[[], object], repeats: int = 5) -> float:
    """Shortest wall time (seconds) of ``repeats`` calls of ``fn``: the least disturbed by other work."""
    times = []
    for _ in range(max(repeats, 1)):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)
