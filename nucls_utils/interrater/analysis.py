"""Everything notebooks 03 (agreement) and 04 (EM simulations) compute, as functions returning tidy DataFrames.

The building blocks live next door (:mod:`.anchors` clustering into anchors, :mod:`.em` Dawid-Skene, :mod:`.agreement`
alpha/kappa, :mod:`.accuracy` participant and NP-label accuracy, :mod:`.redundancy` the NP-redundancy simulation);
this module strings them together the way the paper's analyses do (notes sections 1 and 2a-2d) and decides the
questions the notes leave open. Decisions, each documented where it is made:

* **Truth inference scope.** As in the reference code, Dawid-Skene EM runs per set and per group (Ps, NPs) only on
  anchors that at least two members of the group detected *in U-control* (``UNBIASED_n_matches_<who> >= 2``; the set's
  own count when a study has no U-control). ``undetected`` is a class, ``DidNotAnnotateFOV`` is missing, and anchors
  that no member of the group boxed in that set get a blank label.
* **P-truth.** An anchor is a real nucleus at class level L when its EM label of the Ps, grouped to L by summing the
  raw-class probabilities and re-taking the argmax (:func:`nucls_utils.interrater.em.group_posteriors`), is a class
  (not ``undetected``, not blank). Anchors whose P-truth is ``AMBIGUOUS`` at L are left out of the analyses at L
  (the reference's ``remap_classes_in_anchorsdf``).
* **Which anchors.** All set-level statistics use the primary clustering threshold, IOU 0.25 (the paper's choice);
  Fig 5 repeats the relevant ones at 0.5 and 0.75 and without the clustering constraint.
* **Each set its own truth.** Accuracy in a set (E, B-control, U-control) is measured against that set's P-truth,
  as the reference's per-set views do. On the synthetic cohort the generator's truth gives an unbiased second
  reference (:func:`truth_vs_generator`).

Truth tables (:class:`TruthTables`) are written to the stage folder of notebook 03 for notebooks 04 and 06:
``truth_<set>.csv`` (one row per anchor: geometry, detection counts, majority votes, EM probabilities and labels of
Ps and NPs at raw/main/super level, boundary-EM decision), ``labels_<set>.csv`` and ``clicks_<set>.csv``
(anchors x participants) and ``participants.csv``, with ``truth_tables.json`` describing them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .. import paper
from .. import taxonomy as tx
from ..evaluation import (
    bootstrap_ci,
    box_iou,
    dice_from_areas,
    f1_from_counts,
    match_boxes,
    roc_auc_micro_macro,
)
from ..io.atomic import atomic_path
from ..io.masks import nucleus_pixels
from ..io.multirater import multirater_frame, read_multirater
from .accuracy import (
    is_real,
    label_tally,
    mann_whitney,
    np_label_detection_ap,
    np_label_roc,
    np_label_roc_inputs,
    participant_classification,
    participant_confusion,
    participant_detection,
    wilcoxon_paired,
)
from .agreement import MODES, alpha_by_min_detections, mds_of_kappa, pairwise_kappa, self_agreement
from .anchors import (
    NOT_ANNOTATED,
    UNDETECTED,
    WHO_GROUPS,
    AnchorTable,
    anchor_truth_match,
    build_anchor_table,
)
from .clustering import cluster_boxes, condensed_iou_distance, medoid
from .em import PROB_PREFIX, boundary_em, group_posteriors, infer_labels, majority_vote
from .redundancy import restrict_to_dense_fovs

__all__ = [
    "CLUSTERING_IOUS", "PRIMARY_IOU", "EM_CLASSES", "EVALSET_ALIASES", "STAGE",
    "MultiraterStudy", "locate_multirater", "load_multirater_study", "anchor_tables",
    "TruthTables", "build_truth_tables", "write_truth_tables", "read_truth_tables", "attach_generator_truth",
    "group_labels", "truth_series", "np_label_frame", "final_anchors", "members", "ptruth_composition",
    "participant_accuracy", "accuracy_by_set", "paired_set_tests", "np_label_detection", "np_label_detection_pooled",
    "np_label_roc_table",
    "np_label_auroc_bootstrap", "auroc_set_tests",
    "alpha_table", "anchor_counts", "kappa_pairs", "kappa_group_tests", "kappa_mds", "self_agreement_table",
    "clicked_share_table", "group_summary",
    "boundary_table", "boundary_share_per_fov",
    "detection_tally", "ease_of_detection", "detected_by_at_least", "pooled_confusion", "tally_by_truth",
    "constraint_effect", "clustering_example", "dendrogram_example", "truth_vs_generator", "generator_confusion",
    "redundancy_inputs", "hold_total_constant", "summarize_redundancy", "plateau_k", "redundancy_findings",
    "np_label_roc_vs_generator", "np_label_accuracy_vs_generator", "suggestion_effect", "paper_vs_run", "agreement_paper_vs_run", "redundancy_paper_vs_run",
]

#: Stage name of notebook 03 (its results folder holds the truth tables).
STAGE = "03_agreement"
#: Clustering thresholds of Fig 5 and the primary one used everywhere else.
CLUSTERING_IOUS: tuple[float, ...] = (0.25, 0.5, 0.75)
PRIMARY_IOU = 0.25
#: Label set of the detection + classification EM: the raw classes and ``undetected``.
EM_CLASSES: tuple[str, ...] = (*tx.RAW_CLASSES, UNDETECTED)
#: The reference code's aliases of the multi-rater sets (notes conventions).
EVALSET_ALIASES: dict[str, str] = {"EVAL_SET_1": "U-control", "EVAL_SET_2": "B-control", "EVAL_SET_3": "E",
                                   "EVAL_SET_4": "BT-control"}
_UNBIASED = "U-control"
_BOX = ["xmin", "ymin", "xmax", "ymax"]
_SPECIAL = (UNDETECTED, NOT_ANNOTATED)



# ================================================================================================================
# inputs
# ================================================================================================================


@dataclass
class MultiraterStudy:
    """A multi-rater annotation study read from disk.

    Attributes
    ----------
    root : Path
        The folder holding the per-participant CSVs.
    annotations : dict ``(set, participant, fovname) -> tuple of Nucleus``
        As :func:`nucls_utils.io.multirater.read_multirater` returns them (set names normalised with
        :data:`EVALSET_ALIASES`).
    frame : DataFrame
        :func:`nucls_utils.io.multirater.multirater_frame` of the annotations.
    participants : DataFrame
        The roster: ``participant``, ``group`` and, for a simulated study, the planted reliability columns.
    images : dict fovname -> Path
        FOV images found beside the annotations (may be empty).
    simulated : bool
        Whether the roster came with planted reliability (a simulated study).
    """

    root: Path
    annotations: dict
    frame: pd.DataFrame
    participants: pd.DataFrame
    images: dict[str, Path] = field(default_factory=dict)
    simulated: bool = False

    @property
    def fovnames(self) -> list[str]:
        return sorted(self.frame["fovname"].unique())


def locate_multirater(data_mode: str, data_path: str | os.PathLike[str] | None,
                      results_dir: str | os.PathLike[str], dataset_name: str) -> Path | None:
    """Where the multi-rater study of a run lives, or None when the data has none.

    * synthetic mode: the study simulated by notebook 02, ``<results_dir>/<dataset>/02_suggestions/study``
      (raises FileNotFoundError when notebook 02 has not run: its input is missing, not absent by design);
    * real data: ``<data>/multirater`` when present, else the first folder below the dataset that holds a
      per-participant CSV (``<participant>_#_<set>_#_<fovname>.csv``); None when there is none (e.g. the
      single-rater sample).
    """
    if data_mode == "synthetic":
        study = Path(results_dir) / dataset_name / "02_suggestions" / "study"
        if not (study / "multirater").is_dir():
            raise FileNotFoundError(f"no simulated multi-rater study at {study}: run notebook 02 first "
                                    "(./run_all.sh --only 02 with the same --profile, --seed and --out)")
        return study
    if data_path is None:
        return None
    root = Path(data_path)
    if (root / "multirater").is_dir():
        return root / "multirater"
    hit = next(iter(sorted(root.rglob("*_#_*_#_*.csv"))), None)
    return hit.parent if hit is not None else None


def _roster_from_aliases(aliases: Iterable[str]) -> pd.DataFrame:
    def key(a: str) -> tuple[int, int, str]:
        g = tx.participant_group(a)
        num = a.split(".", 1)[1] if "." in a else ""
        return (("SP", "JP", "NP").index(g), int(num) if num.isdigit() else 0, a)

    people = sorted(set(aliases), key=key)
    return pd.DataFrame({"participant": people, "group": [tx.participant_group(p) for p in people]})


def load_multirater_study(path: str | os.PathLike[str]) -> MultiraterStudy:
    """Read a multi-rater study: a simulated study folder (``participants.csv`` + ``multirater/``) or any folder
    holding per-participant CSVs (the release; groups then come from the alias prefixes SP./JP./NP.).

    Set names ``EVAL_SET_1..4`` are renamed to U-control, B-control, E and BT-control.
    """
    path = Path(path)
    ann_root = path / "multirater" if (path / "multirater").is_dir() else path
    raw = read_multirater(ann_root)
    annotations = {(EVALSET_ALIASES.get(s, s), p, f): v for (s, p, f), v in raw.items()}
    frame = multirater_frame(annotations)
    roster_csv = path / "participants.csv"
    if roster_csv.is_file():
        participants = pd.read_csv(roster_csv)
        simulated = "accuracy" in participants.columns
    else:
        participants = _roster_from_aliases(frame["participant"].astype(str))
        simulated = False
    images: dict[str, Path] = {}
    for png in sorted(ann_root.rglob("*.png")):
        images.setdefault(png.stem, png)
    return MultiraterStudy(path, annotations, frame, participants, images, simulated)


def anchor_tables(study: MultiraterStudy, ious: Iterable[float] = CLUSTERING_IOUS, constrained: bool = True,
                  progress: bool = True) -> dict[float, AnchorTable]:
    """:func:`~nucls_utils.interrater.anchors.build_anchor_table` of the study at each clustering threshold."""
    ious = [float(i) for i in ious]
    desc = f"clustering ({'constrained' if constrained else 'unconstrained'})"
    return {iou: build_anchor_table(study.frame, study.participants, min_iou=iou, constrained=constrained)
            for iou in tqdm(ious, desc=desc, unit="threshold", disable=not progress)}


# ================================================================================================================
# truth inference and truth tables
# ================================================================================================================


def members(participants: pd.DataFrame, who: str) -> list[str]:
    """Aliases of ``who`` (SPs, JPs, Ps, NPs or All) in roster order."""
    if who not in WHO_GROUPS:
        raise ValueError(f"who must be one of {', '.join(WHO_GROUPS)}, not {who!r}")
    p = participants
    return p.loc[p["group"].astype(str).isin(WHO_GROUPS[who]), "participant"].astype(str).tolist()


@dataclass
class TruthTables:
    """Inferred truth of one clustering of a multi-rater study, per set.

    Attributes
    ----------
    truth : dict set -> DataFrame
        Indexed by ``anchor_id``. Columns: ``fovname, xmin, ymin, xmax, ymax, n_boxes, medoid_source, evalset,
        min_iou, constrained``; ``n_matches_<who>`` for SPs/JPs/Ps/NPs/All and ``UNBIASED_n_matches_{Ps,NPs}``;
        ``MV_inferred_label[_count]_{Ps,NPs}``; ``n_algorithmic_clicks_{Ps,NPs,All}``; per truth group ``<who>``
        inferred (Ps and/or NPs): ``EM_prob_<raw class | undetected>_<who>``, ``EM_inferred_label_<who>``,
        ``EM_inferred_label_confidence_<who>``, ``EM_inferred_label_count_<who>`` and, for level in main/super,
        ``EM_prob_<level>_<group>_<who>`` and ``EM_inferred_label_<level>_<who>`` (NaN where EM did not run);
        ``EM_decision_boundary_is_correct`` / ``EM_boundary_probability`` (all participants' clicks; NaN in sets
        without suggestions); on the synthetic cohort ``generator_truth_raw`` (the generator's raw class of the
        matched true nucleus, NaN for none).
    labels : dict set -> DataFrame
        Anchors x participants raw labels (class, ``undetected`` or ``DidNotAnnotateFOV``).
    clicks : dict set -> bool DataFrame
        Anchors x participants: the participant's box was a clicked suggestion.
    participants : DataFrame
        The roster (``participant``, ``group``).
    min_iou, constrained : the clustering.
    table : AnchorTable or None
        The clustering itself (boxes and their anchors); only in memory, not written.
    """

    truth: dict[str, pd.DataFrame]
    labels: dict[str, pd.DataFrame]
    clicks: dict[str, pd.DataFrame]
    participants: pd.DataFrame
    min_iou: float
    constrained: bool
    table: AnchorTable | None = field(default=None, repr=False)

    @property
    def evalsets(self) -> list[str]:
        return list(self.truth)

    def members(self, who: str) -> list[str]:
        return members(self.participants, who)

    def groups(self) -> pd.Series:
        """participant -> group (SP/JP/NP)."""
        return self.participants.set_index("participant")["group"].astype(str)


def _em_columns(em: pd.DataFrame, who: str) -> pd.DataFrame:
    out = em[[c for c in em.columns if c.startswith(PROB_PREFIX)]].add_suffix(f"_{who}")
    out[f"EM_inferred_label_{who}"] = em["label"]
    out[f"EM_inferred_label_confidence_{who}"] = em["confidence"]
    out[f"EM_inferred_label_count_{who}"] = em["label_count"]
    for level in ("main", "super"):
        g = group_posteriors(em, level)
        probs = g[[c for c in g.columns if c.startswith(PROB_PREFIX)]]
        probs.columns = [f"{PROB_PREFIX}{level}_{c[len(PROB_PREFIX):]}_{who}" for c in probs.columns]
        out = out.join(probs)
        out[f"EM_inferred_label_{level}_{who}"] = g["label"]
    return out


def build_truth_tables(table: AnchorTable, *, whos: Sequence[str] = ("Ps", "NPs"),
                       evalsets: Sequence[str] | None = None, min_unbiased: int = 2, boundary: bool = True,
                       q0: float = 0.7, n_iter: int = 70) -> TruthTables:
    """Infer the P-truth and NP-label of every anchor of ``table``, per set (notes 2a-2b).

    Parameters
    ----------
    table : AnchorTable
        One clustering of the study.
    whos : truth groups to infer ("Ps", "NPs").
    evalsets : sets to infer (default all of the table's).
    min_unbiased : EM runs on anchors that at least this many members of the group detected in U-control (the
        set's own detections when the table has no U-control).
    boundary : also run the boundary EM on the clicks of every set that showed suggestions (all participants).
    q0, n_iter : EM settings (paper: 0.7, 70).
    """
    sets = list(evalsets) if evalsets is not None else table.evalsets
    truth, labels, clicks = {}, {}, {}
    for s in sets:
        base = table.set_table(s)
        lab = table.labels[s]
        cols = [c for c in base.columns if c not in set(lab.columns)]
        t = base[cols].copy()
        t.insert(0, "evalset", s)
        t["min_iou"] = table.min_iou
        t["constrained"] = table.constrained
        for who in whos:
            scope_count = table.unbiased_n_matches(who) if _UNBIASED in table.labels else table.n_matches(s, who)
            scope = (scope_count >= min_unbiased).to_numpy()
            frame = lab.loc[scope, table.members(who)]
            em = infer_labels(frame, classes=list(EM_CLASSES), blank_undetected=True, q0=q0, n_iter=n_iter)
            t = t.join(_em_columns(em, who))
        if boundary and table.clicks[s].to_numpy().any():
            detected = ~lab.isin(list(_SPECIAL))
            b = boundary_em(table.clicks[s], detected, q0=q0, n_iter=n_iter)
            t["EM_decision_boundary_is_correct"] = b["decision"]
            t["EM_boundary_probability"] = b["probability"].where(b["decision"].notna())
        else:
            t["EM_decision_boundary_is_correct"] = pd.array([pd.NA] * len(t), dtype="boolean")
            t["EM_boundary_probability"] = np.nan
        for c in [c for c in t.columns if not pd.api.types.is_numeric_dtype(t[c]) and
                  not pd.api.types.is_bool_dtype(t[c])]:
            t[c] = t[c].astype(object).where(t[c].notna(), np.nan)  # one missing marker (None from the majority vote -> NaN)
        truth[s] = t
        labels[s] = lab.copy()
        clicks[s] = table.clicks[s].copy()
    return TruthTables(truth, labels, clicks, table.participants.copy(), table.min_iou, table.constrained, table)


def attach_generator_truth(tt: TruthTables, records: Sequence, min_iou: float = 0.5) -> None:
    """Add ``generator_truth_raw`` to every truth table: the generator's raw class of the true nucleus matched
    one-to-one to the anchor box (IOU >= ``min_iou``, :func:`~nucls_utils.interrater.anchors.anchor_truth_match`),
    NaN for anchors on no nucleus. Synthetic cohort only (``records`` = its FOV records)."""
    by_name = {r.name: r for r in records}
    fovs = sorted({f for t in tt.truth.values() for f in t["fovname"].unique()})
    missing = [f for f in fovs if f not in by_name]
    if missing:
        raise KeyError(f"{len(missing)} multi-rater FOVs are not in the cohort, e.g. {missing[0]}")
    boxes = {f: (np.array([n.box for n in by_name[f].nuclei], dtype=float).reshape(-1, 4),
                 [n.raw_class for n in by_name[f].nuclei]) for f in fovs}
    if tt.table is not None:
        cls = anchor_truth_match(tt.table, boxes, min_iou=min_iou)
    else:  # tables read back from disk: the same matching on the stored anchor boxes
        first = next(iter(tt.truth.values()))
        cls = anchor_truth_match(_AnchorsOnly(first[["fovname", *_BOX]]), boxes, min_iou=min_iou)
    for t in tt.truth.values():
        g = cls.reindex(t.index).astype(object)
        t["generator_truth_raw"] = g.where(g.notna(), np.nan)


@dataclass
class _AnchorsOnly:
    """The part of an AnchorTable that :func:`anchor_truth_match` reads."""

    anchors: pd.DataFrame


_MANIFEST = "truth_tables.json"
_BOOL_COLUMNS = ("constrained",)


def _safe(name: str) -> str:
    return name.replace("/", "_")


def write_truth_tables(tt: TruthTables, stage_dir: str | os.PathLike[str]) -> list[Path]:
    """Write the truth tables to ``stage_dir`` (atomically, file by file; the manifest last). Returns the paths."""
    stage = Path(stage_dir)
    stage.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in tt.evalsets:
        for kind, frame in (("truth", tt.truth[s]), ("labels", tt.labels[s]), ("clicks", tt.clicks[s])):
            path = stage / f"{kind}_{_safe(s)}.csv"
            with atomic_path(path) as tmp:
                frame.rename_axis("anchor_id").to_csv(tmp)
            paths.append(path)
    path = stage / "participants.csv"
    with atomic_path(path) as tmp:
        tt.participants[["participant", "group"]].to_csv(tmp, index=False)
    paths.append(path)
    manifest = {"evalsets": tt.evalsets, "files": {s: {k: f"{k}_{_safe(s)}.csv" for k in ("truth", "labels",
                                                                                             "clicks")}
                                                   for s in tt.evalsets},
                "min_iou": tt.min_iou, "constrained": tt.constrained,
                "em": "Dawid-Skene, q0 0.7, 70 iterations, undetected a class, on anchors detected by >= 2 members "
                      "of the group in U-control",
                "p_truth_rule": "real nucleus at level L: EM_inferred_label_<L>_Ps is a class (not undetected, "
                                "not blank); leave out anchors whose label is AMBIGUOUS at L"}
    path = stage / _MANIFEST
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    paths.append(path)
    return paths


def _object_axes(frame: pd.DataFrame) -> pd.DataFrame:
    frame.index = pd.Index(frame.index.tolist(), dtype=object, name=frame.index.name)
    frame.columns = pd.Index(frame.columns.tolist(), dtype=object)
    return frame


def _is_text_column(c: str) -> bool:
    if c in ("evalset", "fovname", "medoid_source", "generator_truth_raw"):
        return True
    if c.startswith(("EM_inferred_label_confidence", "EM_inferred_label_count", "MV_inferred_label_count")):
        return False
    return c.startswith(("EM_inferred_label_", "MV_inferred_label_"))


def read_truth_tables(stage_dir: str | os.PathLike[str]) -> TruthTables | None:
    """Read what :func:`write_truth_tables` wrote; None when ``stage_dir`` holds no truth tables (no multi-rater
    data in that run)."""
    stage = Path(stage_dir)
    man_path = stage / _MANIFEST
    if not man_path.is_file():
        return None
    man = json.loads(man_path.read_text(encoding="utf-8"))
    truth, labels, clicks = {}, {}, {}
    for s in man["evalsets"]:
        files = man["files"][s]
        t = _object_axes(pd.read_csv(stage / files["truth"], index_col="anchor_id", low_memory=False))
        for c in t.columns:
            if c in _BOOL_COLUMNS:
                t[c] = t[c].astype(bool)
            elif c == "EM_decision_boundary_is_correct":
                t[c] = t[c].map({True: True, False: False, "True": True, "False": False}).astype("boolean")
            elif _is_text_column(c):
                t[c] = t[c].astype(object).where(t[c].notna(), np.nan)
        truth[s] = t
        lab = pd.read_csv(stage / files["labels"], index_col="anchor_id", dtype=str, keep_default_na=False)
        lab = _object_axes(lab.astype(object))
        labels[s] = lab.where(lab != "", np.nan)
        clicks[s] = _object_axes(pd.read_csv(stage / files["clicks"], index_col="anchor_id").astype(bool))
    participants = pd.read_csv(stage / "participants.csv", dtype=str).astype(object)
    return TruthTables(truth, labels, clicks, participants, float(man["min_iou"]), bool(man["constrained"]))


# ================================================================================================================
# class levels
# ================================================================================================================


def _map_one(value: object, level: str) -> object:
    if not isinstance(value, str) or value in _SPECIAL:
        return value
    if level == "raw":
        return tx.to_raw(value)
    return tx.to_main(value) if level == "main" else tx.to_super(value)


def group_labels(frame: pd.DataFrame, level: str) -> pd.DataFrame:
    """Participants' raw labels relabelled to ``level`` (raw/main/super); ``undetected``, ``DidNotAnnotateFOV`` and
    NaN stay as they are."""
    if level not in ("raw", "main", "super"):
        raise ValueError(f"level must be raw, main or super, not {level!r}")
    values = frame.to_numpy(dtype=object)
    uniq = {v for v in values.ravel().tolist() if isinstance(v, str)}
    mapping = {v: _map_one(v, level) for v in uniq}
    out = pd.Series(values.ravel(), dtype=object).map(lambda v: mapping.get(v, v) if isinstance(v, str) else v)
    return pd.DataFrame(out.to_numpy(dtype=object).reshape(values.shape), index=frame.index.copy(),
                        columns=frame.columns.copy(), dtype=object)


def _label_col(who: str, level: str) -> str:
    return f"EM_inferred_label_{who}" if level == "raw" else f"EM_inferred_label_{level}_{who}"


def truth_series(truth: pd.DataFrame, who: str = "Ps", level: str = "main") -> pd.Series:
    """The EM label of ``who`` at ``level`` per anchor: a class (a real nucleus by that group), ``undetected``, or
    NaN (EM did not run or left the anchor blank)."""
    col = _label_col(who, level)
    if col not in truth.columns:
        raise KeyError(f"the truth table has no {col} (was EM run for {who}?)")
    return truth[col].astype(object)


def final_anchors(truth: pd.DataFrame, level: str = "main", who: str = "Ps") -> pd.Index:
    """The reference's ``v3.1_final_anchors``: anchors that are real nuclei by the group's truth at ``level``,
    AMBIGUOUS left out."""
    t = truth_series(truth, who, level)
    return truth.index[(is_real(t) & (t != tx.AMBIGUOUS)).to_numpy()]


def _not_ambiguous(truth: pd.DataFrame, level: str, who: str = "Ps") -> pd.Index:
    t = truth_series(truth, who, level)
    return truth.index[(t != tx.AMBIGUOUS).to_numpy()]


def np_label_frame(truth: pd.DataFrame, level: str = "main", who: str = "NPs") -> pd.DataFrame:
    """EM probabilities and label of ``who`` at ``level``, with the column names :mod:`.accuracy` expects
    (``EM_prob_<class>``, ``label``)."""
    if level == "raw":
        prefix = PROB_PREFIX
        cols = [c for c in truth.columns if c.startswith(prefix) and c.endswith(f"_{who}")
                and not c.startswith((f"{prefix}main_", f"{prefix}super_"))]
    else:
        prefix = f"{PROB_PREFIX}{level}_"
        cols = [c for c in truth.columns if c.startswith(prefix) and c.endswith(f"_{who}")]
    out = truth[cols].copy()
    out.columns = [PROB_PREFIX + c[len(prefix):-len(f"_{who}")] for c in cols]
    out["label"] = truth_series(truth, who, level)
    return out


def ptruth_composition(tt: TruthTables, levels: Sequence[str] = ("raw", "main", "super")) -> pd.DataFrame:
    """Class composition of the P-truth nuclei of every set: evalset, level, class, n, percent (AMBIGUOUS counted
    at the levels that have it, so the percentages show how much the grouped analyses leave out)."""
    rows = []
    for s, t in tt.truth.items():
        for level in levels:
            lab = truth_series(t, "Ps", level)
            lab = lab[is_real(lab)]
            for cls, n in lab.value_counts().sort_index().items():
                rows.append({"evalset": s, "level": level, "class": cls, "n": int(n),
                             "percent": 100.0 * n / len(lab)})
    return pd.DataFrame(rows)


# ================================================================================================================
# accuracy of participants and of the NP-label (Figs 3a-c, 4e, S3, S7)
# ================================================================================================================


def participant_accuracy(tt: TruthTables, evalset: str = "E", level: str = "main") -> pd.DataFrame:
    """Detection and classification accuracy of every participant against the set's P-truth (notes 2c).

    Anchors: all anchors of the set except those whose P-truth is AMBIGUOUS at ``level``; real = P-truth is a
    class; every other anchor is "false" (FP when a participant boxed it).

    Returns
    -------
    DataFrame, one row per participant who annotated in the set: participant, group, evalset, level, tp, fp, fn,
    precision, recall, f1, n (classified real anchors), accuracy, mcc (pooled one-vs-rest), mcc_multiclass.
    """
    t = tt.truth[evalset]
    keep = _not_ambiguous(t, level)
    truth = truth_series(t, "Ps", level).loc[keep]
    lab = group_labels(tt.labels[evalset].loc[keep], level)
    det = participant_detection(lab, truth)
    cls = participant_classification(lab, truth)
    out = det.join(cls).reset_index()
    out.insert(1, "group", out["participant"].map(tt.groups()))
    out.insert(2, "evalset", evalset)
    out.insert(3, "level", level)
    return out[(out["tp"] + out["fn"] + out["fp"]) > 0].reset_index(drop=True)


def accuracy_by_set(tt: TruthTables, evalsets: Sequence[str] | None = None, level: str = "main") -> pd.DataFrame:
    """:func:`participant_accuracy` of every set, stacked."""
    sets = [s for s in (evalsets or tt.evalsets) if s in tt.truth]
    return pd.concat([participant_accuracy(tt, s, level) for s in sets], ignore_index=True)


def paired_set_tests(acc: pd.DataFrame, metrics: Sequence[str] = ("f1", "mcc"), a: str = "E",
                     b: str = "U-control", by: str = "group_pn") -> pd.DataFrame:
    """Paired Wilcoxon tests of per-participant metrics between two sets, per participant group.

    ``by='group_pn'`` groups SP and JP as Ps. Returns metric, group, mean_a, mean_b, n, statistic, pvalue.
    """
    d = acc.copy()
    d["group_pn"] = np.where(d["group"].isin(("SP", "JP")), "Ps", "NPs")
    rows = []
    for metric in metrics:
        wide = d.pivot_table(index=["participant", by], columns="evalset", values=metric).reset_index()
        if a not in wide.columns or b not in wide.columns:
            continue
        for g, sub in wide.groupby(by, sort=False):
            res = wilcoxon_paired(sub[a], sub[b])
            rows.append({"metric": metric, "group": g, f"mean_{a}": sub[a].mean(), f"mean_{b}": sub[b].mean(),
                         "n": res.n1, "statistic": res.statistic, "pvalue": res.pvalue})
    return pd.DataFrame(rows)


def np_label_detection(tt: TruthTables, evalset: str = "E", min_matches: int = 2) -> dict:
    """NP-label detection precision-recall against the P-truth (Fig 3a; paper AP = 0.68): anchors with a non-blank
    NP label and at least ``min_matches`` NP detections in the set; score = 1 - P(undetected)."""
    t = tt.truth[evalset]
    return np_label_detection_ap(np_label_frame(t, "raw"), truth_series(t, "Ps", "raw"),
                                 n_matches=t["n_matches_NPs"], min_matches=min_matches)


def np_label_detection_pooled(truth_by_iou: Mapping[float, TruthTables], evalset: str = "E",
                              min_matches: int = 2) -> dict:
    """:func:`np_label_detection` on the anchors of every clustering threshold pooled together: the reference's
    query behind the paper's AP = 0.68 reads all thresholds at once (notes section 6, item 5)."""
    frames, truths, counts = [], [], []
    for iou, tt in truth_by_iou.items():
        if evalset not in tt.truth:
            continue
        t = tt.truth[evalset]
        tag = f"@{float(iou):g}"
        frames.append(np_label_frame(t, "raw").rename(index=lambda a, _t=tag: a + _t))
        truths.append(truth_series(t, "Ps", "raw").rename(index=lambda a, _t=tag: a + _t))
        counts.append(t["n_matches_NPs"].rename(index=lambda a, _t=tag: a + _t))
    cols = sorted(set().union(*(f.columns for f in frames)) - {"label"})
    em = pd.concat([f.reindex(columns=[*cols, "label"]) for f in frames]).fillna({c: 0.0 for c in cols})
    return np_label_detection_ap(em, pd.concat(truths), n_matches=pd.concat(counts), min_matches=min_matches)


def np_label_roc_table(tt: TruthTables, evalset: str = "E", level: str = "main") -> dict:
    """NP-label classification ROC against the P-truth at ``level`` (Figs 3b, 4e, S3; paper AUROC 0.93 micro,
    0.75 macro at main level): :func:`nucls_utils.interrater.accuracy.np_label_roc` on the anchors that are not
    AMBIGUOUS by the P-truth."""
    t = tt.truth[evalset]
    keep = _not_ambiguous(t, level)
    return np_label_roc(np_label_frame(t.loc[keep], level), truth_series(t, "Ps", level).loc[keep])


def np_label_auroc_bootstrap(tt: TruthTables, evalsets: Sequence[str] | None = None, level: str = "main",
                             n_boot: int = 1000, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """NP-label AUROC per set with percentile bootstrap intervals over anchors (Fig 4e; notes 2c).

    Each set's resamples use the same seed (so the sets' bootstrap distributions are comparable draw by draw).

    Returns
    -------
    summary : DataFrame, one row per set: evalset, level, n, micro, macro (point estimates), micro_median,
        micro_low, micro_high, macro_median, macro_low, macro_high (5-95 % interval).
    values : dict set -> (n_boot,) bootstrap micro-AUROCs (for :func:`auroc_set_tests`).
    """
    rows, values = [], {}
    for s in [s for s in (evalsets or tt.evalsets) if s in tt.truth]:
        t = tt.truth[s]
        keep = _not_ambiguous(t, level)
        y, prob, kept = np_label_roc_inputs(np_label_frame(t.loc[keep], level),
                                            truth_series(t, "Ps", level).loc[keep])
        row = {"evalset": s, "level": level, "n": len(y)}
        if len(kept) < 2:
            rows.append(row)
            continue
        point = roc_auc_micro_macro(y, prob, kept)
        row.update(micro=point["micro"], macro=point["macro"])
        for name in ("micro", "macro"):
            ci = bootstrap_ci(lambda yy, pp, _n=name, _k=kept: roc_auc_micro_macro(yy, pp, _k)[_n], y, prob, n=n_boot,
                              rng=np.random.default_rng(seed))
            row.update({f"{name}_median": ci.median, f"{name}_low": ci.low, f"{name}_high": ci.high})
            if name == "micro":
                values[s] = ci.values
        rows.append(row)
    return pd.DataFrame(rows), values


def auroc_set_tests(values: Mapping[str, np.ndarray], pairs: Sequence[tuple[str, str]] = (("E", "U-control"),
                                                                                         ("E", "B-control"),
                                                                                         ("B-control", "U-control"))
                    ) -> pd.DataFrame:
    """Mann-Whitney U between two sets' bootstrap AUROC distributions, as the reference's ``roc_pvals`` (its
    p-value shrinks with the number of resamples; read the intervals as well). Also the share of resamples in
    which the first set's AUROC is higher (the draws share the seed, so they pair up)."""
    rows = []
    for a, b in pairs:
        if a not in values or b not in values:
            continue
        res = mann_whitney(values[a], values[b])
        rows.append({"set_a": a, "set_b": b, "median_a": float(np.nanmedian(values[a])),
                     "median_b": float(np.nanmedian(values[b])), "U": res.statistic, "pvalue": res.pvalue,
                     "share_a_higher": float(np.nanmean(values[a] > values[b]))})
    return pd.DataFrame(rows)


def pooled_confusion(tt: TruthTables, evalset: str = "E", level: str = "main", who: str = "Ps",
                     normalize: str | None = "pred") -> pd.DataFrame:
    """Confusion of the labels of ``who`` against the P-truth, pooled over participants (Figs 3c, S7a): rows are
    the truth (``non-existent`` for false anchors), columns what participants said (``undetected`` = missed)."""
    t = tt.truth[evalset]
    keep = _not_ambiguous(t, level)
    lab = group_labels(tt.labels[evalset].loc[keep, tt.members(who)], level)
    return participant_confusion(lab, truth_series(t, "Ps", level).loc[keep], normalize=normalize)


def tally_by_truth(tt: TruthTables, evalset: str = "E", level: str = "main", who: str = "Ps") -> pd.DataFrame:
    """Per true class (P-truth), the mean number of participants of ``who`` giving each label to an anchor of that
    class, ``undetected`` included (Fig S7b)."""
    t = tt.truth[evalset]
    real = final_anchors(t, level)
    lab = group_labels(tt.labels[evalset].loc[real, tt.members(who)], level)
    tally = label_tally(lab)
    tally["truth"] = truth_series(t, "Ps", level).loc[real].to_numpy()
    out = tally.groupby("truth").mean()
    out.insert(0, "n_anchors", tally.groupby("truth").size())
    return out


# ================================================================================================================
# agreement (Figs 3d, 4d, 5a, 5c, 5d)
# ================================================================================================================


def alpha_table(truth_by_iou: Mapping[float, TruthTables], evalset: str = "E", levels: Sequence[str] = ("main",
                                                                                                           "super"),
                raters: Sequence[str] = ("Ps", "NPs"), truth_who: str = "Ps", mode: str = "classification"
                ) -> pd.DataFrame:
    """Krippendorff's alpha on cumulative anchor subsets, per clustering threshold, level and rater group
    (Figs 5a, 5c; notes 2c).

    Anchors: the real nuclei by the P-truth at that threshold and level (the reference's ``v2.1_consensus``
    anchors), AMBIGUOUS left out. For each x, the anchors detected by at least x pathologists in the set
    (``n_matches_Ps``); both rater groups are measured on the same anchors. The paper's headline is the row
    (IOU 0.25, main, Ps, x = 2): 1,238 anchors, alpha 55.5.

    Returns
    -------
    DataFrame: min_iou, level, raters, min_detections, n_anchors, alpha.
    """
    rows = []
    for iou, tt in truth_by_iou.items():
        if evalset not in tt.truth:
            continue
        t = tt.truth[evalset]
        for level in levels:
            real = final_anchors(t, level, truth_who)
            lab = group_labels(tt.labels[evalset].loc[real], level)
            n_matches = t.loc[real, f"n_matches_{truth_who}"]
            xs = range(int(n_matches.max()) + 1 if len(n_matches) else 1)
            for r in raters:
                res = alpha_by_min_detections(lab[tt.members(r)], n_matches, mode=mode, xs=xs)
                res.insert(0, "raters", r)
                res.insert(0, "level", level)
                res.insert(0, "min_iou", float(iou))
                rows.append(res)
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(
        columns=["min_iou", "level", "raters", "min_detections", "n_anchors", "alpha"])


def anchor_counts(truth_by_iou: Mapping[float, TruthTables], evalset: str = "E", who: str = "Ps") -> pd.DataFrame:
    """Anchors detected by at least x members of ``who`` in the set, per clustering threshold (Fig 5a): all anchor
    proposals, and those the P-truth calls nuclei (main level). Columns: min_iou, min_detections, n_proposals,
    n_ptruth."""
    rows = []
    for iou, tt in truth_by_iou.items():
        if evalset not in tt.truth:
            continue
        t = tt.truth[evalset]
        n = t[f"n_matches_{who}"]
        real = t.index.isin(final_anchors(t, "main"))
        for x in range(int(n.max()) + 1):
            rows.append({"min_iou": float(iou), "min_detections": x, "n_proposals": int((n >= x).sum()),
                         "n_ptruth": int(((n >= x) & real).sum())})
    return pd.DataFrame(rows)


def kappa_pairs(tt: TruthTables, evalsets: Sequence[str] = ("E", "U-control"), level: str = "main",
                modes: Sequence[str] = MODES) -> pd.DataFrame:
    """Cohen's kappa of every pair of participants on each set's final anchors (Figs 3d, 5d; notes 2c).

    Returns the rows of :func:`~nucls_utils.interrater.agreement.pairwise_kappa` with evalset, level and mode.
    """
    parts = []
    groups = tt.groups()
    for s in [s for s in evalsets if s in tt.truth]:
        lab = group_labels(tt.labels[s].loc[final_anchors(tt.truth[s], level)], level)
        for mode in modes:
            p = pairwise_kappa(lab, groups=groups, mode=mode)
            p.insert(0, "mode", mode)
            p.insert(0, "level", level)
            p.insert(0, "evalset", s)
            parts.append(p)
    return pd.concat(parts, ignore_index=True)


def kappa_group_tests(pairs: pd.DataFrame) -> pd.DataFrame:
    """Mann-Whitney tests between the pair groups (Ps-Ps, Ps-NPs, NPs-NPs) of :func:`kappa_pairs`, per set and
    mode (Fig 5d's stars)."""
    rows = []
    combos = (("Ps-Ps", "Ps-NPs"), ("Ps-Ps", "NPs-NPs"), ("Ps-NPs", "NPs-NPs"))
    for (s, mode), sub in pairs.groupby(["evalset", "mode"], sort=False):
        for a, b in combos:
            ka, kb = sub.loc[sub["pair_group"] == a, "kappa"], sub.loc[sub["pair_group"] == b, "kappa"]
            res = mann_whitney(ka, kb)
            rows.append({"evalset": s, "mode": mode, "group_a": a, "group_b": b, "median_a": ka.median(),
                         "median_b": kb.median(), "n_a": res.n1, "n_b": res.n2, "U": res.statistic,
                         "pvalue": res.pvalue})
    return pd.DataFrame(rows)


def kappa_mds(pairs: pd.DataFrame, evalset: str = "E", mode: str = "classification", seed: int = 0
              ) -> pd.DataFrame:
    """Two-dimensional MDS of the participants with distance 1 - kappa (Fig 3d)."""
    sub = pairs[(pairs["evalset"] == evalset) & (pairs["mode"] == mode)]
    return mds_of_kappa(sub, random_state=seed).reset_index()


def self_agreement_table(tt: TruthTables, reference: str = _UNBIASED, others: Sequence[str] = ("E", "B-control"),
                         level: str = "main", mode: str = "classification") -> pd.DataFrame:
    """Each participant's agreement with themselves between U-control (no suggestions) and a set with suggestions,
    on the anchors final in both (Fig 4d; paper kappa 87.4 +- 7.9 Ps, 74.0 +- 12.6 NPs, E vs U-control), plus the
    share of their detections in the other set that were clicked suggestions (``psegmented``).

    Returns one row per (set, participant): evalset, participant, group, kappa, n, n_detected_b, n_clicks_b,
    psegmented.
    """
    if reference not in tt.truth:
        return pd.DataFrame(columns=["evalset", "participant", "group", "kappa", "n", "n_detected_b", "n_clicks_b",
                                     "psegmented"])
    a = group_labels(tt.labels[reference].loc[final_anchors(tt.truth[reference], level)], level)
    parts = []
    for s in [s for s in others if s in tt.truth]:
        b = group_labels(tt.labels[s].loc[final_anchors(tt.truth[s], level)], level)
        res = self_agreement(a, b, mode=mode, clicks_b=tt.clicks[s], groups=tt.groups()).reset_index()
        res.insert(0, "evalset", s)
        parts.append(res[res["n"] > 0])
    return pd.concat(parts, ignore_index=True)


def clicked_share_table(tt: TruthTables, evalsets: Sequence[str] = ("B-control", "E"), level: str = "main"
                        ) -> pd.DataFrame:
    """Per participant and set: detections of final anchors, how many were clicked suggestions, and the share
    (``psegmented``, percent) (Fig 4b; paper 41.7 +- 17.3 % in E)."""
    rows = []
    groups = tt.groups()
    for s in [s for s in evalsets if s in tt.truth]:
        final = final_anchors(tt.truth[s], level)
        lab = tt.labels[s].loc[final]
        det = ~lab.isin(list(_SPECIAL)) & lab.notna()
        clk = tt.clicks[s].loc[final] & det
        for p in lab.columns:
            n = int(det[p].sum())
            if n:
                rows.append({"evalset": s, "participant": p, "group": groups[p], "n_detected": n,
                             "n_clicked": int(clk[p].sum()), "psegmented": 100.0 * clk[p].sum() / n})
    return pd.DataFrame(rows)


def group_summary(df: pd.DataFrame, value: str, by: Sequence[str] = ("evalset", "group"), pn: bool = True
                  ) -> pd.DataFrame:
    """Mean, SD, median and n of ``value`` per group; with ``pn`` SP and JP are pooled as Ps (and NP shown as
    NPs)."""
    d = df.copy()
    if pn and "group" in d.columns:
        d["group"] = np.where(d["group"].isin(("SP", "JP", "Ps")), "Ps", "NPs")
    out = d.groupby(list(by), sort=False)[value].agg(["mean", "std", "median", "count"]).reset_index()
    return out.rename(columns={"std": "sd", "count": "n"})


# ================================================================================================================
# algorithmic boundaries (Figs 4c, S5)
# ================================================================================================================


def _generator_index(anchors: pd.DataFrame, records: Sequence, min_iou: float = 0.5) -> pd.Series:
    """Position of the true nucleus (in its FOV record) matched to each anchor box; -1 for none."""
    by_name = {r.name: r for r in records}
    out = pd.Series(-1, index=anchors.index, dtype=np.int64)
    for fov, a in anchors.groupby("fovname", sort=True):
        rec = by_name.get(fov)
        if rec is None:
            continue
        tb = np.array([n.box for n in rec.nuclei], dtype=float).reshape(-1, 4)
        ti, ai, _ = match_boxes(tb, a[_BOX].to_numpy(dtype=float), min_iou)
        out.loc[a.index[ai]] = ti
    return out


def _dice(n1, n2) -> float:
    shape = (int(max(n1.ymax, n2.ymax)) + 2, int(max(n1.xmax, n2.xmax)) + 2)
    r1, c1 = nucleus_pixels(n1, shape)
    r2, c2 = nucleus_pixels(n2, shape)
    a, b = r1 * shape[1] + c1, r2 * shape[1] + c2
    return float(dice_from_areas(len(np.intersect1d(a, b)), len(a) + len(b)))


def boundary_table(tt: TruthTables, study: MultiraterStudy, records: Sequence | None = None,
                   evalsets: Sequence[str] = ("B-control", "E")) -> pd.DataFrame:
    """Algorithmic boundaries per (set, anchor): the medoid of the suggestion polygons participants clicked in the
    set, the boundary EM's decision, and (on the synthetic cohort) its DICE with the generator's true boundary, which
    stands in for the senior pathologist's manual traces of the paper (Figs 4c, S5b).

    Needs the in-memory clustering (``tt.table``). Returns evalset, anchor_id, fovname, n_clicks, p_truth_real
    (raw level), boundary_correct, boundary_probability, dice (NaN without ``records`` or without a matched true
    nucleus).
    """
    if tt.table is None:
        raise ValueError("boundary_table needs the clustering (TruthTables.table); build the truth tables in memory")
    boxes = tt.table.boxes
    gen_idx = _generator_index(tt.table.anchors, records) if records is not None else None
    by_name = {r.name: r for r in records} if records is not None else {}
    rows = []
    for s in [s for s in evalsets if s in tt.truth]:
        t = tt.truth[s]
        real = set(final_anchors(t, "raw"))
        poly = boxes[(boxes["evalset"] == s) & (boxes["type"] == "polyline")]
        for aid, grp in poly.groupby("anchor_id", sort=False):
            k = medoid(grp[_BOX].to_numpy(dtype=float))
            r = grp.iloc[k]
            nucleus = study.annotations[(s, r["participant"], r["fovname"])][int(r["index"])]
            dice = np.nan
            if gen_idx is not None and gen_idx.get(aid, -1) >= 0:
                dice = _dice(nucleus, by_name[r["fovname"]].nuclei[int(gen_idx[aid])])
            dec = t.at[aid, "EM_decision_boundary_is_correct"]
            rows.append({"evalset": s, "anchor_id": aid, "fovname": r["fovname"], "n_clicks": len(grp),
                         "p_truth_real": aid in real,
                         "boundary_correct": None if pd.isna(dec) else bool(dec),
                         "boundary_probability": t.at[aid, "EM_boundary_probability"], "dice": dice})
    return pd.DataFrame(rows)


def boundary_share_per_fov(tt: TruthTables, evalsets: Sequence[str] = ("B-control", "E")) -> pd.DataFrame:
    """Per FOV and set: nuclei (P-truth, raw level) and the share whose suggested boundary the EM judged correct
    (Fig S5a). Sets in which nobody clicked a suggestion are left out. Columns: evalset, fovname, n_nuclei,
    n_good_boundary, percent_good."""
    rows = []
    for s in [s for s in evalsets if s in tt.truth]:
        if tt.truth[s]["EM_decision_boundary_is_correct"].isna().all():
            continue  # no suggestion was clicked in this set: nothing to judge
        t = tt.truth[s].loc[final_anchors(tt.truth[s], "raw")]
        good = t["EM_decision_boundary_is_correct"].fillna(False).astype(bool)
        for fov, sub in t.groupby("fovname", sort=True):
            g = int(good.loc[sub.index].sum())
            rows.append({"evalset": s, "fovname": fov, "n_nuclei": len(sub), "n_good_boundary": g,
                         "percent_good": 100.0 * g / len(sub)})
    return pd.DataFrame(rows)


# ================================================================================================================
# ease of detection (Fig S8)
# ================================================================================================================


def detection_tally(tt: TruthTables, evalset: str = "E", level: str = "main") -> pd.DataFrame:
    """One row per real anchor (P-truth at ``level``, AMBIGUOUS left out): anchor_id, fovname, truth, n_matches_Ps,
    n_matches_NPs, and how many pathologists / NPs annotated the FOV in the set (n_annotators_Ps/NPs)."""
    t = tt.truth[evalset]
    real = final_anchors(t, level)
    lab = tt.labels[evalset]
    out = pd.DataFrame({"anchor_id": real, "fovname": t.loc[real, "fovname"].to_numpy(),
                        "truth": truth_series(t, "Ps", level).loc[real].to_numpy(),
                        "n_matches_Ps": t.loc[real, "n_matches_Ps"].to_numpy(),
                        "n_matches_NPs": t.loc[real, "n_matches_NPs"].to_numpy()})
    for who in ("Ps", "NPs"):
        saw = (lab[tt.members(who)] != NOT_ANNOTATED) & lab[tt.members(who)].notna()
        out[f"n_annotators_{who}"] = saw.loc[real].sum(axis=1).to_numpy()
    return out


def ease_of_detection(tally: pd.DataFrame, who: str = "NPs") -> pd.DataFrame:
    """Per true class and x: how many real anchors ``who`` detected at least x times, and the percent of the
    class (Fig S8b). Columns: truth, min_detections, n, n_class, percent."""
    col = f"n_matches_{who}"
    rows = []
    top = int(tally[col].max()) if len(tally) else 0
    for cls, sub in tally.groupby("truth", sort=True):
        for x in range(top + 1):
            n = int((sub[col] >= x).sum())
            rows.append({"truth": cls, "min_detections": x, "n": n, "n_class": len(sub),
                         "percent": 100.0 * n / len(sub)})
    return pd.DataFrame(rows)


def detected_by_at_least(tt: TruthTables, evalset: str = "E", who: str = "NPs", x: int = 16,
                         classes: Mapping[str, tuple[str, str]] | None = None) -> pd.DataFrame:
    """Percent of the real nuclei of a class detected by at least ``x`` members of ``who`` (paper: 53.3 % of
    sTILs vs 21.4 % of fibroblasts by 16+ NPs). ``classes`` maps a display name to (level, class); default sTILs
    (super) and fibroblasts (raw). Also gives the percent among nuclei whose FOV had at least ``x`` annotators
    of the group (the only ones that can reach x)."""
    classes = classes or {"sTILs": ("super", "sTIL"), "fibroblasts": ("raw", "fibroblast")}
    rows = []
    for name, (level, cls) in classes.items():
        tally = detection_tally(tt, evalset, level)
        sub = tally[tally["truth"] == cls]
        hit = sub[f"n_matches_{who}"] >= x
        reach = sub[f"n_annotators_{who}"] >= x
        rows.append({"class": name, "level": level, "truth_class": cls, "who": who, "x": x, "n": len(sub),
                     "percent": 100.0 * hit.mean() if len(sub) else np.nan,
                     "n_in_fovs_reaching_x": int(reach.sum()),
                     "percent_in_fovs_reaching_x": 100.0 * hit[reach].mean() if reach.any() else np.nan})
    return pd.DataFrame(rows)


# ================================================================================================================
# clustering: constraint, examples (Figs 2, 5b, S16)
# ================================================================================================================


def constraint_effect(con: TruthTables, uncon: TruthTables, evalset: str = "E", level: str = "super",
                      records: Sequence | None = None, match_iou: float = 0.5
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Constrained vs unconstrained clustering at one threshold (Fig 5b).

    Returns
    -------
    summary : one row per clustering: anchors, anchors detected by >= 2 pathologists in U-control, P-truth
        nuclei; on the synthetic cohort also the recall of true nuclei by P-truth anchors (one-to-one box matching
        at ``match_iou``), for all nuclei and separately for *overlapping* ones (box IOU > 0 with another true
        nucleus) and isolated ones.
    crosstab : P-truth label (``level``; ``not a nucleus`` for undetected/blank) of matched anchors, constrained
        (rows) vs unconstrained (columns), counts. Anchors are matched one-to-one per FOV by box IOU.
    """
    summary = []
    true_boxes = {}
    if records is not None:
        fovs = set(con.truth[evalset]["fovname"])
        for r in records:
            if r.name in fovs:
                b = np.array([n.box for n in r.nuclei], dtype=float).reshape(-1, 4)
                iou = box_iou(b, b)
                np.fill_diagonal(iou, 0.0)
                true_boxes[r.name] = (b, iou.max(axis=1) > 0 if len(b) else np.zeros(0, bool))
    for name, tt in (("constrained", con), ("unconstrained", uncon)):
        t = tt.truth[evalset]
        real = final_anchors(t, level)
        row = {"clustering": name, "n_anchors": len(t),
               "n_anchors_2Ps": int((t.get("UNBIASED_n_matches_Ps", t["n_matches_Ps"]) >= 2).sum()),
               "n_ptruth": len(real)}
        if true_boxes:
            found_all, found_ov, n_all, n_ov = 0, 0, 0, 0
            treal = t.loc[real]
            for fov, (b, overlapping) in true_boxes.items():
                a = treal.loc[treal["fovname"] == fov, _BOX].to_numpy(dtype=float)
                ti, _, _ = match_boxes(b, a, match_iou)
                hit = np.zeros(len(b), bool)
                hit[ti] = True
                found_all += int(hit.sum())
                found_ov += int(hit[overlapping].sum())
                n_all += len(b)
                n_ov += int(overlapping.sum())
            row.update(n_true=n_all, n_true_overlapping=n_ov,
                       recall=100.0 * found_all / max(n_all, 1),
                       recall_overlapping=100.0 * found_ov / max(n_ov, 1),
                       recall_isolated=100.0 * (found_all - found_ov) / max(n_all - n_ov, 1))
        summary.append(row)
    tc, tu = con.truth[evalset], uncon.truth[evalset]

    def lab(t: pd.DataFrame) -> pd.Series:
        s = truth_series(t, "Ps", level)
        return s.where(is_real(s), "not a nucleus")

    lc, lu = lab(tc), lab(tu)
    pairs = []
    for fov, a in tc.groupby("fovname", sort=True):
        b = tu[tu["fovname"] == fov]
        ai, bi, _ = match_boxes(a[_BOX].to_numpy(dtype=float), b[_BOX].to_numpy(dtype=float), match_iou)
        pairs += list(zip(lc.loc[a.index[ai]], lu.loc[b.index[bi]], strict=True))
    ct = pd.crosstab(pd.Series([p[0] for p in pairs], name="constrained"),
                     pd.Series([p[1] for p in pairs], name="unconstrained"))
    return pd.DataFrame(summary), ct


def clustering_example(tt: TruthTables, study: MultiraterStudy | None = None, fovname: str | None = None,
                       evalset: str = "E", level: str = "super") -> dict:
    """One FOV's boxes and anchors for Fig 2: by default the FOV with the most P-truth nuclei.

    Returns a dict: fovname, image (RGB array or None), boxes (the FOV's boxes in ``evalset`` with participant,
    group, anchor_id), anchors (the FOV's anchors with ``ptruth`` at ``level``, ``n_boxes``), evalset, level.
    """
    if tt.table is None:
        raise ValueError("clustering_example needs the clustering (TruthTables.table)")
    t = tt.truth[evalset]
    if fovname is None:
        real = t.loc[final_anchors(t, level)]
        fovname = real["fovname"].value_counts().sort_index().idxmax() if len(real) else t["fovname"].iloc[0]
    boxes = tt.table.boxes
    b = boxes[(boxes["fovname"] == fovname) & (boxes["evalset"] == evalset)].copy()
    b["group"] = b["participant"].map(tt.groups())
    a = t[t["fovname"] == fovname].copy()
    s = truth_series(a, "Ps", level)
    a["ptruth"] = s.where(is_real(s), None)
    a["n_boxes_in_set"] = b.groupby("anchor_id").size().reindex(a.index).fillna(0).astype(int)
    image = None
    if study is not None and fovname in study.images:
        from skimage.io import imread

        image = imread(study.images[fovname])[..., :3]
    return {"fovname": fovname, "image": image, "boxes": b, "anchors": a, "evalset": evalset, "level": level}


def dendrogram_example(tt: TruthTables, fovname: str | None = None, evalset: str = _UNBIASED, who: str = "Ps",
                       margin: float = 12.0, max_boxes: int = 40) -> dict:
    """A small neighbourhood of one FOV for the clustering diagram of Fig S16: the boxes of ``who`` in ``evalset``
    around a spot where the constraint splits a cluster (two boxes of one participant that unconstrained complete
    linkage would merge), else around the largest cluster.

    Returns a dict: boxes (N, 4), participants (N,), groups (N,) don't-link codes, linkage (scipy Z), labels
    (constrained clusters), labels_unconstrained, min_iou, window (xmin, ymin, xmax, ymax), fovname.
    """
    from scipy.cluster.hierarchy import linkage

    if tt.table is None:
        raise ValueError("dendrogram_example needs the clustering (TruthTables.table)")
    boxes = tt.table.boxes
    b = boxes[(boxes["evalset"] == evalset) & boxes["participant"].isin(tt.members(who))]
    fovs = [fovname] if fovname else sorted(b["fovname"].unique())
    best = None
    for fov in fovs:
        sub = b[b["fovname"] == fov]
        xy = sub[_BOX].to_numpy(dtype=float)
        if len(xy) < 3:
            continue
        free = cluster_boxes(xy, None, tt.min_iou)
        parts = sub["participant"].to_numpy()
        for c in np.unique(free):
            idx = np.flatnonzero(free == c)
            dup = len(idx) != len(set(parts[idx]))
            score = (int(dup), len(idx))
            if best is None or score > best[0]:
                best = (score, fov, xy[idx])
        if best is not None and best[0][0] and fovname is None:
            break
    if best is None:
        raise ValueError("no FOV has enough boxes for a dendrogram example")
    _, fov, cluster_xy = best
    x0, y0 = cluster_xy[:, 0].min() - margin, cluster_xy[:, 1].min() - margin
    x1, y1 = cluster_xy[:, 2].max() + margin, cluster_xy[:, 3].max() + margin
    sub = b[b["fovname"] == fov]
    inside = ((sub["xmax"] > x0) & (sub["xmin"] < x1) & (sub["ymax"] > y0) & (sub["ymin"] < y1)).to_numpy()
    sub = sub[inside].iloc[:max_boxes]
    xy = sub[_BOX].to_numpy(dtype=float)
    parts = sub["participant"].astype(str).to_numpy()
    codes = pd.factorize(parts)[0].astype(np.int64)
    z = linkage(condensed_iou_distance(xy), method="complete")
    return {"boxes": xy, "participants": parts, "groups": codes, "linkage": z,
            "labels": cluster_boxes(xy, codes, tt.min_iou), "labels_unconstrained": cluster_boxes(xy, None, tt.min_iou),
            "min_iou": tt.min_iou, "window": (x0, y0, x1, y1), "fovname": fov}


# ================================================================================================================
# synthetic cohort: the generator's truth
# ================================================================================================================


def _gen_labels(t: pd.DataFrame, level: str) -> pd.Series:
    if "generator_truth_raw" not in t.columns:
        raise KeyError("no generator_truth_raw column: call attach_generator_truth first (synthetic cohort only)")
    g = t["generator_truth_raw"].astype(object)
    return g.map(lambda v: _map_one(v, level) if isinstance(v, str) else UNDETECTED).astype(object)


def np_label_roc_vs_generator(tt: TruthTables, evalset: str = "E", level: str = "main") -> dict:
    """:func:`np_label_roc_table` with the generator's truth in place of the P-truth: the NP-label's classification
    ROC on the anchors the P-truth calls real nuclei and that match a true nucleus whose class is not AMBIGUOUS at
    ``level``. What the analysis infers about a set (against that set's own P-truth) next to what is true of it
    (synthetic cohort; call :func:`attach_generator_truth` first)."""
    t = tt.truth[evalset]
    g = _gen_labels(t, level)
    keep = t.index[((g != UNDETECTED) & (g != tx.AMBIGUOUS)).to_numpy()]
    keep = keep.intersection(_not_ambiguous(t, level))
    return np_label_roc(np_label_frame(t.loc[keep], level), g.loc[keep])


def np_label_accuracy_vs_generator(tt: TruthTables, evalset: str = "E", level: str = "main") -> float:
    """The generator's true accuracy of a set's NP-label: the share of true nuclei that the NP EM label calls a
    nucleus and gives their true class at ``level`` (``class_accuracy`` of :func:`truth_vs_generator`)."""
    v = truth_vs_generator(tt, (level,), (evalset,), ("NPs",))
    v = v[(v["method"] == "EM") & (v["metric"] == "class_accuracy")]["value"]
    return float(v.iloc[0]) if len(v) else np.nan


def suggestion_effect(tt: TruthTables, sets: Sequence[str] = ("E", "B-control"), reference: str = _UNBIASED,
                      level: str = "main") -> pd.DataFrame:
    """The effect of suggestions on the NP-label (Fig 4e), as the analysis infers it (micro AUROC of each set
    against its own P-truth) and as it is (against the generator's truth; synthetic cohort): the AUROC of the same
    EM probabilities against the generator's classes, and the NP-label's true class accuracy
    (:func:`np_label_accuracy_vs_generator`). One row per set with suggestions: ``evalset, reference,
    inferred_auroc, inferred_reference_auroc, inferred_effect, true_auroc, true_reference_auroc, true_effect,
    same_sign, true_accuracy, true_reference_accuracy, true_accuracy_effect``."""
    rows = []
    for s in [s for s in sets if s in tt.truth and reference in tt.truth]:
        inf_a, inf_b = np_label_roc_table(tt, s, level)["micro"], np_label_roc_table(tt, reference, level)["micro"]
        true_a = np_label_roc_vs_generator(tt, s, level)["micro"]
        true_b = np_label_roc_vs_generator(tt, reference, level)["micro"]
        acc_a = np_label_accuracy_vs_generator(tt, s, level)
        acc_b = np_label_accuracy_vs_generator(tt, reference, level)
        rows.append({"evalset": s, "reference": reference, "inferred_auroc": inf_a, "inferred_reference_auroc": inf_b,
                     "inferred_effect": inf_a - inf_b, "true_auroc": true_a, "true_reference_auroc": true_b,
                     "true_effect": true_a - true_b,
                     "same_sign": bool(np.sign(inf_a - inf_b) == np.sign(true_a - true_b)),
                     "true_accuracy": acc_a, "true_reference_accuracy": acc_b, "true_accuracy_effect": acc_a - acc_b})
    return pd.DataFrame(rows)


def truth_vs_generator(tt: TruthTables, levels: Sequence[str] = ("raw", "main", "super"),
                       evalsets: Sequence[str] | None = None, whos: Sequence[str] = ("Ps", "NPs")) -> pd.DataFrame:
    """P-truth and NP-label, by EM and by majority vote, against the generator's truth (synthetic cohort).

    Items: per set and group, the anchors on which EM ran (detected by >= 2 members of the group in U-control and
    boxed by at least one of them in the set). The generator label of an anchor is the class of its matched true
    nucleus, or ``undetected`` when it matches none. Methods: ``EM`` (the study's EM label, ``undetected`` a class)
    and ``MV`` (the most frequent of the group's answers, ``undetected`` counted as an answer, ties alphabetical).

    Metrics (long format): ``label_accuracy`` (class or not-a-nucleus, all items); ``detection_f1`` (nucleus vs
    not); ``class_accuracy`` (items that are true nuclei and that the method calls a nucleus).

    ``evalsets`` and ``whos`` restrict the sets and groups (default: all).

    Returns DataFrame: evalset, who, method, level, metric, n, value.
    """
    rows = []
    for s, t in tt.truth.items():
        if evalsets is not None and s not in evalsets:
            continue
        for who in whos:
            col = _label_col(who, "raw")
            if col not in t.columns:
                continue
            items = t.index[t[col].notna().to_numpy()]
            if not len(items):
                continue
            mv_raw = majority_vote(tt.labels[s].loc[items, tt.members(who)])["label"]
            for level in levels:
                g = _gen_labels(t.loc[items], level)
                preds = {"EM": truth_series(t, who, level).loc[items],
                         "MV": mv_raw.map(lambda v, _l=level: _map_one(v, _l))}
                for method, p in preds.items():
                    p = p.astype(object)
                    g_real, p_real = g != UNDETECTED, (p != UNDETECTED) & p.notna()
                    tp = int((g_real & p_real).sum())
                    fp = int((~g_real & p_real).sum())
                    fn = int((g_real & ~p_real).sum())
                    both = g_real & p_real
                    vals = {"label_accuracy": (len(items), float((p == g).mean())),
                            "detection_f1": (len(items), f1_from_counts(tp, fp, fn)),
                            "class_accuracy": (int(both.sum()), float((p[both] == g[both]).mean()) if both.any()
                                               else np.nan)}
                    for metric, (n, v) in vals.items():
                        rows.append({"evalset": s, "who": who, "method": method, "level": level, "metric": metric,
                                     "n": n, "value": v})
    return pd.DataFrame(rows)


def generator_confusion(tt: TruthTables, evalset: str = "E", who: str = "Ps", level: str = "main") -> pd.DataFrame:
    """Crosstab of the generator's class (rows; ``undetected`` = no true nucleus) vs the EM label of ``who``
    (columns) on the anchors where EM ran (synthetic cohort)."""
    t = tt.truth[evalset]
    items = t.index[truth_series(t, who, "raw").notna().to_numpy()]
    g = _gen_labels(t.loc[items], level).rename("generator")
    p = truth_series(t, who, level).loc[items].rename(f"EM {who}")
    return pd.crosstab(g, p)


# ================================================================================================================
# NP-redundancy simulation (Fig 3e; notebook 04)
# ================================================================================================================


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
        metrics = ["det_f1", "mcc", "auroc_micro", "auroc_macro"] + sorted(
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


# ================================================================================================================
# paper vs this run
# ================================================================================================================


def paper_vs_run(rows: Iterable[tuple[str | None, str, float | str | None, str]]) -> pd.DataFrame:
    """A "paper vs this run" table from ``(paper reference, quantity, this run, note)`` rows: the paper's value and
    source come from :mod:`nucls_utils.paper` (reference ``None``: a row the paper has no number for), ``role`` says
    whether the simulated crowd was fitted to the row (:func:`nucls_utils.crowd.calibrate.role`); numbers are
    rounded to 3 significant digits for display, NaN shown empty."""
    from ..crowd.calibrate import role

    out = pd.DataFrame([paper.row(ref, q, v, note) if ref is not None else
                        {"quantity": q, "paper": None, "this_run": v, "note": note, "source": None, "paper_key": None}
                        for ref, q, v, note in rows],
                       columns=["quantity", "paper", "this_run", "note", "source", "paper_key"])
    out.insert(4, "role", [role(k) for k in out["paper_key"]])
    for c in ("paper", "this_run"):
        out[c] = [(float(f"{v:.3g}") if isinstance(v, float | np.floating) and np.isfinite(v) else v)
                  if v is not None else None for v in out[c]]
    return out


def agreement_paper_vs_run(*, np_det: dict, np_det_pooled: dict | None, roc_main: dict, alpha: pd.DataFrame,
                           self_agree: pd.DataFrame, auroc_boot: pd.DataFrame, auroc_tests: pd.DataFrame,
                           np_accuracy: pd.DataFrame, ease16: pd.DataFrame, n_fovs: int,
                           clicked: pd.DataFrame | None = None, boundaries: pd.DataFrame | None = None,
                           evalset: str = "E", effect: pd.DataFrame | None = None) -> pd.DataFrame:
    """The "paper vs this run" table of notebook 03 from its results (percentages as the paper quotes them)."""
    def alpha_at(raters: str, level: str) -> float:
        a = alpha[(alpha["min_iou"] == PRIMARY_IOU) & (alpha["raters"] == raters) & (alpha["level"] == level)
                  & (alpha["min_detections"] == 2)]
        return 100 * float(a["alpha"].iloc[0]) if len(a) else np.nan

    def stat(df: pd.DataFrame | None, value: str, group: str, fn: str, s: str = evalset) -> float:
        if df is None or df.empty:
            return np.nan
        d = df[(df["evalset"] == s) & (df["group"].isin(("SP", "JP") if group == "Ps" else ("NP",)))][value]
        return float(getattr(d, fn)()) if len(d) else np.nan

    main_alpha = alpha[(alpha["min_iou"] == PRIMARY_IOU) & (alpha["raters"] == "Ps") & (alpha["level"] == "main")
                       & (alpha["min_detections"] == 2)]
    n_anchors = int(main_alpha["n_anchors"].iloc[0]) if len(main_alpha) else np.nan
    mcc = np_accuracy.loc[np_accuracy["group"] == "NP", "mcc"].dropna() * 100
    boot = auroc_boot.set_index("evalset") if len(auroc_boot) else pd.DataFrame()
    test = auroc_tests[(auroc_tests["set_a"] == evalset) & (auroc_tests["set_b"] == _UNBIASED)] \
        if len(auroc_tests) else pd.DataFrame()
    ease = ease16.set_index("class")
    rows = [
        ("fig3a.np_detection_ap", "NP-label detection AP (E, IOU 0.25)", np_det["ap"],
         "anchors with >= 2 NP detections; y = P-truth calls it a nucleus; score 1 - P(undetected)"),
        ("fig3a.np_detection_ap", "NP-label detection AP, IOU 0.25/0.5/0.75 pooled",
         np_det_pooled["ap"] if np_det_pooled else np.nan, "the reference's query reads all thresholds at once"),
        ("fig3b.np_auroc_micro", "NP-label AUROC, micro (E, main classes)", roc_main["micro"],
         f"{roc_main['n']} P-truth nuclei"),
        ("fig3b.np_auroc_macro", "NP-label AUROC, macro (E, main classes)", roc_main["macro"],
         "area of the mean ROC curve"),
        ("fig3.np_mcc_low", "NP classification MCC x 100, lowest NP", mcc.min() if len(mcc) else np.nan,
         "pooled one-vs-rest, main classes, E"),
        ("fig3.np_mcc_high", "NP classification MCC x 100, highest NP", mcc.max() if len(mcc) else np.nan, ""),
        ("fig5a.anchors_iou025", "P-truth nuclei at IOU 0.25 (>= 2 P detections)", n_anchors,
         f"scales with the number of multi-rater FOVs ({n_fovs} here)"),
        ("fig5c.alpha_ps_main", "alpha x 100, Ps, main classes, IOU 0.25", alpha_at("Ps", "main"),
         "classification; P-truth nuclei detected by >= 2 Ps"),
        ("fig5.alpha_ps_super", "alpha x 100, Ps, super-classes", alpha_at("Ps", "super"), "same anchors"),
        ("fig5.alpha_nps_super", "alpha x 100, NPs, super-classes", alpha_at("NPs", "super"), "same anchors"),
        ("fig4d.self_kappa_ps", "self-agreement kappa x 100, Ps, mean (E vs U-control)",
         100 * stat(self_agree, "kappa", "Ps", "mean"), "main classes, classification"),
        ("fig4d.self_kappa_ps:sd", "self-agreement kappa x 100, Ps, SD", 100 * stat(self_agree, "kappa", "Ps", "std"),
         ""),
        ("fig4d.self_kappa_nps", "self-agreement kappa x 100, NPs, mean",
         100 * stat(self_agree, "kappa", "NPs", "mean"), ""),
        ("fig4d.self_kappa_nps:sd", "self-agreement kappa x 100, NPs, SD",
         100 * stat(self_agree, "kappa", "NPs", "std"), ""),
        ("fig4e.np_auroc_e", "NP-label AUROC micro, E (with suggestions)",
         boot.at[evalset, "micro"] if evalset in boot.index and "micro" in boot.columns else np.nan,
         "main classes, each set vs its own P-truth"),
        ("fig4e.np_auroc_u", "NP-label AUROC micro, U-control (without)",
         boot.at[_UNBIASED, "micro"] if _UNBIASED in boot.index and "micro" in boot.columns else np.nan, ""),
        ("fig4e.np_auroc_pvalue", "E vs U-control, Mann-Whitney p (bootstrap AUROCs)",
         float(test["pvalue"].iloc[0]) if len(test) else np.nan,
         (f"E higher in {100 * float(test['share_a_higher'].iloc[0]):.0f} % of resamples; " if len(test) else "")
         + "p shrinks with the number of resamples"),
        ("figS8.stils_by_16_nps", "sTILs detected by 16+ NPs, %",
         ease.at["sTILs", "percent"] if "sTILs" in ease.index else np.nan,
         f"of {int(ease.at['sTILs', 'n']) if 'sTILs' in ease.index else 0} sTILs (E)"),
        ("figS8.fibroblasts_by_16_nps", "fibroblasts detected by 16+ NPs, %",
         ease.at["fibroblasts", "percent"] if "fibroblasts" in ease.index else np.nan,
         f"of {int(ease.at['fibroblasts', 'n']) if 'fibroblasts' in ease.index else 0} fibroblasts (E)"),
    ]
    if effect is not None and len(effect) and evalset in set(effect["evalset"]):
        eff = effect.set_index("evalset").loc[evalset]
        rows += [(None, f"NP-label AUROC micro, {evalset}, vs the generator's truth", eff["true_auroc"],
                  "the true accuracy the analysis above estimates"),
                 (None, "NP-label AUROC micro, U-control, vs the generator's truth", eff["true_reference_auroc"], ""),
                 (None, f"effect of suggestions ({evalset} - U-control), inferred vs true",
                  f"{eff['inferred_effect']:+.3f} vs {eff['true_effect']:+.3f}",
                  "same sign" if eff["same_sign"] else "OPPOSITE SIGNS: the analysis misreads the planted effect"),
                 (None, f"NP-label true class accuracy x 100, {evalset} vs U-control",
                  f"{100 * eff['true_accuracy']:.1f} vs {100 * eff['true_reference_accuracy']:.1f}",
                  "share of true nuclei the NP-label gives their true main class (generator's truth)")]
    if clicked is not None and len(clicked):
        e = clicked[clicked["evalset"] == evalset]["psegmented"]
        rows += [("fig4b.clicked_e", "clicked suggestions per participant, E, mean %",
                  e.mean() if len(e) else np.nan, "share of detected P-truth nuclei"),
                 ("fig4b.clicked_e:sd", "clicked suggestions per participant, E, SD %",
                  e.std() if len(e) else np.nan, "")]
    if boundaries is not None and len(boundaries):
        d = 100 * boundaries[(boundaries["evalset"] == evalset) & (boundaries["boundary_correct"] == True)][  # noqa: E712
            "dice"].dropna()
        rows += [("fig4c.boundary_dice_e", "DICE of boundaries judged correct, E, mean",
                  d.mean() if len(d) else np.nan, "vs the generator's boundary (paper: vs an SP's traces)"),
                 ("fig4c.boundary_dice_e:sd", "DICE of boundaries judged correct, E, SD",
                  d.std() if len(d) else np.nan, "")]
    return paper_vs_run(rows)


def redundancy_paper_vs_run(findings: pd.DataFrame, *, target_nps: int, n_realisations: int,
                            info: Mapping) -> pd.DataFrame:
    """The "paper vs this run" table of notebook 04 (Fig 3e): where accuracy plateaus, whether stromal nuclei
    need more NPs, and the simulation's size. (No wall time: a table is a function of the inputs and the seed,
    byte-identical between runs; the notebook prints the timing.)"""
    f = findings.set_index("metric")

    def k(m: str) -> float:
        return float(f.at[m, "plateau_k"]) if m in f.index else np.nan

    stromal, others = k("auroc_nonTIL_stromal"), [k("auroc_tumor_any"), k("auroc_sTIL")]
    others = [o for o in others if np.isfinite(o)]
    if np.isfinite(stromal) and others:
        verdict = (f"{'yes' if stromal > max(others) else 'no'}: stromal plateaus at k = {stromal:g}, "
                   f"tumor/sTILs at {'/'.join(f'{o:g}' for o in others)}")
    else:
        verdict = None
    plateau = "fig3e.redundancy_plateau_k"
    rows = [(plateau, "NPs per FOV where detection F1 stops improving (95 % of the gain)", k("det_f1"),
             "median over realisations"),
            (plateau, "... classification MCC", k("mcc"), ""),
            (plateau, "... AUROC micro", k("auroc_micro"), ""),
            (plateau, "... AUROC macro", k("auroc_macro"), ""),
            ("fig3e.stromal_need_more_nps", "stromal nuclei need more NPs than tumor or sTILs", verdict,
             "per-class AUROC plateaus"),
            ("fig3e.total_nps", "total NPs held constant at", target_nps,
             f"most common number of distinct NPs over realisations ({info.get('n_nps')} NPs in "
             f"{info.get('n_fovs')} FOVs with >= {info.get('min_nps_used')} NPs)"),
            ("fig3e.realisations", "realisations per NPs-per-FOV value", n_realisations, "")]
    return paper_vs_run(rows)
