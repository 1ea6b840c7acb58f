"""Anchors: clusters of multi-rater boxes, one per nucleus, shared by every multi-rater set (notes section 2a).

:func:`build_anchor_table` clusters all boxes of a FOV, from every participant and every set together, with
:func:`~nucls_utils.interrater.clustering.cluster_boxes` (don't-link groups = (set, participant)), picks an anchor box
per cluster and tabulates, per set, what each participant said about each anchor:

* the participant's raw class if they have a box in the cluster in that set;
* ``'undetected'`` if they annotated the FOV in that set but have no box in the cluster (a real label for EM);
* ``'DidNotAnnotateFOV'`` if they did not annotate the FOV in that set (missing data).

Because the clustering spans the sets, the same ``anchor_id`` exists in every set, which is what intra-rater agreement
(U-control vs E) and the "unbiased" (U-control) detection counts rely on.

Coordinates are RGB pixel corners at 0.2 microns per pixel, as in the released multi-rater CSVs (the reference code
works at scan magnification; it only changes the anchor id strings and the ``max_side`` unit, see
:func:`build_anchor_table`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .. import taxonomy as tx
from ..evaluation import match_boxes
from ..io.errors import NuclsFormatError
from ..io.multirater import multirater_frame, read_multirater
from .clustering import cluster_boxes, medoid

__all__ = ["AnchorTable", "build_anchor_table", "load_study_anchors", "anchor_truth_match", "EVALSET_ORDER",
           "WHO_GROUPS", "UNDETECTED", "NOT_ANNOTATED", "MEDOID_SOURCES"]

#: Canonical order of the multi-rater sets (others, if any, follow alphabetically).
EVALSET_ORDER: tuple[str, ...] = ("U-control", "BT-control", "B-control", "E")
#: Participant groups of each "who" name used in column names of the reference (``n_matches_Ps`` ...).
WHO_GROUPS: dict[str, tuple[str, ...]] = {"SPs": ("SP",), "JPs": ("JP",), "Ps": ("SP", "JP"), "NPs": ("NP",),
                                          "All": ("SP", "JP", "NP")}
UNDETECTED = "undetected"
NOT_ANNOTATED = "DidNotAnnotateFOV"
#: Where an anchor box comes from, in order of preference (the reference's first choice, a designated senior
#: pathologist's manual trace in U-control, is not part of the simulated study).
MEDOID_SOURCES: tuple[str, ...] = ("Ps_U-control", "NPs_U-control", "All")

_UNBIASED_SET = "U-control"
_BOX_COLUMNS = ["xmin", "ymin", "xmax", "ymax"]
_FRAME_COLUMNS = ["evalset", "participant", "fovname", "index", "raw_class", "type", *_BOX_COLUMNS]


@dataclass
class AnchorTable:
    """Anchors of a multi-rater study at one clustering threshold, and every participant's label on each.

    Attributes
    ----------
    anchors : DataFrame
        Indexed by ``anchor_id`` (``"xmin,ymin,xmax,ymax_<fovname>"`` of the anchor box); columns ``fovname``,
        ``xmin, ymin, xmax, ymax`` (pixels), ``n_boxes`` (boxes in the cluster, all sets) and ``medoid_source`` (one
        of :data:`MEDOID_SOURCES`). Ordered by FOV name, then by cluster.
    labels : dict set -> DataFrame
        Index ``anchor_id``, one column per participant in roster order; values are a raw class, ``'undetected'`` or
        ``'DidNotAnnotateFOV'``.
    clicks : dict set -> bool DataFrame
        Same shape as ``labels``: whether the participant's box in the cluster was a clicked suggestion
        (``polyline``). Always False in U-control, where no suggestions were shown (a polyline there is a manual
        trace).
    participants : DataFrame
        The roster: ``participant``, ``group`` (SP, JP or NP), in the order of the label columns.
    min_iou : float
    constrained : bool
    boxes : DataFrame
        Every box that entered the clustering (annotations with both sides below ``max_side``): the input frame's
        columns plus ``anchor_id``, in the canonical order used for clustering.
    """

    anchors: pd.DataFrame
    labels: dict[str, pd.DataFrame]
    clicks: dict[str, pd.DataFrame]
    participants: pd.DataFrame
    min_iou: float
    constrained: bool
    boxes: pd.DataFrame = field(repr=False)

    @property
    def evalsets(self) -> list[str]:
        """The sets present, in canonical order."""
        return list(self.labels)

    def members(self, who: str) -> list[str]:
        """Aliases of the participants in ``who`` (SPs, JPs, Ps, NPs or All), in roster order."""
        if who not in WHO_GROUPS:
            raise ValueError(f"who must be one of {', '.join(WHO_GROUPS)}, not {who!r}")
        p = self.participants
        return p.loc[p["group"].isin(WHO_GROUPS[who]), "participant"].tolist()

    def _labels(self, evalset: str) -> pd.DataFrame:
        if evalset not in self.labels:
            raise KeyError(f"set {evalset!r} is not in this anchor table (sets: {', '.join(self.labels)})")
        return self.labels[evalset]

    def n_matches(self, evalset: str, who: str) -> pd.Series:
        """Number of participants of ``who`` with a box in each anchor in ``evalset``.

        Returns
        -------
        int Series indexed by ``anchor_id``, named ``n_matches_<who>``.
        """
        lab = self._labels(evalset)[self.members(who)]
        detected = ~lab.isin([UNDETECTED, NOT_ANNOTATED])
        return detected.sum(axis=1).astype(np.int64).rename(f"n_matches_{who}")

    def unbiased_n_matches(self, who: str) -> pd.Series:
        """:meth:`n_matches` in U-control (no suggestions shown), named ``UNBIASED_n_matches_<who>``."""
        return self.n_matches(_UNBIASED_SET, who).rename(f"UNBIASED_n_matches_{who}")

    def n_clicks(self, evalset: str, who: str) -> pd.Series:
        """Number of participants of ``who`` whose box in each anchor was a clicked suggestion, in ``evalset``."""
        if evalset not in self.clicks:
            raise KeyError(f"set {evalset!r} is not in this anchor table (sets: {', '.join(self.clicks)})")
        return self.clicks[evalset][self.members(who)].sum(axis=1).astype(np.int64).rename(f"n_clicks_{who}")

    def majority_vote(self, evalset: str, who: str) -> pd.DataFrame:
        """Most common label of ``who`` on each anchor in ``evalset``, ignoring ``undetected`` and missing labels.

        Ties are broken alphabetically (the first label in sorted order wins), so the result does not depend on the
        roster order.

        Returns
        -------
        DataFrame indexed by ``anchor_id`` with columns ``label`` (object; None where nobody of ``who`` detected
        the anchor) and ``count`` (int, the number of votes for ``label``; 0 where ``label`` is None).
        """
        lab = self._labels(evalset)[self.members(who)]
        long = lab.rename_axis(index="anchor_id").reset_index().melt(id_vars="anchor_id", value_name="label")
        long = long[~long["label"].isin([UNDETECTED, NOT_ANNOTATED])]
        votes = long.groupby(["anchor_id", "label"], sort=False).size().rename("count").reset_index()
        votes = votes.sort_values(["anchor_id", "count", "label"], ascending=[True, False, True], kind="stable")
        best = votes.drop_duplicates("anchor_id").set_index("anchor_id")
        label = best["label"].astype(object).reindex(lab.index)
        return pd.DataFrame({"label": label.where(label.notna(), None).astype(object),
                             "count": best["count"].reindex(lab.index).fillna(0).astype(np.int64)},
                            index=lab.index.copy())

    def set_table(self, evalset: str) -> pd.DataFrame:
        """One wide row per anchor for ``evalset``, with the reference's column names.

        Returns
        -------
        DataFrame indexed by ``anchor_id``: the :attr:`anchors` columns, ``n_matches_<who>`` for every who,
        ``UNBIASED_n_matches_{Ps,NPs}`` (when U-control is present), ``MV_inferred_label_{Ps,NPs}`` and
        ``MV_inferred_label_count_{Ps,NPs}``, ``n_algorithmic_clicks_{Ps,NPs,All}``, then one column per participant.
        """
        parts = [self.anchors]
        parts += [self.n_matches(evalset, who) for who in WHO_GROUPS]
        if _UNBIASED_SET in self.labels:
            parts += [self.unbiased_n_matches(who) for who in ("Ps", "NPs")]
        for who in ("Ps", "NPs"):
            mv = self.majority_vote(evalset, who)
            parts.append(mv.rename(columns={"label": f"MV_inferred_label_{who}",
                                            "count": f"MV_inferred_label_count_{who}"}))
        parts += [self.n_clicks(evalset, who).rename(f"n_algorithmic_clicks_{who}") for who in ("Ps", "NPs", "All")]
        parts.append(self._labels(evalset))
        return pd.concat(parts, axis=1)


def _roster(participants: pd.DataFrame) -> pd.DataFrame:
    if "participant" not in participants.columns:
        raise ValueError("participants must have a 'participant' column (the alias, e.g. 'NP.3')")
    p = participants.reset_index(drop=True)
    aliases = p["participant"].astype(str)
    dup = aliases[aliases.duplicated()]
    if len(dup):
        raise ValueError(f"participants: alias {dup.iloc[0]!r} is listed twice")
    if "group" in p.columns:
        group = p["group"].astype(str).str.upper()
        bad = ~group.isin(list(tx.PARTICIPANT_GROUPS))
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(f"participants row {i} ({aliases[i]!r}): group {p['group'][i]!r} is not SP, JP or NP")
    else:
        group = aliases.map(tx.participant_group)
    return pd.DataFrame({"participant": aliases.tolist(), "group": group.tolist()})


def _set_rank(evalsets: pd.Series) -> tuple[np.ndarray, list[str]]:
    present = set(evalsets.unique().tolist())
    order = [s for s in EVALSET_ORDER if s in present] + sorted(present.difference(EVALSET_ORDER))
    rank = {s: i for i, s in enumerate(order)}
    return evalsets.map(rank).to_numpy(dtype=np.int64), order


def _fmt(v: float) -> str:
    f = float(v)
    return str(int(f)) if f.is_integer() else repr(f)


def _anchor_boxes(boxes: np.ndarray, labels: np.ndarray, tier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Anchor box (a row of ``boxes``) and its source tier for each cluster of one FOV.

    ``tier`` is 0 for pathologists' U-control boxes, 1 for NPs' U-control boxes, 2 otherwise; a cluster's anchor is
    the medoid of its boxes of the lowest tier present, or of all its boxes when it has no U-control box.
    """
    n_clusters = int(labels.max()) + 1
    best_tier = np.full(n_clusters, 2, dtype=np.int64)
    np.minimum.at(best_tier, labels, tier)
    cand = tier == best_tier[labels]  # with no U-control box every member has tier 2
    order = np.argsort(labels, kind="stable")  # by cluster, then input order
    order = order[cand[order]]
    starts = np.searchsorted(labels[order], np.arange(n_clusters + 1))
    chosen = np.empty(n_clusters, dtype=np.int64)
    for c in range(n_clusters):
        idx = order[starts[c]:starts[c + 1]]
        chosen[c] = idx[0] if len(idx) <= 2 else idx[medoid(boxes[idx])]
    return chosen, best_tier


def build_anchor_table(frame: pd.DataFrame, participants: pd.DataFrame, min_iou: float = 0.25,
                       constrained: bool = True, max_side: float = 100) -> AnchorTable:
    """Cluster the multi-rater boxes of every FOV into anchors and tabulate every participant's labels.

    Parameters
    ----------
    frame : DataFrame
        One row per annotation, as from :func:`nucls_utils.io.multirater.multirater_frame`: ``evalset,
        participant, fovname, index, raw_class, type, xmin, ymin, xmax, ymax`` (pixels). Rows with ``index`` -1 mean
        "annotated the FOV, found nothing".
    participants : DataFrame
        The roster, ``participant`` and (preferably) ``group``; label columns follow its order. Group membership is
        taken from ``group`` when present, else from the alias prefix.
    min_iou : float
        Boxes of one anchor overlap pairwise with IOU > ``min_iou`` (0.25, 0.5 or 0.75 in the paper).
    constrained : bool
        Apply the don't-link constraint (one box per (set, participant) per anchor). Without it a participant can
        have several boxes in one anchor; the label and click of the one with the highest ``index`` (the last in their
        file) are kept.
    max_side : float
        Boxes with a side >= this many pixels are dropped before clustering (mis-clicked FOV outlines). The reference
        uses 100 pixels at scan magnification (about 125 pixels at 0.2 microns per pixel for a 40x scan); here the
        limit is in the frame's own pixels, 0.2 microns per pixel, i.e. slightly stricter (20 microns).

    Returns
    -------
    AnchorTable

    Notes
    -----
    * Clustering input is put in a canonical order first (FOV, set in :data:`EVALSET_ORDER`, participant in roster
      order, ``index``, box, class, type), so the result does not depend on the order of the frame's rows.
    * Anchor box: the medoid (:func:`~nucls_utils.interrater.clustering.medoid`) of the pathologists' U-control boxes
      in the cluster, else of the NPs' U-control boxes, else of all its boxes; ties go to the first in canonical
      order (so SPs before JPs, as listed in the roster).
    * Anchor ids: two clusters of one FOV whose anchor boxes are identical (possible when the constraint separates
      two boxes with IOU 1) get ``_2``, ``_3`` ... appended to the id of the later cluster(s), in cluster order.
    """
    missing = [c for c in _FRAME_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"multi-rater frame lacks column(s) {', '.join(missing)}")
    roster = _roster(participants)
    p_rank = {a: i for i, a in enumerate(roster["participant"])}
    unknown = sorted(set(frame["participant"].astype(str)).difference(p_rank))
    if unknown:
        raise ValueError(f"participant(s) {', '.join(unknown[:5])} annotated FOVs but are not in the roster")
    if len(frame) == 0:
        raise ValueError("the multi-rater frame is empty")

    f = frame[_FRAME_COLUMNS].copy()
    f["participant"] = f["participant"].astype(str)
    f["_set"], set_order = _set_rank(f["evalset"])
    f["_p"] = f["participant"].map(p_rank).to_numpy(dtype=np.int64)
    annotated = f[["evalset", "participant", "fovname", "_set", "_p"]].drop_duplicates()

    b = f[f["index"] >= 0]
    side = np.maximum(b["xmax"] - b["xmin"], b["ymax"] - b["ymin"])
    b = b[side < max_side]
    empty = b["raw_class"].isna() | (b["raw_class"].astype(str) == "")
    if empty.any():
        r = b[empty].iloc[0]
        raise ValueError(f"annotation {r['index']} of {r['participant']} in {r['evalset']}, FOV {r['fovname']}, "
                         "has no raw_class")
    b = b.sort_values(["fovname", "_set", "_p", "index", *_BOX_COLUMNS, "raw_class", "type"], kind="stable")
    b = b.reset_index(drop=True)

    group_of = roster.set_index("participant")["group"]
    is_p = b["participant"].map(group_of).isin(WHO_GROUPS["Ps"]).to_numpy()
    in_u = (b["evalset"] == _UNBIASED_SET).to_numpy()
    tier = np.where(in_u & is_p, 0, np.where(in_u, 1, 2))
    coords = b[_BOX_COLUMNS].to_numpy(dtype=float)
    dontlink = (b["_set"].to_numpy() * len(roster) + b["_p"].to_numpy()).astype(np.int64)
    fov_codes, fov_names = pd.factorize(b["fovname"], sort=True)

    cluster_global = np.empty(len(b), dtype=np.int64)
    anchor_rows, anchor_tiers, anchor_sizes = [], [], []
    offset = 0
    starts = np.searchsorted(fov_codes, np.arange(len(fov_names) + 1))  # b is sorted by fovname
    for k in range(len(fov_names)):
        sl = slice(starts[k], starts[k + 1])
        lab = cluster_boxes(coords[sl], dontlink[sl] if constrained else None, min_iou)
        chosen, best_tier = _anchor_boxes(coords[sl], lab, tier[sl])
        cluster_global[sl] = lab + offset
        anchor_rows.append(chosen + starts[k])
        anchor_tiers.append(best_tier)
        anchor_sizes.append(np.bincount(lab))
        offset += len(chosen)

    if offset:
        rows = np.concatenate(anchor_rows)
        a_tier = np.concatenate(anchor_tiers)
        a_size = np.concatenate(anchor_sizes)
    else:
        rows = a_tier = a_size = np.empty(0, dtype=np.int64)
    a_box = coords[rows]
    a_fov = b["fovname"].to_numpy()[rows] if len(rows) else np.empty(0, dtype=object)
    ids = pd.Series([f"{','.join(_fmt(v) for v in box)}_{fov}" for box, fov in zip(a_box, a_fov, strict=True)],
                    dtype=object)
    dup_rank = ids.groupby(ids, sort=False).cumcount().to_numpy()
    ids = pd.Series([i if r == 0 else f"{i}_{r + 1}" for i, r in zip(ids, dup_rank, strict=True)], dtype=object)
    if ids.duplicated().any():
        raise ValueError(f"anchor id {ids[ids.duplicated()].iloc[0]!r} is not unique even after disambiguation")
    anchor_index = pd.Index(ids.tolist(), name="anchor_id", dtype=object)

    anchors = pd.DataFrame({"fovname": pd.Series(a_fov, dtype=object).to_numpy(),
                            **{c: b[c].to_numpy()[rows] for c in _BOX_COLUMNS},
                            "n_boxes": a_size.astype(np.int64),
                            "medoid_source": np.asarray(MEDOID_SOURCES, dtype=object)[a_tier]},
                           index=anchor_index)
    boxes_out = b.drop(columns=["_set", "_p"]).assign(anchor_id=anchor_index.to_numpy()[cluster_global])

    # --- per-set labels and clicks, filled by vectorised assignment ------------------------------------------
    n_a, n_p = len(anchors), len(roster)
    anchors_of_fov = pd.DataFrame({"fovname": anchors["fovname"].to_numpy(), "_a": np.arange(n_a)})
    labels: dict[str, pd.DataFrame] = {}
    clicks: dict[str, pd.DataFrame] = {}
    columns = pd.Index(roster["participant"].tolist(), dtype=object)
    for s_i, evalset in enumerate(set_order):
        lab = np.full((n_a, n_p), NOT_ANNOTATED, dtype=object)
        clk = np.zeros((n_a, n_p), dtype=bool)
        ann = annotated[annotated["_set"] == s_i].merge(anchors_of_fov, on="fovname")
        lab[ann["_a"].to_numpy(dtype=np.int64), ann["_p"].to_numpy(dtype=np.int64)] = UNDETECTED
        sb = b[b["_set"] == s_i].assign(_a=cluster_global[(b["_set"] == s_i).to_numpy()])
        # canonical order has 'index' ascending within (set, participant): keep='last' = the last annotation wins
        sb = sb.drop_duplicates(["_a", "_p"], keep="last")
        r, c = sb["_a"].to_numpy(dtype=np.int64), sb["_p"].to_numpy(dtype=np.int64)
        lab[r, c] = sb["raw_class"].astype(str).to_numpy(dtype=object)
        if evalset != _UNBIASED_SET:
            clk[r, c] = (sb["type"] == "polyline").to_numpy()
        labels[evalset] = pd.DataFrame(lab, index=anchor_index.copy(), columns=columns.copy(), dtype=object)
        clicks[evalset] = pd.DataFrame(clk, index=anchor_index.copy(), columns=columns.copy())
    return AnchorTable(anchors=anchors, labels=labels, clicks=clicks, participants=roster, min_iou=float(min_iou),
                       constrained=bool(constrained), boxes=boxes_out)


def load_study_anchors(study_dir: str | os.PathLike[str], min_iou: float = 0.25, constrained: bool = True,
                       max_side: float = 100) -> AnchorTable:
    """:func:`build_anchor_table` for a study folder: ``<study_dir>/multirater`` (per-participant CSVs) and
    ``<study_dir>/participants.csv`` (the roster)."""
    study = Path(study_dir)
    roster_csv = study / "participants.csv"
    if not roster_csv.is_file():
        raise NuclsFormatError("participants.csv (the roster) not found in the study folder", path=roster_csv)
    participants = pd.read_csv(roster_csv)
    frame = multirater_frame(read_multirater(study / "multirater"))
    return build_anchor_table(frame, participants, min_iou=min_iou, constrained=constrained, max_side=max_side)


def anchor_truth_match(table: AnchorTable, truth_boxes_by_fov: dict[str, tuple[np.ndarray, list[str]]],
                       min_iou: float = 0.5) -> pd.Series:
    """The true raw class of each anchor, by one-to-one matching of anchor boxes with true nuclei per FOV.

    Parameters
    ----------
    table : AnchorTable
    truth_boxes_by_fov : dict fovname -> (boxes (M, 4), classes of length M)
        True nuclei (pixels, the same frame as the annotations). Every FOV of ``table`` must be present (an FOV
        without nuclei is an empty array).
    min_iou : float
        Matched pairs need IOU >= this (Hungarian assignment, :func:`nucls_utils.evaluation.match_boxes`).

    Returns
    -------
    object Series indexed by ``anchor_id``, named ``truth_class``: the matched raw class, or None.
    """
    out = pd.Series([None] * len(table.anchors), index=table.anchors.index.copy(), dtype=object, name="truth_class")
    for fov, a in table.anchors.groupby("fovname", sort=True):
        if fov not in truth_boxes_by_fov:
            raise KeyError(f"no truth given for FOV {fov!r}")
        t_boxes, t_classes = truth_boxes_by_fov[fov]
        t_boxes = np.asarray(t_boxes, dtype=float).reshape(-1, 4)
        if len(t_boxes) != len(t_classes):
            raise ValueError(f"FOV {fov!r}: {len(t_boxes)} truth boxes but {len(t_classes)} classes")
        ti, ai, _ = match_boxes(t_boxes, a[_BOX_COLUMNS].to_numpy(dtype=float), min_iou)
        out.loc[a.index[ai]] = [t_classes[i] for i in ti]
    return out

