"""Table S5 config 4's thumbnail classifier: thumbnails, training on a toy set, classify_detections, reuse."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nucls_utils import taxonomy as tx
from nucls_utils.model import classifier as mc
from nucls_utils.model.data import FovSample, model_classes
from nucls_utils.model.detections import Detections

BACKGROUND = (236, 214, 228)  # pale eosin
LYMPH = (55, 35, 105)  # small dark discs
TUMOR = (165, 120, 185)  # big pale discs


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 shared cores: one thread is several times faster than two here
    yield
    torch.set_num_threads(before)


def _toy_fov(rng: np.random.Generator, name: str, size: int = 128, n: int = 8,
             ambiguous: int = 1) -> FovSample:
    """A FOV of discs: radius 4-6 dark = lymphocyte, radius 10-13 pale = tumor_nonMitotic, radius 8 grey =
    AMBIGUOUS. Discs are placed on a grid so they do not overlap."""
    rgb = np.empty((size, size, 3), dtype=np.uint8)
    rgb[:] = BACKGROUND
    noise = rng.normal(0, 6, size=rgb.shape)
    yy, xx = np.mgrid[0:size, 0:size]
    cells = [(gx, gy) for gx in range(4) for gy in range(4)]
    order = rng.permutation(len(cells))[:n + ambiguous]
    boxes, classes = [], []
    for j, k in enumerate(order):
        gx, gy = cells[k]
        cx = gx * 32 + 16 + rng.uniform(-2, 2)
        cy = gy * 32 + 16 + rng.uniform(-2, 2)
        if j < ambiguous:
            r, colour, cls = 8.0, (120, 100, 130), tx.AMBIGUOUS
        elif rng.random() < 0.5:
            r, colour, cls = rng.uniform(4.6, 6.0), LYMPH, "lymphocyte"
        else:
            r, colour, cls = rng.uniform(10.0, 13.0), TUMOR, "tumor_nonMitotic"
        disc = (xx + 0.5 - cx) ** 2 + (yy + 0.5 - cy) ** 2 <= r * r
        rgb[disc] = colour
        boxes.append((int(np.floor(cx - r)), int(np.floor(cy - r)), int(np.ceil(cx + r)), int(np.ceil(cy + r))))
        classes.append(cls)
    rgb = np.clip(rgb + noise, 0, 255).astype(np.uint8)
    boxes = np.asarray(boxes, dtype=np.int32).reshape(-1, 4)
    return FovSample(name=name, hospital="XX", slide="TCGA-XX-0000-DX1", rgb=rgb, boxes=boxes,
                     classes=np.asarray(classes, dtype=object), ismask=np.zeros(len(boxes), dtype=bool),
                     masks=[np.ones((b[3] - b[1], b[2] - b[0]), dtype=bool) for b in boxes])


@pytest.fixture(scope="module")
def toy():
    rng = np.random.default_rng(7)
    train = [_toy_fov(rng, f"train{i}") for i in range(24)]
    test = [_toy_fov(rng, f"test{i}") for i in range(8)]
    return train, test


# ------------------------------------------------------------------------------------------------------------
# thumbnails
# ------------------------------------------------------------------------------------------------------------
def test_thumbnail_squares_geometry():
    sq = mc.thumbnail_squares(np.array([[10, 20, 30, 60], [0, 0, 4, 4]]), margin=1.5, pad=8, min_side=32)
    np.testing.assert_allclose(sq[0], [20 - 34, 40 - 34, 20 + 34, 40 + 34])  # side 40 * 1.5 + 8 = 68
    np.testing.assert_allclose(sq[1], [2 - 16, 2 - 16, 2 + 16, 2 + 16])  # min side 32
    assert mc.thumbnail_squares(np.zeros((0, 4))).shape == (0, 4)


def test_thumbnails_shape_exact_crop_and_empty():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(80, 90, 3), dtype=np.uint8)
    boxes = np.array([[10, 12, 42, 44], [30, 20, 50, 70]], dtype=np.float32)
    th = mc.extract_thumbnails(rgb, boxes, 64)
    assert th.shape == (2, 64, 64, 3) and th.dtype == np.uint8
    # no margin, square side = output size: the thumbnail is the crop itself
    exact = mc.extract_thumbnails(rgb, boxes[:1], 32, margin=1.0, pad=0.0, min_side=0.0)
    np.testing.assert_array_equal(exact[0], rgb[12:44, 10:42])
    t = mc.extract_thumbnails(rgb, boxes, 48, as_tensor=True)
    assert t.shape == (2, 3, 48, 48) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert mc.extract_thumbnails(rgb, np.zeros((0, 4)), 64).shape == (0, 64, 64, 3)
    assert mc.extract_thumbnails(rgb, np.zeros((0, 4)), 64, as_tensor=True).shape == (0, 3, 64, 64)


def test_thumbnail_at_image_edge_is_centred_with_white_padding():
    rgb = np.full((100, 100, 3), 120, dtype=np.uint8)
    rgb[0:20, 0:20] = (20, 30, 200)  # the nucleus, touching the top-left corner
    th = mc.extract_thumbnails(rgb, np.array([[0, 0, 20, 20]]), 64)[0]  # square side 38, from -9 to 29
    # centred: the nucleus colour at the centre, symmetric extent around it
    np.testing.assert_array_equal(th[32, 32], (20, 30, 200))
    nucleus = np.all(th == (20, 30, 200), axis=2)
    ys, xs = np.nonzero(nucleus)
    assert abs((ys.min() + ys.max()) / 2 - 31.5) <= 1 and abs((xs.min() + xs.max()) / 2 - 31.5) <= 1
    # outside the image (first 9/38 of the side, about 15 px): white
    assert np.all(th[:, :12] == 255) and np.all(th[:12] == 255)
    # inside the image beyond the nucleus: the image's grey
    np.testing.assert_array_equal(th[60, 60], (120, 120, 120))


# ------------------------------------------------------------------------------------------------------------
# the network
# ------------------------------------------------------------------------------------------------------------
def test_network_outputs_seven_main_classes():
    expected = tuple(c for c in model_classes("main") if c != tx.AMBIGUOUS)
    assert mc.CLASSIFIER_CLASSES == expected == model_classes("main")[:-1] and len(expected) == 7
    for profile in ("smoke", "cpu", "paper"):
        cfg = mc.CLASSIFIER_PROFILES[profile]
        model = mc.build_classifier(cfg).eval()
        assert model.classes == expected
        with torch.no_grad():
            out = model(torch.rand(2, 3, cfg.size, cfg.size))
        assert out.shape == (2, 7)
    paper = mc.build_classifier(mc.CLASSIFIER_PROFILES["paper"])
    bns = [m for m in paper.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(p.requires_grad for m in bns for p in m.parameters())
    with pytest.raises(ValueError, match="unknown profile"):
        mc.classifier_config("nope")


# ------------------------------------------------------------------------------------------------------------
# training, inference, reuse
# ------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(toy, tmp_path_factory):
    train, _ = toy
    cfg = mc.CLASSIFIER_PROFILES["cpu"].with_(iterations=60)
    out = tmp_path_factory.mktemp("clf")
    model, info = mc.train_thumbnail_classifier(train, out, profile="cpu", config=cfg, seed=0, progress=False)
    return model, info, out, cfg


def test_toy_training_reaches_90_percent(toy, trained):
    _, test = toy
    model, info, out, _ = trained
    n_amb = sum(int((s.classes == tx.AMBIGUOUS).sum()) for s in toy[0])
    assert info["n_train"] == sum(len(s) for s in toy[0]) - n_amb and not info["reused"]
    assert info["seconds"] > 0 and info["seconds_per_update"] > 0
    saved = json.loads((out / "classifier.json").read_text())
    assert saved["key"] == info["key"] and saved["n_train"] == info["n_train"]
    assert set(saved) >= {"config", "key", "seconds", "seconds_per_update"}
    truth, pred = [], []
    for s in test:
        keep = s.classes != tx.AMBIGUOUS
        probs = model.predict_proba(s.rgb, s.boxes[keep])
        truth += list(s.classes[keep])
        pred += list(np.asarray(model.classes)[probs.argmax(1)])
    acc = np.mean(np.asarray(truth) == np.asarray(pred))
    assert len(truth) >= 50 and acc >= 0.9, acc


def test_classify_detections(toy, trained):
    model = trained[0]
    s = toy[1][0]
    n = len(s)
    rng = np.random.default_rng(1)
    boxes = s.boxes.astype(np.float32) + rng.uniform(-1.5, 1.5, size=(n, 4)).astype(np.float32)
    det = Detections(boxes, rng.random(n), np.full((n, 8), 1 / 8), tuple(f"c{i}" for i in range(8)),
                     rng.random((n, 28, 28)).astype(np.float32), rng.random((n, 16)).astype(np.float32))
    out = mc.classify_detections(model, s.rgb, det)
    assert out.classes == model_classes("main")[:-1]
    np.testing.assert_array_equal(out.boxes, det.boxes)
    np.testing.assert_array_equal(out.scores, det.scores)
    np.testing.assert_array_equal(out.mask_probs, det.mask_probs)
    assert out.probs.shape == (n, 7) and np.all(out.probs >= 0)
    np.testing.assert_allclose(out.probs.sum(1), 1.0, atol=1e-5)
    # one forward for the image = the same as thumbnail by thumbnail
    one = np.concatenate([mc.classify_detections(model, s.rgb, det.select([i])).probs for i in range(n)])
    np.testing.assert_allclose(out.probs, one, atol=1e-5)
    empty = mc.classify_detections(model, s.rgb, Detections.empty(model_classes("main")[:-1]))
    assert len(empty) == 0 and empty.probs.shape == (0, 7) and empty.classes == out.classes


def test_reuse_and_determinism(toy, tmp_path):
    train = toy[0][:6]
    m1, i1 = mc.train_thumbnail_classifier(train, tmp_path / "a", profile="smoke", seed=3, progress=False)
    assert not i1["reused"] and (tmp_path / "a" / "classifier.pt").is_file()
    m2, i2 = mc.train_thumbnail_classifier(train, tmp_path / "a", profile="smoke", seed=3, progress=False)
    assert i2["reused"] and i2["key"] == i1["key"] and i2["seconds"] == i1["seconds"]
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    # same seed elsewhere: identical weights; another seed or other data: a new key, trained again
    m3, i3 = mc.train_thumbnail_classifier(train, tmp_path / "b", profile="smoke", seed=3, progress=False)
    s1, s3 = m1.state_dict(), m3.state_dict()
    assert s1.keys() == s3.keys() and all(torch.equal(s1[k], s3[k]) for k in s1)
    _, i4 = mc.train_thumbnail_classifier(train, tmp_path / "a", profile="smoke", seed=4, progress=False)
    assert not i4["reused"] and i4["key"] != i1["key"]
    _, i5 = mc.train_thumbnail_classifier(toy[0][:5], tmp_path / "a", profile="smoke", seed=4, progress=False)
    assert not i5["reused"] and i5["key"] != i4["key"]
    loaded = mc.load_classifier(tmp_path / "a")
    assert not loaded.training and loaded.config == mc.CLASSIFIER_PROFILES["smoke"]


def test_no_trainable_nuclei_raises(tmp_path):
    s = FovSample(name="amb", hospital="XX", slide="TCGA-XX-0000-DX1", rgb=np.full((64, 64, 3), 200, np.uint8),
                  boxes=np.array([[10, 10, 30, 30]], np.int32), classes=np.array([tx.AMBIGUOUS], dtype=object),
                  ismask=np.zeros(1, bool), masks=[np.ones((20, 20), bool)])
    with pytest.raises(ValueError, match="non-ambiguous"):
        mc.train_thumbnail_classifier([s], tmp_path, profile="smoke", progress=False)
    bad = FovSample(name="bad", hospital="XX", slide="TCGA-XX-0000-DX1", rgb=s.rgb, boxes=s.boxes,
                    classes=np.array(["unicorn"], dtype=object), ismask=s.ismask, masks=s.masks)
    with pytest.raises(ValueError, match="unicorn"):
        mc.train_thumbnail_classifier([bad], tmp_path, profile="smoke", progress=False)
