"""Simulated participants: pathologists (SP, JP) and non-pathologists (NP) with known reliability.

Each participant's parameters are drawn from a prior of their group:

* per-class **detection sensitivity** (fibroblasts hardest, sTILs easiest; pathologists more sensitive),
* **false positives** per FOV (boxes where there is no nucleus),
* **box jitter** (relative SD of each box edge),
* a per-class **confusion matrix** over the 13 raw classes; NPs confuse lymphocyte/plasma cell, macrophage/tumor,
  fibroblast/endothelium and tumor/mitosis more than pathologists and fall back on ``unlabeled`` more often,
* **impressionability**: the chance of adopting a shown class suggestion instead of one's own label, higher when
  one's own judgement of the nucleus is uncertain (``uncertainty_weight``, see :func:`adoption_probability`),
* **insight**: the chance of seeing the true class of a nucleus that looks like another class (see
  :func:`~nucls_utils.crowd.study.apparent_classes`: some nuclei look like a confusable partner to everyone, which
  makes participants' errors correlated, as real ones are),
* **recognition**: the planted effect of suggestions: a shown class that names what a nucleus truly is lets a
  participant who would be fooled by its look see through it with this chance (:data:`RECOGNITION`),
* **skill**: participants of a group differ in how well they tell classes apart (``skill_sd``: one draw per
  participant shifts their accuracy and insight together on the logit scale),
* **subtle and decoy detection**: some nuclei are subtle (faint, small, crowded) and some objects look like nuclei
  and are not (out-of-plane nuclei, debris); both are properties of the FOV, shared by everyone
  (:class:`~nucls_utils.crowd.study.FovLooks`); a participant detects subtle nuclei with a fraction of their
  sensitivity and boxes decoys with their own rate,
* **consistency**: the chance that a participant who sees a FOV again (in another set) judges a nucleus as the first
  time (whether they see it, which class they think it is); otherwise they judge it afresh,
* **click skill**: the chance of clicking a shown boundary that is good; bad boundaries are clicked rarely.

Everything is drawn from an explicit ``numpy.random.Generator``; a roster is plain data (``to_frame``) so it can be
written next to the study and planted values can be checked against what truth inference recovers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy.special import betaincinv

from .. import taxonomy as tx

__all__ = ["GroupPrior", "GROUP_PRIORS", "PATHOLOGIST_SENSITIVITY", "CALIBRATION", "RECOGNITION", "Participant", "make_roster", "roster_frame", "CLASS_INDEX",
           "CONFUSABLE_PAIRS", "adoption_probability"]

CLASSES = tx.RAW_CLASSES
CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}

#: Classes that are commonly mistaken for one another (symmetric pairs).
CONFUSABLE_PAIRS = (("lymphocyte", "plasma_cell"), ("macrophage", "tumor"), ("fibroblast", "vascular_endothelium"),
                    ("tumor", "mitotic_figure"), ("fibroblast", "macrophage"), ("apoptotic_body", "lymphocyte"),
                    ("ductal_epithelium", "tumor"), ("myoepithelium", "fibroblast"), ("neutrophil", "lymphocyte"),
                    ("eosinophil", "plasma_cell"))

# mean detection sensitivity per class, by group (pathologists, non-pathologists)
_SENSITIVITY = {
    "tumor": (0.92, 0.82), "fibroblast": (0.72, 0.45), "lymphocyte": (0.95, 0.88), "plasma_cell": (0.93, 0.82),
    "macrophage": (0.8, 0.6), "mitotic_figure": (0.9, 0.75), "vascular_endothelium": (0.7, 0.45),
    "myoepithelium": (0.7, 0.45), "apoptotic_body": (0.7, 0.5), "neutrophil": (0.8, 0.6),
    "ductal_epithelium": (0.85, 0.7), "eosinophil": (0.8, 0.6), "unlabeled": (0.6, 0.5),
}

#: The pathologists' mean detection sensitivity per class (also the chance that the single-rater data's correction
#: adds a nucleus the NP missed, :class:`~nucls_utils.crowd.study.CorrectionPolicy`).
PATHOLOGIST_SENSITIVITY: dict[str, float] = {c: v[0] for c, v in _SENSITIVITY.items()}


@dataclass(frozen=True)
class GroupPrior:
    """Prior of a participant group."""

    is_pathologist: bool
    accuracy: float  # mean probability of the correct raw class
    confusable_share: float  # share of errors that go to the confusable partner
    unlabeled_share: float  # share of errors that go to 'unlabeled'
    concentration: float  # Dirichlet concentration of a participant's confusion rows around the group's
    sensitivity_sd: float  # SD on the logit scale
    false_positives_per_fov: float
    box_jitter: float
    impressionability: float
    click_skill: float  # mean over the group's participants
    bad_click_rate: float = 0.05
    click_skill_sd: float = 0.25  # participants differ a lot in how readily they click (Fig. 4b's SD)
    consistency: float = 1.0  # chance a re-read judges a nucleus as the first read did (group mean)
    uncertainty_weight: float = 0.0  # logit slope of adopting a suggestion on one's own uncertainty (0: none)
    sensitivity_shift: float = 0.0  # added to every class's detection sensitivity on the logit scale
    insight: float = 1.0  # chance of seeing the true class of a nucleus that looks like another class
    subtle_detection: float = 1.0  # detection sensitivity on subtle (faint, small, crowded) nuclei, relative
    decoy_detection: float = 0.0  # chance of boxing a decoy (an object that looks like a nucleus and is not one)
    consistency_sd: float = 0.0  # participants differ in how consistent they are
    impressionability_sd: float = 0.1
    skill_sd: float = 0.0  # participants differ in classifying skill: SD of a shift of accuracy and insight (logit)
    recognition: float = 0.0  # chance a shown class naming what a nucleus truly is lets one see through its look


#: The planted effect of suggestions (hand-set, never fitted): the chance that a shown class naming what a nucleus
#: truly is makes a participant who would be fooled by its look see through it (recognition is easier than recall).
#: Wrong suggestions still pull labels away through adoption (:func:`adoption_probability`), so the net effect on a
#: set's labels is what the study measures; notebook 03 reports it against the generator's truth.
RECOGNITION = 0.8

# Fitted (calibration targets, not results): accuracy, insight, skill spread, consistency (mean and spread),
# impressionability and the NPs' confusion concentration were fitted to the paper's participant statistics by
#     python -m nucls_utils.crowd.calibrate --profile cpu --seed 101 --iterations 5 --workers 2   (2026-12-05, 30 min)
# (started from the previous fit's values, see CALIBRATION), then the consistencies (mean and spread, NPs and
# pathologists) again, averaged over 8 rosters, after Beta draws became inverse-CDF draws (common random numbers):
#     python -m nucls_utils.crowd.calibrate --profile cpu --seed 101 --iterations 4 --workers 2 --rosters 8 \
#         --free np_consistency p_consistency np_consistency_sd p_consistency_sd          (2026-12-05, 11 min)
# on a world of its own (cohort seed 101); see CALIBRATION for the cost and nucls_utils.crowd.calibrate for the
# targets and what was held out. Hand-set (stated, not fitted): per-class sensitivities and their spread, false
# positives, subtle-nucleus and decoy detection, box jitter, confusion structure (shares to the confusable partner and
# to 'unlabeled'), the pathologists' concentrations, the weight of one's own uncertainty on adoption, recognition
# (RECOGNITION, the planted effect of suggestions) and the clicks.
_SHARED = {"uncertainty_weight": 3.0, "recognition": RECOGNITION}
GROUP_PRIORS: dict[str, GroupPrior] = {
    "SP": GroupPrior(True, accuracy=0.8673, confusable_share=0.6, unlabeled_share=0.2, concentration=300.0,
                     sensitivity_sd=0.3, false_positives_per_fov=0.6, box_jitter=0.06, impressionability=0.0455,
                     click_skill=0.85, insight=0.7039, subtle_detection=0.8, decoy_detection=0.05, consistency=0.8628,
                     consistency_sd=0.2567, skill_sd=0.2916, **_SHARED),
    "JP": GroupPrior(True, accuracy=0.8173, confusable_share=0.6, unlabeled_share=0.2, concentration=200.0,
                     sensitivity_sd=0.4, false_positives_per_fov=0.8, box_jitter=0.07, impressionability=0.0455,
                     click_skill=0.85, insight=0.6539, subtle_detection=0.8, decoy_detection=0.05, consistency=0.8628,
                     consistency_sd=0.2567, skill_sd=0.2916, **_SHARED),
    "NP": GroupPrior(False, accuracy=0.7859, confusable_share=0.65, unlabeled_share=0.25, concentration=64.04,
                     sensitivity_sd=0.6, false_positives_per_fov=1.5, box_jitter=0.1, impressionability=0.2508,
                     click_skill=0.85, bad_click_rate=0.08, insight=0.5925, subtle_detection=0.3, decoy_detection=0.3,
                     consistency=0.7565, consistency_sd=0.2817, skill_sd=0.4006, **_SHARED),
}
#: The fit that produced the fitted values above (``python -m nucls_utils.crowd.calibrate``): its command, date,
#: final cost (squared residuals in tolerances over the targets, plus the prior term) and the check on fresh seeds.
CALIBRATION = {
    "command": "python -m nucls_utils.crowd.calibrate --profile cpu --seed 101 --iterations 5 --workers 2",
    "date": "2026-12-05", "cost": 4.60,
    "start": "the values of the 2026-12-02 fit (cost 2.24 on generator 2.4's world), refitted on generator 2.5's world "
             "(crowding fitted to the real core set), where they started at cost 15.79; 30 min on 2 cores including "
             "the calibration world (cohort, pretrained start, refiner)",
    "second_stage": "python -m nucls_utils.crowd.calibrate --profile cpu --seed 101 --iterations 4 --workers 2 "
                    "--rosters 8 --free np_consistency p_consistency np_consistency_sd p_consistency_sd "
                    "(2026-12-05, 683 s; cost 11.47 -> 2.00 over 8 rosters, after Beta draws became inverse-CDF draws)",
    "targets_within_tolerance_on_fresh_seeds": "8 of 9 over 10 fresh roster/study seeds (11-20): NP-label AUROC micro "
                                               "0.956, per-NP MCC lowest / highest 56.1 / 85.0, alpha Ps main 59.5, "
                                               "alpha NPs super 65.7, kappa means Ps 85.0 / NPs 69.9, NPs' kappa SD "
                                               "13.7; missed: the Ps' kappa SD, 8.9 (paper 7.9; its SD over rosters "
                                               "is 5.2, a sample SD of 7 Ps)",
}


@dataclass(frozen=True)
class Participant:
    """One participant and their (planted, known) reliability."""

    alias: str
    sensitivity: dict[str, float]
    confusion: np.ndarray = field(repr=False)  # (13, 13), row = true raw class, column = label given
    false_positives_per_fov: float
    box_jitter: float
    impressionability: float
    click_skill: float
    bad_click_rate: float
    consistency: float = 1.0
    uncertainty_weight: float = 0.0
    insight: float = 1.0
    subtle_detection: float = 1.0
    decoy_detection: float = 0.0
    recognition: float = 0.0

    @property
    def group(self) -> str:
        return tx.participant_group(self.alias)

    @property
    def is_pathologist(self) -> bool:
        return tx.is_pathologist(self.alias)


def _group_confusion(prior: GroupPrior) -> np.ndarray:
    k = len(CLASSES)
    cm = np.zeros((k, k))
    partners = {c: [] for c in CLASSES}
    for a, b in CONFUSABLE_PAIRS:
        partners[a].append(b)
        partners[b].append(a)
    u = CLASS_INDEX["unlabeled"]
    for c in CLASSES:
        i = CLASS_INDEX[c]
        err = 1 - prior.accuracy
        cm[i, i] = prior.accuracy
        if c == "unlabeled":
            cm[i, :] += err / (k - 1)
            cm[i, i] = prior.accuracy
            continue
        cm[i, u] += err * prior.unlabeled_share
        for p in partners[c]:
            cm[i, CLASS_INDEX[p]] += err * prior.confusable_share / len(partners[c])
        rest = err * (1 - prior.unlabeled_share - (prior.confusable_share if partners[c] else 0.0))
        others = [j for j in range(k) if j != i and j != u]
        cm[i, others] += rest / len(others)
    return cm / cm.sum(1, keepdims=True)


def _logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def _beta_around(mean: float, sd: float, rng: np.random.Generator) -> float:
    """A draw in [0, 1] with the given mean and (at most the largest possible) standard deviation; the mean itself
    when it is 0 or 1 or the SD is 0.

    Drawn by the inverse CDF of one uniform, which is taken in every case: the generator's stream does not depend on
    the prior's values, and nearby priors give nearby draws (common random numbers, which the crowd's calibration
    relies on; ``rng.beta`` draws by rejection and would shift every later draw of the roster)."""
    u = rng.random()
    if mean <= 0 or mean >= 1 or sd <= 0:
        return float(np.clip(mean, 0, 1))
    sd = min(sd, 0.95 * np.sqrt(mean * (1 - mean)))
    conc = mean * (1 - mean) / sd**2 - 1
    return float(betaincinv(mean * conc, (1 - mean) * conc, u))


def _sigmoid(z: float) -> float:
    return float(1 / (1 + np.exp(-z)))


def _shifted(p: float, z: float) -> float:
    """``p`` moved by ``z`` on the logit scale (0 and 1 stay put)."""
    return float(p) if p <= 0 or p >= 1 else _sigmoid(_logit(p) + z)


def _draw(alias: str, prior: GroupPrior, rng: np.random.Generator) -> Participant:
    # a participant is consistently better or worse at telling classes apart (accuracy and insight move together)
    talent = float(rng.normal(0, 1)) * prior.skill_sd
    base = _group_confusion(replace(prior, accuracy=_shifted(prior.accuracy, talent)))
    confusion = np.vstack([rng.dirichlet(row * prior.concentration + 1e-3) for row in base])
    col = 0 if prior.is_pathologist else 1
    skill = rng.normal(0, prior.sensitivity_sd)  # a participant is consistently more or less thorough
    sens = {c: float(1 / (1 + np.exp(-(_logit(v[col]) + prior.sensitivity_shift + skill + rng.normal(0, 0.15)))))
            for c, v in _SENSITIVITY.items()}
    return Participant(
        alias, sens, confusion,
        false_positives_per_fov=float(prior.false_positives_per_fov * np.exp(rng.normal(0, 0.4))),
        box_jitter=float(prior.box_jitter * np.exp(rng.normal(0, 0.2))),
        impressionability=float(np.clip(rng.normal(prior.impressionability, prior.impressionability_sd), 0, 1)),
        click_skill=_beta_around(prior.click_skill, prior.click_skill_sd, rng),
        bad_click_rate=prior.bad_click_rate,
        consistency=_beta_around(prior.consistency, prior.consistency_sd, rng),
        uncertainty_weight=prior.uncertainty_weight,
        insight=_shifted(prior.insight, talent),
        subtle_detection=prior.subtle_detection,
        decoy_detection=prior.decoy_detection,
        recognition=prior.recognition,
    )


def adoption_probability(p: Participant, own_certainty: np.ndarray | float) -> np.ndarray:
    """Chance that ``p`` adopts a suggested class that differs from their own label, given how certain they are of
    their own label (``own_certainty`` in [0, 1]: the probability their confusion row gives the label they chose for
    the nucleus's true class; a label chosen by mistake is an uncertain one).

    ``logit(adopt) = logit(impressionability) + uncertainty_weight * (0.5 - own_certainty)``: with a weight of 0
    every suggestion is adopted with the participant's impressionability; with a positive weight, uncertain
    judgements give way to a suggestion more often than confident ones. An impressionability of 0 or 1 stays 0 or 1.
    """
    c = np.asarray(own_certainty, dtype=float)
    imp = float(p.impressionability)
    if imp <= 0.0 or imp >= 1.0:
        return np.full(c.shape, float(imp >= 1.0))
    z = np.log(imp / (1 - imp)) + p.uncertainty_weight * (0.5 - c)
    return 1.0 / (1.0 + np.exp(-z))


def make_roster(rng: np.random.Generator, n_sp: int = 3, n_jp: int = 4, n_np: int = 32,
                priors: dict[str, GroupPrior] | None = None) -> list[Participant]:
    """A roster like the paper's: 7 pathologists (SPs and JPs) and 32 NPs, aliases ``SP.1``, ``JP.1``, ``NP.1``."""
    priors = priors or GROUP_PRIORS
    out = []
    for group, n in (("SP", n_sp), ("JP", n_jp), ("NP", n_np)):
        out += [_draw(f"{group}.{i + 1}", priors[group], rng) for i in range(n)]
    return out


def roster_frame(roster: list[Participant]) -> pd.DataFrame:
    """One row per participant: group, planted accuracy (mean diagonal of the confusion), mean sensitivity, FP
    rate, jitter, impressionability, click skill."""
    rows = []
    for p in roster:
        rows.append({"participant": p.alias, "group": p.group, "is_pathologist": p.is_pathologist,
                     "accuracy": float(np.diag(p.confusion).mean()),
                     "mean_sensitivity": float(np.mean(list(p.sensitivity.values()))),
                     **{f"sensitivity_{c}": v for c, v in p.sensitivity.items()},
                     "false_positives_per_fov": p.false_positives_per_fov, "box_jitter": p.box_jitter,
                     "impressionability": p.impressionability, "click_skill": p.click_skill,
                     "consistency": p.consistency, "uncertainty_weight": p.uncertainty_weight,
                     "insight": p.insight, "subtle_detection": p.subtle_detection,
                     "decoy_detection": p.decoy_detection, "recognition": p.recognition})
    return pd.DataFrame(rows)
