"""The NP-redundancy simulation of notebook 04 (Fig 3e): inputs, holding the total constant, summaries, plateau."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ... import taxonomy as tx
from ..accuracy import is_real
from ..anchors import NOT_ANNOTATED
from ..redundancy import restrict_to_dense_fovs
from .generator import _gen_labels
from .truth import TruthTables, _not_ambiguous, group_labels, truth_series

__all__ = [
    "hold_total_constant", "plateau_k", "redundancy_findings", "redundancy_inputs", "summarize_redundancy",
]


def redundancy_inputs(tt: TruthTables, evalset: str = "E", level: str = "super", min_nps: int = 16,
                      truth_source: str = "ptruth") -> tuple[pd.DataFrame, pd.Series, pd.Series, dict]:
    """Inputs of :func:`~nucls_utils.interrater.redundancy.simulate_redundancy` (notes 2d).

    NP labels of the set grouped to ``level``; the anchors whose P-truth is AMBIGUOUS are left out; only FOVs
    annotated by at least ``min_nps`` NPs (and the NPs who annotated one of them) are kept. When no FOV reaches
    ``min_nps`` (a small simulated study), the threshold falls back to the largest number of NPs any FOV had,
    and the returned info says so.

    ``truth_source``: ``'ptruth'`` (the EM P-truth, the paper's reference) or ``'generator'`` (the synthetic
    cohort's true classes; anchors on no true nucleus are not real).

    Returns
    -------
    labels (anchors x NPs), fov_of_anchor, truth (anchor -> label, NaN/``undetected`` = not a nucleus), info dict
    (min_nps_requested, min_nps_used, n_fovs, n_nps, n_anchors, n_real).
    """
    t = tt.truth[evalset]
    keep = _not_ambiguous(t, level)
    if truth_source == "ptruth":
        truth = truth_series(t, "Ps", level).loc[keep]
    elif truth_source == "generator":
        g = _gen_labels(t.loc[keep], level)
        keep = keep[(g != tx.AMBIGUOUS).to_numpy()]
        truth = g.loc[keep]
    else:
        raise ValueError(f"truth_source must be 'ptruth' or 'generator', not {truth_source!r}")
    labels = group_labels(tt.labels[evalset].loc[keep, tt.members("NPs")], level)
    fov = t.loc[keep, "fovname"]
    saw = ((labels != NOT_ANNOTATED) & labels.notna()).groupby(fov.to_numpy()).any().sum(axis=1)
    used = min(int(min_nps), int(saw.max()) if len(saw) else 0)
    sub, sub_fov = restrict_to_dense_fovs(labels, fov, min_nps=used)
    truth = truth.reindex(sub.index)
    info = {"min_nps_requested": int(min_nps), "min_nps_used": used, "n_fovs": int(sub_fov.nunique()),
            "n_nps": int(sub.shape[1]), "n_anchors": int(len(sub)), "n_real": int(is_real(truth).sum()),
            "truth_source": truth_source, "level": level, "evalset": evalset}
    return sub, sub_fov, truth, info


def hold_total_constant(sim: pd.DataFrame, target: int | None = None) -> tuple[pd.DataFrame, int]:
    """Realisations whose total number of distinct NPs equals ``target`` (the paper kept 18; notes 2d).

    The paper's value is a property of its roster; for a simulated roster ``target=None`` picks the most common
    ``n_unique_NPs`` over all realisations (ties to the larger value). Values of k whose realisations never reach
    it are absent from the result (with few dense FOVs, small k cannot cover the roster).
    """
    if target is None:
        counts = sim["n_unique_NPs"].value_counts()
        target = int(counts[counts == counts.max()].index.max())
    return sim[sim["n_unique_NPs"] == target].reset_index(drop=True), int(target)


def summarize_redundancy(sim: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Per k and metric: median, quartiles, mean and number of realisations (the Fig 3e table)."""
    if metrics is None:
        metrics = ["det_f1", "mcc_pooled_ovr", "auroc_micro", "auroc_macro"] + sorted(
            c for c in sim.columns if c.startswith("auroc_") and c not in ("auroc_micro", "auroc_macro"))
    long = sim.melt(id_vars=["k"], value_vars=list(metrics), var_name="metric")
    g = long.groupby(["metric", "k"])["value"]
    out = pd.DataFrame({"median": g.median(), "q25": g.quantile(0.25), "q75": g.quantile(0.75), "mean": g.mean(),
                        "n": g.count()}).reset_index()
    order = {m: i for i, m in enumerate(metrics)}
    return out.sort_values(["metric", "k"], key=lambda c: c.map(order) if c.name == "metric" else c,
                           kind="stable").reset_index(drop=True)


def plateau_k(summary: pd.DataFrame, metric: str, frac: float = 0.95) -> float:
    """Smallest k at which the median of ``metric`` gets within ``frac`` of its total gain (from the smallest k to
    the best median): where "diminishing returns" begin. NaN when the metric is absent or flat."""
    sub = summary[summary["metric"] == metric].dropna(subset=["median"]).sort_values("k")
    if sub.empty:
        return float("nan")
    med = sub["median"].to_numpy()
    gain = med.max() - med[0]
    if not np.isfinite(gain) or gain <= 0:
        return float(sub["k"].iloc[0])
    reached = np.flatnonzero(med >= med[0] + frac * gain)
    return float(sub["k"].to_numpy()[reached[0]])


def redundancy_findings(summary: pd.DataFrame, frac: float = 0.95) -> pd.DataFrame:
    """The paper's two readings of Fig 3e, measured: where each metric plateaus (paper: about 6 NPs per FOV) and
    whether stromal nuclei need more NPs than tumor nuclei and sTILs (per-class AUROC plateaus).

    Returns metric, plateau_k, median_at_smallest_k, median_at_plateau, best_median.
    """
    rows = []
    for m in summary["metric"].unique():
        sub = summary[summary["metric"] == m].sort_values("k")
        k = plateau_k(summary, m, frac)
        at = sub.loc[sub["k"] == k, "median"]
        rows.append({"metric": m, "plateau_k": k, "median_at_smallest_k": sub["median"].iloc[0],
                     "median_at_plateau": float(at.iloc[0]) if len(at) else np.nan,
                     "best_median": sub["median"].max()})
    return pd.DataFrame(rows)
