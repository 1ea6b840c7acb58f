"""The simulated annotation study: participants annotate FOVs, with or without algorithmic suggestions.

* :func:`annotate_fov`: one participant, one FOV. Each true nucleus is detected with the participant's per-class
  sensitivity and labelled through their confusion matrix; where a suggestion overlaps it, the participant may adopt
  a suggested class (the behavioural model below) and clicks the suggested boundary when it is good (box IOU with the
  true nucleus >= ``good_boundary_iou``) with their click skill, or rarely when it is bad; otherwise they draw a box
  (edges jittered). False positives are boxes where there is no nucleus.

Suggestions are shown as the paper showed them: a boundary with the class inherited from the low-power tissue region
(B-control's bootstrap, and beside the model's class in E and the single-rater data), and in E also the refined
model's class. Behavioural model: a participant whose own label differs from every shown class adopts one with
:func:`~nucls_utils.crowd.participants.adoption_probability` (their impressionability, raised when their own
judgement is uncertain and lowered when it is confident; their certainty is the weight their confusion row gives
their label, halved on a nucleus that looks like another class, whether or not they saw through it); of two shown
classes they take the one they find more plausible (the larger entry of their own confusion row for the nucleus).
Pathologists are less impressionable than NPs (:data:`~nucls_utils.crowd.participants.GROUP_PRIORS`). Before that, a
shown class that names what a nucleus truly is may prompt a second look (*recognition*, the planted effect): on a
nucleus that looks like another class, the participant sees through the look with their insight raised by
``(1 - insight) * recognition``. So correct suggestions help through recognition and wrong ones hurt through
adoption; the net effect on a set's labels is measured, not set.
* :func:`single_rater_study`: each FOV annotated by one NP, shown suggestions (the uncorrected data), and a corrected
  version in which coordinators fix most errors, marking fixes with the ``correction_`` prefix, as in the release.
* :func:`multi_rater_study`: a shared set of FOVs annotated in three sets, U-control (no suggestions), B-control
  (bootstrapped suggestions) and E (refined suggestions), by every pathologist and many NPs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .. import taxonomy as tx
from ..evaluation import match_boxes
from ..io.dataset import FovRecord, Nucleus
from .participants import (
    CLASS_INDEX,
    CLASSES,
    CONFUSABLE_PAIRS,
    PATHOLOGIST_SENSITIVITY,
    Participant,
    adoption_probability,
)

__all__ = ["annotate_fov", "apparent_classes", "fov_looks", "FovLooks", "AMBIGUITY", "SUBTLE_SHARE", "DECOYS_PER_FOV",
           "CorrectionPolicy", "correct_annotations", "single_rater_study", "multi_rater_study",
           "EVALSETS"]

EVALSETS = ("U-control", "B-control", "E")


def _boxes(nuclei: Sequence[Nucleus]) -> np.ndarray:
    return np.array([n.box for n in nuclei], dtype=float).reshape(-1, 4)


def _jittered_box(n: Nucleus, jitter: float, shape: tuple[int, int], rng: np.random.Generator) -> tuple[int, ...]:
    h, w = shape
    bw, bh = n.xmax - n.xmin, n.ymax - n.ymin
    d = rng.normal(0, jitter, 4) * np.array([bw, bh, bw, bh])
    x0 = int(np.clip(round(n.xmin + d[0]), 0, w - 3))
    y0 = int(np.clip(round(n.ymin + d[1]), 0, h - 3))
    x1 = int(np.clip(round(n.xmax + d[2]), x0 + 2, w))
    y1 = int(np.clip(round(n.ymax + d[3]), y0 + 2, h))
    return x0, y0, x1, y1


#: Share of nuclei that look like one of their confusable partners (:func:`apparent_classes`): a property of the
#: nuclei, the same for every participant (fitted with the crowd's priors, see :mod:`.calibrate`).
AMBIGUITY = 0.4628
#: Share of nuclei that are subtle (faint, small, crowded: harder to see for everyone) and decoys per FOV (objects
#: that look like a nucleus and are not): properties of the FOV (:func:`fov_looks`), hand-set (not fitted).
SUBTLE_SHARE = 0.2
DECOYS_PER_FOV = 2.0


@dataclass(frozen=True)
class FovLooks:
    """How a FOV looks to everyone who annotates it: the class each true nucleus looks like, which nuclei are
    subtle, and the decoys (boxes on no nucleus that look like one)."""

    apparent: tuple[str, ...]
    subtle: tuple[bool, ...]
    decoys: tuple[tuple[int, int, int, int], ...]


def fov_looks(truth: Sequence[Nucleus], image_shape: tuple[int, int], rng: np.random.Generator, *,
              ambiguity: float = AMBIGUITY, subtle_share: float = SUBTLE_SHARE,
              decoys_per_fov: float = DECOYS_PER_FOV) -> FovLooks:
    """Draw a FOV's :class:`FovLooks` (:func:`apparent_classes`, then subtle nuclei, then decoys of nucleus size)."""
    apparent = apparent_classes(truth, rng, ambiguity)
    subtle = rng.random(len(truth)) < subtle_share
    h, w = image_shape
    decoys = []
    for _ in range(int(rng.poisson(decoys_per_fov))):
        side = float(np.exp(rng.normal(np.log(24), 0.3)))
        x0, y0 = float(rng.uniform(0, max(w - side, 1))), float(rng.uniform(0, max(h - side, 1)))
        decoys.append((int(x0), int(y0), int(min(x0 + side, w)), int(min(y0 + side, h))))
    return FovLooks(tuple(apparent), tuple(bool(v) for v in subtle), tuple(decoys))

_PARTNERS: dict[str, tuple[str, ...]] = {c: tuple(sorted({b for a, b in CONFUSABLE_PAIRS if a == c}
                                                         | {a for a, b in CONFUSABLE_PAIRS if b == c})) for c in CLASSES}


def apparent_classes(truth: Sequence[Nucleus], rng: np.random.Generator, ambiguity: float = AMBIGUITY) -> list[str]:
    """The class each true nucleus looks like: its own, or with probability ``ambiguity`` one of its confusable
    partners (a plasma cell that looks like a lymphocyte, a fibroblast like an endothelial cell). Drawn once per FOV
    and shared by every participant, so their errors on such nuclei are correlated; a participant sees through the
    look with their ``insight`` (:func:`annotate_fov`). Classes without partners always look like themselves."""
    u, pick = rng.random(len(truth)), rng.random(len(truth))
    out = []
    for k, n in enumerate(truth):
        partners = _PARTNERS.get(n.raw_class, ())
        out.append(partners[int(pick[k] * len(partners))] if partners and u[k] < ambiguity else n.raw_class)
    return out


def annotate_fov(p: Participant, truth: Sequence[Nucleus], image_shape: tuple[int, int], rng: np.random.Generator,
                 suggestions: Sequence[Nucleus] | None = None, good_boundary_iou: float = 0.7,
                 opinion: np.random.Generator | None = None,
                 region_classes: Sequence[str] | None = None,
                 apparent: Sequence[str] | None = None, looks: FovLooks | None = None) -> list[Nucleus]:
    """One participant's annotations of one FOV (see the module docstring).

    Parameters
    ----------
    p : Participant
    truth : sequence of Nucleus
        The true nuclei of the FOV.
    image_shape : (H, W)
    rng : numpy.random.Generator
    suggestions : sequence of Nucleus, optional
        Algorithmic suggestions shown to the participant (polylines with a suggested class).
    good_boundary_iou : float
        A suggested boundary is good when its box IOU with the true nucleus reaches this.
    opinion : numpy.random.Generator, optional
        Source of the participant's own judgement of each nucleus (whether they see it, which class they think it
        is). Passing generators seeded alike for the same (participant, FOV) makes the judgement the same every time
        the FOV is shown, as a person's would be, except that each read keeps that standing judgement of a nucleus
        with the participant's ``consistency`` and judges it afresh otherwise; what the suggestions change (and
        jitter, clicks, false positives) also differs between sets. Default: ``rng`` (a fresh judgement each time).
    region_classes : sequence of str, optional
        A second suggested class per suggestion, shown beside the suggestion's own (model) class: the class
        inherited from the tissue region (E and the single-rater data). ``unlabeled`` carries no class to adopt.
    apparent : sequence of str, optional
        The class each true nucleus looks like (:func:`apparent_classes`); the participant labels a nucleus that
        looks like another class as that class unless they see through it (their ``insight``). Default: every
        nucleus looks like what it is.
    looks : FovLooks, optional
        The FOV's looks (:func:`fov_looks`): its ``apparent`` classes (``apparent`` must then be None), subtle nuclei
        (detected with ``subtle_detection`` times the participant's sensitivity) and decoys (each boxed with the
        participant's ``decoy_detection``, labelled like a false positive).
    """
    if looks is not None:
        if apparent is not None:
            raise ValueError("give the apparent classes either alone or inside looks, not both")
        apparent = looks.apparent
    if region_classes is not None and (suggestions is None or len(region_classes) != len(suggestions)):
        raise ValueError(f"region_classes: {0 if region_classes is None else len(region_classes)} classes for "
                         f"{0 if suggestions is None else len(suggestions)} suggestions; give one per suggestion")
    out: list[Nucleus] = []
    sug_of: dict[int, tuple[int, float]] = {}
    if suggestions:
        ti, si, iou = match_boxes(_boxes(truth), _boxes(suggestions), min_iou=0.3)
        sug_of = {int(a): (int(b), float(c)) for a, b, c in zip(ti, si, iou, strict=True)}
    matched_sug = {b for b, _ in sug_of.values()}
    if apparent is not None and len(apparent) != len(truth):
        raise ValueError(f"apparent: {len(apparent)} classes for {len(truth)} true nuclei; give one per nucleus")
    subtle = looks.subtle if looks is not None else (False,) * len(truth)
    u_seen, u_label, u_insight = (rng if opinion is None else opinion).random((3, len(truth)))
    if opinion is not None and p.consistency < 1:
        fresh = rng.random(len(truth)) >= p.consistency
        redraw = rng.random((3, len(truth)))
        u_seen, u_label, u_insight = (np.where(fresh, redraw[i], u) for i, u in enumerate((u_seen, u_label,
                                                                                            u_insight)))
    for k, n in enumerate(truth):
        if u_seen[k] >= p.sensitivity[n.raw_class] * (p.subtle_detection if subtle[k] else 1.0):
            continue
        shown: list[str] = []
        if k in sug_of:
            b, iou = sug_of[k]
            s = suggestions[b]
            shown = [c for c in dict.fromkeys(([region_classes[b]] if region_classes is not None else [])
                                              + [s.raw_class]) if c in CLASS_INDEX and c != "unlabeled"]
        # a shown class that names what the nucleus truly is prompts a second look (recognition)
        insight = p.insight + (1 - p.insight) * p.recognition if n.raw_class in shown else p.insight
        seen = n.raw_class if apparent is None or u_insight[k] < insight else apparent[k]
        row = p.confusion[CLASS_INDEX[seen]]
        cdf = np.cumsum(row)
        label = CLASSES[min(int(np.searchsorted(cdf, u_label[k] * cdf[-1], side="right")), len(CLASSES) - 1)]
        geometry = None
        if k in sug_of:
            draw = rng.random()
            # an ambiguous-looking nucleus is an uncertain one to whoever looks at it, even when fooled by it
            ambiguous = apparent is not None and apparent[k] != n.raw_class
            certainty = row[CLASS_INDEX[label]] / cdf[-1] * (0.5 if ambiguous else 1.0)
            if shown and label not in shown and draw < adoption_probability(p, certainty):
                label = max(shown, key=lambda c: row[CLASS_INDEX[c]])
            good = iou >= good_boundary_iou
            if rng.random() < (p.click_skill if good else p.bad_click_rate):
                geometry = s
        if geometry is not None:
            out.append(geometry.relabelled(label))
        else:
            out.append(Nucleus.from_box(label, *_jittered_box(n, p.box_jitter, image_shape, rng)))
    # suggestions on no nucleus are sometimes clicked; otherwise a few boxes are drawn where nothing is
    if suggestions:
        for b, s in enumerate(suggestions):
            if b not in matched_sug and rng.random() < p.bad_click_rate:
                out.append(s)
    h, w = image_shape
    if looks is not None and looks.decoys:
        # decoys: the same objects for everyone; whether this participant boxes one is part of their judgement
        u_decoy, u_kind = (rng if opinion is None else opinion).random((2, len(looks.decoys)))
        cdf = np.cumsum(_FP_LABELS)
        for j, box in enumerate(looks.decoys):
            if u_decoy[j] < p.decoy_detection:
                label = CLASSES[min(int(np.searchsorted(cdf, u_kind[j] * cdf[-1], side="right")), len(CLASSES) - 1)]
                out.append(Nucleus.from_box(label, *_jittered_box(Nucleus.from_box("unlabeled", *box), p.box_jitter,
                                                                  image_shape, rng)))
    for _ in range(int(rng.poisson(p.false_positives_per_fov))):
        side = float(np.exp(rng.normal(np.log(28), 0.3)))
        x0 = float(rng.uniform(0, max(w - side, 1)))
        y0 = float(rng.uniform(0, max(h - side, 1)))
        label = CLASSES[rng.choice(len(CLASSES), p=_FP_LABELS)]
        out.append(Nucleus.from_box(label, int(x0), int(y0), int(min(x0 + side, w)), int(min(y0 + side, h))))
    return out


# labels given to false positives: mostly 'unlabeled' and the common classes
_FP_LABELS = np.array([{"unlabeled": 0.4, "lymphocyte": 0.2, "tumor": 0.15, "fibroblast": 0.15,
                        "plasma_cell": 0.05, "macrophage": 0.05}.get(c, 0.0) for c in CLASSES])
_FP_LABELS = _FP_LABELS / _FP_LABELS.sum()


@dataclass(frozen=True)
class CorrectionPolicy:
    """How thoroughly the coordinators correct a single-rater FOV (hand-set, stated, not fitted).

    The paper's study coordinators "manually corrected missing or misclassified cells" under a practicing
    pathologist's supervision, with review galleries (Fig. S1). So a missed nucleus is added with the chance that a
    pathologist sees a nucleus of its class (``add_missed=None``: the pathologists' mean per-class detection
    sensitivity, :data:`~nucls_utils.crowd.participants.PATHOLOGIST_SENSITIVITY`, 0.6-0.95); a number sets one chance
    for every class. Until 2026-12-05 it was a flat 0.6, and the corrected data missed 14 % of the true nuclei of
    the validation fold's test FOVs, which capped the model's AP@.5 against it (README).
    """

    fix_label: float = 0.9  # a wrong class is corrected
    remove_false_positive: float = 0.9  # a box on no nucleus is removed
    add_missed: float | None = None  # a missed nucleus is added (as a box); None: as a pathologist would see it

    def add_chance(self, raw_class: str) -> float:
        """The chance a missed nucleus of ``raw_class`` is added."""
        return PATHOLOGIST_SENSITIVITY[raw_class] if self.add_missed is None else float(self.add_missed)


def correct_annotations(truth: Sequence[Nucleus], annotations: Sequence[Nucleus], rng: np.random.Generator,
                        policy: CorrectionPolicy = CorrectionPolicy()) -> list[Nucleus]:
    """The QC-corrected version of one FOV's single-rater annotations; fixes carry the ``correction_`` prefix."""
    ti, ai, _ = match_boxes(_boxes(truth), _boxes(annotations), min_iou=0.5)
    truth_of = dict(zip(ai.tolist(), ti.tolist(), strict=True))
    out = []
    for j, a in enumerate(annotations):
        if j not in truth_of:
            if rng.random() < policy.remove_false_positive:
                continue
            out.append(a)
            continue
        true_cls = truth[truth_of[j]].raw_class
        if a.raw_class != true_cls and rng.random() < policy.fix_label:
            a = a.relabelled(tx.CORRECTION_PREFIX + true_cls)
        out.append(a)
    found = set(ti.tolist())
    for k, n in enumerate(truth):
        if k not in found and rng.random() < policy.add_chance(n.raw_class):
            out.append(Nucleus.from_box(tx.CORRECTION_PREFIX + n.raw_class, n.xmin, n.ymin, n.xmax, n.ymax))
    return out


def single_rater_study(records: Sequence[FovRecord], roster: Sequence[Participant], rng: np.random.Generator,
                       suggestions: Mapping[str, Sequence[Nucleus]] | None = None,
                       policy: CorrectionPolicy = CorrectionPolicy(),
                       region_classes: Mapping[str, Sequence[str]] | None = None, ambiguity: float = AMBIGUITY,
                       subtle_share: float = SUBTLE_SHARE, decoys_per_fov: float = DECOYS_PER_FOV
                       ) -> tuple[list[FovRecord], list[FovRecord], pd.DataFrame]:
    """Each FOV annotated by one NP (shown ``suggestions`` when given, with the ``region_classes`` of each FOV's
    suggestions beside their own classes when given); returns uncorrected records, corrected records and the
    assignment table (``fovname, participant``). NPs take unequal shares of the FOVs, as volunteers do."""
    nps = [p for p in roster if not p.is_pathologist]
    if not nps:
        raise ValueError("the roster has no NPs")
    weights = rng.dirichlet(np.full(len(nps), 0.8))
    raw, fixed, rows = [], [], []
    for r in records:
        p = nps[int(rng.choice(len(nps), p=weights))]
        ann = annotate_fov(p, r.nuclei, r.image_shape, rng, None if suggestions is None else suggestions.get(r.name),
                           region_classes=None if region_classes is None else region_classes.get(r.name),
                           looks=fov_looks(r.nuclei, r.image_shape, rng, ambiguity=ambiguity,
                                           subtle_share=subtle_share, decoys_per_fov=decoys_per_fov))
        raw.append(FovRecord(r.name, r.image_shape, tuple(ann), r.fov_rect, r.rgb_path))
        fixed.append(FovRecord(r.name, r.image_shape, tuple(correct_annotations(r.nuclei, ann, rng, policy)),
                               r.fov_rect, r.rgb_path))
        rows.append((r.name, p.alias))
    return raw, fixed, pd.DataFrame(rows, columns=["fovname", "participant"])


def multi_rater_study(records: Sequence[FovRecord], roster: Sequence[Participant], rng: np.random.Generator,
                      suggestions: Mapping[str, Mapping[str, Sequence[Nucleus]]], nps_per_fov: tuple[int, int] = (10, 20),
                      region_classes: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
                      ambiguity: float = AMBIGUITY, subtle_share: float = SUBTLE_SHARE,
                      decoys_per_fov: float = DECOYS_PER_FOV) -> dict[tuple[str, str, str], list[Nucleus]]:
    """Every FOV of ``records`` annotated in each set of :data:`EVALSETS` by all pathologists and a random subset of
    NPs (between ``nps_per_fov[0]`` and ``nps_per_fov[1]``, the same NPs in every set). A participant's own judgement
    of a nucleus is the same in every set; suggestions change it through impressionability only.

    Parameters
    ----------
    suggestions : mapping set -> (fovname -> suggestions)
        Suggestions shown in each set; a set missing from the mapping (U-control) shows none.
    region_classes : mapping set -> (fovname -> classes), optional
        A second class shown beside each suggestion's own in that set (the region-inherited class beside the refined
        model's class in E); see :func:`annotate_fov`.

    Returns
    -------
    dict ``(set, participant, fovname) -> annotations``; an empty list means "annotated the FOV, found nothing".
    """
    ps = [p for p in roster if p.is_pathologist]
    nps = [p for p in roster if not p.is_pathologist]
    lo, hi = nps_per_fov
    hi = min(hi, len(nps))
    lo = min(lo, hi)
    out: dict[tuple[str, str, str], list[Nucleus]] = {}
    # independent streams per FOV, and within a FOV per (set, participant) and per participant's judgement: what one
    # annotation draws does not shift another's draws, so studies simulated with nearby priors stay comparable
    for r, fov_rng in zip(records, rng.spawn(len(records)), strict=True):
        design, looks_rng, judgement_rng, reads_rng = fov_rng.spawn(4)
        k = int(design.integers(lo, hi + 1))
        chosen = [nps[i] for i in sorted(design.choice(len(nps), size=k, replace=False))]
        # each participant's own judgement of this FOV, the same in every set (see annotate_fov's ``opinion``)
        judgement = dict(zip([p.alias for p in ps + chosen], judgement_rng.spawn(len(ps) + k), strict=True))
        looks = fov_looks(r.nuclei, r.image_shape, looks_rng, ambiguity=ambiguity, subtle_share=subtle_share,
                          decoys_per_fov=decoys_per_fov)
        for evalset, set_rng in zip(EVALSETS, reads_rng.spawn(len(EVALSETS)), strict=True):
            shown = suggestions.get(evalset, {}).get(r.name)
            second = (region_classes or {}).get(evalset, {}).get(r.name) if shown is not None else None
            for p, read_rng in zip(ps + chosen, set_rng.spawn(len(ps) + k), strict=True):
                # the judgement stream is copied, so every set starts the participant's judgement afresh from it
                opinion = np.random.Generator(type(judgement[p.alias].bit_generator)(
                    judgement[p.alias].bit_generator.seed_seq))
                out[(evalset, p.alias, r.name)] = annotate_fov(p, r.nuclei, r.image_shape, read_rng, shown,
                                                               opinion=opinion, region_classes=second, looks=looks)
    return out

