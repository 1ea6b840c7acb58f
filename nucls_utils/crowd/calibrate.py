"""Calibration of the simulated crowd's group priors to the participant statistics the paper reports.

The procedure (simulation-based, seeded, run as a script and never inside ``run_all.sh``)::

    python -m nucls_utils.crowd.calibrate --profile cpu --seed 101 --out crowd_fit.json

1. **Its own world.** A synthetic cohort of the calibration seed (101: never a study seed), its heuristic bootstrap
   and refined suggestions (the notebook 02 pipeline, cached under ``data/calibration/``), and multi-rater FOVs
   chosen by the paper's stratified scheme, as notebook 02 chooses them. The study's own cohort is never looked at.
2. **One evaluation** of a set of priors: a roster drawn from them annotates the multi-rater FOVs in the three sets
   (:func:`~nucls_utils.crowd.study.multi_rater_study`, suggestions shown as the paper showed them), and the study's
   own analysis (clustering at IOU 0.25, EM, :mod:`nucls_utils.interrater.analysis`) turns the annotations into the
   statistics the paper reports (:func:`crowd_statistics`), averaged over two roster/study seed pairs. The seeds are
   fixed across evaluations and every FOV, set and participant draws from its own stream (common random numbers),
   so that differences between evaluations come from the priors, not from the draw.
3. **The fit.** Free parameters (:data:`FREE`, each on an unbounded scale: logit, log, or a fraction of the NPs'
   value) move the group priors; residuals are ``(statistic - paper) / tolerance`` over :data:`TARGETS`, with the
   paper's SD as the tolerance where it gives one and 10 % of the value otherwise, plus a prior term
   (:data:`PRIOR_SD`). A Levenberg-Marquardt iteration with forward-difference Jacobians minimises their sum of
   squares; each iteration's steps are evaluated and the best kept.
4. **The check.** The fitted priors are evaluated on fresh roster and study seeds (``--check-seeds``): every target
   and every held-out statistic (:data:`HELD_OUT`), paper vs simulated (mean and SD over the seeds).

The result is written as JSON (fitted priors, targets, per-iteration history, the check); the fitted values are
copied into :data:`nucls_utils.crowd.participants.GROUP_PRIORS` and :data:`nucls_utils.crowd.study.AMBIGUITY`, with
the command, its date and the check in :data:`nucls_utils.crowd.participants.CALIBRATION`.

What is fitted and what is found: every statistic in :data:`TARGETS` is a calibration target (it was fitted; that
the simulated crowd matches it is not a finding). The statistics in :data:`HELD_OUT`, among them the effect of
suggestions on the NP-label's AUROC (E vs U-control, Fig. 4e), are predictions of the calibrated crowd.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper
from ..io.dataset import FovRecord, Nucleus
from ..profiles import settings
from .participants import GROUP_PRIORS, GroupPrior, make_roster, roster_frame
from .study import AMBIGUITY, DECOYS_PER_FOV, SUBTLE_SHARE, multi_rater_study

__all__ = ["TARGETS", "HELD_OUT", "FREE", "PRIOR_SD", "FreeParameter", "CrowdModel", "CALIBRATION_SEED", "CalibrationInputs",
           "calibration_inputs", "apply_parameters", "parameters_of", "crowd_statistics", "simulate_statistics",
           "tolerance", "residuals", "fit", "check", "role", "study_inputs", "roster_spread",
           "main"]

#: The calibration world's cohort seed (the refiner's fit cohort uses the same one; the study's default is 0).
CALIBRATION_SEED = 101

#: Calibration targets: statistic (a paper key, ``:sd`` for the SD it gives) -> what is measured. Chosen to pin the
#: participants' own reliability (each NP's MCC, agreement among Ps and among NPs, self-agreement) and the NP-label's
#: overall accuracy; everything that depends on the study design or on the suggestions is held out.
TARGETS: dict[str, str] = {
    "fig3b.np_auroc_micro": "NP-label AUROC micro, E, main classes",
    "fig3.np_mcc_low": "lowest per-NP MCC x 100, main classes, E",
    "fig3.np_mcc_high": "highest per-NP MCC x 100, main classes, E",
    "fig5c.alpha_ps_main": "alpha x 100 among Ps, main classes, IOU 0.25, >= 2 P detections",
    "fig5.alpha_nps_super": "alpha x 100 among NPs, super-classes",
    "fig4d.self_kappa_ps": "self-agreement kappa x 100 of Ps, E vs U-control, mean",
    "fig4d.self_kappa_ps:sd": "... SD over Ps",
    "fig4d.self_kappa_nps": "self-agreement kappa x 100 of NPs, E vs U-control, mean",
    "fig4d.self_kappa_nps:sd": "... SD over NPs",
}
#: Held out: reported beside the targets, never fitted.
#:
#: * The NP-label detection AP: the paper's query most likely pools the anchors of three clustering thresholds
#:   (``nucls_algorithms.md``, notes 6.5), which fragments nuclei into anchors without P-truth; reaching 0.68 at one
#:   threshold would take a crowd that boxes a score of non-nuclei per FOV.
#: * The detected-by-16-NPs shares depend mostly on how many NPs annotate each FOV, a design the paper does not state
#:   (the study keeps 10-20 NPs per FOV).
#: * The clicked shares depend first on how many nuclei get a suggested boundary at all (paper: refiner recall
#:   48 %), so they measure the refiner as much as the participants; the click priors stay hand-set.
#: * The effect of suggestions (E vs U-control): its mechanism is planted and hand-set (recognition,
#:   :data:`~nucls_utils.crowd.participants.RECOGNITION`, against adoption of wrong suggestions); how large it comes
#:   out on the NP-label, and whether the analysis reads it with the right sign, is what the check reports.
HELD_OUT: dict[str, str] = {
    "fig3a.np_detection_ap": "NP-label detection AP, E, anchors at IOU 0.25",
    "fig3b.np_auroc_macro": "NP-label AUROC macro, E, main classes",
    "fig5.alpha_ps_super": "alpha x 100 among Ps, super-classes",
    "fig4e.np_auroc_e": "NP-label AUROC micro, E (with suggestions)",
    "fig4e.np_auroc_u": "NP-label AUROC micro, U-control (without)",
    "fig4b.clicked_e": "clicked suggestions per participant, E, mean %",
    "fig4b.clicked_e:sd": "... SD over participants",
    "figS8.stils_by_16_nps": "% of sTILs detected by 16+ NPs, E",
    "figS8.fibroblasts_by_16_nps": "% of fibroblasts detected by 16+ NPs, E",
}


def role(paper_key: str | None) -> str:
    """How a paper-vs-run row relates to the crowd's calibration: ``'calibration target (fitted)'`` when the crowd's
    priors were fitted to it, ``'not fitted'`` for any other paper number, ``''`` for a row with none."""
    if paper_key is None or paper_key == "" or (isinstance(paper_key, float) and math.isnan(paper_key)):
        return ""
    return "calibration target (fitted)" if paper_key in TARGETS else "not fitted"


@dataclass(frozen=True)
class FreeParameter:
    """One free parameter: the prior fields it sets, on which scale it moves."""

    name: str
    groups: tuple[str, ...]
    field: str
    scale: str  # 'logit' (values in (0, 1)), 'log' (positive), 'linear', or 'ratio' (a fraction, on the logit
    # scale, of the NPs' value of the same field)
    offsets: tuple[float, ...] = ()  # per group, added to the value (e.g. JPs a little less accurate than SPs)


@dataclass(frozen=True)
class CrowdModel:
    """What the fit sets: the group priors, and how the FOVs look to everyone (the share of nuclei that look like
    another class, the share of subtle nuclei, decoys per FOV)."""

    priors: Mapping[str, GroupPrior]
    ambiguity: float = AMBIGUITY
    subtle_share: float = SUBTLE_SHARE
    decoys_per_fov: float = DECOYS_PER_FOV


#: The fitted parameters. Pathologists (SP, JP) share theirs; JPs keep the offsets of the hand-set priors; a
#: parameter with no group belongs to the FOVs, not to a group. Pathologists' impressionability is a fitted fraction
#: of the NPs' (the behavioural model says they adopt suggestions less readily). Fixed (stated, not fitted): per-class
#: sensitivities and their spread, false positives, decoys and subtle nuclei, box jitter, the weight of one's own
#: uncertainty on adopting a suggestion, recognition (the planted effect of suggestions), the click skills and
#: bad-click rates (see :data:`HELD_OUT`) and the NPs per FOV (10-20). The groups' skill spread (``skill_sd``: how
#: much participants differ in telling classes apart) is fitted, for the per-NP MCC range and the kappa SDs.
FREE: tuple[FreeParameter, ...] = (
    FreeParameter("ambiguity", (), "ambiguity", "logit"),
    FreeParameter("np_insight", ("NP",), "insight", "logit"),
    FreeParameter("p_insight", ("SP", "JP"), "insight", "logit", (0.0, -0.05)),
    FreeParameter("np_accuracy", ("NP",), "accuracy", "logit"),
    FreeParameter("np_concentration", ("NP",), "concentration", "log"),
    FreeParameter("p_accuracy", ("SP", "JP"), "accuracy", "logit", (0.0, -0.05)),
    FreeParameter("np_consistency", ("NP",), "consistency", "logit"),
    FreeParameter("p_consistency", ("SP", "JP"), "consistency", "logit"),
    FreeParameter("np_consistency_sd", ("NP",), "consistency_sd", "log"),
    FreeParameter("p_consistency_sd", ("SP", "JP"), "consistency_sd", "log"),
    FreeParameter("np_impressionability", ("NP",), "impressionability", "logit"),
    FreeParameter("np_skill_sd", ("NP",), "skill_sd", "log"),
    FreeParameter("p_skill_sd", ("SP", "JP"), "skill_sd", "log"),
    FreeParameter("p_impressionability_ratio", ("SP", "JP"), "impressionability", "ratio"),
)
#: SD of the fit's prior on each free parameter's unbounded scale: the fit minimises the targets' squared
#: residuals plus ``((theta - start) / PRIOR_SD) ** 2``, which keeps parameters the targets do not pin near the
#: hand-set start instead of letting them drift to the edge of their range.
PRIOR_SD = 1.5

_EPS = 1e-4


def _to_unbounded(v: float, scale: str) -> float:
    if scale == "logit":
        v = min(max(v, _EPS), 1 - _EPS)
        return math.log(v / (1 - v))
    if scale == "log":
        return math.log(max(v, _EPS))
    return float(v)


def _from_unbounded(z: float, scale: str) -> float:
    if scale == "logit":
        return 1.0 / (1.0 + math.exp(-z))
    if scale == "log":
        return math.exp(z)
    return float(z)


def free_parameters(names: Sequence[str] | None = None) -> tuple[FreeParameter, ...]:
    """The parameters of :data:`FREE` named in ``names`` (all of them when None), in :data:`FREE`'s order."""
    if names is None:
        return FREE
    known = {f.name for f in FREE}
    unknown = sorted(set(names) - known)
    if unknown:
        raise ValueError(f"unknown free parameter(s) {unknown}; known: {sorted(known)}")
    return tuple(f for f in FREE if f.name in set(names))


def parameters_of(model: CrowdModel, free: Sequence[FreeParameter] = FREE) -> np.ndarray:
    """The free parameters' unbounded values read off ``model`` (each from its first group, offsets removed)."""
    out = []
    for f in free:
        v = (getattr(model.priors[f.groups[0]], f.field) if f.groups else getattr(model, f.field)) \
            - (f.offsets[0] if f.offsets else 0.0)
        if f.scale == "ratio":
            v = v / max(getattr(model.priors["NP"], f.field), _EPS)
        if f.scale in ("logit", "ratio"):
            v = min(max(v, 0.02), 0.98)  # a prior at 0 or 1 starts the fit from a movable value
        elif f.scale == "log":
            v = max(v, 0.02)
        out.append(_to_unbounded(v, "logit" if f.scale == "ratio" else f.scale))
    return np.array(out)


def apply_parameters(theta: Sequence[float], base: CrowdModel | None = None,
                     free: Sequence[FreeParameter] = FREE) -> CrowdModel:
    """``base`` (default: the current priors and ambiguity) with the free parameters ``free`` (default
    :data:`FREE`) set from their unbounded values ``theta`` (same order)."""
    if len(theta) != len(free):
        raise ValueError(f"theta has {len(theta)} values; there are {len(free)} free parameters")
    base = base or CrowdModel(GROUP_PRIORS)
    out = dict(base.priors)
    world = {"ambiguity": base.ambiguity, "subtle_share": base.subtle_share, "decoys_per_fov": base.decoys_per_fov}
    ratios = []
    for f, z in zip(free, theta, strict=True):
        if f.scale == "ratio":  # after the NPs' own value is set
            ratios.append((f, _from_unbounded(float(z), "logit")))
            continue
        v = _from_unbounded(float(z), f.scale)
        if not f.groups:
            world[f.field] = v
        for i, g in enumerate(f.groups):
            w = v + (f.offsets[i] if f.offsets else 0.0)
            if f.scale == "logit":
                w = min(max(w, _EPS), 1 - _EPS)
            out[g] = replace(out[g], **{f.field: w})
    for f, frac in ratios:
        for g in f.groups:
            out[g] = replace(out[g], **{f.field: frac * getattr(out["NP"], f.field)})
    return CrowdModel(out, **world)


# ---------------------------------------------------------------------------------------------------------------
# the calibration world
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class CalibrationInputs:
    """The multi-rater FOVs of the calibration world and the suggestions shown on them."""

    records: list[FovRecord]
    bootstrap: dict[str, list[Nucleus]]
    refined: dict[str, list[Nucleus]]
    region_classes: dict[str, list[str]]
    cohort: Path


def calibration_inputs(profile: str = "cpu", seed: int = CALIBRATION_SEED, *, root: str | Path | None = None,
                       n_fovs: int | None = None, progress: bool = True) -> CalibrationInputs:
    """Build (or reuse) the calibration world: cohort, bootstrap, refined suggestions (cached) and the multi-rater
    FOVs, as notebook 02 builds them for the study."""
    from .. import config, phantom, suggestions
    from ..io import read_dataset

    root = Path(root) if root is not None else config.REPO_ROOT / "data" / "calibration" / f"{profile}_seed{seed}"
    cohort, _ = phantom.ensure_cohort(root / "cohort", profile, seed, progress=progress)
    records = read_dataset(cohort)
    boot = suggestions.bootstrap_dataset(records, cohort, progress=progress)
    from ..model.pretrain import resolve_start

    # the refiner as notebook 02 trains it (the profile's schedule and backbone start)
    refiner_cfg = suggestions.REFINER_PROFILES[profile].with_(weights=resolve_start(profile, progress=progress,
                                                                                    say=None))
    refiner = suggestions.refine_dataset(records, boot, refiner_cfg, seed=seed, progress=progress,
                                         cache_dir=root / "refiner")
    rng = np.random.default_rng(seed)
    feats = suggestions.fov_sampling_features(refiner.refined, refiner.confidences, boot)
    n = n_fovs or settings(profile).multirater_fovs
    sample = suggestions.stratified_fov_sample(feats, n, rng)
    chosen = [records[i] for i in sample.index]
    idx = {r.name: i for i, r in enumerate(records)}
    region = {r.name: [n.raw_class for n in suggestions.region_inherited(
        refiner.refined[idx[r.name]], phantom.fov_region_map(cohort, r.name), phantom.REGION_NAMES)] for r in chosen}
    return CalibrationInputs(chosen, {r.name: list(boot[idx[r.name]]) for r in chosen},
                             {r.name: list(refiner.refined[idx[r.name]]) for r in chosen}, region, cohort)


def study_inputs(cohort: str | Path, study_dir: str | Path) -> CalibrationInputs:
    """The inputs of a study notebook 02 wrote (``study_dir``: its multi-rater FOVs, and the bootstrap and refined
    suggestions shown on them, with the region-inherited class recomputed from the cohort's region maps), so that
    other rosters can annotate the same FOVs (:func:`roster_spread`).

    Raises
    ------
    FileNotFoundError
        Naming the missing file when ``study_dir`` is not a written study.
    """
    from .. import phantom, suggestions
    from ..io import read_dataset

    cohort, study_dir = Path(cohort), Path(study_dir)
    fovs_csv = study_dir / "multirater" / "fovs.csv"
    for need in (fovs_csv, study_dir / "suggestions" / "bootstrap", study_dir / "suggestions" / "refined"):
        if not need.exists():
            raise FileNotFoundError(f"{need}: not found; {study_dir} is not a study written by notebook 02")
    names = pd.read_csv(fovs_csv)["fovname"].tolist()
    truth = {r.name: r for r in read_dataset(cohort)}
    missing = [n for n in names if n not in truth]
    if missing:
        raise FileNotFoundError(f"{fovs_csv}: FOV {missing[0]} is not in the cohort {cohort}")
    shown = {k: {r.name: list(r.nuclei) for r in read_dataset(study_dir / "suggestions" / k)}
             for k in ("bootstrap", "refined")}
    region = {n: [x.raw_class for x in suggestions.region_inherited(
        shown["refined"][n], phantom.fov_region_map(cohort, n), phantom.REGION_NAMES)] for n in names}
    return CalibrationInputs([truth[n] for n in names], {n: shown["bootstrap"][n] for n in names},
                             {n: shown["refined"][n] for n in names}, region, cohort)




def roster_spread(inputs: CalibrationInputs, n_rosters: int, *, model: CrowdModel | None = None,
                  first_seed: int = 1, progress: bool = True) -> pd.DataFrame:
    """How much each calibration target and held-out statistic varies between rosters drawn from the same priors
    (``model``, default the fitted ones) annotating the same FOVs: ``n_rosters`` roster/study seed pairs
    (``first_seed``, ``first_seed + 1``, ...; the study's own roster is seed 0's draw). Per statistic: the paper's
    value and tolerance, the mean, SD, 5th and 95th percentiles over rosters, the share of rosters within the
    tolerance, and the paper value's rank among the rosters (its empirical percentile, 0-100).

    A participant statistic of the paper comes from one roster (7 pathologists, 32 NPs), so the fair test of a
    calibrated crowd is whether the paper's value is a plausible roster of it, not whether one run's roster lands
    within a tolerance smaller than the rosters' own spread (the SD over 7 pathologists has a sampling SD of about a
    quarter of itself)."""
    from ..progress import tqdm

    model = model or CrowdModel(GROUP_PRIORS)
    seeds = range(first_seed, first_seed + n_rosters)
    runs = [simulate_statistics(model, inputs, roster_seed=s, study_seed=1000 + s)
            for s in tqdm(seeds, desc="other rosters", disable=not progress)]
    rows = []
    for role_, keys in (("calibration target (fitted)", TARGETS), ("not fitted", HELD_OUT)):
        for k in keys:
            v = np.array([r[k] for r in runs], dtype=float)
            v = v[np.isfinite(v)]
            p, tol = float(paper.lookup(k)), tolerance(k)
            rows.append({"statistic": k, "role": role_, "paper": p, "tolerance": round(tol, 3),
                         "rosters": len(v), "mean": v.mean() if v.size else np.nan,
                         "sd": v.std(ddof=1) if v.size > 1 else np.nan,
                         "p5": np.percentile(v, 5) if v.size else np.nan,
                         "p95": np.percentile(v, 95) if v.size else np.nan,
                         "share_within": float(np.mean(np.abs(v - p) <= tol)) if v.size else np.nan,
                         "paper_percentile": 100 * float(np.mean(v < p) + 0.5 * np.mean(v == p)) if v.size
                         else np.nan})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------------------
# one evaluation
# ---------------------------------------------------------------------------------------------------------------
def crowd_statistics(tt, evalset: str = "E") -> dict[str, float]:
    """The paper's participant statistics of one analysed study (truth tables at IOU 0.25 with EM run for Ps and
    NPs), keyed as :mod:`nucls_utils.paper` (``:sd`` for an SD); percentages and x100 scales as the paper quotes."""
    from ..interrater import analysis as an

    out: dict[str, float] = {}
    out["fig3a.np_detection_ap"] = float(an.np_label_detection(tt, evalset)["ap"])
    roc = an.np_label_roc_table(tt, evalset, "main")
    out["fig3b.np_auroc_micro"], out["fig3b.np_auroc_macro"] = float(roc["micro"]), float(roc["macro"])
    alpha = an.alpha_table({tt.min_iou: tt}, evalset)
    alpha = alpha[alpha["min_detections"] == 2].set_index(["raters", "level"])["alpha"]
    for key, idx in (("fig5c.alpha_ps_main", ("Ps", "main")), ("fig5.alpha_ps_super", ("Ps", "super")),
                     ("fig5.alpha_nps_super", ("NPs", "super"))):
        out[key] = 100 * float(alpha.get(idx, np.nan))
    sa = an.self_agreement_table(tt, "U-control", (evalset,))
    for key, groups in (("fig4d.self_kappa_ps", ("SP", "JP")), ("fig4d.self_kappa_nps", ("NP",))):
        k = 100 * sa.loc[sa["group"].isin(groups), "kappa"].dropna()
        out[key], out[key + ":sd"] = float(k.mean()), float(k.std())
    clicked = an.clicked_share_table(tt, (evalset,))["psegmented"]
    out["fig4b.clicked_e"], out["fig4b.clicked_e:sd"] = float(clicked.mean()), float(clicked.std())
    ease = an.detected_by_at_least(tt, evalset, "NPs", 16).set_index("class")["percent"]
    out["figS8.stils_by_16_nps"] = float(ease.get("sTILs", np.nan))
    out["figS8.fibroblasts_by_16_nps"] = float(ease.get("fibroblasts", np.nan))
    acc = an.accuracy_by_set(tt, [evalset], level="main")
    mcc = 100 * acc.loc[acc["group"] == "NP", "mcc_pooled_ovr"].dropna()
    out["fig3.np_mcc_low"], out["fig3.np_mcc_high"] = float(mcc.min()), float(mcc.max())
    out["fig4e.np_auroc_e"] = float(roc["micro"]) if evalset == "E" else float(
        an.np_label_roc_table(tt, "E", "main")["micro"])
    out["fig4e.np_auroc_u"] = float(an.np_label_roc_table(tt, "U-control", "main")["micro"])
    return out


def simulate_statistics(model: CrowdModel, inputs: CalibrationInputs, *, roster_seed: int = 0,
                        study_seed: int = 1, nps_per_fov: tuple[int, int] = (10, 20),
                        true_effect: bool = False) -> dict[str, float]:
    """Draw a roster from ``model.priors``, simulate the multi-rater study on ``inputs`` and return
    :func:`crowd_statistics` (with ``true_effect``, also the NP-label AUROC of E and U-control against the
    generator's truth: ``true.np_auroc_e``, ``true.np_auroc_u``, and its true class accuracy: ``true.np_accuracy_e``,
    ``true.np_accuracy_u``)."""
    from ..interrater import analysis as an
    from ..io.multirater import multirater_frame

    roster = make_roster(np.random.default_rng(roster_seed), priors=dict(model.priors))
    ann = multi_rater_study(inputs.records, roster, np.random.default_rng(study_seed),
                            {"B-control": inputs.bootstrap, "E": inputs.refined}, nps_per_fov=nps_per_fov,
                            region_classes={"E": inputs.region_classes}, ambiguity=model.ambiguity,
                            subtle_share=model.subtle_share, decoys_per_fov=model.decoys_per_fov)
    study = an.MultiraterStudy(inputs.cohort, ann, multirater_frame(ann), roster_frame(roster), {}, True)
    table = an.anchor_tables(study, [an.PRIMARY_IOU], progress=False)[an.PRIMARY_IOU]
    tt = an.build_truth_tables(table)
    out = crowd_statistics(tt)
    if true_effect:
        an.attach_generator_truth(tt, inputs.records)
        out["true.np_auroc_e"] = float(an.np_label_roc_vs_generator(tt, "E", "main")["micro"])
        out["true.np_auroc_u"] = float(an.np_label_roc_vs_generator(tt, "U-control", "main")["micro"])
        out["true.np_accuracy_e"] = an.np_label_accuracy_vs_generator(tt, "E", "main")
        out["true.np_accuracy_u"] = an.np_label_accuracy_vs_generator(tt, "U-control", "main")
    return out


def tolerance(key: str) -> float:
    """How far a statistic may sit from the paper's: its SD where the paper gives one, else 10 % of the value."""
    base = key.partition(":")[0]
    if not key.endswith(":sd") and paper.get(base).sd is not None:
        return float(paper.sd(base))
    return 0.1 * abs(float(paper.lookup(key)))


def residuals(stats: Mapping[str, float], keys: Sequence[str] = tuple(TARGETS)) -> np.ndarray:
    """``(statistic - paper) / tolerance`` per key; a statistic that could not be computed counts as 3 tolerances."""
    r = []
    for k in keys:
        v = stats.get(k, np.nan)
        r.append((float(v) - float(paper.lookup(k))) / tolerance(k) if np.isfinite(v) else 3.0)
    return np.array(r)


# ---------------------------------------------------------------------------------------------------------------
# the fit
# ---------------------------------------------------------------------------------------------------------------
_FIT: tuple | None = None  # (start model, inputs, roster seeds, study seeds, theta_start) of the running fit


def _evaluate(theta) -> tuple[dict, np.ndarray, float, float]:
    """One evaluation of the running fit (:data:`_FIT`): mean statistics over its seed pairs, residuals (targets,
    then the prior term), cost and seconds."""
    start, inputs, roster_seeds, study_seeds, theta_start, free = _FIT
    t0 = time.perf_counter()
    runs = [simulate_statistics(apply_parameters(theta, start, free), inputs, roster_seed=rs, study_seed=ss)
            for rs, ss in zip(roster_seeds, study_seeds, strict=True)]
    stats = {k: float(np.nanmean([r[k] for r in runs])) for k in runs[0]}
    r = np.concatenate([residuals(stats), (np.asarray(theta) - theta_start) / PRIOR_SD])
    return stats, r, float(r @ r), time.perf_counter() - t0


def fit(inputs: CalibrationInputs, *, start: CrowdModel | None = None, iterations: int = 5,
        step: float = 0.25, roster_seeds: Sequence[int] = (0, 1), study_seeds: Sequence[int] = (100, 101),
        log: Callable[[str], object] | None = print, workers: int = 1,
        free: Sequence[FreeParameter] = FREE) -> dict:
    """Levenberg-Marquardt on the free parameters (forward differences of ``step`` on the unbounded scale), each
    evaluation the mean statistics of the studies simulated with ``roster_seeds`` and ``study_seeds`` (the same
    seeds every time), the cost the targets' squared residuals plus the prior's (:data:`PRIOR_SD`).

    ``workers`` > 1 evaluates a Jacobian's columns in that many forked processes (same seeds, same result).
    ``free`` (default :data:`FREE`) are the parameters that move; the others keep ``start``'s values.

    Returns ``{"theta", "model", "stats", "cost", "history"}`` of the best evaluation seen.
    """
    start = start or CrowdModel(GROUP_PRIORS)

    free = tuple(free)
    theta_start = parameters_of(start, free)
    global _FIT
    _FIT = (start, inputs, tuple(roster_seeds), tuple(study_seeds), theta_start, free)
    pool = None
    if workers > 1:
        import multiprocessing as mp
        pool = mp.get_context("fork").Pool(workers)  # the workers inherit _FIT; only theta travels
    try:
        theta = theta_start
        stats, r, cost, dt = _evaluate(theta)
        history = [{"iteration": 0, "cost": cost, "theta": theta.tolist(), "seconds": dt}]
        best = {"theta": theta, "stats": stats, "cost": cost, "r": r}
        if log:
            log(f"start: cost {cost:.2f} ({dt:.0f} s per evaluation)")
        lam = 1.0
        for it in range(1, iterations + 1):
            theta0, r0 = best["theta"], best["r"]
            shifted = list(theta0 + step * np.eye(len(theta0)))
            columns = (pool.map if pool is not None else map)(_evaluate, shifted)
            jac = np.stack([(c[1] - r0) / step for c in columns], axis=1)
            improved = False
            for trial_lam in (lam, lam * 10):
                a = jac.T @ jac
                delta = -np.linalg.solve(a + trial_lam * np.diag(np.diag(a) + 1e-6), jac.T @ r0)
                delta = np.clip(delta, -1.5, 1.5)
                th = theta0 + delta
                stats, r, cost, _ = _evaluate(th)
                history.append({"iteration": it, "lambda": trial_lam, "cost": cost, "theta": th.tolist()})
                if cost < best["cost"]:
                    best = {"theta": th, "stats": stats, "cost": cost, "r": r}
                    lam = max(trial_lam / 3, 1e-3)
                    improved = True
                    break
            if log:
                log(f"iteration {it}: cost {best['cost']:.2f}" + ("" if improved else " (no step improved; damping up)"))
            if not improved:
                lam *= 10
            if best["cost"] < 0.05 * len(TARGETS):
                break
    finally:
        if pool is not None:
            pool.terminate()
        _FIT = None
    return {"theta": best["theta"].tolist(), "model": apply_parameters(best["theta"], start, free), "stats": best["stats"],
            "cost": best["cost"], "history": history}


def check(model: CrowdModel, inputs: CalibrationInputs, seeds: Sequence[int] = (11, 12, 13)) -> pd.DataFrame:
    """The fitted model on fresh roster and study seeds: per statistic (targets, then held out), the paper's value,
    the tolerance, the simulated mean and SD over ``seeds``, and whether the mean is within the tolerance."""
    runs = [simulate_statistics(model, inputs, roster_seed=s, study_seed=1000 + s, true_effect=True) for s in seeds]
    rows = []
    for role, keys in (("calibration target", TARGETS), ("held out", HELD_OUT)):
        for k, what in keys.items():
            vals = np.array([r[k] for r in runs], dtype=float)
            rows.append({"statistic": k, "role": role, "what": what, "paper": paper.lookup(k),
                         "tolerance": round(tolerance(k), 3), "mean": float(np.nanmean(vals)),
                         "sd": float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else np.nan,
                         "within": bool(abs(np.nanmean(vals) - float(paper.lookup(k))) <= tolerance(k))})
    for r in runs:
        r["effect.inferred"] = r["fig4e.np_auroc_e"] - r["fig4e.np_auroc_u"]
        r["effect.true"] = r["true.np_auroc_e"] - r["true.np_auroc_u"]
        r["effect.true_accuracy"] = r["true.np_accuracy_e"] - r["true.np_accuracy_u"]
    for k, what in (("true.np_auroc_e", "NP-label AUROC micro, E, vs the generator's truth"),
                    ("true.np_auroc_u", "NP-label AUROC micro, U-control, vs the generator's truth"),
                    ("effect.inferred", "E minus U-control, NP-label AUROC micro, as the analysis infers it"),
                    ("effect.true", "E minus U-control, NP-label AUROC micro, against the generator's truth"),
                    ("effect.true_accuracy", "E minus U-control, NP-label true class accuracy (generator's truth)")):
        vals = np.array([r[k] for r in runs], dtype=float)
        rows.append({"statistic": k, "role": "generator truth", "what": what, "paper": None, "tolerance": np.nan,
                     "mean": float(np.nanmean(vals)), "sd": float(np.nanstd(vals, ddof=1)) if len(vals) > 1 else np.nan,
                     "within": None, "values": [round(float(v), 4) for v in vals]})
    return pd.DataFrame(rows)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nucls_utils.crowd.calibrate", description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="cpu", choices=("smoke", "cpu", "paper"))
    ap.add_argument("--seed", type=int, default=CALIBRATION_SEED, help="the calibration world's cohort seed")
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--check-seeds", type=int, nargs="*", default=list(range(11, 21)))
    ap.add_argument("--out", required=True, help="JSON file for the result")
    ap.add_argument("--workers", type=int, default=1, help="processes for a Jacobian's columns (same result)")
    ap.add_argument("--free", nargs="*", default=None, metavar="NAME",
                    help="fit only these parameters of FREE (default: all); the others keep the current priors")
    ap.add_argument("--rosters", type=int, default=2,
                    help="rosters (and study draws) each evaluation averages over (default 2)")
    args = ap.parse_args(argv)
    free = free_parameters(args.free)
    if args.seed == 0:
        ap.error("--seed 0 is the study's default cohort: calibrate on a world of its own")
    t0 = time.perf_counter()
    inputs = calibration_inputs(args.profile, args.seed)
    result = fit(inputs, iterations=args.iterations, workers=args.workers, free=free,
                 roster_seeds=tuple(range(args.rosters)), study_seeds=tuple(100 + i for i in range(args.rosters)))
    table = check(result["model"], inputs, args.check_seeds)
    print(table.to_string(index=False))
    out = {"command": f"python -m nucls_utils.crowd.calibrate --profile {args.profile} --seed {args.seed} "
                      f"--iterations {args.iterations}"
                      + (f" --free {' '.join(f.name for f in free)}" if args.free is not None else "")
                      + (f" --rosters {args.rosters}" if args.rosters != 2 else ""),
           "date": time.strftime("%Y-%m-%d"), "seconds": round(time.perf_counter() - t0),
           "priors": {g: asdict(p) for g, p in result["model"].priors.items()},
           "world": {k: getattr(result["model"], k) for k in ("ambiguity", "subtle_share", "decoys_per_fov")},
           "free": [f.name for f in free], "theta": result["theta"], "cost": result["cost"],
           "fit_stats": result["stats"], "history": result["history"], "check": table.to_dict(orient="records")}
    Path(args.out).write_text(json.dumps(out, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
