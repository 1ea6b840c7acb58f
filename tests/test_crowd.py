"""The simulated crowd: planted behaviour comes out as planted; multi-rater files round-trip exactly."""

from dataclasses import replace

import numpy as np
import pytest

from nucls_utils import io as nio
from nucls_utils.crowd import (
    CorrectionPolicy,
    annotate_fov,
    make_roster,
    multi_rater_study,
    roster_frame,
    single_rater_study,
)
from nucls_utils.evaluation import match_boxes


@pytest.fixture(scope="module")
def smoke(smoke_cohort):
    return nio.read_dataset(smoke_cohort)


def _perfect(p):
    return replace(p, sensitivity=dict.fromkeys(p.sensitivity, 1.0), confusion=np.eye(13),
                   false_positives_per_fov=0.0, impressionability=0.0, bad_click_rate=0.0, box_jitter=0.0)


def _labels_vs_truth(truth, ann):
    t, a, _ = match_boxes(np.array([n.box for n in truth]), np.array([n.box for n in ann]).reshape(-1, 4), 0.3)
    return [(truth[i].raw_class, ann[j].raw_class) for i, j in zip(t, a, strict=True)]


def test_planted_perfect_participant_gives_only_correct_labels(smoke):
    rng = np.random.default_rng(0)
    p = _perfect(make_roster(rng, 0, 0, 1)[0])
    for r in smoke:
        ann = annotate_fov(p, r.nuclei, r.image_shape, rng)
        assert len(ann) == len(r.nuclei)
        pairs = _labels_vs_truth(r.nuclei, ann)
        assert len(pairs) == len(r.nuclei) and all(a == b for a, b in pairs)


def test_pathologists_label_better_than_nps(smoke):
    rng = np.random.default_rng(1)
    roster = make_roster(rng)
    acc = {"P": [], "NP": []}
    for p in roster:
        pairs = [pr for r in smoke for pr in _labels_vs_truth(r.nuclei, annotate_fov(p, r.nuclei, r.image_shape, rng))]
        acc["P" if p.is_pathologist else "NP"].append(np.mean([a == b for a, b in pairs]))
    frame = roster_frame(roster)
    planted = frame.groupby(frame["is_pathologist"])["accuracy"].mean()
    planted_gap, seen_gap = planted[True] - planted[False], np.mean(acc["P"]) - np.mean(acc["NP"])
    # labels carry the planted gap (the looks of nuclei are not drawn here: every nucleus looks like itself)
    assert planted_gap > 0.03 and seen_gap > 0.03 and abs(seen_gap - planted_gap) < 0.04, (planted_gap, seen_gap)
    assert (frame.groupby("group")["participant"].count().to_dict()) == {"JP": 4, "NP": 32, "SP": 3}


def test_clicks_and_impressionability(smoke):
    rng = np.random.default_rng(2)
    base = _perfect(make_roster(rng, 0, 0, 1)[0])
    r = max(smoke, key=lambda x: len(x.nuclei))
    # suggestions = the true outlines, all labelled 'tumor'
    sug = [nio.Nucleus.from_polygon("tumor", n.coords_x, n.coords_y) for n in r.nuclei]
    clicker = replace(base, click_skill=1.0, impressionability=1.0)
    ann = annotate_fov(clicker, r.nuclei, r.image_shape, rng, sug)
    assert all(a.type == "polyline" and a.raw_class == "tumor" for a in ann)
    assert sorted(a.box for a in ann) == sorted(n.box for n in r.nuclei)
    sceptic = replace(base, click_skill=0.0, impressionability=0.0)
    ann = annotate_fov(sceptic, r.nuclei, r.image_shape, rng, sug)
    assert all(a.type == "rectangle" for a in ann)
    assert sorted(a.raw_class for a in ann) == sorted(n.raw_class for n in r.nuclei)


def test_single_rater_correction_fixes_errors(smoke):
    rng = np.random.default_rng(3)
    roster = make_roster(rng)
    raw, fixed, assignment = single_rater_study(smoke, roster, rng, policy=CorrectionPolicy(1.0, 1.0, 1.0))
    assert set(assignment["participant"].str[:3]) == {"NP."}
    for t, f in zip(smoke, fixed, strict=True):
        pairs = _labels_vs_truth(t.nuclei, f.nuclei)
        assert len(pairs) == len(t.nuclei)  # every missed nucleus was added
        assert all(a == b for a, b in pairs)  # and every label fixed
    n_corr = sum(n.raw_classification.startswith("correction_") for f in fixed for n in f.nuclei)
    assert n_corr > 0
    assert sum(len(f.nuclei) for f in raw) != sum(len(f.nuclei) for f in fixed)


def test_correction_adds_missed_nuclei_as_a_pathologist_sees_them():
    from nucls_utils.crowd import correct_annotations
    from nucls_utils.crowd.participants import PATHOLOGIST_SENSITIVITY

    # 1,500 lymphocytes and 1,500 fibroblasts, none annotated: the correction adds each with the pathologists' mean
    # sensitivity for its class (0.95 and 0.72), as boxes marked as corrections
    truth = [nio.Nucleus.from_box(cls, 30 * (i % 50), 30 * (i // 50), 30 * (i % 50) + 20, 30 * (i // 50) + 20)
             for i, cls in enumerate(["lymphocyte", "fibroblast"] * 1500)]
    added = correct_annotations(truth, [], np.random.default_rng(0))
    assert all(a.raw_classification.startswith("correction_") and a.type == "rectangle" for a in added)
    for cls in ("lymphocyte", "fibroblast"):
        share = sum(a.raw_class == cls for a in added) / 1500
        assert abs(share - PATHOLOGIST_SENSITIVITY[cls]) < 0.035, (cls, share)  # 3 binomial SDs at most
    assert PATHOLOGIST_SENSITIVITY["lymphocyte"] > PATHOLOGIST_SENSITIVITY["fibroblast"]
    # a number sets one chance for every class
    flat = correct_annotations(truth, [], np.random.default_rng(0), CorrectionPolicy(add_missed=0.5))
    assert abs(len(flat) / 3000 - 0.5) < 0.03


def test_multirater_round_trip_and_determinism(smoke, tmp_path):
    def study(seed):
        rng = np.random.default_rng(seed)
        roster = make_roster(rng)
        sug = {"E": {r.name: [nio.Nucleus.from_polygon(n.raw_class, n.coords_x, n.coords_y) for n in r.nuclei]
                     for r in smoke}}
        return multi_rater_study(smoke[:4], roster, rng, sug, nps_per_fov=(16, 20))

    sim = study(5)
    assert sim == study(5)
    assert sim != study(6)
    assert {k[0] for k in sim} == {"U-control", "B-control", "E"}
    per_fov = {}
    for evalset, participant, fov in sim:
        if evalset == "E" and participant.startswith("NP"):
            per_fov[fov] = per_fov.get(fov, 0) + 1
    assert min(per_fov.values()) >= 16
    sim[("E", "NP.99", smoke[0].name)] = []  # annotated the FOV, found nothing: an empty CSV
    nio.write_multirater(sim, tmp_path / "mr", {r.name: r.rgb_path for r in smoke})
    back = nio.read_multirater(tmp_path / "mr")
    assert back == {k: tuple(v) for k, v in sim.items()}
    assert back[("E", "NP.99", smoke[0].name)] == ()
    frame = nio.multirater_frame(back)
    assert len(frame[frame["index"] >= 0]) == sum(len(v) for v in sim.values())
    assert (tmp_path / "mr" / "E" / "rgb" / f"{smoke[0].name}.png").exists()


def test_multirater_reader_errors(tmp_path):
    with pytest.raises(nio.NuclsFormatError, match="no multi-rater CSV"):
        (tmp_path / "empty").mkdir()
        nio.read_multirater(tmp_path / "empty")
    with pytest.raises(nio.NuclsFormatError, match="multi-rater folder not found"):
        nio.read_multirater(tmp_path / "nope")


def test_a_participant_judges_a_nucleus_the_same_way_in_every_set(smoke):
    """Without suggestions, U-control and E differ only by box jitter: same nuclei seen, same classes (for
    participants whose consistency between reads is 1)."""
    rng = np.random.default_rng(3)
    roster = [replace(p, false_positives_per_fov=0.0, consistency=1.0) for p in make_roster(rng)]
    mr = multi_rater_study(smoke[:2], roster, rng, {}, nps_per_fov=(3, 3))
    pairs = [(k, mr[("E",) + k[1:]]) for k in mr if k[0] == "U-control"]
    assert pairs
    for key, e in pairs:
        assert sorted(n.raw_class for n in mr[key]) == sorted(n.raw_class for n in e), key
    # a fresh judgement each time (no shared opinion) does not reproduce itself
    truth = smoke[0]
    a = annotate_fov(roster[-1], truth.nuclei, truth.image_shape, np.random.default_rng(1))
    b = annotate_fov(roster[-1], truth.nuclei, truth.image_shape, np.random.default_rng(2))
    assert sorted(n.raw_class for n in a) != sorted(n.raw_class for n in b)


def test_adoption_is_higher_when_unsure():
    from nucls_utils.crowd.participants import adoption_probability

    p = replace(make_roster(np.random.default_rng(0), 0, 0, 1)[0], impressionability=0.4, uncertainty_weight=0.0)
    assert adoption_probability(p, [0.0, 0.5, 1.0]) == pytest.approx([0.4, 0.4, 0.4])
    q = replace(p, uncertainty_weight=4.0)
    unsure, middle, sure = adoption_probability(q, [0.0, 0.5, 1.0])
    assert unsure > middle > sure and middle == pytest.approx(0.4)
    assert adoption_probability(replace(q, impressionability=0.0), [0.0]) == [0.0]
    assert adoption_probability(replace(q, impressionability=1.0), [1.0]) == [1.0]


def test_of_two_suggested_classes_the_more_plausible_is_adopted(smoke):
    from nucls_utils.crowd.participants import CLASS_INDEX

    rng = np.random.default_rng(4)
    base = _perfect(make_roster(rng, 0, 0, 1)[0])
    r = max(smoke, key=lambda x: sum(n.raw_class == "lymphocyte" for n in x.nuclei))
    lym = [n for n in r.nuclei if n.raw_class == "lymphocyte"]
    assert len(lym) >= 3
    conf = np.eye(13)
    conf[CLASS_INDEX["lymphocyte"]] = 0
    conf[CLASS_INDEX["lymphocyte"], CLASS_INDEX["plasma_cell"]] = 0.9  # calls lymphocytes plasma cells ...
    conf[CLASS_INDEX["lymphocyte"], CLASS_INDEX["lymphocyte"]] = 0.1  # ... but finds 'lymphocyte' plausible
    p = replace(base, confusion=conf, impressionability=1.0, click_skill=0.0)
    sug = [nio.Nucleus.from_polygon("lymphocyte", n.coords_x, n.coords_y) for n in lym]  # the model's class
    region = ["tumor"] * len(sug)  # the region's class, shown first
    ann = annotate_fov(p, lym, r.image_shape, rng, sug, region_classes=region)
    assert [a.raw_class for a in ann] == ["lymphocyte"] * len(lym)
    # shown only the region class, the same participant takes it (nothing better on offer)
    ann = annotate_fov(p, lym, r.image_shape, rng, [n.relabelled("tumor") for n in sug])
    assert [a.raw_class for a in ann] == ["tumor"] * len(lym)
    with pytest.raises(ValueError, match="region_classes: 1 classes for"):
        annotate_fov(p, lym, r.image_shape, rng, sug, region_classes=["tumor"])


def test_nuclei_that_look_like_another_class_fool_everyone_without_insight(smoke):
    from nucls_utils.crowd import apparent_classes
    from nucls_utils.crowd.study import _PARTNERS

    r = max(smoke, key=lambda x: len(x.nuclei))
    assert apparent_classes(r.nuclei, np.random.default_rng(0), 0.0) == [n.raw_class for n in r.nuclei]
    looks = apparent_classes(r.nuclei, np.random.default_rng(0), 1.0)
    assert all(a in _PARTNERS[n.raw_class] for a, n in zip(looks, r.nuclei, strict=True) if _PARTNERS[n.raw_class])
    fooled = [replace(_perfect(p), insight=0.0) for p in make_roster(np.random.default_rng(1), 0, 0, 3)]
    for p in fooled:  # every participant gives the look, not the truth: correlated errors
        ann = annotate_fov(p, r.nuclei, r.image_shape, np.random.default_rng(2), apparent=looks)
        assert sorted(a.raw_class for a in ann) == sorted(looks)
    seer = replace(fooled[0], insight=1.0)
    ann = annotate_fov(seer, r.nuclei, r.image_shape, np.random.default_rng(2), apparent=looks)
    assert sorted(a.raw_class for a in ann) == sorted(n.raw_class for n in r.nuclei)


def test_consistency_between_reads(smoke):
    """A participant with consistency 0 judges a FOV afresh in every set; with 1, as the first time."""
    rng = np.random.default_rng(5)
    roster = [replace(p, false_positives_per_fov=0.0) for p in make_roster(rng, 0, 0, 4)]
    fresh = [replace(p, consistency=0.0) for p in roster]
    mr = multi_rater_study(smoke[:2], fresh, np.random.default_rng(6), {}, nps_per_fov=(4, 4))
    differ = sum(sorted(n.raw_class for n in mr[k]) != sorted(n.raw_class for n in mr[("E",) + k[1:]])
                 for k in mr if k[0] == "U-control")
    assert differ >= 2


def test_a_suggestion_naming_the_true_class_lets_the_fooled_see_through(smoke):
    """Recognition (the planted effect of suggestions): a participant fooled by every look sees the true class of a
    nucleus whose suggestion names it, with recognition 1, and keeps the look with recognition 0; a suggestion that
    names the wrong class does not help."""
    r = max(smoke, key=lambda x: len(x.nuclei))
    from nucls_utils.crowd import apparent_classes

    looks = apparent_classes(r.nuclei, np.random.default_rng(0), 1.0)
    fooled = [i for i, (a, n) in enumerate(zip(looks, r.nuclei, strict=True)) if a != n.raw_class]
    assert len(fooled) >= 5
    p = replace(_perfect(make_roster(np.random.default_rng(1), 0, 0, 1)[0]), insight=0.0, click_skill=0.0)
    right = [n.relabelled(n.raw_class) for n in r.nuclei]
    wrong = [n.relabelled(a) for n, a in zip(r.nuclei, looks, strict=True)]
    given = {}
    for name, sug, rec in (("right, recognised", right, 1.0), ("right, not recognised", right, 0.0),
                           ("wrong, recognised", wrong, 1.0)):
        ann = annotate_fov(replace(p, recognition=rec), r.nuclei, r.image_shape, np.random.default_rng(2), sug,
                           apparent=looks)
        given[name] = sorted(a.raw_class for a in ann)
    assert given["right, recognised"] == sorted(n.raw_class for n in r.nuclei)
    assert given["right, not recognised"] == given["wrong, recognised"] == sorted(looks)


def test_skill_spread_widens_the_participants_accuracy():
    from nucls_utils.crowd.participants import GROUP_PRIORS

    def spread(sd):
        roster = make_roster(np.random.default_rng(3), 0, 0, 200,
                             priors={**GROUP_PRIORS, "NP": replace(GROUP_PRIORS["NP"], skill_sd=sd)})
        frame = roster_frame(roster)
        return frame["accuracy"].std(), np.std([p.insight for p in roster])

    (acc0, ins0), (acc1, ins1) = spread(0.0), spread(1.0)
    assert ins0 < 1e-9 and ins1 > 0.1  # insight moves with the talent draw
    assert acc1 > 2 * acc0


def test_beta_draws_have_the_prior_moments_and_move_smoothly_with_it():
    """A participant's consistency and click skill are Beta draws around the group's mean and SD: over many draws
    the moments are the prior's, and one uniform is taken per draw, so a slightly wider prior moves each participant's
    draw slightly (common random numbers for the crowd's calibration) and leaves every later draw as it was."""
    from nucls_utils.crowd.participants import _beta_around

    rng = np.random.default_rng(3)
    x = np.array([_beta_around(0.75, 0.17, rng) for _ in range(20000)])
    assert abs(x.mean() - 0.75) < 0.005 and abs(x.std() - 0.17) < 0.005
    a, b = np.random.default_rng(9), np.random.default_rng(9)
    first = [_beta_around(0.75, 0.170, a), a.random()]
    second = [_beta_around(0.75, 0.171, b), b.random()]
    assert 0 < abs(first[0] - second[0]) < 0.01 and first[1] == second[1]
