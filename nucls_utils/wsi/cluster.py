"""Dask clusters for the slides' tiles and the study's trainings.

:func:`dask_client` yields a ``distributed.Client``: to an existing scheduler (``scheduler="tcp://host:8786"``, as
HistomicsTK's command-line tools take one), or to a local cluster of ``workers`` processes started for the block and
closed after it. Each local worker runs one task at a time (one Dask thread) and gives torch ``threads`` threads, so
``workers x threads`` is the machine's core budget (``bench/bench_wsi.py`` compares 1 x 2 with 2 x 1).

Workers must see the same files as the client (slide, model directory, output folder): on one machine they do; on a
cluster, use a shared filesystem. Results are written by the workers to the output folder; the client only gathers
each task's counts.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

__all__ = ["dask_client", "default_threads"]


def default_threads(workers: int) -> int:
    """Torch threads per worker that fill this machine's cores: ``max(1, cores // workers)``."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(workers, 1))


@contextlib.contextmanager
def dask_client(*, workers: int = 1, scheduler: str | None = None, threads: int | None = None,
                resources: dict | None = None) -> Iterator:
    """A ``distributed.Client`` for the block (see the module docstring).

    ``resources`` (local cluster only): worker resources, e.g. ``{"GPU": 1}``, for tasks submitted with
    ``resources=``; an existing cluster declares its own (``dask worker --resources GPU=1``).
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler, timeout="30s")
        try:
            yield client
        finally:
            client.close()
            _collect_closed_sockets()
        return
    if workers < 1:
        raise ValueError(f"a local cluster needs at least one worker, not {workers}")
    env = {"OMP_NUM_THREADS": str(threads or default_threads(workers)), "MKL_NUM_THREADS": "1"}
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR, resources=resources, env=env)
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
        _collect_closed_sockets()


def _collect_closed_sockets() -> None:
    """Collect the comms of a closed client or cluster now, quietly: left to the garbage collector, their sockets
    warn (ResourceWarning) wherever the collection happens to run, in the caller's code."""
    import gc
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
