"""Model-evaluation metrics (Table 1): COCO AP against pycocotools, mask overlaps, classification, the bundle."""

import contextlib
import io

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, matthews_corrcoef, roc_auc_score
from sklearn.preprocessing import label_binarize

from nucls_utils import taxonomy
from nucls_utils.evaluation import (
    ImagePrediction,
    ImageTruth,
    classification_scores,
    coco_detection_ap,
    evaluate_model,
    local_mask_box,
    local_mask_overlap,
    segmentation_scores,
)

MODEL_CLASSES = tuple(c for c in taxonomy.MAIN_CLASSES if c != taxonomy.AMBIGUOUS)


# --------------------------------------------------------------------------------------------- detection (COCO)


def _random_detection_set(rng, n_img=7, integer=False):
    """Images with regular and crowd GT, noisy copies as detections, false positives; unique scores."""
    truth, ignore, boxes, scores = [], [], [], []
    for i in range(n_img):
        n_gt = 0 if i == 1 else int(rng.integers(1, 25))
        xy = rng.uniform(0, 300, (n_gt, 2))
        wh = rng.uniform(6, 40, (n_gt, 2))
        gt = np.hstack([xy, xy + wh])
        ig = rng.random(n_gt) < 0.2
        if i == 2:
            ig[:] = True  # an image with only crowd GT
        if i == 3:
            det = np.empty((0, 4))  # an image with no detection
        else:
            keep = rng.random(n_gt) < 0.85
            copies = gt[keep] + rng.normal(0, 3, (int(keep.sum()), 4))
            twice = gt[rng.random(n_gt) < 0.2]
            doubles = twice + rng.normal(0, 2, twice.shape)  # duplicate detections of one nucleus
            fxy = rng.uniform(0, 300, (int(rng.integers(0, 8)), 2))
            false = np.hstack([fxy, fxy + rng.uniform(6, 40, fxy.shape)])
            inside = []  # small detections inside crowd boxes (intersection / area(det) = 1)
            for b in gt[ig][:2]:
                c = (b[:2] + b[2:]) / 2
                inside.append(np.r_[c - 2, c + 2])
            det = np.vstack([copies, doubles, false, *inside]).reshape(-1, 4)
            det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        if integer:
            gt, det = np.round(gt), np.round(det)
            det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        truth.append(gt)
        ignore.append(ig)
        boxes.append(det)
        scores.append(np.empty(len(det)))
    all_scores = rng.permutation(sum(len(b) for b in boxes)) / 1000 + 0.0005  # unique: no ties
    start = 0
    for k, b in enumerate(boxes):
        scores[k] = all_scores[start:start + len(b)]
        start += len(b)
    return truth, ignore, boxes, scores


def _pycocotools_stats(truth, ignore, boxes, scores, max_dets):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    def xywh(b):
        return [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]

    anns, dets = [], []
    for i, (gt, ig, det, sc) in enumerate(zip(truth, ignore, boxes, scores, strict=True)):
        for b, crowd in zip(gt, ig, strict=True):
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": xywh(b),
                         "area": float(w * h), "iscrowd": int(crowd)})
        for b, s in zip(det, sc, strict=True):
            dets.append({"image_id": i + 1, "category_id": 1, "bbox": xywh(b), "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        gt_coco = COCO()
        gt_coco.dataset = {"images": [{"id": i + 1} for i in range(len(truth))],
                           "categories": [{"id": 1, "name": "nucleus"}], "annotations": anns}
        gt_coco.createIndex()
        dt_coco = gt_coco.loadRes(dets)
        ev = COCOeval(gt_coco, dt_coco, "bbox")
        ev.params.maxDets = [1, 100, max_dets]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    ap_per_iou = ev.eval["precision"][:, :, 0, 0, 2].mean(axis=1)
    return ev.stats, ap_per_iou


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_coco_ap_matches_pycocotools(seed):
    rng = np.random.default_rng(seed)
    data = _random_detection_set(rng, integer=seed == 3)
    stats, ap_per_iou = _pycocotools_stats(*data, max_dets=300)
    ours = coco_detection_ap(*data)
    assert abs(ours["ap50"] - stats[1]) < 1e-9
    assert abs(ours["map"] - stats[0]) < 1e-9
    np.testing.assert_allclose(ours["ap_per_iou"], ap_per_iou, atol=1e-9)
    assert ours["n_truth"] == sum(int((~ig).sum()) for ig in data[1])
    assert 0 < ours["ap50"] < 1 and ours["map"] < ours["ap50"]


def test_coco_ap_detection_limits_match_pycocotools():
    # Over 100 detections per image: with maxDets [1, 100, 300], stats[1] (AP@.5) keeps 300 per image but
    # stats[0] (mAP) keeps 100 (summarize's default), which map_max_dets=100 reproduces.
    rng = np.random.default_rng(7)
    truth, ignore, boxes, scores = [], [], [], []
    for _ in range(3):
        xy = rng.uniform(0, 1000, (130, 2))
        gt = np.hstack([xy, xy + rng.uniform(8, 30, (130, 2))])
        fxy = rng.uniform(0, 1000, (60, 2))
        det = np.vstack([gt[:120] + rng.normal(0, 2, (120, 4)), np.hstack([fxy, fxy + 15])])
        det[:, 2:] = np.maximum(det[:, 2:], det[:, :2] + 1)
        truth.append(gt)
        ignore.append(rng.random(130) < 0.1)
        boxes.append(det)
        scores.append(rng.permutation(len(det)) / len(det) + rng.random() / 1000)
    data = (truth, ignore, boxes, scores)
    stats, _ = _pycocotools_stats(*data, max_dets=300)
    ours = coco_detection_ap(*data, max_dets=300, map_max_dets=100)
    assert abs(ours["ap50"] - stats[1]) < 1e-9
    assert abs(ours["map"] - stats[0]) < 1e-9
    everything = coco_detection_ap(*data, max_dets=300, map_max_dets=None)
    assert everything["map"] > ours["map"] + 1e-3 and everything["ap50"] == ours["ap50"]
    stats100, _ = _pycocotools_stats(*data, max_dets=100)  # maxDets [1, 100, 100]
    at100 = coco_detection_ap(*data, max_dets=100)
    assert abs(at100["ap50"] - stats100[1]) < 1e-9 and at100["ap50"] < ours["ap50"]


def test_coco_ap_simple_cases():
    gt = [np.array([[0, 0, 10, 10], [20, 20, 30, 30.0]])]
    ig = [np.array([False, False])]
    perfect = coco_detection_ap(gt, ig, gt, [np.array([0.9, 0.8])])
    assert perfect["ap50"] == pytest.approx(1.0) and perfect["map"] == pytest.approx(1.0)
    half = coco_detection_ap(gt, ig, [gt[0][:1]], [np.array([0.9])])  # recall 0.5 at precision 1
    assert half["ap50"] == pytest.approx(51 / 101)
    # A detection on a crowd box is neither TP nor FP; no regular GT at all gives NaN.
    crowd = coco_detection_ap(gt, [np.array([False, True])], gt, [np.array([0.5, 0.9])])
    assert crowd["ap50"] == pytest.approx(1.0) and crowd["n_truth"] == 1
    none = coco_detection_ap(gt, [np.array([True, True])], gt, [np.array([0.5, 0.9])])
    assert np.isnan(none["ap50"]) and np.isnan(none["map"]) and none["n_truth"] == 0
    nodet = coco_detection_ap(gt, ig, [np.empty((0, 4))], [np.empty(0)])
    assert nodet["ap50"] == 0.0 and nodet["map"] == 0.0


# --------------------------------------------------------------------------------------------- segmentation


def test_local_mask_box_rounds_outward():
    np.testing.assert_array_equal(local_mask_box([1.2, 3.0, 5.5, 7.0]), [1, 3, 6, 7])
    assert local_mask_box([0.0, 0.5, 2.0, 2.5]).dtype.kind == "i"


def test_local_mask_overlap_by_hand():
    box_a, box_b = (0, 0, 4, 4), (2, 2, 6, 5)
    ma, mb = np.ones((4, 4), bool), np.ones((3, 4), bool)
    assert local_mask_overlap(box_a, ma, box_b, mb) == (4, 28)
    mb[0, 0] = False  # image pixel (2, 2)
    assert local_mask_overlap(box_a, ma, box_b, mb) == (3, 27)
    assert local_mask_overlap(box_a, ma, (10, 10, 12, 12), np.ones((2, 2), bool)) == (0, 20)
    with pytest.raises(ValueError):
        local_mask_overlap(box_a, ma, box_b, np.ones((4, 3), bool))


def test_local_mask_overlap_against_dense_image():
    rng = np.random.default_rng(3)
    for _ in range(40):
        boxes, masks, dense = [], [], []
        for _ in range(2):
            x0, y0 = rng.integers(0, 20, 2)
            x1, y1 = x0 + rng.integers(1, 15), y0 + rng.integers(1, 15)
            m = rng.random((y1 - y0, x1 - x0)) < 0.6
            full = np.zeros((40, 40), bool)
            full[y0:y1, x0:x1] = m
            boxes.append((x0, y0, x1, y1))
            masks.append(m)
            dense.append(full)
        i, s = local_mask_overlap(boxes[0], masks[0], boxes[1], masks[1])
        assert i == int((dense[0] & dense[1]).sum()) and s == int(dense[0].sum() + dense[1].sum())
        assert (s - i) == int((dense[0] | dense[1]).sum())


def test_segmentation_scores():
    res = segmentation_scores([4, 0, 9, 5], [10, 6, 18, 0])
    np.testing.assert_array_equal(res["kept"], [True, False, True, False])
    np.testing.assert_allclose(res["iou"], [4 / 6, 1.0])
    np.testing.assert_allclose(res["dice"], [0.8, 1.0])
    assert res["n"] == 2 and res["median_iou"] == pytest.approx((4 / 6 + 1) / 2)
    assert res["median_dice"] == pytest.approx(0.9)
    assert res["pooled_iou"] == pytest.approx(13 / 15) and res["pooled_dice"] == pytest.approx(26 / 28)
    empty = segmentation_scores([], [])
    assert empty["n"] == 0 and np.isnan(empty["median_iou"]) and np.isnan(empty["pooled_dice"])


# --------------------------------------------------------------------------------------------- classification


def _random_probs(rng, n, k, truth_codes, sharpness=2.0):
    logits = rng.normal(0, 1, (n, k))
    logits[np.arange(n), truth_codes] += sharpness * rng.random(n)
    p = np.exp(logits)
    return p / p.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_classification_main_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    k = len(MODEL_CLASSES)
    codes = rng.integers(0, k, 400)
    truth = np.array(MODEL_CLASSES)[codes]
    probs = _random_probs(rng, 400, k, codes)
    res = classification_scores(truth.tolist(), probs, MODEL_CLASSES, level="main")
    pred = np.array(MODEL_CLASSES)[probs.argmax(axis=1)]
    assert res["n"] == 400
    assert res["accuracy"] == pytest.approx(accuracy_score(truth, pred), abs=1e-12)
    assert res["mcc"] == pytest.approx(matthews_corrcoef(truth, pred), abs=1e-12)
    onehot = label_binarize(truth, classes=list(MODEL_CLASSES))
    assert res["auroc_micro"] == pytest.approx(roc_auc_score(onehot, probs, average="micro"), abs=1e-12)
    assert res["auroc_macro"] == pytest.approx(roc_auc_score(onehot, probs, average="macro"), abs=1e-12)
    pc = res["per_class"]
    for j, c in enumerate(MODEL_CLASSES):
        assert pc.loc[c, "mcc"] == pytest.approx(matthews_corrcoef(truth == c, pred == c), abs=1e-12)
        assert pc.loc[c, "auroc"] == pytest.approx(roc_auc_score(truth == c, probs[:, j]), abs=1e-12)
        assert pc.loc[c, "accuracy"] == pytest.approx(accuracy_score(truth == c, pred == c), abs=1e-12)
    assert res["confusion"].to_numpy().sum() == 400
    assert np.trace(res["confusion"].to_numpy()) == int((truth == pred).sum())


def test_classification_absent_classes_and_edge_cases():
    rng = np.random.default_rng(5)
    present = ["tumor_nonMitotic", "lymphocyte", "macrophage"]
    codes = rng.integers(0, 3, 200)
    truth = np.array(present)[codes]
    cols = [MODEL_CLASSES.index(c) for c in present]
    full_codes = np.array(cols)[codes]
    probs = _random_probs(rng, 200, len(MODEL_CLASSES), full_codes)
    res = classification_scores(truth.tolist(), probs, MODEL_CLASSES)
    onehot = label_binarize(truth, classes=present)
    sub = probs[:, cols]
    assert res["auroc_micro"] == pytest.approx(roc_auc_score(onehot, sub, average="micro"), abs=1e-12)
    assert res["auroc_macro"] == pytest.approx(roc_auc_score(onehot, sub, average="macro"), abs=1e-12)
    assert np.isnan(res["per_class"].loc["plasma_cell", "auroc"])
    # The reference's extra softmax changes the AUROCs but not accuracy.
    again = classification_scores(truth.tolist(), probs, MODEL_CLASSES, softmax_again=True)
    soft = np.exp(sub) / np.exp(sub).sum(axis=1, keepdims=True)
    assert again["auroc_micro"] == pytest.approx(roc_auc_score(onehot, soft, average="micro"), abs=1e-12)
    assert again["accuracy"] == res["accuracy"]
    # One class in the truth: AUROC undefined.
    one = classification_scores(["lymphocyte"] * 5, probs[:5], MODEL_CLASSES)
    assert np.isnan(one["auroc_micro"]) and np.isnan(one["auroc_macro"])
    # A truth class without a column counts as an error and gets its own confusion row.
    amb = classification_scores(["lymphocyte", taxonomy.AMBIGUOUS], probs[:2], MODEL_CLASSES)
    assert amb["accuracy"] <= 0.5 and taxonomy.AMBIGUOUS in amb["confusion"].index
    empty = classification_scores([], np.empty((0, len(MODEL_CLASSES))), MODEL_CLASSES)
    assert empty["n"] == 0 and np.isnan(empty["accuracy"]) and np.isnan(empty["mcc"])


def test_classification_super_groups_probabilities():
    rng = np.random.default_rng(11)
    k = len(MODEL_CLASSES)
    codes = rng.integers(0, k, 300)
    truth = np.array(MODEL_CLASSES)[codes]
    probs = _random_probs(rng, 300, k, codes)
    res = classification_scores(truth.tolist(), probs, MODEL_CLASSES, level="super")
    supers = [c for c in taxonomy.SUPER_CLASSES if c != taxonomy.AMBIGUOUS]
    assert res["classes"] == supers
    expected = np.zeros((300, len(supers)))
    for j, c in enumerate(MODEL_CLASSES):
        expected[:, supers.index(taxonomy.to_super(c))] += probs[:, j]
    np.testing.assert_allclose(res["probs"], expected, atol=1e-12)
    np.testing.assert_allclose(res["probs"].sum(axis=1), 1.0, atol=1e-12)
    true_super = np.array([taxonomy.to_super(c) for c in truth])
    pred_super = np.array(supers)[expected.argmax(axis=1)]
    assert list(res["true"]) == list(true_super)
    assert res["mcc"] == pytest.approx(matthews_corrcoef(true_super, pred_super), abs=1e-12)
    onehot = label_binarize(true_super, classes=supers)
    assert res["auroc_micro"] == pytest.approx(roc_auc_score(onehot, expected, average="micro"), abs=1e-12)
    # An AMBIGUOUS probability column is dropped (not renormalised).
    with_amb = np.hstack([probs * 0.9, np.full((300, 1), 0.1)])
    res2 = classification_scores(truth.tolist(), with_amb, (*MODEL_CLASSES, taxonomy.AMBIGUOUS), level="super")
    assert res2["classes"] == supers and res2["accuracy"] == res["accuracy"]


# --------------------------------------------------------------------------------------------- model bundle


def _disk(box):
    x0, y0, x1, y1 = local_mask_box(box)
    yy, xx = np.mgrid[y0:y1, x0:x1] + 0.5
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, min(x1 - x0, y1 - y0) / 2
    return (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r


def _synthetic_test_set(rng, n_img=4):
    truths, preds = [], []
    for i in range(n_img):
        n = 0 if i == 3 else int(rng.integers(5, 15))
        xy = rng.integers(0, 200, (n, 2)).astype(float)
        boxes = np.hstack([xy, xy + rng.integers(10, 30, (n, 2))])
        labels = list(rng.choice(MODEL_CLASSES, n))
        if n:
            labels[0] = taxonomy.AMBIGUOUS
        ismask = rng.random(n) < 0.7
        masks = [_disk(b) if m else None for b, m in zip(boxes, ismask, strict=True)]
        truths.append(ImageTruth(boxes, labels, ismask, masks))
        codes = [MODEL_CLASSES.index(c) if c in MODEL_CLASSES else 0 for c in labels]
        probs = np.full((n, len(MODEL_CLASSES)), 0.02)
        probs[np.arange(n), codes] = 1 - 0.02 * (len(MODEL_CLASSES) - 1)
        preds.append(ImagePrediction(boxes.copy(), rng.permutation(n) / max(n, 1) + 0.01, probs, MODEL_CLASSES,
                                     [_disk(b) for b in boxes]))
    return truths, preds


def test_evaluate_model_perfect_predictions():
    truths, preds = _synthetic_test_set(np.random.default_rng(0))
    res = evaluate_model(truths, preds)
    n_regular = sum(sum(not taxonomy.is_ambiguous(c) for c in t.classes) for t in truths)
    assert res["det_n"] == n_regular and res["cls_n"] == n_regular
    assert res["ap50"] == pytest.approx(1.0) and res["map"] == pytest.approx(1.0)
    assert res["main_accuracy"] == 1.0 and res["main_mcc"] == pytest.approx(1.0)
    assert res["super_accuracy"] == 1.0 and res["main_auroc_micro"] == pytest.approx(1.0)
    assert res["seg_median_iou"] == 1.0 and res["seg_median_dice"] == 1.0
    n_seg = sum(int(t.ismask[1:].sum()) for t in truths if len(t.classes))
    assert res["seg_n"] == n_seg
    pairs = res["pairs"]
    assert len(pairs) == n_regular and (pairs["truth_idx"] == pairs["pred_idx"]).all()
    assert (pairs["true_class"] == pairs["pred_class"]).all()
    assert {f"prob_{c}" for c in MODEL_CLASSES} <= set(pairs.columns)
    assert taxonomy.AMBIGUOUS not in set(pairs["true_class"])


def test_evaluate_model_shifted_boxes_and_cross_check():
    rng = np.random.default_rng(1)
    truths, preds = _synthetic_test_set(rng)
    base = evaluate_model(truths, preds)
    shifted = []
    for p in preds:
        b = p.boxes + rng.normal(0, 3, p.boxes.shape)
        shifted.append(ImagePrediction(b, p.scores, p.probs, p.classes, [_disk(x) for x in b]))
    res = evaluate_model(truths, shifted)
    assert res["map"] < base["map"] and res["ap50"] <= base["ap50"]
    assert res["seg_median_iou"] < 1.0 and res["seg_n"] <= base["seg_n"]
    ignore = [np.array([taxonomy.is_ambiguous(c) for c in t.classes], dtype=bool) for t in truths]
    direct = coco_detection_ap([t.boxes for t in truths], ignore, [p.boxes for p in shifted],
                               [p.scores for p in shifted])
    assert res["ap50"] == direct["ap50"] and res["map"] == direct["map"] and res["det_n"] == direct["n_truth"]
    assert res["main"]["n"] == len(res["pairs"]) == res["cls_n"]


def test_evaluate_model_empty_images():
    truth = ImageTruth(np.empty((0, 4)), [])
    pred = ImagePrediction(np.empty((0, 4)), np.empty(0), np.empty((0, len(MODEL_CLASSES))), MODEL_CLASSES)
    res = evaluate_model([truth], [pred])
    assert res["det_n"] == 0 and np.isnan(res["ap50"]) and res["cls_n"] == 0 and res["seg_n"] == 0
    assert np.isnan(res["main_accuracy"]) and len(res["pairs"]) == 0
    boxes = np.array([[0, 0, 10, 10.0]])
    res = evaluate_model([ImageTruth(boxes, ["lymphocyte"]), truth], [pred, pred])
    assert res["det_n"] == 1 and res["ap50"] == 0.0 and res["cls_n"] == 0
