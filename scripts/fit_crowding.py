"""Fit how crowded the phantom's nuclei are to the real core set (a calibration of the generator, not a result).

The target is :data:`nucls_utils.phantom.calibration.NEIGHBOUR_OVERLAP_SHARE`: the share of annotated boxes that
overlap another box of the same FOV by more than IOU 0.1 / 0.2 / 0.3 / 0.4. Two knobs move it: one factor on every
region's overlap chance (a candidate kept regardless of spacing) and one step added to every spacing below 1 (the
minimum centre distance as a multiple of the two radii). Each grid point lays out ROIs of 1024 px with a seed of its
own (never the study's 0) and scores the squared log ratios of the four shares to the real ones; the best points of
a coarse pass (30 layouts) are scored again on 150. The factors are relative to the region parameters in
``nucls_utils/phantom/layout.py`` as they stand, so run it before changing them, or read the result as a step.

    python scripts/fit_crowding.py            # a few minutes on one core
"""
from __future__ import annotations

import argparse
from dataclasses import replace

import numpy as np
import pandas as pd

from nucls_utils.phantom import calibration
from nucls_utils.phantom import layout as L


def crowding(factor: float, step: float, n_roi: int, seed: int) -> tuple[dict, int]:
    """Neighbour-overlap shares and nucleus count of ``n_roi`` layouts with the region parameters changed."""
    base = dict(L.REGION_PARAMS)
    try:
        L.REGION_PARAMS.update({k: replace(p, overlap_prob=p.overlap_prob * factor,
                                           spacing=p.spacing + (step if p.spacing < 1 else 0.0))
                                for k, p in base.items()})
        rng = np.random.default_rng(seed)
        rows = []
        for i in range(n_roi):
            for n in L.make_roi(rng, 1024).nuclei:
                rows.append((i, n.xs.min(), n.ys.min(), n.xs.max(), n.ys.max()))
    finally:
        L.REGION_PARAMS.clear()
        L.REGION_PARAMS.update(base)
    frame = pd.DataFrame(rows, columns=["fovname", "xmin", "ymin", "xmax", "ymax"])
    return calibration.neighbour_overlap_share(frame), len(frame)


def cost(share: dict) -> float:
    real = calibration.NEIGHBOUR_OVERLAP_SHARE
    return float(sum(np.log(max(share[t], 1e-4) / real[t]) ** 2 for t in real))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=101)
    ap.add_argument("--coarse", type=int, default=30, help="layouts per grid point, first pass")
    ap.add_argument("--fine", type=int, default=150, help="layouts per point, second pass")
    args = ap.parse_args()
    if args.seed == 0:
        ap.error("--seed 0 is the study's cohort: fit on layouts of their own")
    print("real:", calibration.NEIGHBOUR_OVERLAP_SHARE)
    coarse = []
    for factor in (0.05, 0.1, 0.15, 0.2, 0.3):
        for step in (0.05, 0.08, 0.1, 0.12):
            share, n = crowding(factor, step, args.coarse, args.seed)
            coarse.append((cost(share), factor, step))
            print(f"coarse factor {factor:<5} step {step:<5} nuclei {n:6d} shares {share} cost {cost(share):.3f}",
                  flush=True)
    for _c, factor, step in [(None, 1.0, 0.0)] + sorted(coarse)[:4]:
        share, n = crowding(factor, step, args.fine, args.seed)
        print(f"fine   factor {factor:<5} step {step:<5} nuclei {n:6d} shares {share} cost {cost(share):.3f}",
              flush=True)


if __name__ == "__main__":
    main()
