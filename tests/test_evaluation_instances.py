"""Label-image scores (``nucls_utils.evaluation.instances``): pixel overlap, AJI and panoptic quality on hand-made
images, PQ equal to torchmetrics' on random ones, and bad input rejected."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, jaccard_score

from nucls_utils import evaluation as ev


def _scene() -> tuple[np.ndarray, np.ndarray]:
    """Three true nuclei, three predicted: two matches (IOU 30/42 and 30/36), one miss, one false positive."""
    t = np.zeros((20, 20), int)
    p = np.zeros((20, 20), int)
    t[2:8, 2:8] = 1
    t[10:16, 10:16] = 2
    t[1:4, 14:18] = 3
    p[2:8, 3:9] = 5
    p[11:16, 10:16] = 7
    p[17:19, 0:3] = 9
    return t, p


def test_overlap_table_counts_every_pair():
    t, p = _scene()
    ov = ev.instance_overlaps(t, p)
    assert ov.true_ids.tolist() == [1, 2, 3] and ov.pred_ids.tolist() == [5, 7, 9]
    assert ov.intersection.tolist() == [[30, 0, 0], [0, 30, 0], [0, 0, 0]]
    assert ov.true_area.tolist() == [36, 36, 12] and ov.pred_area.tolist() == [36, 30, 6]
    assert ov.iou[0, 0] == pytest.approx(30 / 42) and ov.iou[1, 1] == pytest.approx(30 / 36)
    # no background pixel at all, and an image without instances
    full = ev.instance_overlaps(np.ones((3, 3), int), np.full((3, 3), 4))
    assert full.intersection.tolist() == [[9]] and full.true_ids.tolist() == [1]
    empty = ev.instance_overlaps(np.zeros((3, 3), int), np.zeros((3, 3), int))
    assert empty.intersection.shape == (0, 0)


def test_panoptic_quality_by_hand():
    t, p = _scene()
    r = ev.panoptic_quality(t, p)
    assert (r["tp"], r["fp"], r["fn"]) == (2, 1, 1)
    assert r["sq"] == pytest.approx((30 / 42 + 30 / 36) / 2) and r["rq"] == pytest.approx(2 / 3)
    assert r["pq"] == pytest.approx(r["sq"] * r["rq"])
    assert ev.panoptic_quality(t, t)["pq"] == 1.0
    none = ev.panoptic_quality(t, np.zeros_like(t))
    assert none["pq"] == 0.0 and math.isnan(none["sq"]) and none["fn"] == 3
    assert math.isnan(ev.panoptic_quality(np.zeros((4, 4), int), np.zeros((4, 4), int))["pq"])


def _random_labels(rng: np.random.Generator, n: int, size: int = 48) -> np.ndarray:
    """Non-overlapping random rectangles (later ones drawn over earlier ones), ids 1..n, some lost under others."""
    lab = np.zeros((size, size), int)
    for k in range(1, n + 1):
        y, x = rng.integers(0, size - 4, 2)
        h, w = rng.integers(3, 12, 2)
        lab[y:y + h, x:x + w] = k
    return lab


def test_panoptic_quality_equals_torchmetrics():
    torch = pytest.importorskip("torch")
    tm = pytest.importorskip("torchmetrics.detection")
    rng = np.random.default_rng(7)

    def enc(lab):
        return torch.from_numpy(np.stack([(lab > 0).astype(np.int64), lab.astype(np.int64)], -1))[None]

    checked = 0
    for _ in range(12):
        t = _random_labels(rng, int(rng.integers(3, 15)))
        p = t.copy()
        # perturb: shift some nuclei, drop one, add false positives
        p = np.roll(p, int(rng.integers(-2, 3)), axis=int(rng.integers(0, 2)))
        p[p == int(rng.integers(1, 4))] = 0
        p[rng.integers(0, 40):, :3] = 99
        metric = tm.PanopticQuality(things={1}, stuffs={0}, return_per_class=True, return_sq_and_rq=True)
        pq, sq, rq = metric(enc(p), enc(t))[0].tolist()  # row 0: the thing class (things come first)
        ours = ev.panoptic_quality(t, p)
        assert ours["rq"] == pytest.approx(rq, abs=1e-6)  # torchmetrics counts in float32 here
        if ours["tp"]:
            assert ours["pq"] == pytest.approx(pq, abs=1e-6) and ours["sq"] == pytest.approx(sq, abs=1e-6)
            checked += 1
    assert checked >= 8


def test_aggregated_jaccard_index_by_hand():
    t, p = _scene()
    # pairs (1, 5) and (2, 7); true 3 overlaps nothing; predicted 9 unused
    c = 30 + 30
    u = 42 + 36 + 12 + 6
    assert ev.aggregated_jaccard_index(t, p) == pytest.approx(c / u)
    assert ev.aggregated_jaccard_index(t, t) == 1.0
    assert ev.aggregated_jaccard_index(t, np.zeros_like(t)) == 0.0
    assert math.isnan(ev.aggregated_jaccard_index(np.zeros((3, 3), int), np.zeros((3, 3), int)))
    # one prediction covering two true nuclei is the best of both, and its area counts in both unions
    t2 = np.zeros((10, 10), int)
    t2[0:4, 0:4], t2[0:4, 5:9] = 1, 2
    p2 = np.zeros((10, 10), int)
    p2[0:4, 0:9] = 3
    assert ev.aggregated_jaccard_index(t2, p2) == pytest.approx((16 + 16) / (36 + 36))
    # splitting a nucleus in two: the better half is paired, the other half only enlarges the union
    p3 = np.zeros((10, 10), int)
    p3[0:4, 0:3], p3[0:4, 3:4] = 1, 2
    t3 = np.zeros((10, 10), int)
    t3[0:4, 0:4] = 1
    assert ev.aggregated_jaccard_index(t3, p3) == pytest.approx(12 / (16 + 4))


def test_pixel_scores_equal_scikit_learn():
    rng = np.random.default_rng(3)
    t = _random_labels(rng, 10)
    p = _random_labels(rng, 10)
    s = ev.pixel_scores(t, p)
    tb, pb = (t > 0).ravel(), (p > 0).ravel()
    assert s["dice"] == pytest.approx(f1_score(tb, pb)) and s["iou"] == pytest.approx(jaccard_score(tb, pb))
    assert s["tp"] + s["fn"] == pytest.approx(1.0)
    assert s["fp"] == pytest.approx((pb & ~tb).sum() / tb.sum())
    assert math.isnan(ev.pixel_scores(np.zeros((2, 2)), np.zeros((2, 2)))["dice"])


def test_bad_label_images_are_rejected():
    with pytest.raises(ValueError, match="differ in shape"):
        ev.aggregated_jaccard_index(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="integer ids"):
        ev.panoptic_quality(np.zeros((3, 3), float), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="negative id"):
        ev.instance_overlaps(-np.ones((3, 3), int), np.zeros((3, 3), int))
    with pytest.raises(ValueError, match="2-D"):
        ev.instance_overlaps(np.zeros((3, 3, 3), int), np.zeros((3, 3, 3), int))
    with pytest.raises(ValueError, match="would not be unique"):
        ev.panoptic_quality(np.zeros((3, 3), int), np.zeros((3, 3), int), iou_threshold=0.4)
