"""The multi-rater study read back, its anchors, and the truth inferred from them (notebook 03): truth tables with
the Ps' and NPs' Dawid-Skene labels per set, their storage, and the class levels (P-truth, final anchors)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ... import taxonomy as tx
from ...io.atomic import atomic_path
from ...io.multirater import multirater_frame, read_multirater
from ...progress import tqdm
from ..accuracy import is_real
from ..anchors import (
    NOT_ANNOTATED,
    UNDETECTED,
    WHO_GROUPS,
    AnchorTable,
    anchor_truth_match,
    build_anchor_table,
)
from ..em import PROB_PREFIX, boundary_em, group_posteriors, infer_labels

__all__ = [
    "CLUSTERING_IOUS", "EM_CLASSES", "EVALSET_ALIASES", "MultiraterStudy", "PRIMARY_IOU", "STAGE",
    "TruthTables", "anchor_tables", "attach_generator_truth", "build_truth_tables", "final_anchors",
    "group_labels", "load_multirater_study", "locate_multirater", "members", "np_label_frame",
    "ptruth_composition", "read_truth_tables", "truth_series", "write_truth_tables",
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
