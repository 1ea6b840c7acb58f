"""Agreement among participants: Krippendorff's alpha, Cohen's kappa (inter- and intra-rater), MDS of the kappa
distances, and Fleiss' agreement bands (paper Figs 3d, 4d, 5a,c,d; notes section 2c).

Inputs are *wide label frames*: one row per anchor (index = anchor id), one column per participant alias, string
values. Besides class names a cell may hold

* ``'undetected'`` (:data:`UNDETECTED`): the participant annotated the FOV but not this nucleus — a real answer;
* ``'DidNotAnnotateFOV'`` (:data:`NOT_ANNOTATED`) or NaN: the participant never saw the FOV — missing data, which
  never counts in any statistic.

Two *modes* decide what ``'undetected'`` means:

* ``'detection_and_classification'``: ``'undetected'`` is one more category;
* ``'classification'``: ``'undetected'`` is missing too, so only the class given to nuclei both raters saw counts.

Class grouping (raw -> main -> super) and the removal of AMBIGUOUS anchors are the caller's job
(:func:`nucls_utils.taxonomy.map_classes`); these functions take the labels as they are.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score

__all__ = [
    "UNDETECTED",
    "NOT_ANNOTATED",
    "MODES",
    "FLEISS_BANDS",
    "usable_mask",
    "reliability_matrix",
    "krippendorff_alpha",
    "n_detections",
    "alpha_by_min_detections",
    "cohen_kappa",
    "pair_group",
    "pairwise_kappa",
    "self_agreement",
    "kappa_matrix",
    "mds_of_kappa",
    "agreement_band",
]

UNDETECTED = "undetected"
NOT_ANNOTATED = "DidNotAnnotateFOV"
MODES = ("classification", "detection_and_classification")

#: Fleiss' descriptive bands of kappa: (name, lower bound inclusive, upper bound exclusive); 1.0 is near-perfect.
FLEISS_BANDS: tuple[tuple[str, float, float], ...] = (
    ("poor", -np.inf, 0.0),
    ("slight", 0.0, 0.2),
    ("fair", 0.2, 0.4),
    ("moderate", 0.4, 0.6),
    ("substantial", 0.6, 0.8),
    ("near-perfect", 0.8, np.inf),
)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, not {mode!r}")


def usable_mask(values: np.typing.ArrayLike, mode: str) -> np.ndarray:
    """Boolean mask of the cells that count in ``mode`` (not NaN, not ``DidNotAnnotateFOV``, and in
    ``'classification'`` mode not ``'undetected'``). Same shape as ``values``."""
    _check_mode(mode)
    v = np.asarray(values, dtype=object)
    ok = ~pd.isna(v) & (v != NOT_ANNOTATED)
    if mode == "classification":
        ok &= v != UNDETECTED
    return ok


def reliability_matrix(
    frame: pd.DataFrame, mode: str = "classification", categories: Sequence[str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Integer-coded reliability matrix (raters x items) of a wide label frame.

    Parameters
    ----------
    frame : DataFrame, anchors x participants, string labels.
    mode : ``'classification'`` or ``'detection_and_classification'`` (see module docstring).
    categories : the category list that fixes the coding (code = position). Default: the sorted usable labels.
        In ``'classification'`` mode ``'undetected'`` is removed from it.

    Returns
    -------
    matrix : (n_participants, n_anchors) float ndarray, codes 0..V-1 and NaN for missing cells.
    categories : the V categories, in code order.
    """
    v = frame.to_numpy(dtype=object)
    ok = usable_mask(v, mode)
    if categories is None:
        categories = sorted({str(x) for x in v[ok]})
    categories = [c for c in categories if not (mode == "classification" and c == UNDETECTED)]
    lookup = {c: i for i, c in enumerate(categories)}
    if len(lookup) != len(categories):
        raise ValueError("categories contain duplicates")
    unknown = sorted({str(x) for x in v[ok]} - set(lookup))
    if unknown:
        raise ValueError(f"labels not in categories: {unknown}")
    codes = np.full(v.shape, np.nan)
    codes[ok] = [lookup[x] for x in v[ok]]
    return codes.T, list(categories)


def krippendorff_alpha(
    frame: pd.DataFrame,
    level: str = "nominal",
    mode: str = "classification",
    categories: Sequence[str] | None = None,
) -> float:
    """Krippendorff's alpha of a wide label frame (the ``krippendorff`` package on :func:`reliability_matrix`).

    Missing cells (``DidNotAnnotateFOV``/NaN, and ``'undetected'`` in ``'classification'`` mode) never count;
    anchors with fewer than two usable labels drop out, as alpha's definition requires. ``value_domain`` is passed
    explicitly as all category codes, so the result does not depend on which categories happen to be observed.

    Returns
    -------
    float; NaN when alpha is undefined: no anchor has two usable labels, or all pairable labels are one single
    category (no observed and no expected disagreement).
    """
    matrix, cats = reliability_matrix(frame, mode, categories)
    pairable = np.sum(~np.isnan(matrix), axis=0) >= 2
    if not pairable.any():
        return float("nan")
    m = matrix[:, pairable]
    used = np.unique(m[~np.isnan(m)])
    if used.size < 2:
        return float("nan")
    domain = np.arange(len(cats), dtype=float)
    return float(krippendorff.alpha(reliability_data=m, value_domain=domain, level_of_measurement=level))


def n_detections(frame: pd.DataFrame) -> pd.Series:
    """Per anchor, how many participants detected it (gave a label other than ``'undetected'``/missing)."""
    return pd.Series(
        usable_mask(frame.to_numpy(dtype=object), "classification").sum(axis=1), index=frame.index
    )


def alpha_by_min_detections(
    frame: pd.DataFrame,
    n_matches: pd.Series | None = None,
    mode: str = "classification",
    categories: Sequence[str] | None = None,
    xs: Iterable[int] | None = None,
    level: str = "nominal",
) -> pd.DataFrame:
    """Alpha on cumulative anchor subsets: for each x, the anchors detected by at least x participants.

    Parameters
    ----------
    frame : anchors x participants labels (the raters whose agreement is measured).
    n_matches : per-anchor detection count that defines the subsets (e.g. ``n_matches_Ps``, the truth group's
        count); default :func:`n_detections` of ``frame``.
    xs : thresholds; default 0 .. max(n_matches).
    categories : fixed once for all subsets (default from the whole frame), so codes are comparable.

    Returns
    -------
    DataFrame with columns min_detections, n_anchors, alpha (one row per x).
    """
    if n_matches is None:
        n_matches = n_detections(frame)
    n_matches = n_matches.reindex(frame.index)
    if n_matches.isna().any():
        raise ValueError("n_matches lacks some anchors of the label frame")
    if categories is None:
        _, categories = reliability_matrix(frame, mode)
    if xs is None:
        xs = range(int(n_matches.max()) + 1 if len(n_matches) else 1)
    rows = []
    for x in xs:
        sub = frame.loc[(n_matches >= x).to_numpy()]
        rows.append(
            {
                "min_detections": int(x),
                "n_anchors": len(sub),
                "alpha": krippendorff_alpha(sub, level, mode, categories) if len(sub) else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def cohen_kappa(
    a: np.typing.ArrayLike, b: np.typing.ArrayLike, mode: str = "classification"
) -> tuple[float, int]:
    """Cohen's kappa (unweighted, ``sklearn.metrics.cohen_kappa_score``) of two raters' labels on shared anchors.

    Cells unusable for either rater in ``mode`` are dropped first (notes 2c).

    Returns
    -------
    (kappa, n): n = number of anchors kept; kappa is NaN when n == 0 or when chance agreement is 1 (both raters
    gave one and the same label to everything), where kappa is undefined.
    """
    a = np.asarray(a, dtype=object)
    b = np.asarray(b, dtype=object)
    keep = usable_mask(a, mode) & usable_mask(b, mode)
    a, b = a[keep].astype(str), b[keep].astype(str)
    n = int(keep.sum())
    if n == 0:
        return float("nan"), 0
    ua, ub = np.unique(a), np.unique(b)
    if ua.size == 1 and ub.size == 1 and ua[0] == ub[0]:
        return float("nan"), n
    return float(cohen_kappa_score(a, b)), n


def pair_group(group1: str, group2: str) -> str:
    """``'Ps-Ps'``, ``'Ps-NPs'`` or ``'NPs-NPs'`` for two participant groups (SP, JP or NP; SP and JP are Ps)."""

    def side(g: str) -> str:
        if g in ("SP", "JP", "Ps"):
            return "Ps"
        if g in ("NP", "NPs"):
            return "NPs"
        raise ValueError(f"unknown participant group {g!r} (expected SP, JP or NP)")

    s1, s2 = sorted((side(group1), side(group2)), key=("Ps", "NPs").index)
    return f"{s1}-{s2}"


def _groups_for(participants: Sequence[str], groups: pd.Series | None) -> dict[str, str]:
    if groups is None:
        from nucls_utils.taxonomy import participant_group

        return {p: participant_group(p) for p in participants}
    missing = [p for p in participants if p not in groups.index]
    if missing:
        raise ValueError(f"participants without a group: {missing}")
    return {p: str(groups[p]) for p in participants}


def pairwise_kappa(
    frame: pd.DataFrame, groups: pd.Series | None = None, mode: str = "classification"
) -> pd.DataFrame:
    """Cohen's kappa for every pair of participants (columns) of a wide label frame.

    Parameters
    ----------
    frame : anchors x participants labels.
    groups : participant -> group (SP/JP/NP); default from the alias prefix (:func:`taxonomy.participant_group`).
    mode : which anchors of a pair count (see :func:`cohen_kappa`).

    Returns
    -------
    DataFrame with one row per unordered pair (column order): p1, p2, group1, group2, pair_group, kappa, n.
    Pairs with no shared usable anchor have n = 0 and kappa NaN (not 0).
    """
    cols = list(frame.columns)
    g = _groups_for(cols, groups)
    values = {p: frame[p].to_numpy(dtype=object) for p in cols}
    rows = []
    for p1, p2 in combinations(cols, 2):
        kappa, n = cohen_kappa(values[p1], values[p2], mode)
        rows.append((p1, p2, g[p1], g[p2], pair_group(g[p1], g[p2]), kappa, n))
    return pd.DataFrame(rows, columns=["p1", "p2", "group1", "group2", "pair_group", "kappa", "n"])


def self_agreement(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    mode: str = "classification",
    clicks_b: pd.DataFrame | None = None,
    groups: pd.Series | None = None,
) -> pd.DataFrame:
    """Intra-rater agreement: each participant's labels in two sets, on the anchors both sets share.

    The frames are inner-joined on the anchor id (anchors are shared across sets, notes 2c); participants present
    in both frames are compared with :func:`cohen_kappa`.

    Parameters
    ----------
    frame_a, frame_b : anchors x participants labels of the two sets (e.g. U-control and E).
    clicks_b : optional anchors x participants bool frame of the second set's clicks on suggested boundaries;
        adds n_detected_b, n_clicks_b and psegmented = n_clicks_b / n_detected_b (Fig 4b).
    groups : participant -> group; default from the alias prefix.

    Returns
    -------
    DataFrame indexed by participant: group, kappa, n (+ click columns).
    """
    shared = frame_a.index.intersection(frame_b.index, sort=False)
    people = [p for p in frame_a.columns if p in frame_b.columns]
    g = _groups_for(people, groups)
    a, b = frame_a.loc[shared, people], frame_b.loc[shared, people]
    rows = []
    for p in people:
        kappa, n = cohen_kappa(a[p].to_numpy(dtype=object), b[p].to_numpy(dtype=object), mode)
        row = {"participant": p, "group": g[p], "kappa": kappa, "n": n}
        if clicks_b is not None:
            det = usable_mask(b[p].to_numpy(dtype=object), "classification")
            clk = np.zeros_like(det)
            if p in clicks_b.columns:
                clk = clicks_b[p].reindex(shared, fill_value=False).to_numpy(dtype=bool) & det
            row["n_detected_b"] = int(det.sum())
            row["n_clicks_b"] = int(clk.sum())
            row["psegmented"] = (
                row["n_clicks_b"] / row["n_detected_b"] if row["n_detected_b"] else float("nan")
            )
        rows.append(row)
    cols = ["participant", "group", "kappa", "n"] + (
        ["n_detected_b", "n_clicks_b", "psegmented"] if clicks_b is not None else []
    )
    return pd.DataFrame(rows, columns=cols).set_index("participant")


def kappa_matrix(pairs: pd.DataFrame) -> pd.DataFrame:
    """Square participant x participant kappa matrix from :func:`pairwise_kappa` rows (diagonal 1, missing NaN)."""
    people = list(dict.fromkeys(list(pairs["p1"]) + list(pairs["p2"])))
    m = pd.DataFrame(np.nan, index=people, columns=people)
    for p1, p2, k in zip(pairs["p1"], pairs["p2"], pairs["kappa"], strict=True):
        m.loc[p1, p2] = m.loc[p2, p1] = k
    for p in people:
        m.loc[p, p] = 1.0
    return m


def mds_of_kappa(pairs: pd.DataFrame, random_state: int = 0, missing_distance: float = 1.0) -> pd.DataFrame:
    """Two-dimensional metric MDS of the participants with distance ``1 - kappa`` (Fig 3d).

    The self-distance is 0 (the reference fed a non-zero diagonal and wiped genuine kappa = 1 pairs; notes 6.14).
    Pairs whose kappa is undefined get ``missing_distance`` (default 1, i.e. kappa 0 — chance agreement).
    Negative kappas give distances above 1, which is fine for MDS.

    Parameters
    ----------
    pairs : output of :func:`pairwise_kappa` (p1, p2, kappa; group1/group2 used when present).
    random_state : seed of the SMACOF initialisation (deterministic output).

    Returns
    -------
    DataFrame indexed by participant: x, y (and group when known).
    """
    from sklearn.manifold import MDS

    km = kappa_matrix(pairs)
    dist = (1.0 - km).fillna(missing_distance).to_numpy(dtype=float, copy=True)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2
    if len(km) < 3:
        raise ValueError("MDS needs at least three participants")
    mds = MDS(n_components=2, metric="precomputed", init="random", n_init=4, random_state=random_state)
    xy = mds.fit_transform(dist)
    out = pd.DataFrame(xy, index=km.index, columns=["x", "y"])
    out.index.name = "participant"
    if {"group1", "group2"} <= set(pairs.columns):
        g = dict(zip(pairs["p1"], pairs["group1"], strict=True)) | dict(
            zip(pairs["p2"], pairs["group2"], strict=True)
        )
        out["group"] = [g[p] for p in out.index]
    return out


def agreement_band(kappa: float | np.typing.ArrayLike) -> str | None | np.ndarray:
    """Fleiss' descriptive band of a kappa (or alpha): slight [0, .2), fair [.2, .4), moderate [.4, .6),
    substantial [.6, .8), near-perfect [.8, 1]; ``'poor'`` below 0.

    Accepts a float (returns a str, or None for NaN) or an array-like (returns an object ndarray).
    """
    arr = np.asarray(kappa, dtype=float)
    names = np.array([b[0] for b in FLEISS_BANDS] + [None], dtype=object)
    edges = np.array([b[2] for b in FLEISS_BANDS[:-1]])
    idx = np.searchsorted(edges, arr, side="right")
    idx = np.where(np.isnan(arr), len(FLEISS_BANDS), idx)
    if arr.ndim == 0:
        return names[int(idx)]
    return names[idx]
