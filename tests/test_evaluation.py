"""Metrics: IOU and matching agree with brute force; counts give the usual rates."""

import itertools

import numpy as np
import pytest

from nucls_utils.evaluation import DetectionCounts, box_iou, detection_counts, match_boxes


def test_box_iou_against_pixel_sets():
    rng = np.random.default_rng(0)
    a = np.sort(rng.integers(0, 30, size=(6, 2, 2)), axis=1).transpose(0, 2, 1).reshape(6, 4)[:, [0, 2, 1, 3]]
    a[:, 2:] += 1
    b = np.vstack([a[::-1] + [2, 1, 2, 1], a[:2]])  # shifted copies overlap partly; two identical boxes
    iou = box_iou(a, b)
    assert iou.shape == (6, 8) and iou[0, 6] == 1.0 and iou[1, 7] == 1.0
    for i, j in itertools.product(range(len(a)), range(len(b))):
        ma = np.zeros((40, 40), bool)
        mb = np.zeros((40, 40), bool)
        ma[a[i, 1]:a[i, 3], a[i, 0]:a[i, 2]] = True
        mb[b[j, 1]:b[j, 3], b[j, 0]:b[j, 2]] = True
        assert iou[i, j] == np.logical_and(ma, mb).sum() / np.logical_or(ma, mb).sum()


def test_matching_is_one_to_one_and_optimal():
    truth = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60]])
    pred = np.array([[1, 1, 11, 11], [0, 0, 9, 10], [21, 20, 31, 30], [100, 100, 110, 110]])
    t, p, iou = match_boxes(truth, pred)
    assert sorted(zip(t.tolist(), p.tolist(), strict=True)) in ([(0, 1), (1, 2)], [(0, 0), (1, 2)])
    assert (iou >= 0.5).all() and len(set(p)) == len(p)
    c = detection_counts(truth, pred)
    assert (c.tp, c.fp, c.fn) == (2, 2, 1)
    assert c.precision == 0.5 and c.recall == 2 / 3 and abs(c.f1 - 4 / 7) < 1e-12
    assert DetectionCounts(0, 0, 0).f1 == 0.0
    assert detection_counts(np.empty((0, 4)), pred).fp == 4


# ---- each metric once, under a name that says which variant (nucls_utils.evaluation) ----

def test_f1_from_counts_equals_scikit_learn_and_names_its_empty_case():
    import sklearn.metrics as skm

    from nucls_utils.evaluation import f1_from_counts

    rng = np.random.default_rng(3)
    for _ in range(20):
        t, p = rng.random(40) < 0.4, rng.random(40) < 0.5
        tp, fp, fn = int((t & p).sum()), int((~t & p).sum()), int((t & ~p).sum())
        assert f1_from_counts(tp, fp, fn) == skm.f1_score(t, p, zero_division=0)
        assert DetectionCounts(tp, fp, fn).f1 == f1_from_counts(tp, fp, fn)
    assert f1_from_counts(0, 0, 0) == 0.0
    assert np.isnan(f1_from_counts(0, 0, 0, empty=np.nan))
    got = f1_from_counts(np.array([2, 0, 0]), np.array([1, 3, 0]), np.array([1, 0, 0]), empty=np.nan)
    np.testing.assert_allclose(got, [4 / 6, 0.0, np.nan])


def test_dice_from_areas_equals_pixel_counts():
    from nucls_utils.evaluation import dice_from_areas, segmentation_scores

    rng = np.random.default_rng(4)
    a, b = rng.random((30, 30)) < 0.3, rng.random((30, 30)) < 0.4
    inter, total = int((a & b).sum()), int(a.sum() + b.sum())
    assert dice_from_areas(inter, total) == 2 * (a & b).sum() / (a.sum() + b.sum())
    assert np.isnan(dice_from_areas(0, 0))
    seg = segmentation_scores([inter, 5], [total, 20])
    np.testing.assert_allclose(seg["dice"], [2 * inter / total, 0.5])
    assert seg["pooled_dice"] == 2 * (inter + 5) / (total + 20)


def test_the_two_macro_aurocs_are_named_and_differ():
    import sklearn.metrics as skm
    from sklearn.preprocessing import label_binarize

    from nucls_utils.evaluation import auroc_macro_curve, auroc_macro_mean, auroc_micro, roc_auc_micro_macro

    rng = np.random.default_rng(5)
    classes = ["a", "b", "c"]
    y = rng.choice(classes, size=200, p=[0.6, 0.3, 0.1])
    prob = rng.dirichlet(np.ones(3), size=200)
    prob[y == "a", 0] += 1.5  # class a is easy, the others are chance
    prob /= prob.sum(axis=1, keepdims=True)
    onehot = label_binarize(y, classes=classes)
    assert auroc_macro_mean(y, prob, classes) == pytest.approx(skm.roc_auc_score(onehot, prob, average="macro"))
    assert auroc_micro(y, prob, classes) == pytest.approx(skm.roc_auc_score(onehot, prob, average="micro"))
    assert auroc_macro_curve(y, prob, classes) == roc_auc_micro_macro(y, prob, classes)["macro"]
    assert abs(auroc_macro_curve(y, prob, classes) - auroc_macro_mean(y, prob, classes)) > 1e-3


def test_mcc_names_say_which_variant():
    import sklearn.metrics as skm

    from nucls_utils import evaluation as ev

    t = np.array(["a", "a", "b", "c", "c", "c", "b", "a"])
    p = np.array(["a", "b", "b", "c", "a", "c", "b", "a"])
    assert ev.mcc_multiclass(t, p) == pytest.approx(skm.matthews_corrcoef(t, p), abs=1e-12)
    ovr = ev.one_vs_rest_counts(t, p)
    assert ev.mcc_pooled_ovr(t, p) == ovr.loc["overall", "mcc"]
    assert ev.mcc_pooled_ovr(t, p) != pytest.approx(ev.mcc_multiclass(t, p))
    assert not hasattr(ev, "pooled_mcc") and not hasattr(ev, "multiclass_mcc")
