"""One seeded block for the baselines' trainings: torch's CPU generator seeded inside a fork (the caller's state
is left as it was). Not ``model.architecture.torch_seeded``, which would import torchvision."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield
