"""A whole-slide prediction against a slide's exact truth (the phantom's synthetic slide; notebook 09).

Detection and classification go through the study's one Table-1 scorer
(:func:`nucls_utils.evaluation.evaluate_model`) with the slide cut into square blocks of ``block_um`` (each block is
one "image" holding the truth and the predictions whose box centre lies in it): COCO AP@.5 with AMBIGUOUS truth
ignored, and the classes of the Hungarian-matched pairs at the main and super levels. A nucleus and its detection
whose centres fall on opposite sides of a block edge count as a miss and a false positive; with 100-micron blocks
and centres that agree to a pixel, that is well under 1 % of the nuclei. The slide summary's numbers (nuclei per
class, the stromal TIL density) are recomputed from the truth with the same grid and stroma rule, so the two can be
read side by side.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from .. import taxonomy as tx

__all__ = ["score_slide", "truth_counts"]


def _blocks(x: np.ndarray, y: np.ndarray, block_px: float, n_cols: int) -> np.ndarray:
    return (np.asarray(y) // block_px).astype(int) * n_cols + (np.asarray(x) // block_px).astype(int)


def score_slide(pred: pd.DataFrame, truth: pd.DataFrame, mpp: float, width: int, height: int,
                block_um: float = 100.0) -> dict:
    """Detection AP@.5 and class scores of a slide's ``nuclei.parquet`` table against its truth table.

    Returns the :func:`~nucls_utils.evaluation.evaluate_model` fields that make sense without masks (``det_n``,
    ``n_pred``, ``ap50``, ``map``, ``cls_n``, ``main_accuracy``, ``main_mcc``, ``super_accuracy``, ``super_mcc``)
    and ``blocks``.
    """
    from ..evaluation import ImagePrediction, ImageTruth, evaluate_model

    block_px = block_um / mpp
    n_cols, n_rows = math.ceil(width / block_px), math.ceil(height / block_px)
    tb = _blocks((truth["xmin"] + truth["xmax"]) / 2, (truth["ymin"] + truth["ymax"]) / 2, block_px, n_cols)
    pb = _blocks((pred["xmin"] + pred["xmax"]) / 2, (pred["ymin"] + pred["ymax"]) / 2, block_px, n_cols)
    prob_cols = [c for c in pred.columns if c.startswith("prob_")]
    classes = tuple(c.removeprefix("prob_") for c in prob_cols)
    box = ["xmin", "ymin", "xmax", "ymax"]
    truths, preds = [], []
    t_groups = {k: g for k, g in truth.groupby(tb)}
    p_groups = {k: g for k, g in pred.groupby(pb)}
    for b in sorted(set(t_groups) | set(p_groups)):
        t = t_groups.get(b, truth.iloc[:0])
        p = p_groups.get(b, pred.iloc[:0])
        truths.append(ImageTruth(t[box].to_numpy(float), t["main_class"].tolist()))
        preds.append(ImagePrediction(p[box].to_numpy(float), p["objectness"].to_numpy(float),
                                     p[prob_cols].to_numpy(float), classes))
    res = evaluate_model(truths, preds)
    keep = ("det_n", "n_pred", "ap50", "map", "cls_n", "main_accuracy", "main_mcc", "super_accuracy", "super_mcc")
    return {**{k: res[k] for k in keep}, "blocks": len(truths), "block_um": block_um,
            "blocks_possible": n_cols * n_rows}


def truth_counts(truth: pd.DataFrame) -> pd.Series:
    """Truth nuclei per main class (AMBIGUOUS included), in the taxonomy's order."""
    return truth["main_class"].value_counts().reindex(list(tx.MAIN_CLASSES), fill_value=0)
