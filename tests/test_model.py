"""NuCLS model behaviour (notes section 2f): global NMS and probability vectors, hybrid mask loss, the ambiguous
class in the classification loss, the scale-factor transform, the detection freeze, exact checkpoint resume,
box-local mask pasting and odd image sizes.

Every model here is the smoke-size configuration (``MODEL_PROFILES["smoke"]``) built from scratch (``weights=None``)
under a fixed ``torch.manual_seed``, so the whole file runs in seconds on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from nucls_utils import taxonomy as tx
from nucls_utils.io.dataset import read_dataset
from nucls_utils.model import data as md
from nucls_utils.model.architecture import MODEL_CONFIGS, ScaleFactorTransform, build_model
from nucls_utils.model.detections import Detections
from nucls_utils.model.train import MODEL_PROFILES, TRAIN_PROFILES, freeze_detection, train_model

REPO = Path(__file__).resolve().parent.parent
SMOKE = REPO / "data" / "synthetic" / "smoke"
SMOKE_CFG = MODEL_PROFILES["smoke"].with_(weights=None)
AMB = 8  # label of AMBIGUOUS among the main classes (the ignore label)
CLS_PREFIXES = ("roi_heads.classification_convs.", "roi_heads.cls_score.", "roi_heads.cls_head.",
                "backbone.reduce_cls.")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: on a small shared CPU, two threads contending with other work are several times
    slower for these tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _model(seed: int = 0, **changes):
    torch.manual_seed(seed)
    return build_model(SMOKE_CFG.with_(**changes))


def _targets(ismask: bool, labels=(1, 3, 5), size: int = 96) -> dict:
    """Three nuclei in a ``size`` x ``size`` crop: float32 boxes, int64 labels, uint8 (N, H, W) masks, bool ismask."""
    boxes = torch.tensor([[10, 10, 30, 32], [50, 40, 72, 64], [20, 60, 44, 82]], dtype=torch.float32)
    masks = torch.zeros((3, size, size), dtype=torch.uint8)
    for k, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[k, y0 + 2:y1 - 2, x0 + 2:x1 - 2] = 1
    return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.int64), "masks": masks,
            "ismask": torch.full((3,), ismask, dtype=torch.bool)}


def _max_offdiag_iou(boxes: torch.Tensor) -> float:
    if len(boxes) < 2:
        return 0.0
    iou = box_iou(boxes, boxes)
    iou.fill_diagonal_(0.0)
    return float(iou.max())


# ------------------------------------------------------------------------------------------------------------
# 1. inference: global NMS on objectness, probability vectors
# ------------------------------------------------------------------------------------------------------------
def _postprocess_case():
    """Nine proposals in three tight clusters (one per nucleus; every proposal of a cluster argmaxes a different
    class) plus one far-away proposal that is almost surely background. Returns proposals and logits (N, 9)."""
    side = 30.0
    centres = [(40.0, 40.0), (150.0, 60.0), (240.0, 150.0)]
    shifts = [(0.0, 0.0), (2.0, 1.0), (-1.0, 2.0)]
    props = [[cx - side / 2 + dx, cy - side / 2 + dy, cx + side / 2 + dx, cy + side / 2 + dy]
             for cx, cy in centres for dx, dy in shifts]
    props.append([260.0, 5.0, 290.0, 35.0])
    logits = torch.zeros(len(props), 9)
    # (column, logit) per proposal, background logit 0. Cluster A's best proposal (#2) argmaxes AMBIGUOUS: its
    # objectness counts the ambiguous mass, its label is the best non-ambiguous class (2).
    spec = [[(1, 4.0)], [(4, 3.5)], [(AMB, 6.0), (2, 3.0)],
            [(3, 5.0)], [(5, 4.5)], [(6, 4.0)],
            [(7, 2.0)], [(1, 3.0)], [(2, 2.5)],
            [(0, 10.0)]]
    for i, entries in enumerate(spec):
        for col, val in entries:
            logits[i, col] = val
    return torch.tensor(props), logits


def test_global_nms_one_box_per_nucleus_and_probability_vectors():
    model = _model()
    rh = model.roi_heads
    assert rh.global_nms and rh.class_agnostic and rh.ignore_label == AMB
    proposals, logits = _postprocess_case()
    n = len(proposals)
    deltas = torch.zeros(n, 8)  # class-agnostic: (background, foreground) x 4; zero deltas decode to the proposals
    out = rh._postprocess(logits, deltas, torch.zeros(n, 64), [proposals], [(200, 300)])[0]

    # exactly one detection per nucleus: the proposal of highest objectness in each cluster
    assert len(out["boxes"]) == 3
    assert _max_offdiag_iou(out["boxes"]) <= SMOKE_CFG.nms_iou
    kept = [int(box_iou(b[None], proposals).argmax()) for b in out["boxes"]]
    assert kept == [2, 3, 7]  # sorted by score, descending
    torch.testing.assert_close(out["boxes"], proposals[kept], atol=1e-4, rtol=0)

    p = F.softmax(logits[kept], -1)
    # score = objectness = 1 - P(background), computed before AMBIGUOUS is zeroed
    torch.testing.assert_close(out["scores"], 1.0 - p[:, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["objectness"], out["scores"])
    assert float(out["scores"][0]) > 0.997  # only reachable by counting the ambiguous mass of proposal 2
    # probability vector: every class but background and AMBIGUOUS, renormalised
    assert out["probs"].shape == (3, len(SMOKE_CFG.classes) - 1) == (3, len(model.classes))
    assert tx.AMBIGUOUS not in model.classes
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(3), atol=1e-5, rtol=0)
    expected = p[:, 1:AMB] / p[:, 1:AMB].sum(1, keepdim=True)
    torch.testing.assert_close(out["probs"], expected, atol=1e-6, rtol=0)
    assert out["labels"].tolist() == [2, 3, 1]
    assert (out["labels"] == out["probs"].argmax(1) + 1).all()


def test_per_class_nms_of_config_1_can_keep_two_boxes_per_nucleus():
    """Config 1 (torchvision behaviour) is NMS per class: overlapping proposals that disagree on the class all
    survive, one box per (nucleus, plausible class) -- the reason the paper moved to a global NMS on objectness."""
    model = _model(**MODEL_CONFIGS["1"])
    rh = model.roi_heads
    assert not rh.global_nms and not rh.class_agnostic and rh.classification_convs is None
    proposals, logits = _postprocess_case()
    n = len(proposals)
    deltas = torch.zeros(n, 4 * 9)  # per-class regression
    out = rh._postprocess(logits, deltas, torch.zeros(n, 64), [proposals], [(200, 300)])[0]

    iou = box_iou(out["boxes"], out["boxes"])
    iou.fill_diagonal_(0.0)
    i, j = torch.where(iou > SMOKE_CFG.nms_iou)
    assert len(i) > 0, "per-class NMS should keep overlapping boxes of different classes"
    assert (out["labels"][i] != out["labels"][j]).all()  # same-class overlaps are suppressed
    assert len(out["boxes"]) > 3
    # nucleus A: proposals 0 (class 1) and 1 (class 4) both survive
    near_a = box_iou(out["boxes"], proposals[:1])[:, 0] > 0.5
    assert {1, 4} <= set(out["labels"][near_a].tolist())
    # the score of a per-class candidate is its class probability; probability vectors still sum to 1
    p = F.softmax(logits, -1)
    rows = box_iou(out["boxes"], proposals).argmax(1)
    torch.testing.assert_close(out["scores"], p[rows, out["labels"]], atol=1e-6, rtol=0)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(len(out["boxes"])), atol=1e-5, rtol=0)


def test_full_model_eval_forward_probabilities_and_nms():
    model = _model().eval()
    torch.manual_seed(1)
    with torch.no_grad():
        out = model([torch.rand(3, 128, 128)])[0]
    n = len(out["boxes"])
    assert n > 0  # an untrained classifier is near-uniform: objectness ~ 8/9 > score threshold
    assert out["probs"].shape == (n, 7)
    torch.testing.assert_close(out["probs"].sum(1), torch.ones(n), atol=1e-5, rtol=0)
    assert (out["probs"] >= 0).all()
    assert _max_offdiag_iou(out["boxes"]) <= SMOKE_CFG.nms_iou + 1e-5
    assert (out["labels"] == out["probs"].argmax(1) + 1).all()
    assert ((out["scores"] > SMOKE_CFG.score_threshold) & (out["scores"] <= 1)).all()
    assert (out["scores"][:-1] >= out["scores"][1:]).all()
    assert out["mask_probs"].shape == (n, 28, 28)
    assert ((out["mask_probs"] >= 0) & (out["mask_probs"] <= 1)).all()


def test_test_time_proposal_counts_are_their_own_setting():
    """The cpu profile trains on 300 proposals per image and keeps 1000 at inference; unset, inference keeps the
    training counts (the paper profile's 3000)."""
    same = build_model(SMOKE_CFG.with_(rpn_pre_nms_top_n=50, rpn_post_nms_top_n=10, rpn_pre_nms_top_n_test=None,
                                       rpn_post_nms_top_n_test=None))
    cfg = SMOKE_CFG.with_(rpn_pre_nms_top_n=50, rpn_post_nms_top_n=10, rpn_pre_nms_top_n_test=400,
                          rpn_post_nms_top_n_test=60)
    torch.manual_seed(0)
    model = build_model(cfg)
    for m, train_counts, test_counts in ((same, (50, 10), (50, 10)), (model, (50, 10), (400, 60))):
        m.train()
        assert (m.rpn.pre_nms_top_n(), m.rpn.post_nms_top_n()) == train_counts
        m.eval()
        assert (m.rpn.pre_nms_top_n(), m.rpn.post_nms_top_n()) == test_counts
    with torch.no_grad():
        images, _ = model.transform([torch.rand(3, 128, 128)])
        proposals, _ = model.rpn(images, model.backbone(images.tensors))
    assert 10 < len(proposals[0]) <= 60  # more than training would keep, capped by the test setting


# ------------------------------------------------------------------------------------------------------------
# 2. hybrid mask loss
# ------------------------------------------------------------------------------------------------------------
def _mask_case(ismask):
    """Three GT nuclei in a 64 x 64 input (scale 2 -> proposals on a 128 x 128 resized image); GT 0's mask is all
    ones so its ROI-aligned 28 x 28 target is exactly 1."""
    masks = torch.zeros((3, 64, 64), dtype=torch.uint8)
    masks[0] = 1
    masks[1, 30:40, 5:20] = 1
    masks[2, 45:60, 40:55] = 1
    target = {"masks": masks, "ismask": torch.tensor(ismask), "scale": torch.tensor([2.0, 2.0])}
    proposals = torch.tensor([[20.0, 20.0, 60.0, 60.0], [10.0, 60.0, 40.0, 80.0], [80.0, 90.0, 110.0, 120.0],
                              [24.0, 22.0, 64.0, 58.0], [12.0, 58.0, 42.0, 82.0]])
    matched = torch.tensor([0, 1, 2, 0, 1])
    return [proposals], [matched], [target]


def test_mask_loss_is_zero_for_box_only_targets_and_still_differentiable():
    rh = _model().roi_heads
    torch.manual_seed(2)
    logits = torch.randn(5, 1, 28, 28, requires_grad=True)
    props, matched, targets = _mask_case([False, False, False])
    loss = rh._mask_loss(logits, props, matched, targets)
    assert loss.item() == 0.0
    assert loss.requires_grad and loss.grad_fn is not None
    loss.backward()
    assert logits.grad is not None and torch.count_nonzero(logits.grad) == 0


def test_mask_loss_uses_only_proposals_matched_to_boundary_annotations():
    rh = _model().roi_heads
    torch.manual_seed(2)
    logits = torch.randn(5, 1, 28, 28, requires_grad=True)
    props, matched, targets = _mask_case([True, False, False])  # only GT 0 has a traced boundary
    loss = rh._mask_loss(logits, props, matched, targets)
    assert loss.item() > 0
    # rows 0 and 3 are matched to GT 0, whose mask target is all ones
    expected = F.binary_cross_entropy_with_logits(logits[[0, 3], 0], torch.ones(2, 28, 28))
    torch.testing.assert_close(loss, expected, atol=1e-6, rtol=0)
    loss.backward()
    nonzero_rows = torch.where(logits.grad.abs().flatten(1).sum(1) > 0)[0].tolist()
    assert nonzero_rows == [0, 3]

    props, matched, targets = _mask_case([True, True, True])
    assert rh._mask_loss(logits.detach(), props, matched, targets).item() > 0


def test_training_forward_mask_loss_zero_without_boundaries():
    model = _model().train()
    image = torch.rand(3, 96, 96)
    torch.manual_seed(3)
    losses = model([image], [_targets(ismask=False)])
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    assert losses["loss_mask"].item() == 0.0
    assert losses["loss_classifier"].item() > 0 and losses["loss_box_reg"].item() > 0
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()  # the zero mask loss keeps the graph intact
    torch.manual_seed(3)
    losses = model([image], [_targets(ismask=True)])
    assert losses["loss_mask"].item() > 0


# ------------------------------------------------------------------------------------------------------------
# 3. AMBIGUOUS ignored by the classification loss
# ------------------------------------------------------------------------------------------------------------
def test_classification_loss_ignores_ambiguous():
    rh = _model().roi_heads
    torch.manual_seed(4)
    labels = torch.tensor([AMB, AMB, 0, 0, AMB, 0, AMB, 0, 0, AMB, 0, AMB])
    logits = torch.randn(12, 9, requires_grad=True)
    deltas = torch.randn(12, 8)
    reg = torch.randn(12, 4)
    cls_loss, box_loss = rh._detection_losses(logits, deltas, labels, reg)
    bg = labels == 0
    torch.testing.assert_close(cls_loss, F.cross_entropy(logits[bg], labels[bg]), atol=1e-6, rtol=0)
    cls_loss.backward()
    assert torch.count_nonzero(logits.grad[~bg]) == 0 and torch.count_nonzero(logits.grad[bg]) > 0
    # ambiguous nuclei stay foreground for box regression (foreground deltas, divided by all sampled rows)
    pos = labels > 0
    expected_box = F.smooth_l1_loss(deltas[pos, 4:], reg[pos], beta=1.0 / 9, reduction="sum") / 12
    torch.testing.assert_close(box_loss, expected_box, atol=1e-6, rtol=0)

    # with real classes too: cross-entropy over every row that is not ambiguous
    mixed = torch.tensor([AMB, 3, 0, 0, AMB, 1, 7, 0, 0, AMB, 2, AMB])
    cls_mixed, _ = rh._detection_losses(logits.detach(), deltas, mixed, reg)
    keep = mixed != AMB
    torch.testing.assert_close(cls_mixed, F.cross_entropy(logits.detach()[keep], mixed[keep]), atol=1e-6, rtol=0)

    # only ambiguous rows: zero, still differentiable
    only = torch.full((12,), AMB)
    logits2 = logits.detach().clone().requires_grad_(True)
    cls_only, box_only = rh._detection_losses(logits2, deltas, only, reg)
    assert cls_only.item() == 0.0 and cls_only.requires_grad
    cls_only.backward()
    assert torch.count_nonzero(logits2.grad) == 0
    assert box_only.item() > 0

    # no foreground row at all (a crop whose proposals all missed): box loss 0, classification loss on background
    none_fg = torch.zeros(12, dtype=torch.long)
    cls_bg, box_bg = rh._detection_losses(logits.detach(), deltas, none_fg, reg)
    assert box_bg.item() == 0.0
    torch.testing.assert_close(cls_bg, F.cross_entropy(logits.detach(), none_fg), atol=1e-6, rtol=0)


def test_classification_loss_class_weights():
    """Weighted cross-entropy over the non-ambiguous rows, as torch's own weighted mean; None is unweighted."""
    rh = _model().roi_heads
    torch.manual_seed(5)
    labels = torch.tensor([AMB, 3, 0, 0, AMB, 1, 7, 0, 0, 3, 2, 1])
    logits = torch.randn(12, 9)
    deltas, reg = torch.randn(12, 8), torch.randn(12, 4)
    plain, _ = rh._detection_losses(logits, deltas, labels, reg)
    w = torch.tensor([1.0, 0.5, 2.0, 3.0, 1.0, 1.0, 1.0, 4.0, 1.0])
    rh.set_class_weights(w)
    try:
        weighted, _ = rh._detection_losses(logits, deltas, labels, reg)
    finally:
        rh.set_class_weights(None)
    assert rh.class_weights is None
    with pytest.raises(ValueError, match="needs 9 values"):
        rh.set_class_weights(w[:4])
    keep = labels != AMB
    per_row = F.cross_entropy(logits[keep], labels[keep], reduction="none")
    expected = (per_row * w[labels[keep]]).sum() / w[labels[keep]].sum()
    torch.testing.assert_close(weighted, expected, atol=1e-6, rtol=0)
    assert abs(weighted.item() - plain.item()) > 1e-3
    torch.testing.assert_close(rh._detection_losses(logits, deltas, labels, reg)[0], plain)


def test_training_forward_with_only_ambiguous_truth():
    """Every GT is AMBIGUOUS: the classifier learns from background proposals only; regression and masks still
    use the ambiguous nuclei."""
    model = _model().train()
    rh = model.roi_heads
    seen = {}
    original = rh._detection_losses

    def spy(logits, deltas, labels, reg_targets):
        seen.update(logits=logits.detach(), labels=labels)
        return original(logits, deltas, labels, reg_targets)

    rh._detection_losses = spy
    torch.manual_seed(5)
    losses = model([torch.rand(3, 96, 96)], [_targets(ismask=True, labels=(AMB, AMB, AMB))])
    labels = seen["labels"]
    assert set(labels.unique().tolist()) == {0, AMB}
    bg = labels == 0
    expected = F.cross_entropy(seen["logits"][bg], labels[bg])
    torch.testing.assert_close(losses["loss_classifier"].detach(), expected, atol=1e-6, rtol=0)
    assert losses["loss_box_reg"].item() > 0 and losses["loss_mask"].item() > 0


# ------------------------------------------------------------------------------------------------------------
# 4. scale-factor transform
# ------------------------------------------------------------------------------------------------------------
def test_scale_factor_transform_sizes_boxes_and_round_trip():
    t = ScaleFactorTransform(2.3, jitter=0.2).eval()
    h, w = 97, 131
    boxes = torch.tensor([[10.5, 20.25, 40.0, 60.0], [0.0, 0.0, 131.0, 97.0]])
    images, targets = t([torch.rand(3, h, w)], [{"boxes": boxes.clone(), "labels": torch.tensor([1, 2])}])
    nh, nw = round(h * 2.3), round(w * 2.3)
    assert (nh, nw) == (223, 301)
    assert images.image_sizes == [(nh, nw)]
    assert images.tensors.shape[-2:] == (224, 320)  # padded to a multiple of 32
    ratio = torch.tensor([nw / w, nh / h, nw / w, nh / h])
    torch.testing.assert_close(targets[0]["boxes"], boxes * ratio, atol=1e-5, rtol=0)
    torch.testing.assert_close(targets[0]["scale"], torch.tensor([nh / h, nw / w]))
    # the ratio of the rounded size, not the nominal factor: the whole-image box fills the resized image exactly
    torch.testing.assert_close(targets[0]["boxes"][1], torch.tensor([0.0, 0.0, float(nw), float(nh)]))
    back = t.postprocess([{"boxes": targets[0]["boxes"].clone()}], images.image_sizes, [(h, w)])
    torch.testing.assert_close(back[0]["boxes"], boxes, atol=1e-4, rtol=0)
    # in training, postprocess leaves outputs alone (they are losses)
    t.train()
    same = [{"boxes": boxes.clone()}]
    assert t.postprocess(same, [(nh, nw)], [(h, w)]) is same


def test_scale_factor_jitter_only_in_training_and_bounded():
    t = ScaleFactorTransform(4.0, jitter=0.4)
    image = torch.rand(3, 50, 50)
    box = {"boxes": torch.tensor([[5.0, 10.0, 25.0, 30.0]])}
    torch.manual_seed(6)
    t.train()
    sizes = []
    for _ in range(40):
        out, tgt = t.resize(image, box)
        nh, nw = out.shape[-2:]
        assert nh == nw  # one factor for both axes
        assert round(50 * 3.6) <= nh <= round(50 * 4.4)
        torch.testing.assert_close(tgt["boxes"], box["boxes"] * nh / 50)
        sizes.append(nh)
    assert len(set(sizes)) > 5
    t.eval()
    for _ in range(5):
        assert t.resize(image, box)[0].shape[-2:] == (200, 200)
    # no jitter: the exact factor in training too
    t0 = ScaleFactorTransform(4.0, jitter=0.0).train()
    assert t0.resize(image)[0].shape[-2:] == (200, 200)
    # the model's transform carries the profile's factor and jitter
    mt = _model().transform
    assert (mt.scale_factor, mt.jitter) == (SMOKE_CFG.scale_factor, SMOKE_CFG.scale_jitter)


# ------------------------------------------------------------------------------------------------------------
# 5. detection freeze
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("head,maps", [("shared", "detector"), ("own", "detector"), ("own", "layer2")])
def test_freeze_detection_trains_only_classification_layers(head, maps):
    model = _model(classifier_head=head, classifier_features=maps).train()
    image = torch.rand(3, 96, 96)
    target = _targets(ismask=True)
    assert any(k.endswith("running_mean") for k in model.state_dict())  # from scratch: learnable batch norm

    # sanity: without the freeze a training forward moves the batch-norm statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    torch.manual_seed(7)
    model([image], [target])
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.endswith("running_mean"))

    params = freeze_detection(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {n for n, _ in model.named_parameters() if n.startswith(CLS_PREFIXES)}
    assert trainable == expected and any(n.startswith(CLS_PREFIXES[0]) for n in trainable)
    assert {id(p) for p in params} == {id(p) for n, p in model.named_parameters() if n in expected}

    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.manual_seed(8)
    losses = model([image], [target])
    opt.zero_grad()
    sum(losses.values()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if n not in expected)
    opt.step()
    after = model.state_dict()
    changed = {k for k in after if not torch.equal(before[k], after[k])}
    # num_batches_tracked is a counter only (momentum 0 freezes the statistics), not a statistic
    changed_stats = {k for k in changed if not k.endswith("num_batches_tracked")}
    assert "roi_heads.cls_score.weight" in changed_stats
    assert any(k.startswith(CLS_PREFIXES[0]) for k in changed_stats)
    assert all(k.startswith(CLS_PREFIXES) for k in changed_stats), sorted(changed_stats - expected)
    # the classifier's own MLP trains on after the freeze; the box head (detection's) never does
    assert any(k.startswith("roi_heads.cls_head.") for k in changed_stats) == (head == "own")
    assert any(k.startswith("backbone.reduce_cls.") for k in changed_stats) == (maps == "layer2")
    assert not any(k.startswith("roi_heads.box_head.") for k in changed_stats)


def test_classifier_options_are_checked():
    with pytest.raises(ValueError, match="classifier_head"):
        _model(classifier_head="separate")
    with pytest.raises(ValueError, match="classifier_features"):
        _model(classifier_features="layer1")
    with pytest.raises(ValueError, match="classification_convs"):
        _model(classifier_features="layer2", classification_convs=0)


def test_classifier_on_layer2_reads_a_finer_map_and_leaves_detection_alone():
    """With ``classifier_features='layer2'`` the classification convolutions read ResNet-18's layer2 (twice the
    detector map's resolution at layer3); the RPN, box head and mask head read the detector's map only, so a
    change to the classifier's map changes class probabilities and nothing about boxes."""
    model = _model(classifier_features="layer2").eval()
    with torch.no_grad():
        images = model.transform([torch.rand(3, 96, 96)])[0]
        feats = model.backbone(images.tensors)
        assert set(feats) == {"0", "cls"}
        assert feats["cls"].shape[-1] == 2 * feats["0"].shape[-1]
        props, _ = model.rpn(images, feats)
        assert props[0].shape[0] > 0
        # the RPN reads the detector's map only
        assert torch.equal(model.rpn(images, {"0": feats["0"]})[0][0], props[0])
        box_a, cls_a = model.roi_heads._features(feats, props, images.image_sizes)
        conv = model.roi_heads.classification_convs[0]
        conv.weight.add_(torch.randn_like(conv.weight))
        box_b, cls_b = model.roi_heads._features(feats, props, images.image_sizes)
    assert torch.equal(box_a, box_b)
    assert not torch.allclose(cls_a, cls_b)


@pytest.mark.parametrize("head", ["shared", "own"])
def test_freeze_detection_without_classification_convs(head):
    model = _model(**MODEL_CONFIGS["2"], classifier_head=head)
    freeze_detection(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    own = {n for n, _ in model.named_parameters() if n.startswith("roi_heads.cls_head.")}
    assert trainable == {"roi_heads.cls_score.weight", "roi_heads.cls_score.bias"} | own
    assert bool(own) == (head == "own")


# ------------------------------------------------------------------------------------------------------------
# 6. training: exact resume, reuse, retrain
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fov_samples(tmp_path_factory):
    root = SMOKE
    if not (root / "csv").is_dir():
        from nucls_utils.phantom import ensure_cohort

        root, _ = ensure_cohort(tmp_path_factory.mktemp("syn") / "smoke", "smoke", 0, progress=False)
    samples = md.load_fov_samples(read_dataset(root)[:3], progress=False)
    return samples, md.fov_sampling_weights(samples)


class _Interrupted(Exception):
    pass


class _Stream:
    """A TrainingStream that raises after ``stop_after`` batches (an interrupted run), or on any batch when
    ``stop_after=0`` (proves a call does not train)."""

    def __init__(self, inner, stop_after: int | None = None):
        self.inner, self.stop_after, self.drawn = inner, stop_after, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.stop_after is not None and self.drawn >= self.stop_after:
            raise _Interrupted
        self.drawn += 1
        return next(self.inner)

    def state_dict(self):
        return self.inner.state_dict()

    def load_state_dict(self, state):
        self.inner.load_state_dict(state)


def _losses(history: pd.DataFrame) -> pd.DataFrame:
    return history.drop(columns=["seconds"]).reset_index(drop=True)


def test_checkpoint_resume_is_exact_and_finished_runs_are_reused(fov_samples, tmp_path):
    samples, weights = fov_samples
    tc = TRAIN_PROFILES["smoke"]
    assert (tc.iterations, tc.checkpoint_every, tc.freeze_detection_at) == (4, 2, 3)  # resume crosses the freeze

    def stream(stop_after=None):
        return _Stream(md.TrainingStream(samples, weights, batch_size=tc.batch_size, crop=96, seed=0), stop_after)

    kw = {"seed": 0, "progress": False, "device": "cpu"}
    model_a, hist_a = train_model(SMOKE_CFG, tc, stream(), tmp_path / "a", **kw)
    assert hist_a["iteration"].tolist() == [1, 2, 3, 4]
    assert not (tmp_path / "a" / "checkpoint.pt").exists()

    # interrupted after 2 updates (the checkpoint), then resumed with a fresh stream
    run_b = tmp_path / "b"
    with pytest.raises(_Interrupted):
        train_model(SMOKE_CFG, tc, stream(stop_after=2), run_b, **kw)
    ckpt = torch.load(run_b / "checkpoint.pt", weights_only=False)
    assert ckpt["iteration"] == 2 and not (run_b / "model.pt").exists()
    model_b, hist_b = train_model(SMOKE_CFG, tc, stream(), run_b, **kw)
    assert json.loads((run_b / "training.json").read_text())["iterations_this_run"] == 2

    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    different = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not different, different[:5]
    pd.testing.assert_frame_equal(_losses(hist_a), _losses(hist_b), check_exact=True)

    # a finished run is reused: nothing is drawn from the stream, files are untouched
    info = (tmp_path / "a" / "training.json").read_text()
    mtime = (tmp_path / "a" / "model.pt").stat().st_mtime_ns
    model_r, hist_r = train_model(SMOKE_CFG, tc, stream(stop_after=0), tmp_path / "a", **kw)
    assert (tmp_path / "a" / "training.json").read_text() == info
    assert (tmp_path / "a" / "model.pt").stat().st_mtime_ns == mtime
    pd.testing.assert_frame_equal(_losses(hist_r), _losses(hist_a), check_exact=False, rtol=1e-12)
    assert all(torch.equal(v, model_r.state_dict()[k]) for k, v in sa.items())
    assert not model_r.training

    # a different schedule retrains (and never draws from a stream before checking what is on disk)
    tc1 = tc.with_(iterations=1)
    with pytest.raises(_Interrupted):
        train_model(SMOKE_CFG, tc1, stream(stop_after=0), tmp_path / "a", **kw)
    _, h1 = train_model(SMOKE_CFG, tc1, stream(), tmp_path / "a", **kw)
    key1 = json.loads((tmp_path / "a" / "training.json").read_text())["key"]
    assert h1["iteration"].tolist() == [1] and key1 != json.loads(info)["key"]

    # a different seed retrains, and ignores a checkpoint written under another key (the interrupted run's)
    run_c = tmp_path / "c"
    run_c.mkdir()
    torch.save(ckpt, run_c / "checkpoint.pt")
    _, h2 = train_model(SMOKE_CFG, tc1, stream(), run_c, **{**kw, "seed": 1})
    key2 = json.loads((run_c / "training.json").read_text())["key"]
    assert h2["iteration"].tolist() == [1] and key2 not in (key1, ckpt["key"])
    assert h1["loss"].iloc[0] != h2["loss"].iloc[0]  # seed 1 initialises the model differently
    assert not (run_c / "checkpoint.pt").exists()


def test_finetune_sampling_and_class_weights_are_applied_and_keyed(fov_samples, tmp_path, monkeypatch):
    """After the freeze the ROI sampler takes the schedule's fine-tuning size and positive fraction; class weights
    reach the loss, are recorded, and a run with other weights is not reused."""
    samples, weights = fov_samples
    tc = TRAIN_PROFILES["smoke"].with_(iterations=3, freeze_detection_at=2, finetune_rois_per_image=48,
                                       finetune_positive_fraction=0.75)
    seen = []

    class _Spy(_Stream):  # records the model's sampler before each update
        def __next__(self):
            seen.append((model_ref[0].roi_heads.fg_bg_sampler.batch_size_per_image,
                         model_ref[0].roi_heads.fg_bg_sampler.positive_fraction))
            return super().__next__()

    model_ref = []
    import nucls_utils.model.train as mt
    build = mt.build_model

    def capture(cfg):
        model_ref.append(build(cfg))
        return model_ref[-1]

    cw = np.linspace(0.5, 2.0, len(SMOKE_CFG.classes) + 1)
    kw = {"seed": 0, "progress": False, "device": "cpu"}
    stream = _Spy(md.TrainingStream(samples, weights, batch_size=tc.batch_size, crop=96, seed=0))
    monkeypatch.setattr(mt, "build_model", capture)
    model, _ = train_model(SMOKE_CFG, tc, stream, tmp_path, class_weights=cw, **kw)
    base = (SMOKE_CFG.box_batch_size_per_image, SMOKE_CFG.box_positive_fraction)
    assert seen == [base, base, (48, 0.75)]
    np.testing.assert_allclose(model.roi_heads.class_weights.numpy(), cw, rtol=1e-6)
    info = json.loads((tmp_path / "training.json").read_text())
    np.testing.assert_allclose(info["class_weights"], cw, rtol=1e-5)
    # other weights: the finished run is not reused (a stream that may not be drawn from proves it trains)
    with pytest.raises(_Interrupted):
        train_model(SMOKE_CFG, tc, _Stream(stream.inner, stop_after=0), tmp_path, class_weights=cw[::-1], **kw)
    with pytest.raises(ValueError, match="class_weights needs"):
        train_model(SMOKE_CFG, tc, stream, tmp_path / "bad", class_weights=cw[:3], **kw)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_checkpoint_resume_on_cuda(fov_samples, tmp_path):
    """Resume on a GPU: the checkpoint's RNG states are CPU tensors however the checkpoint is loaded (GPU kernels
    are not bitwise deterministic, so only completion and the schedule are checked)."""
    samples, weights = fov_samples
    tc = TRAIN_PROFILES["smoke"]

    def stream(stop_after=None):
        return _Stream(md.TrainingStream(samples, weights, batch_size=tc.batch_size, crop=96, seed=0), stop_after)

    kw = {"seed": 0, "progress": False, "device": "cuda"}
    with pytest.raises(_Interrupted):
        train_model(SMOKE_CFG, tc, stream(stop_after=2), tmp_path, **kw)
    model, hist = train_model(SMOKE_CFG, tc, stream(), tmp_path, **kw)
    assert hist["iteration"].tolist() == [1, 2, 3, 4]
    assert next(model.parameters()).device.type == "cuda"


# ------------------------------------------------------------------------------------------------------------
# 7. detections: box-local masks and the instance map
# ------------------------------------------------------------------------------------------------------------
def _dets(boxes, scores, mask_probs):
    n = len(boxes)
    return Detections(np.asarray(boxes, float), np.asarray(scores, float), np.full((n, 2), 0.5), ("a", "b"),
                      np.asarray(mask_probs, np.float32))


def test_local_masks_paste_into_the_box():
    d = _dets([[10, 20, 24, 31], [10.3, 20.6, 23.2, 30.5]], [0.9, 0.8], np.ones((2, 28, 28)))
    (ibox0, m0), (ibox1, m1) = d.local_masks()
    # integer box: the all-ones map fills exactly the box
    assert ibox0 == (10, 20, 24, 31) and m0.shape == (11, 14) and m0.all()
    # fractional box: the array spans the box rounded outward; pixels whose centre is in the box are set
    assert ibox1 == (10, 20, 24, 31) and m1.shape == (11, 14)
    expected = np.zeros((11, 14), bool)
    expected[1:11, 0:13] = True  # x centres 10.5..22.5 in [10.3, 23.2]; y centres 21.5..30.5 in [20.6, 30.5]
    np.testing.assert_array_equal(m1, expected)
    imap = d.select([0]).instance_map((40, 40))
    assert imap.sum() == 11 * 14 and imap[20:31, 10:24].all()

    # orientation: the map's columns are x, its rows y (box of 28 px: one pixel per map cell)
    left = np.zeros((28, 28), np.float32)
    left[:, :14] = 1
    top = left.T.copy()
    (_, ml), (_, mt) = _dets([[0, 0, 28, 28], [0, 0, 28, 28]], [0.5, 0.5], [left, top]).local_masks()
    np.testing.assert_array_equal(ml, left > 0.5)
    np.testing.assert_array_equal(mt, top > 0.5)
    assert not _dets([[0, 0, 10, 10]], [0.5], np.zeros((1, 28, 28))).local_masks()[0][1].any()


def test_instance_map_paints_most_confident_on_top():
    ones = np.ones((2, 28, 28))
    for scores in ([0.3, 0.9], [0.9, 0.3]):
        d = _dets([[5, 5, 25, 25], [15, 15, 35, 35]], scores, ones)
        imap = d.instance_map((40, 40))
        best = int(np.argmax(scores)) + 1
        other = 3 - best
        assert (imap[15:25, 15:25] == best).all()
        only = imap[5:15, 5:25] if best == 2 else imap[25:35, 15:35]
        assert (only == other).all()
        assert imap.dtype == np.int32 and imap[0, 0] == 0 and imap[36, 36] == 0
    # boxes partly outside the image are clipped
    imap = _dets([[-5, -5, 10, 10], [35, 30, 50, 45]], [0.5, 0.6], ones).instance_map((40, 40))
    assert (imap[:10, :10] == 1).all() and (imap[30:, 35:] == 2).all()
    assert np.count_nonzero(imap) == 100 + 50


# ------------------------------------------------------------------------------------------------------------
# 8. odd image sizes
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(97, 131), (300, 301), (20, 33)])
def test_eval_on_odd_image_sizes(hw):
    h, w = hw
    model = _model().eval()
    torch.manual_seed(9)
    with torch.no_grad():
        out = model([torch.rand(3, h, w)])[0]
    n = len(out["boxes"])
    if (h, w) != (20, 33):
        assert n > 0
    b = out["boxes"]
    assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all()
    assert (b[:, 2] <= w + 1e-3).all() and (b[:, 3] <= h + 1e-3).all()
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
    assert out["probs"].shape == (n, 7) and out["mask_probs"].shape == (n, 28, 28)
    if (h, w) == (97, 131):
        rgb = (np.random.default_rng(0).random((h, w, 3)) * 255).astype(np.uint8)
        det = model.predict(rgb)
        assert isinstance(det, Detections) and len(det) > 0
        assert (det.boxes[:, 2] <= w + 1e-3).all() and (det.boxes[:, 3] <= h + 1e-3).all()
        assert det.instance_map((h, w)).shape == (h, w)


def test_training_history_save_load_pair(tmp_path):
    from nucls_utils.model.train import HISTORY_FILE, load_history, save_history

    hist = pd.DataFrame({"iteration": [1, 2, 3], "loss": [2.0, 1.5, 1.25], "eval_ap50": [np.nan, np.nan, 0.5]})
    save_history(hist, tmp_path)
    back = load_history(tmp_path)
    pd.testing.assert_frame_equal(back, hist)
    assert back["iteration"].dtype.kind == "i"
    with pytest.raises(FileNotFoundError, match="was not trained"):
        load_history(tmp_path / "nothing")
    (tmp_path / HISTORY_FILE).write_text("iteration,loss\n1,abc\n")
    with pytest.raises(ValueError, match="column loss is not numeric"):
        load_history(tmp_path)


def test_training_neither_reads_nor_changes_the_callers_random_state(fov_samples, tmp_path):
    """train_model draws (initialisation, scale jitter, proposal sampling) from torch's generators seeded inside
    its own block: the caller's state does not change the model, and is the same after training."""
    samples, weights = fov_samples
    tc = TRAIN_PROFILES["smoke"]
    kw = {"seed": 0, "progress": False, "device": "cpu", "say": None}
    states = []
    for k, caller_seed in enumerate((123, 999)):
        torch.manual_seed(caller_seed)
        before = torch.get_rng_state()
        model, _ = train_model(SMOKE_CFG, tc, md.TrainingStream(samples, weights, batch_size=tc.batch_size, crop=96,
                                                                seed=0), tmp_path / f"run{k}", **kw)
        assert torch.equal(torch.get_rng_state(), before)
        states.append(model.state_dict())
    assert all(torch.equal(v, states[1][k]) for k, v in states[0].items())
    assert model.transform.jitter > 0  # the jitter draws were part of it
