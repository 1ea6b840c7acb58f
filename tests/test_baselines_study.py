"""Notebook 08's driver: truth label images, predictions as instances, the ladder's scores (a perfect prediction
scores perfectly, a known imperfect one scores what it should), pseudo nuclei as training samples, the U-Net's
ignored pixels, and the seeds' paper-vs-run rows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from nucls_utils import paper
from nucls_utils import taxonomy as tx
from nucls_utils.baselines import study as bs
from nucls_utils.baselines import unet as un
from nucls_utils.model.data import FovSample
from nucls_utils.model.detections import Detections


def _sample(name: str = "f1") -> FovSample:
    """A 60 x 80 FOV: one traced disk (r 6 at 20, 20), one box-only nucleus (40:52, 30:44), one ambiguous traced disk."""
    yy, xx = np.mgrid[:60, :80]
    disk = (yy - 20) ** 2 + (xx - 20) ** 2 <= 36
    disk2 = (yy - 45) ** 2 + (xx - 65) ** 2 <= 25
    boxes, masks = [], []
    for d in (disk, disk2):
        ys, xs = np.nonzero(d)
        b = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        boxes.append(b)
        masks.append(d[b[1]:b[3], b[0]:b[2]])
    boxes.insert(1, (30, 40, 44, 52))
    masks.insert(1, np.ones((12, 14), bool))
    return FovSample(name=name, hospital="A", slide="s", rgb=np.zeros((60, 80, 3), np.uint8),
                     boxes=np.asarray(boxes, np.int32), classes=np.asarray(["tumor_nonMitotic", "lymphocyte",
                                                                            tx.AMBIGUOUS], dtype=object),
                     ismask=np.array([True, False, True]), masks=masks)


def test_label_image_paints_every_nucleus_and_marks_box_only_nuclei_unknown():
    s = _sample()
    labels, unknown = bs.label_image(s)
    assert labels.shape == (60, 80) and set(np.unique(labels)) == {0, 1, 2, 3}
    assert (labels == 1).sum() == s.masks[0].sum() and (labels == 2).sum() == 12 * 14
    assert unknown.sum() == 12 * 14 and unknown[40:52, 30:44].all() and not unknown[labels == 1].any()


def test_a_perfect_prediction_scores_perfectly_and_an_empty_one_scores_nothing():
    s = _sample()
    labels, _ = bs.label_image(s)
    perfect = bs.from_instances(labels)
    r = bs.score_predictions([s], {s.name: perfect})
    assert r["ap50"] == pytest.approx(1.0) and r["dice"] == 1.0 and r["aji"] == 1.0 and r["pq"] == 1.0
    assert r["count_deviation"] == 0.0 and r["object_f1"] == 1.0 and r["true_nuclei"] == 3
    empty = bs.from_instances(np.zeros_like(labels))
    r = bs.score_predictions([s], {s.name: empty})
    assert r["ap50"] == 0.0 and r["dice"] == 0.0 and r["aji"] == 0.0 and r["pq"] == 0.0
    assert r["count_deviation"] == 1.0
    with pytest.raises(KeyError, match="no prediction"):
        bs.score_predictions([s], {})


def test_scores_of_a_known_imperfect_prediction():
    s = _sample()
    labels, _ = bs.label_image(s)
    pred = labels.copy()
    pred[pred == 2] = 0  # the box-only nucleus missed
    pred[0:5, 0:5] = 9  # one false nucleus of 25 px
    r = bs.score_predictions([s], {s.name: bs.from_instances(pred)})
    n1, n2, n3 = (labels == 1).sum(), (labels == 2).sum(), (labels == 3).sum()
    tp = n1 + n3
    assert r["dice"] == pytest.approx(2 * tp / (2 * tp + 25 + n2))
    assert r["aji"] == pytest.approx(tp / (tp + n2 + 25))
    assert r["pq"] == pytest.approx(1.0 * 2 / (2 + 0.5 + 0.5))  # SQ 1, RQ 2 / 3
    assert r["count_deviation"] == 0.0  # 3 predicted for 3 true, though not the same 3
    assert r["object_f1"] == pytest.approx(2 / 3)


def test_probability_maps_and_detections_become_scored_instances():
    s = _sample()
    labels, _ = bs.label_image(s)
    prob = np.where(labels == 1, 0.9, np.where(labels == 3, 0.7, 0.1))
    p = bs.from_probability(prob, min_distance=3, min_size=5)
    assert p.labels.max() == 2 and sorted(np.round(p.scores, 6)) == [0.7, 0.9]
    det = Detections(boxes=np.array([[14, 14, 27, 27], [0, 0, 10, 10]], float), scores=np.array([0.9, 0.2]),
                     probs=np.ones((2, 1)), classes=("nucleus",), mask_probs=np.ones((2, 28, 28), np.float32))
    d = bs.from_detections(det, (60, 80))
    assert len(d.boxes) == 2 and d.labels.max() == 1 and (d.labels > 0).sum() == 13 * 13  # painted: score >= 0.5 only


def test_pseudo_nuclei_become_a_training_sample_and_feedback_keeps_uncovered_ones():
    s = _sample()
    labels, _ = bs.label_image(s)
    labels[0:3, 0:3] = 7  # a 3 px speck: too small for a training box
    ps = bs.pseudo_sample(s, labels)
    assert len(ps) == 3 and ps.ismask.all() and set(ps.classes) == {bs.PSEUDO_CLASS}
    again, _ = bs.label_image(ps)
    assert np.array_equal(again > 0, (labels > 0) & (labels != 7))
    detected = np.zeros_like(labels)
    detected[labels == 1] = 1
    merged = bs._merge_feedback(detected, labels)
    # the detection stays; the front end's nuclei no detection touches (2, 3 and the speck) are added
    assert len(np.unique(merged[merged > 0])) == 4 and (merged > 0).sum() == (labels > 0).sum()


def test_unet_leaves_ignored_pixels_out_of_the_loss():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[20:40, 20:40] = True
    cfg = un.UNetConfig(depth=2, base=4, crop=64, iterations=1, batch_size=1, elastic_alpha=0)
    # everything ignored: the loss is zero, so one update leaves the weights where they started
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        start = un.UNet(2, 4).state_dict()
    model, hist = un.train_unet([img], [mask], cfg, ignore=[np.ones((64, 64), bool)], seed=0)
    assert hist["loss"].iloc[0] == 0.0
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in start.items() if "running" not in k
               and "num_batches" not in k)
    with pytest.raises(ValueError, match="ignore map"):
        un.train_unet([img], [mask], cfg, ignore=[np.ones((10, 10), bool)])


def test_ladder_table_orders_systems_by_label_cost_and_the_seed_rows_read_the_paper_module():
    rows = pd.DataFrame([{"system": s, "fold": 1, "truth": "corrected", "labels_used": 10, "seconds": 1.0,
                          "n_fovs": 2, "ap50": 0.5, "dice": 0.5, "aji": 0.4, "pq": 0.3, "count_deviation": 0.2,
                          "object_f1": 0.6} for s in ("NuCLS", "U-Net full", "heuristic bootstrap")])
    t = bs.ladder_table(rows)
    assert list(t["system"]) == ["heuristic bootstrap", "U-Net full", "NuCLS"]
    assert list(t["AP@.5"]) == [50.0] * 3 and t.loc[0, "label"] == "none"
    pvr = bs.seed_paper_vs_run(0.9, {"U-Net small": 0.3})
    assert list(pvr["paper"]) == [paper.value("seed002.tile_f1_weighted"), paper.value("seed003.count_deviation_small")]
    assert list(pvr["this_run"]) == [90.0, 30.0]
