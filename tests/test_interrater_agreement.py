"""Agreement, participant accuracy and NP-redundancy simulation (notes 2c-2d), and the classification metrics of
nucls_utils.evaluation that they use: cross-checked against scikit-learn, scipy and krippendorff on random
inputs, and on hand-built tables whose answers are known."""

from __future__ import annotations

from types import SimpleNamespace

import krippendorff
import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn import metrics as skm
from sklearn.preprocessing import label_binarize

from nucls_utils import evaluation as ev
from nucls_utils.interrater import accuracy as acc
from nucls_utils.interrater import agreement as agr
from nucls_utils.interrater import redundancy as red

NA = agr.NOT_ANNOTATED
UN = agr.UNDETECTED


# ------------------------------------------------------------------------------------------------ metrics


def _scores_with_ties(rng, n, y):
    return np.round(rng.random(n) + 0.6 * y, 1)  # rounding makes many ties


def test_binary_curves_match_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(15):
        y = rng.random(120) < rng.uniform(0.1, 0.6)
        s = _scores_with_ties(rng, 120, y)
        assert ev.average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
        for ours, theirs in zip(
            ev.precision_recall_curve(y, s), skm.precision_recall_curve(y, s), strict=True
        ):
            np.testing.assert_allclose(ours, theirs)
        for ours, theirs in zip(ev.roc_curve(y, s), skm.roc_curve(y, s), strict=True):
            np.testing.assert_allclose(ours, theirs)
        assert ev.roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert np.isnan(ev.average_precision([0, 0], [0.1, 0.2])) and np.isnan(ev.roc_auc([1, 1], [0.1, 0.2]))


def test_mcc_variants_match_sklearn():
    rng = np.random.default_rng(1)
    classes = ["tumor", "stroma", "sTIL", "other"]
    for _ in range(10):
        t = rng.choice(classes, 300)
        p = np.where(rng.random(300) < 0.6, t, rng.choice(classes, 300))
        assert ev.mcc_multiclass(t, p) == pytest.approx(skm.matthews_corrcoef(t, p), abs=1e-12)
        table = ev.one_vs_rest_counts(t, p, classes)
        for c in classes:
            assert table.loc[c, "mcc"] == pytest.approx(skm.matthews_corrcoef(t == c, p == c), abs=1e-12)
            cm = skm.confusion_matrix(t == c, p == c, labels=[False, True])
            assert (table.loc[c, ["tn", "fp", "fn", "tp"]].to_numpy() == cm.ravel()).all()
        pooled = table.loc["overall"]
        assert pooled[["tp", "fp", "tn", "fn"]].sum() == len(t) * len(classes)
        ravel_t = label_binarize(t, classes=classes).ravel()
        ravel_p = label_binarize(p, classes=classes).ravel()
        assert ev.mcc_pooled_ovr(t, p, classes) == pytest.approx(
            skm.matthews_corrcoef(ravel_t, ravel_p), abs=1e-12
        )
    assert ev.mcc_from_counts(5, 0, 0, 0) == 0.0  # empty row/column -> 0, as sklearn
    np.testing.assert_allclose(ev.mcc_from_counts([10, 3], [0, 3], [10, 3], [0, 3]), [1.0, 0.0])
    cf = ev.confusion_frame(["a", "a", "b"], ["a", "b", "b"], normalize="true")
    assert cf.loc["a", "b"] == 0.5 and cf.loc["b", "b"] == 1.0


def test_micro_macro_auroc_match_sklearn():
    rng = np.random.default_rng(2)
    classes = ["tumor", "stroma", "sTIL", "other"]
    for _ in range(10):
        y = rng.choice(classes, 250, p=[0.4, 0.3, 0.2, 0.1])
        prob = rng.dirichlet(np.ones(4), 250)
        prob[np.arange(250), [classes.index(v) for v in y]] += rng.uniform(0, 0.5)
        prob = np.round(prob / prob.sum(1, keepdims=True), 2)
        out = ev.roc_auc_micro_macro(y, prob, classes)
        onehot = label_binarize(y, classes=classes)
        assert out["micro"] == pytest.approx(skm.roc_auc_score(onehot.ravel(), prob.ravel()), abs=1e-12)
        assert out["macro_mean_auc"] == pytest.approx(
            skm.roc_auc_score(onehot, prob, average="macro"), abs=1e-12
        )
        curves = [skm.roc_curve(onehot[:, k], prob[:, k])[:2] for k in range(4)]
        for k, c in enumerate(classes):
            assert out["per_class"][c] == pytest.approx(skm.auc(*curves[k]), abs=1e-12)
        all_fpr = np.unique(np.concatenate([f for f, _ in curves]))
        mean_tpr = np.mean([np.interp(all_fpr, f, t) for f, t in curves], axis=0)
        assert out["macro"] == pytest.approx(skm.auc(all_fpr, mean_tpr), abs=1e-12)


def test_macro_auroc_is_the_mean_curve_not_the_mean_auc():
    # class a: perfect, curve (0,0)-(0,1)-(1,1), AUC 1
    # class b: one negative above both positives, one below: curve (0,0)-(.5,0)-(.5,1)-(1,1), AUC .5
    y = np.array(["a", "a", "b", "b"])
    prob = np.array([[0.9, 0.9], [0.8, 0.1], [0.1, 0.5], [0.2, 0.5]])
    out = ev.roc_auc_micro_macro(y, prob, ["a", "b"])
    assert out["per_class"] == {"a": 1.0, "b": 0.5}
    assert out["macro_mean_auc"] == 0.75
    # union of FPR points {0, .5, 1}; interpolated TPRs a: (1, 1, 1), b: (0, 1, 1) (the top of the vertical step)
    np.testing.assert_allclose(out["curves"]["macro"][0], [0, 0.5, 1])
    np.testing.assert_allclose(out["curves"]["macro"][1], [0.5, 1, 1])
    assert out["macro"] == pytest.approx(0.875)
    # a class absent from the truth has no curve and does not enter the macro averages
    out3 = ev.roc_auc_micro_macro(y, np.c_[prob, np.zeros(4)], ["a", "b", "c"])
    assert np.isnan(out3["per_class"]["c"]) and out3["macro"] == pytest.approx(0.875)


def test_bootstrap_ci():
    rng = np.random.default_rng(3)
    x = rng.normal(10, 1, 400)
    ci = ev.bootstrap_ci(np.mean, x, n=300, rng=np.random.default_rng(4))
    assert ci.low < ci.median < ci.high and ci.low < 10 < ci.high and len(ci.values) == 300
    again = ev.bootstrap_ci(np.mean, x, n=300, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(ci.values, again.values)
    y = rng.random(50) < 0.5
    s = rng.random(50) + y
    ci2 = ev.bootstrap_ci(ev.roc_auc, y, s, n=100, rng=np.random.default_rng(5))  # arrays resampled jointly
    assert 0.5 < ci2.median <= 1.0


# ------------------------------------------------------------------------------------------------ agreement


def _frame(rows, cols=None):
    arr = np.array(rows, dtype=object)
    return pd.DataFrame(
        arr,
        index=[f"a{i}" for i in range(arr.shape[0])],
        columns=cols or [f"NP.{j + 1}" for j in range(arr.shape[1])],
    )


def test_krippendorff_alpha_perfect_random_and_reference():
    rng = np.random.default_rng(6)
    truth = rng.choice(["tumor", "stroma", "sTIL"], 40)
    perfect = pd.DataFrame({f"SP.{j}": truth for j in range(1, 5)})
    assert agr.krippendorff_alpha(perfect) == pytest.approx(1.0)
    noise = pd.DataFrame(rng.choice(["tumor", "stroma", "sTIL", "other"], (600, 8)))
    assert abs(agr.krippendorff_alpha(noise)) < 0.03

    # the krippendorff package's documented example (nominal alpha 0.691358), as string labels
    m = np.array(
        [
            [np.nan, np.nan, np.nan, np.nan, np.nan, 3, 4, 1, 2, 1, 1, 3, 3, np.nan, 3],
            [1, np.nan, 2, 1, 3, 3, 4, 3, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan],
            [np.nan, np.nan, 2, 1, 3, 4, 4, np.nan, 2, 1, 1, 3, 3, np.nan, 4],
        ]
    )
    names = {1: "tumor", 2: "stroma", 3: "sTIL", 4: "other"}
    frame = pd.DataFrame(m.T).apply(lambda col: col.map(names)).fillna(NA)
    expected = krippendorff.alpha(reliability_data=m, level_of_measurement="nominal")
    assert expected == pytest.approx(0.691358, abs=1e-6)
    assert agr.krippendorff_alpha(frame) == pytest.approx(expected, abs=1e-12)
    # invariant to how categories are coded (order of the category list, names of the labels)
    for cats in (["other", "sTIL", "stroma", "tumor"], ["sTIL", "tumor", "other", "stroma", "plasma"]):
        assert agr.krippendorff_alpha(frame, categories=cats) == pytest.approx(expected, abs=1e-12)
    renamed = frame.replace({"tumor": "zz", "other": "aa"})
    assert agr.krippendorff_alpha(renamed) == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="not in categories"):
        agr.krippendorff_alpha(frame, categories=["tumor", "stroma"])


def test_krippendorff_missing_handling():
    rng = np.random.default_rng(7)
    base = pd.DataFrame(rng.choice(["tumor", "stroma", "sTIL"], (60, 5), p=[0.6, 0.3, 0.1]))
    base.iloc[:, 1:3] = np.where(rng.random((60, 2)) < 0.7, base.iloc[:, [0, 0]], base.iloc[:, 1:3])
    holes = rng.random(base.shape) < 0.3
    with_na = base.mask(holes, NA)
    with_nan = base.mask(holes)
    a = agr.krippendorff_alpha(with_na)
    assert a == pytest.approx(agr.krippendorff_alpha(with_nan))
    # a rater who annotated nothing, or an anchor nobody saw, changes nothing
    extra = with_na.assign(ghost=NA)
    extra.loc["unseen"] = NA
    assert agr.krippendorff_alpha(extra) == pytest.approx(a)
    # 'undetected' is missing in classification mode and a category in detection_and_classification mode
    with_un = base.mask(holes, UN)
    assert agr.krippendorff_alpha(with_un, mode="classification") == pytest.approx(a)
    assert agr.krippendorff_alpha(with_un, mode="detection_and_classification") != pytest.approx(a)
    mixed = base.mask(holes & (rng.random(base.shape) < 0.5), UN).mask(holes, NA, axis=None)
    codes, cats = agr.reliability_matrix(mixed, "detection_and_classification")
    assert UN not in set(mixed.to_numpy()[~holes]) or UN in cats
    assert np.isnan(codes[holes.T]).all() and NA not in cats  # DidNotAnnotateFOV never counts

    curve = agr.alpha_by_min_detections(with_un)
    assert curve["min_detections"].iloc[0] == 0 and curve["n_anchors"].iloc[0] == len(with_un)
    assert curve["alpha"].iloc[0] == pytest.approx(a)
    assert (np.diff(curve["n_anchors"]) <= 0).all()
    n_det = agr.n_detections(with_un)
    row = curve.set_index("min_detections").loc[3]
    assert row["n_anchors"] == (n_det >= 3).sum()


def test_pairwise_kappa_and_groups():
    f = _frame(
        [
            ["tumor", "tumor", "tumor"],
            ["stroma", "tumor", NA],
            ["sTIL", "sTIL", "sTIL"],
            [UN, "sTIL", "stroma"],
            ["tumor", UN, "tumor"],
            ["stroma", "stroma", np.nan],
            [UN, UN, "tumor"],
            [NA, "tumor", "tumor"],
        ],
        cols=["SP.1", "JP.2", "NP.3"],
    )
    pairs = agr.pairwise_kappa(f, mode="classification")
    assert list(pairs["pair_group"]) == ["Ps-Ps", "Ps-NPs", "Ps-NPs"]
    a, b = f["SP.1"], f["JP.2"]
    keep = ~a.isin([NA, UN]) & ~b.isin([NA, UN]) & a.notna() & b.notna()
    row = pairs.iloc[0]
    assert row["n"] == keep.sum() == 4
    assert row["kappa"] == pytest.approx(skm.cohen_kappa_score(a[keep], b[keep]))
    dc = agr.pairwise_kappa(f, mode="detection_and_classification").iloc[0]
    keep_dc = ~a.isin([NA]) & ~b.isin([NA]) & a.notna() & b.notna()
    assert dc["n"] == keep_dc.sum() == 7
    assert dc["kappa"] == pytest.approx(skm.cohen_kappa_score(a[keep_dc], b[keep_dc]))
    groups = pd.Series({"SP.1": "NP", "JP.2": "NP", "NP.3": "SP"})
    assert list(agr.pairwise_kappa(f, groups)["pair_group"]) == ["NPs-NPs", "Ps-NPs", "Ps-NPs"]
    # no shared anchor -> NaN, not 0; constant identical raters -> NaN (kappa undefined)
    g = _frame([["tumor", NA], [NA, "tumor"]])
    k, n = agr.cohen_kappa(g.iloc[:, 0], g.iloc[:, 1])
    assert n == 0 and np.isnan(k)
    assert np.isnan(agr.cohen_kappa(["tumor"] * 3, ["tumor"] * 3)[0])


def test_self_agreement_mds_and_bands():
    rng = np.random.default_rng(8)
    labels = pd.DataFrame(
        rng.choice(["tumor", "stroma", "sTIL", UN], (50, 4)),
        index=[f"x{i}" for i in range(50)],
        columns=["SP.1", "JP.1", "NP.1", "NP.2"],
    )
    other = labels.iloc[::-1].copy()  # same anchors in another order, plus anchors the first set lacks
    other.loc["extra1"] = "tumor"
    other["NP.3"] = "tumor"
    out = agr.self_agreement(labels, other, mode="detection_and_classification")
    assert list(out.index) == ["SP.1", "JP.1", "NP.1", "NP.2"]
    assert (out["kappa"] == 1.0).all() and (out["n"] == 50).all()
    noisy = labels.mask(rng.random(labels.shape) < 0.3, "tumor")
    clicks = pd.DataFrame(rng.random(labels.shape) < 0.5, index=labels.index, columns=labels.columns)
    out2 = agr.self_agreement(labels, noisy, mode="classification", clicks_b=clicks)
    k, n = agr.cohen_kappa(labels["NP.1"], noisy["NP.1"])
    assert out2.loc["NP.1", "kappa"] == pytest.approx(k) and out2.loc["NP.1", "n"] == n
    det = ~noisy["NP.1"].isin([UN])
    assert out2.loc["NP.1", "n_clicks_b"] == (clicks["NP.1"] & det).sum()
    assert out2.loc["NP.1", "psegmented"] == pytest.approx((clicks["NP.1"] & det).sum() / det.sum())

    combined = pd.concat([labels, noisy.set_axis(["SP.2", "JP.2", "NP.5", "NP.6"], axis=1)], axis=1)
    pairs = agr.pairwise_kappa(combined)
    xy = agr.mds_of_kappa(pairs)
    assert xy.shape == (8, 3) and list(xy.columns) == ["x", "y", "group"]
    np.testing.assert_array_equal(xy[["x", "y"]].to_numpy(), agr.mds_of_kappa(pairs)[["x", "y"]].to_numpy())
    km = agr.kappa_matrix(pairs)
    assert (np.diag(km) == 1).all() and km.equals(km.T)

    assert agr.agreement_band(0.1) == "slight" and agr.agreement_band(0.2) == "fair"
    assert agr.agreement_band(0.874) == "near-perfect" and agr.agreement_band(1.0) == "near-perfect"
    assert agr.agreement_band(-0.1) == "poor" and agr.agreement_band(np.nan) is None
    assert list(agr.agreement_band([0.5, 0.7])) == ["moderate", "substantial"]


# ------------------------------------------------------------------------------------------------ accuracy


def _accuracy_table():
    # anchors a0-a3 real (P-truth a class), a4 false (P-truth undetected), a5 false (no P-truth)
    truth = pd.Series(["tumor", "tumor", "stroma", "sTIL", UN, np.nan], index=[f"a{i}" for i in range(6)])
    labels = _frame(
        [
            ["tumor", "stroma", UN],
            ["tumor", UN, "tumor"],
            ["stroma", "stroma", NA],
            [UN, "sTIL", NA],
            ["tumor", UN, NA],
            ["sTIL", "tumor", UN],
        ]
    )
    return labels, truth


def test_participant_detection_counts():
    labels, truth = _accuracy_table()
    det = acc.participant_detection(labels, truth)
    assert det[["tp", "fp", "fn"]].to_dict("index") == {
        "NP.1": {"tp": 3, "fp": 2, "fn": 1},
        "NP.2": {"tp": 3, "fp": 1, "fn": 1},
        "NP.3": {"tp": 1, "fp": 0, "fn": 1},
    }
    assert det.loc["NP.1", "precision"] == pytest.approx(3 / 5)
    assert det.loc["NP.1", "recall"] == pytest.approx(3 / 4)
    assert det.loc["NP.2", "f1"] == pytest.approx(2 * 3 / (2 * 3 + 1 + 1))
    # only anchors flagged false count as FPs when a mask is given (a5: no P-truth, ignored here)
    det2 = acc.participant_detection(labels, truth, false_anchor_mask=pd.Series({"a4": True}))
    assert det2.loc["NP.1", "fp"] == 1 and det2.loc["NP.2", "fp"] == 0
    with pytest.raises(ValueError, match="real anchors"):
        acc.participant_detection(labels, truth, false_anchor_mask=pd.Series({"a0": True}))


def test_participant_classification_and_confusion():
    labels, truth = _accuracy_table()
    cls = acc.participant_classification(labels, truth, per_class=True)
    # NP.1 classified a0 tumor/tumor, a1 tumor/tumor, a2 stroma/stroma: perfect
    assert cls.loc["NP.1", "n"] == 3 and cls.loc["NP.1", "accuracy"] == 1.0 and cls.loc["NP.1", "mcc_pooled_ovr"] == 1.0
    # NP.2: a0 tumor->stroma, a2 stroma->stroma, a3 sTIL->sTIL
    t, p = ["tumor", "stroma", "sTIL"], ["stroma", "stroma", "sTIL"]
    assert cls.loc["NP.2", "accuracy"] == pytest.approx(2 / 3)
    assert cls.loc["NP.2", "mcc_pooled_ovr"] == pytest.approx(ev.mcc_pooled_ovr(t, p, ["sTIL", "stroma", "tumor"]))
    assert cls.loc["NP.2", "mcc_multiclass"] == pytest.approx(skm.matthews_corrcoef(t, p))
    assert cls.loc["NP.2", "mcc_tumor"] == 0.0
    conf = acc.participant_confusion(labels, truth, normalize=None)
    assert conf.loc[acc.FALSE_LABEL, "tumor"] == 2 and conf.loc["tumor", UN] == 2
    assert conf.to_numpy().sum() == labels.isin(["tumor", "stroma", "sTIL", UN]).to_numpy().sum()
    frac = acc.participant_confusion(labels, truth, participants=["NP.1"])
    assert frac["tumor"].sum() == pytest.approx(1.0)
    tally = acc.label_tally(labels)
    assert tally.loc["a0"].to_dict() == {"sTIL": 0, "stroma": 1, "tumor": 1, UN: 1}
    assert (tally.sum(axis=1) == labels.isin(["tumor", "stroma", "sTIL", UN]).sum(axis=1)).all()


def test_np_label_curves():
    rng = np.random.default_rng(9)
    n = 200
    classes = ["tumor", "stroma", "sTIL", "other"]
    truth = pd.Series(rng.choice(classes + [UN], n, p=[0.3, 0.25, 0.2, 0.0, 0.25]), index=range(n))
    truth[rng.random(n) < 0.1] = np.nan
    raw = rng.dirichlet(np.ones(5), n)
    real = acc.is_real(truth).to_numpy()
    raw[:, 0] += np.where(real, 0.0, 0.8)  # column 0 = undetected
    for i, c in enumerate(truth):
        if c in classes:
            raw[i, 1 + classes.index(c)] += 0.5
    raw /= raw.sum(1, keepdims=True)
    em = pd.DataFrame(raw, columns=[f"EM_prob_{c}" for c in [UN] + classes])
    em["label"] = np.array([UN] + classes, dtype=object)[raw.argmax(1)]
    em.loc[:4, "label"] = np.nan
    n_matches = pd.Series(rng.integers(0, 6, n))

    ap = acc.np_label_detection_ap(em, truth, n_matches=n_matches)
    keep = em["label"].notna() & (n_matches >= 2)
    y = real[keep.to_numpy()]
    assert ap["n"] == keep.sum() and ap["n_positive"] == y.sum()
    assert ap["ap"] == pytest.approx(skm.average_precision_score(y, 1 - em.loc[keep, f"EM_prob_{UN}"]))

    roc = acc.np_label_roc(em, truth)
    assert roc["classes"] == ["sTIL", "stroma", "tumor"]  # 'other' absent from the truth: dropped
    sel = em["label"].notna() & (em["label"] != UN) & acc.is_real(truth)
    assert roc["n"] == sel.sum()
    p = em.loc[sel, [f"EM_prob_{c}" for c in roc["classes"]]].to_numpy()
    p = p / p.sum(1, keepdims=True)
    onehot = label_binarize(truth[sel], classes=roc["classes"])
    assert roc["micro"] == pytest.approx(skm.roc_auc_score(onehot.ravel(), p.ravel()))
    assert roc["macro_mean_auc"] == pytest.approx(skm.roc_auc_score(onehot, p, average="macro"))
    y_in, p_in, kept = acc.np_label_roc_inputs(em, truth)
    np.testing.assert_allclose(p_in, p)
    boot = ev.bootstrap_ci(
        lambda a, b: ev.roc_auc_micro_macro(a, b, kept)["micro"],
        y_in,
        p_in,
        n=50,
        rng=np.random.default_rng(0),
    )
    assert boot.low <= roc["micro"] <= boot.high or abs(boot.median - roc["micro"]) < 0.05


def test_statistical_tests_wrap_scipy():
    rng = np.random.default_rng(10)
    a, b = rng.normal(0, 1, 30), rng.normal(0.5, 1, 25)
    res = acc.mann_whitney(np.r_[a, np.nan], b)
    ref = stats.mannwhitneyu(a, b, alternative="two-sided")
    assert (res.statistic, res.pvalue, res.n1, res.n2) == (ref.statistic, ref.pvalue, 30, 25)
    c = a + rng.normal(0.3, 0.5, 30)
    res = acc.wilcoxon_paired(a, c)
    ref = stats.wilcoxon(a, c)
    assert (res.statistic, res.pvalue, res.n1) == (ref.statistic, ref.pvalue, 30)
    assert np.isnan(acc.wilcoxon_paired([1.0, 2.0], [1.0, 2.0]).pvalue)
    assert acc.wilcoxon_paired(np.r_[a, np.nan], np.r_[c, 1.0]).n1 == 30


# ------------------------------------------------------------------------------------------------ redundancy


def _planted_study(seed=0, n_fovs=8, per_fov=30, n_nps=14, classes=("tumor", "stroma", "sTIL")):
    """FOVs with real and false anchors; NPs with known detection/classification reliability; each FOV is
    annotated by all but a few NPs."""
    rng = np.random.default_rng(seed)
    n = n_fovs * per_fov
    fov = pd.Series(
        np.repeat([f"fov{i}" for i in range(n_fovs)], per_fov), index=[f"an{i}" for i in range(n)]
    )
    real = rng.random(n) < 0.8
    tcls = rng.integers(0, len(classes), n)
    truth = pd.Series(np.where(real, np.array(classes, dtype=object)[tcls], UN), index=fov.index)
    truth[~real & (rng.random(n) < 0.5)] = np.nan
    p_detect = rng.uniform(0.6, 0.9, n_nps)
    p_correct = rng.uniform(0.5, 0.85, n_nps)
    p_false = 0.25
    detect = np.where(real[:, None], rng.random((n, n_nps)) < p_detect, rng.random((n, n_nps)) < p_false)
    correct = rng.random((n, n_nps)) < p_correct
    other = (tcls[:, None] + rng.integers(1, len(classes), (n, n_nps))) % len(classes)
    given = np.where(
        correct & real[:, None],
        tcls[:, None],
        np.where(real[:, None], other, rng.integers(0, len(classes), (n, n_nps))),
    )
    values = np.where(detect, np.array(classes, dtype=object)[given], UN)
    skip = np.zeros((n_fovs, n_nps), bool)
    for f in range(n_fovs):
        skip[f, rng.choice(n_nps, 2, replace=False)] = True
    values = np.where(skip[np.repeat(np.arange(n_fovs), per_fov)], NA, values)
    labels = pd.DataFrame(values, index=fov.index, columns=[f"NP.{j + 1}" for j in range(n_nps)])
    return labels, fov, truth


def _vote_em(codes, n_classes, q0=0.7, n_iter=70):
    """A stand-in for Dawid-Skene: posteriors = vote shares (uniform without votes)."""
    counts = (codes[..., None] == np.arange(n_classes)).sum(axis=-2).astype(float)
    tot = counts.sum(-1, keepdims=True)
    return SimpleNamespace(posteriors=np.where(tot > 0, counts / np.maximum(tot, 1), 1.0 / n_classes))


def test_redundancy_simulation_trend_and_determinism():
    labels, fov, truth = _planted_study()
    kw = dict(ks=[2, 4, 10], n_realisations=6, em=_vote_em, progress=False)
    df = red.simulate_redundancy(labels, fov, truth, rng=np.random.default_rng(0), batch=5, **kw)
    assert len(df) == 18 and list(df["k"][:3]) == [2, 4, 10]
    assert {"auroc_micro", "auroc_macro", "auroc_tumor", "auroc_stroma", "auroc_sTIL"} <= set(df.columns)
    med = df.groupby("k")[["det_f1", "mcc_pooled_ovr", "auroc_micro"]].median()
    assert med.loc[10, "det_f1"] >= med.loc[4, "det_f1"] >= med.loc[2, "det_f1"]
    assert med.loc[10, "mcc_pooled_ovr"] >= med.loc[2, "mcc_pooled_ovr"] + 0.05
    assert ((df["n_unique_NPs"] >= df["k"]) & (df["n_unique_NPs"] <= labels.shape[1])).all()
    assert (df.loc[df["k"] == 10, "n_unique_NPs"] > 10).any()
    # same seed -> same table, whatever the batch size
    again = red.simulate_redundancy(labels, fov, truth, rng=np.random.default_rng(0), batch=7, **kw)
    pd.testing.assert_frame_equal(df, again)
    other = red.simulate_redundancy(labels, fov, truth, rng=np.random.default_rng(1), batch=7, **kw)
    assert not other["n_unique_NPs"].equals(df["n_unique_NPs"])
    # the vectorised pooled MCC equals evaluation.one_vs_rest_counts on one realisation at full redundancy
    full = red.simulate_redundancy(labels, fov, truth, ks=[14], n_realisations=1, em=_vote_em, progress=False)
    post = _vote_em(red.encode_labels(labels)[0], 4).posteriors
    cats = red.encode_labels(labels)[1]
    pred = np.array(cats, dtype=object)[post.argmax(1)]
    real = acc.is_real(truth).to_numpy()
    sel = real & (pred != UN)
    table = ev.one_vs_rest_counts(truth[sel].to_numpy(), pred[sel], [c for c in cats if c != UN])
    assert full["mcc_pooled_ovr"].iloc[0] == pytest.approx(table.loc["overall", "mcc"])
    assert full["det_tp"].iloc[0] == sel.sum()


def test_redundancy_with_dawid_skene_and_population():
    pytest.importorskip("nucls_utils.interrater.em")
    labels, fov, truth = _planted_study(seed=1, n_fovs=6, per_fov=25)
    sub, sub_fov = red.restrict_to_dense_fovs(labels, fov, min_nps=12)
    assert len(sub) == len(labels) and sub.shape[1] == labels.shape[1]
    labels2 = labels.copy()
    labels2.loc[fov == "fov0", labels2.columns[:6]] = NA  # fov0 now has only 6 annotators
    sub2, sub_fov2 = red.restrict_to_dense_fovs(labels2, fov, min_nps=12)
    assert "fov0" not in set(sub_fov2) and len(sub2) == len(labels) - 25
    df = red.simulate_redundancy(
        sub,
        sub_fov,
        truth,
        ks=[2, 8],
        n_realisations=4,
        rng=np.random.default_rng(0),
        batch=8,
        progress=False,
    )
    med = df.groupby("k")[["det_f1", "mcc_pooled_ovr", "auroc_micro"]].median()
    assert med.loc[8, "det_f1"] >= med.loc[2, "det_f1"] and med.loc[8, "mcc_pooled_ovr"] >= med.loc[2, "mcc_pooled_ovr"]
    assert df["auroc_micro"].between(0.5, 1).all()
