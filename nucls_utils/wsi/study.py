"""What notebook 09 runs: notebook 05's model on the phantom's synthetic slide, read against the slide's truth."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from .. import taxonomy as tx
from ..config import REPO_ROOT
from .export import count_grid, stromal_tils

__all__ = ["default_slide_path", "model_dir", "summary_table", "timing_table", "densest_window", "TIMED_STAGES"]

#: The stages of a prediction whose seconds :func:`timing_table` lists (``summary["run"]["seconds"]``).
TIMED_STAGES = (("open", "open the slide"), ("thumbnail", "read the thumbnail"), ("tissue", "find tissue"),
                ("stain estimate", "estimate the slide's stain vectors"),
                ("read", "read and resample tiles"), ("normalise", "normalise tiles (Macenko)"),
                ("model", "model forward passes"), ("write", "trace outlines, write tile files"),
                ("tiles_wall", "all tiles, wall clock"), ("merge", "merge: NMS and outputs"), ("total", "total"))


def default_slide_path(profile: str, seed: int = 0) -> Path:
    """Where the synthetic slide of a profile is cached: ``<repo>/data/synthetic/slides/<profile>_seed<seed>.tif``."""
    return REPO_ROOT / "data" / "synthetic" / "slides" / f"{profile}_seed{int(seed)}.tif"


def model_dir(results_dir: str | os.PathLike[str], dataset: str, experiment: str = "config3_fold1") -> Path:
    """Notebook 05's folder of one trained experiment."""
    return Path(results_dir) / dataset / "05_training" / "models" / experiment


def summary_table(summary: dict, truth: pd.DataFrame, grid: dict) -> pd.DataFrame:
    """Predicted vs true nuclei per main class and super-class, and the stromal TIL density of each, both with the
    prediction's tissue grid and :data:`~nucls_utils.wsi.export.STROMA_RULE` (``grid``: ``density_grid.npz``)."""
    rows = []
    pred_main = summary["nuclei_by_class"]
    true_main = truth["main_class"].value_counts()
    for c in tx.MAIN_CLASSES:
        rows.append({"level": "main", "class": c, "predicted": int(pred_main.get(c, 0)),
                     "truth": int(true_main.get(c, 0))})
    pred_super = summary["nuclei_by_super_class"]
    true_super = truth["super_class"].value_counts()
    for c in tx.SUPER_CLASSES:
        rows.append({"level": "super", "class": c, "predicted": int(pred_super.get(c, 0)),
                     "truth": int(true_super.get(c, 0))})
    rows.append({"level": "all", "class": "all nuclei", "predicted": int(summary["nuclei"]), "truth": len(truth)})
    tissue = np.asarray(grid["tissue"])
    grid_um = float(grid["grid_um"])
    classes = list(tx.MAIN_CLASSES)
    counts = count_grid(truth["x"].to_numpy(), truth["y"].to_numpy(), truth["main_class"].tolist(), classes,
                        grid_um / summary["mpp"], tissue.shape)
    til = stromal_tils(counts, classes, tissue, grid_um)
    rows.append({"level": "sTIL density", "class": "sTILs per mm^2 of stroma",
                 "predicted": summary["stil_density_per_mm2_stroma"],
                 "truth": round(til["stil_density_per_mm2_stroma"], 2) if til["stroma_mm2"] > 0 else None})
    rows.append({"level": "sTIL density", "class": "stroma, mm^2", "predicted": summary["stroma_mm2"],
                 "truth": round(til["stroma_mm2"], 6)})
    out = pd.DataFrame(rows)
    with np.errstate(divide="ignore", invalid="ignore"):
        p, t = pd.to_numeric(out["predicted"]), pd.to_numeric(out["truth"])
        out["predicted / truth"] = (p / t).where(t > 0).round(3)
    return out


def timing_table(summary: dict) -> pd.DataFrame:
    """Seconds per stage of a prediction (``summary["run"]``)."""
    secs = summary["run"]["seconds"]
    return pd.DataFrame([{"stage": label, "seconds": round(float(secs[k]), 2)} for k, label in TIMED_STAGES
                         if k in secs])


def densest_window(nuclei: pd.DataFrame, side_px: float, width: int, height: int) -> tuple[int, int]:
    """Top-left corner (level-0 px) of the ``side_px`` square window, on a grid of half its side, holding the most
    nuclei: the region the overlay figure shows at full resolution."""
    if not len(nuclei):
        return 0, 0
    step = side_px / 2
    gx = (nuclei["x"].to_numpy() // step).astype(int)
    gy = (nuclei["y"].to_numpy() // step).astype(int)
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays([gy, gx])).groupby(level=[0, 1]).sum()
    best, best_n = (0, 0), -1
    for (y, x) in counts.index:  # a window of 2 x 2 cells starting at each occupied cell
        n = sum(int(counts.get((y + dy, x + dx), 0)) for dy in (0, 1) for dx in (0, 1))
        if n > best_n:
            best, best_n = (x, y), n
    x0 = int(min(best[0] * step, max(width - side_px, 0)))
    y0 = int(min(best[1] * step, max(height - side_px, 0)))
    return x0, y0
