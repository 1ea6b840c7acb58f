"""Metrics: IOU and matching agree with brute force; counts give the usual rates."""

import itertools

import numpy as np

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
