"""The synthetic-pretrained trunk: a disjoint cohort, dense targets, the cache, and models that load it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nucls_utils import taxonomy as tx
from nucls_utils.io.dataset import read_dataset
from nucls_utils.model import pretrain as pt
from nucls_utils.phantom.cohort import cohort_problem, generate_cohort

TINY = pt.PretrainConfig(cohort_profile="smoke", iterations=2, batch_size=2, crop=64)


@pytest.fixture(scope="module")
def trunk_root(tmp_path_factory):
    """A cache holding one tiny trunk (the smoke pretraining cohort, 2 updates)."""
    root = tmp_path_factory.mktemp("pretrained")
    token = pt.ensure_pretrained(TINY, root=root, progress=False, say=None)
    return root, token


def test_the_pretraining_cohort_shares_no_hospital_slide_or_fov_with_the_study_cohort(smoke_cohort, trunk_root):
    root, _ = trunk_root
    pre = read_dataset(root / f"cohort-smoke-s{pt.PRETRAIN_COHORT_SEED}")
    study = read_dataset(smoke_cohort)
    assert {r.slide for r in pre}.isdisjoint({r.slide for r in study})
    assert {r.hospital for r in pre}.isdisjoint({r.hospital for r in study})
    assert {r.name for r in pre}.isdisjoint({r.name for r in study})
    assert all(r.hospital.startswith("Q") for r in pre) and all(r.hospital.startswith("Y") for r in study)


def test_same_seed_other_namespace_gives_other_pixels_and_exact_outlines(tmp_path):
    study = read_dataset(generate_cohort(tmp_path / "s", "smoke", 3, progress=False))
    pre = read_dataset(generate_cohort(tmp_path / "p", "smoke", 3, progress=False, namespace="pretrain"))
    assert not np.array_equal(study[0].read_rgb()[:50, :50], pre[0].read_rgb()[:50, :50])
    # the pretraining cohort's annotations are the exact outlines: all polygons, no boxes
    assert all(n.is_polygon for r in pre for n in r.nuclei)
    assert any(not n.is_polygon for r in study for n in r.nuclei)
    # a study cohort is not reusable as a pretraining one (and vice versa)
    assert "namespace" in cohort_problem(tmp_path / "p", "smoke", 3)
    assert cohort_problem(tmp_path / "p", "smoke", 3, namespace="pretrain") is None
    with pytest.raises(ValueError, match="namespace"):
        generate_cohort(tmp_path / "x", "smoke", 3, progress=False, namespace="other")


def test_dense_targets_of_two_touching_nuclei():
    codes = np.zeros((20, 20), int)
    inst = np.zeros((20, 20), int)
    inst[5:12, 3:10], codes[5:12, 3:10] = 1, tx.GT_CODES["tumor"]
    inst[5:12, 10:16], codes[5:12, 10:16] = 2, tx.GT_CODES["fibroblast"]
    inst[15:18, 15:18], codes[15:18, 15:18] = 3, tx.GT_CODES["unlabeled"]  # ambiguous: ignored
    cls, bnd = pt.dense_targets(codes, inst)
    classes = ("background", *[c for c in tx.MAIN_CLASSES if c != tx.AMBIGUOUS])
    assert classes[cls[8, 5]] == "tumor_nonMitotic" and classes[cls[8, 13]] == "nonTILnonMQ_stromal"
    assert cls[0, 0] == 0 and cls[16, 16] == -1
    # the boundary runs around each nucleus and between the two (2 px wide there), not through their interiors
    assert bnd[8, 9] == 1 and bnd[8, 10] == 1 and bnd[8, 6] == 0 and bnd[8, 13] == 0
    assert bnd[5, 5] == 1 and bnd[0, 0] == 0


def test_the_cache_is_reused_for_the_same_key_and_rebuilt_for_another(trunk_root):
    root, token = trunk_root
    path = pt.weights_path(token, root)
    stamp = path.stat().st_mtime_ns
    said = []
    assert pt.ensure_pretrained(TINY, root=root, progress=False, say=said.append) == token
    assert path.stat().st_mtime_ns == stamp and said == []  # reused: nothing trained, nothing said
    other = pt.ensure_pretrained(TINY.with_(iterations=3), root=root, progress=False, say=said.append)
    assert other != token and pt.weights_path(other, root).is_file() and len(said) == 1
    info = pt.pretraining_info(other, root)
    assert info["iterations"] == 3 and info["cohort"]["namespace"] == "pretrain"
    with pytest.raises(FileNotFoundError, match="not in"):
        pt.weights_path(pt.weights_token("0" * 16), root)


def test_models_load_the_pretrained_trunk(trunk_root, monkeypatch):
    from nucls_utils.model.architecture import build_model
    from nucls_utils.model.train import MODEL_PROFILES
    from nucls_utils.suggestions.refine import build_refiner

    root, token = trunk_root
    monkeypatch.setenv("NUCLS_PRETRAINED_DIR", str(root))
    state = torch.load(pt.weights_path(token), weights_only=True)
    model = build_model(MODEL_PROFILES["smoke"].with_(weights=token, detector_start=False))
    assert model.weights_source.startswith("synthetic-pretrained")
    body = model.backbone.body  # the neck wraps the layer getter
    for name in ("conv1.weight", "layer1.0.conv1.weight", "layer3.1.conv2.weight"):
        assert torch.equal(body.state_dict()[name], state[name])
    assert torch.equal(body.state_dict()["layer2.0.bn1.running_mean"], state["layer2.0.bn1.running_mean"])
    refiner = build_refiner(seed=0, weights=token)
    rbody = refiner.backbone.body
    for name in ("conv1.weight", "layer2.1.conv1.weight", "layer3.0.bn2.running_var"):
        assert torch.equal(rbody.state_dict()[name], state[name])
    scratch = build_refiner(seed=0)
    assert not torch.equal(scratch.backbone.body.state_dict()["conv1.weight"], state["conv1.weight"])


@pytest.fixture(scope="module")
def detector_root(tmp_path_factory):
    """A cache holding a tiny trunk and the smoke model's detector trained from it (2 updates each)."""
    root = tmp_path_factory.mktemp("pretrained_detector")
    config = TINY.with_(detector_iterations=2, detector_model="smoke")
    return root, config, pt.ensure_pretrained(config, root=root, progress=False, say=None)


def test_models_start_their_detection_layers_from_the_pretrained_detector(detector_root, trunk_root, monkeypatch):
    from nucls_utils.model.architecture import DETECTION_PREFIXES, MODEL_CONFIGS, build_model
    from nucls_utils.model.train import MODEL_PROFILES

    root, config, token = detector_root
    assert token != pt.weights_token(pt.pretrain_key(TINY))  # the detector is part of the key
    info = pt.pretraining_info(token, root)
    assert info["detector"]["iterations"] == 2 and set(info["files"]) == {"backbone.pt", "detector.pt"}
    monkeypatch.setenv("NUCLS_PRETRAINED_DIR", str(root))
    det = torch.load(pt.detector_path(token), weights_only=True)
    trunk = torch.load(pt.weights_path(token), weights_only=True)
    # the detector trained its trunk on from the pretrained one (layer3 moved; the frozen stem did not)
    assert torch.equal(det["backbone.body.conv1.weight"], trunk["conv1.weight"])
    assert not torch.equal(det["backbone.body.layer3.0.conv1.weight"], trunk["layer3.0.conv1.weight"])
    base = MODEL_PROFILES["smoke"].with_(weights=token)
    assert base.detector_start
    model = build_model(base)
    assert "pretrained detector" in model.weights_source
    state = model.state_dict()
    detection = [k for k in det if k.startswith(DETECTION_PREFIXES)]
    assert any(k.startswith("rpn.") for k in detection) and any(k.startswith("roi_heads.mask_") for k in detection)
    for k in detection:
        assert torch.equal(state[k], det[k]), k
    # the final model's classifier (classification convolutions, own head, cls_score) is the detector's too ...
    clf = ("roi_heads.cls_score.weight", "roi_heads.cls_head.fc6.weight", "roi_heads.classification_convs.0.weight")
    assert base.classifier_start
    for k in clf:
        assert torch.equal(state[k], det[k]), k
    # ... unless the config says otherwise, or the classifier's layers are not all the detector's in shape: config 2
    # classifies from the shared box head (only cls_score has the detector's shape); at super-class level, cls_score
    # differs, so none of the classifier is copied
    fresh = build_model(base.with_(classifier_start=False)).state_dict()
    for k in clf:
        assert not torch.equal(fresh[k], det[k]), k
    c2 = build_model(base.with_(**MODEL_CONFIGS["2"])).state_dict()
    assert c2["roi_heads.cls_score.weight"].shape == det["roi_heads.cls_score.weight"].shape
    assert not torch.equal(c2["roi_heads.cls_score.weight"], det["roi_heads.cls_score.weight"])
    assert torch.equal(c2["roi_heads.box_head.fc6.weight"], det["roi_heads.box_head.fc6.weight"])
    c6 = build_model(base.with_(level="super")).state_dict()  # config 3 at super-class level
    assert c6["roi_heads.cls_score.weight"].shape != det["roi_heads.cls_score.weight"].shape
    assert not torch.equal(c6["roi_heads.cls_head.fc6.weight"], det["roi_heads.cls_head.fc6.weight"])
    # config 1 regresses boxes per class: that layer keeps its fresh initialisation, the rest is loaded
    c1 = build_model(base.with_(**MODEL_CONFIGS["1"])).state_dict()
    assert c1["roi_heads.bbox_pred.weight"].shape != det["roi_heads.bbox_pred.weight"].shape
    assert torch.equal(c1["rpn.head.conv.0.0.weight"], det["rpn.head.conv.0.0.weight"])
    # without detector_start, or from another start, only the trunk (or nothing) is loaded
    plain = build_model(base.with_(detector_start=False)).state_dict()
    assert not torch.equal(plain["rpn.head.conv.0.0.weight"], det["rpn.head.conv.0.0.weight"])
    assert "pretrained detector" not in build_model(base.with_(weights=None)).weights_source
    # a pretraining without a detector cannot start one
    monkeypatch.setenv("NUCLS_PRETRAINED_DIR", str(trunk_root[0]))
    with pytest.raises(FileNotFoundError, match="has no detector"):
        build_model(base.with_(weights=trunk_root[1]))


def test_the_detector_schedule_is_the_profile_s_with_its_own_peak_rate(tmp_path):
    from nucls_utils.model.train import TRAIN_PROFILES

    cfg = TINY.with_(detector_iterations=7, detector_model="cpu")
    model_cfg, plain = pt._detector_configs(cfg, tmp_path / "backbone.pt")
    assert (plain.iterations, plain.freeze_detection_at, plain.class_balance) == (7, None, 0.0)
    assert plain.lr == TRAIN_PROFILES["cpu"].lr and not model_cfg.detector_start
    own = pt._detector_configs(cfg.with_(detector_lr=0.03), tmp_path / "backbone.pt")[1]
    assert own.lr == 0.03 and own.with_(lr=plain.lr) == plain
    # the cpu detector trains at a higher peak rate than the study models that fine-tune from it
    cpu = pt.PRETRAIN_PROFILES["cpu"]
    assert pt._detector_configs(cpu, tmp_path / "backbone.pt")[1].lr > TRAIN_PROFILES["cpu"].lr
    assert pt.pretrain_key(cfg) != pt.pretrain_key(cfg.with_(detector_lr=0.03))


def test_resolve_start(trunk_root, monkeypatch):
    root, _ = trunk_root
    monkeypatch.setenv("NUCLS_PRETRAINED_DIR", str(root))
    assert pt.resolve_start("smoke", "none") is None
    assert pt.resolve_start("smoke", "/some/weights.pt") == "/some/weights.pt"
    token = pt.resolve_start("smoke", "", progress=False, say=None)
    assert token == pt.weights_token(pt.pretrain_key(pt.PRETRAIN_PROFILES["smoke"]))
    assert pt.weights_path(token).is_file()
