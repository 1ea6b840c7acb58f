"""Suggestions for a whole dataset, with progress bars (used by notebook 02)."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tqdm.auto import tqdm

from ..io.dataset import FovRecord, Nucleus
from .heuristic import HeuristicParams, bootstrap_suggestions
from .refine import RefinerConfig, build_refiner, refine_fov, train_refiner

__all__ = ["bootstrap_dataset", "refine_dataset"]


def bootstrap_dataset(records: Sequence[FovRecord], synthetic_root: str | os.PathLike[str] | None = None,
                      params: HeuristicParams | None = None, progress: bool = True) -> list[list[Nucleus]]:
    """Bootstrapped suggestions of every FOV. With ``synthetic_root`` the phantom's tissue-region maps drive the
    per-region segmentation and classes; without it (real data has no region maps here) each FOV is one region."""
    from ..phantom import REGION_NAMES, fov_region_map

    params = params or HeuristicParams()
    out = []
    for r in tqdm(records, desc="bootstrap suggestions", disable=not progress):
        regions = fov_region_map(synthetic_root, r.name) if synthetic_root is not None else None
        out.append(bootstrap_suggestions(r.read_rgb(), regions, REGION_NAMES if regions is not None else None,
                                         params))
    return out


def refine_dataset(records: Sequence[FovRecord], bootstrap: Sequence[Sequence[Nucleus]], config: RefinerConfig,
                   seed: int = 0, progress: bool = True):
    """Train the refinement model on the bootstrap of ``records`` and apply it to every FOV.

    Returns ``(refined, confidences, history, model)``.
    """
    model = build_refiner(channels=config.channels)
    images = [r.read_rgb() for r in records]
    history = train_refiner(model, images, bootstrap, config, seed=seed, progress=progress)
    refined, confidences = [], []
    for im in tqdm(images, desc="refined suggestions", disable=not progress):
        n, c = refine_fov(model, im, config.score_threshold, config.nms_iou)
        refined.append(n)
        confidences.append(c)
    return refined, confidences, history, model
