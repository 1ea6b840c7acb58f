"""The crowd's calibration machinery: parameters round-trip, residuals and tolerances follow the paper module, rows
are labelled fitted or not, and a simulated study's statistics are computed by the study's own analysis."""

import numpy as np
import pytest

from nucls_utils import paper
from nucls_utils.crowd import calibrate as cal
from nucls_utils.crowd.participants import GROUP_PRIORS


def test_parameters_round_trip_and_offsets():
    model = cal.CrowdModel(GROUP_PRIORS)
    theta = cal.parameters_of(model)
    assert len(theta) == len(cal.FREE)
    back = cal.apply_parameters(theta, model)
    for f in cal.FREE:
        for g in f.groups:
            assert getattr(back.priors[g], f.field) == pytest.approx(getattr(model.priors[g], f.field), abs=1e-9), f
        if not f.groups:
            assert getattr(back, f.field) == pytest.approx(getattr(model, f.field))
    moved = cal.apply_parameters(theta + 0.5, model)
    names = [f.name for f in cal.FREE]
    i = names.index("p_accuracy")
    sp, jp = moved.priors["SP"].accuracy, moved.priors["JP"].accuracy
    assert sp == pytest.approx(1 / (1 + np.exp(-(theta[i] + 0.5)))) and jp == pytest.approx(sp - 0.05)
    # pathologists' impressionability is a fraction of the NPs': never above it
    j = names.index("p_impressionability_ratio")
    frac = 1 / (1 + np.exp(-(theta[j] + 0.5)))
    assert moved.priors["SP"].impressionability == pytest.approx(frac * moved.priors["NP"].impressionability)
    assert moved.priors["SP"].impressionability < moved.priors["NP"].impressionability
    with pytest.raises(ValueError, match="free parameters"):
        cal.apply_parameters(theta[:-1], model)


def test_tolerances_residuals_and_roles():
    assert cal.tolerance("fig4d.self_kappa_ps") == paper.sd("fig4d.self_kappa_ps")  # the paper's SD
    assert cal.tolerance("fig4d.self_kappa_ps:sd") == pytest.approx(0.1 * paper.sd("fig4d.self_kappa_ps"))
    assert cal.tolerance("fig3a.np_detection_ap") == pytest.approx(0.1 * paper.value("fig3a.np_detection_ap"))
    stats = {k: float(paper.lookup(k)) for k in cal.TARGETS}
    assert np.allclose(cal.residuals(stats), 0)
    stats["fig3.np_mcc_low"] += cal.tolerance("fig3.np_mcc_low")
    stats["fig3b.np_auroc_micro"] = np.nan
    r = dict(zip(cal.TARGETS, cal.residuals(stats), strict=True))
    assert r["fig3.np_mcc_low"] == pytest.approx(1.0) and r["fig3b.np_auroc_micro"] == 3.0
    assert set(cal.TARGETS).isdisjoint(cal.HELD_OUT)
    assert "fig4e.np_auroc_e" in cal.HELD_OUT and "fig4e.np_auroc_u" in cal.HELD_OUT  # the effect is a prediction
    assert cal.role("fig4d.self_kappa_nps") == "calibration target (fitted)"
    assert cal.role("fig4e.np_auroc_e") == "not fitted" and cal.role(None) == ""
    for k in (*cal.TARGETS, *cal.HELD_OUT):
        paper.lookup(k)  # every statistic is a paper number


def test_calibration_refuses_the_study_seed():
    with pytest.raises(SystemExit):
        cal.main(["--seed", "0", "--out", "x.json"])


#: How far (in calibration tolerances) a target may sit on the smoke profile's small world (10 FOVs instead of the
#: cpu profile's 24 multi-rater FOVs the fit used, three seeds): the statistics are noisier there. (Measured with the
#: priors of the second stage, 2026-12-05: every checked target within 1.26.)
SMOKE_FACTOR = 2.0


@pytest.fixture(scope="module")
def smoke_world(tmp_path_factory):
    """A smoke-sized world of the calibration seed (10 multi-rater FOVs, their bootstrap and refined suggestions)."""
    return cal.calibration_inputs("smoke", cal.CALIBRATION_SEED, root=tmp_path_factory.mktemp("world"), n_fovs=10,
                                  progress=False)


@pytest.mark.slow
def test_fitted_crowd_reproduces_its_targets_on_the_smoke_profile(smoke_world):
    """The stored priors (GROUP_PRIORS and the FOVs' looks) on a smoke-sized world of the calibration seed: every
    target within SMOKE_FACTOR tolerances of the paper."""
    runs = [cal.simulate_statistics(cal.CrowdModel(GROUP_PRIORS), smoke_world, roster_seed=s, study_seed=100 + s)
            for s in (0, 1, 2)]
    mean = {k: float(np.nanmean([r[k] for r in runs])) for k in runs[0]}
    # the per-NP MCC extremes and the kappa SDs are left out here: an extreme or a spread over 32 NPs depends on how
    # many nuclei each NP labels, and on 10 small FOVs the least busy NPs label a handful (the lowest NP falls far
    # below the cpu world's; the NPs' kappa SD is 19.1 here, 13.7 on the cpu world with the same priors); the cpu
    # world's check (README) reports them
    keys = [k for k in cal.TARGETS if k not in ("fig3.np_mcc_low", "fig3.np_mcc_high") and not k.endswith(":sd")]
    z = {k: round((mean[k] - float(paper.lookup(k))) / cal.tolerance(k), 2) for k in keys}
    assert all(abs(v) <= SMOKE_FACTOR for v in z.values()), z


@pytest.mark.slow
def test_the_analysis_reads_a_planted_effect_of_suggestions_with_its_sign(smoke_world):
    """E shown suggestions that are right (each true nucleus, its true class): the calibrated crowd adopts and
    recognises them, so the NP-label is truly better in E than in U-control (against the generator's truth, AUROC
    and class accuracy), and the analysis, which only sees each set's P-truth, infers an effect of the same sign, on
    every seed. (With the cpu refiner's suggestions, less accurate than the NPs' consensus, the planted effect is
    near zero and its sign is left to chance: see the README.)"""
    right = cal.CalibrationInputs(smoke_world.records, smoke_world.bootstrap,
                                  {r.name: list(r.nuclei) for r in smoke_world.records}, {}, smoke_world.cohort)
    for s in (0, 1, 2):
        r = cal.simulate_statistics(cal.CrowdModel(GROUP_PRIORS), right, roster_seed=s, study_seed=100 + s,
                                    true_effect=True)
        inferred = r["fig4e.np_auroc_e"] - r["fig4e.np_auroc_u"]
        true, true_acc = r["true.np_auroc_e"] - r["true.np_auroc_u"], r["true.np_accuracy_e"] - r["true.np_accuracy_u"]
        assert inferred > 0.01 and true > 0 and true_acc > 0.01, (s, inferred, true, true_acc)


@pytest.mark.slow
def test_roster_spread_summarises_the_statistics_of_other_rosters(smoke_world):
    """Two other rosters (seeds 1 and 2, as :func:`simulate_statistics` draws them) on the smoke world: the spread's
    mean and SD are those of the two rosters' statistics, its shares and percentiles are proper fractions, and every
    target and held-out statistic has a row with the paper module's value."""
    spread = cal.roster_spread(smoke_world, 2, progress=False).set_index("statistic")
    assert set(spread.index) == set(cal.TARGETS) | set(cal.HELD_OUT)
    runs = [cal.simulate_statistics(cal.CrowdModel(GROUP_PRIORS), smoke_world, roster_seed=s, study_seed=1000 + s)
            for s in (1, 2)]
    k = "fig4d.self_kappa_nps"
    vals = np.array([r[k] for r in runs])
    assert spread.loc[k, "mean"] == pytest.approx(vals.mean())
    assert spread.loc[k, "sd"] == pytest.approx(vals.std(ddof=1))
    assert spread.loc[k, "paper"] == float(paper.lookup(k)) and spread.loc[k, "rosters"] == 2
    assert spread["share_within"].between(0, 1).all() and spread["paper_percentile"].between(0, 100).all()
    assert spread.loc["fig3b.np_auroc_micro", "role"] == "calibration target (fitted)"
    assert spread.loc["fig4e.np_auroc_u", "role"] == "not fitted"


def test_study_inputs_names_what_is_missing(tmp_path):
    (tmp_path / "study" / "multirater").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="fovs.csv: not found"):
        cal.study_inputs(tmp_path / "cohort", tmp_path / "study")
