"""Seed 003's U-Nets as a baseline: the network's shapes, augmentation that keeps image and mask aligned, counting
by watershed (touching nuclei split), the report's numbers, and a planted toy problem the small net must solve."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nucls_utils.baselines import unet as un


def _disks(rng: np.random.Generator, size: int = 96, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """An RGB image with ``n`` separate dark disks (radius 5-8) and its label image (ids 1..n)."""
    img = np.empty((size, size, 3))
    img[:] = (235, 200, 215)
    img += rng.normal(0, 8, img.shape)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((size, size), np.int32)
    k = 0
    for _ in range(200):
        if k == n:
            break
        cy, cx = rng.integers(10, size - 10, 2)
        r = rng.uniform(5, 8)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= (r + 2) ** 2
        if labels[disk].any():
            continue  # keep nuclei apart (with a 2 px gap)
        k += 1
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = k
    m = labels > 0
    img[m] = (110, 60, 150) + rng.normal(0, 12, (int(m.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8), labels


def test_unet_keeps_the_input_size_at_both_depths_and_rejects_bad_sides():
    for depth in (3, 5):
        net = un.UNet(depth, base=4)
        assert net(torch.zeros(1, 3, 64, 48)).shape == (1, 64, 48)
    with pytest.raises(ValueError, match="multiples of 16"):
        un.UNet(5, base=4)(torch.zeros(1, 3, 40, 40))
    with pytest.raises(ValueError, match="at least 2 levels"):
        un.UNet(1)


def test_standardise_and_augment_keep_image_and_mask_aligned():
    rgb, labels = _disks(np.random.default_rng(1))
    x = un.standardise(rgb)
    assert np.allclose(x.mean(axis=(0, 1)), 0, atol=1e-5) and np.allclose(x.std(axis=(0, 1)), 1, atol=1e-4)
    # a channel that is the mask itself must still be the mask after the same augmentation
    marked = np.concatenate([x, (labels > 0)[..., None].astype(np.float32)], axis=-1)
    for seed in range(3):
        im, m = un.augment_pair(marked, labels > 0, np.random.default_rng(seed), alpha=0, sigma=6)
        assert np.array_equal(im[..., 3] > 0.5, m)
        im, m = un.augment_pair(marked, labels > 0, np.random.default_rng(seed), alpha=8, sigma=6)
        assert np.mean((im[..., 3] > 0.5) == m) > 0.97  # bilinear vs nearest differ only along edges


def test_counting_splits_touching_nuclei_and_the_report_scores_the_truth_perfectly():
    _, labels = _disks(np.random.default_rng(2))
    n = int(labels.max())
    assert int(un.count_nuclei(labels > 0).max()) == n
    pair = np.zeros((40, 60), bool)
    yy, xx = np.mgrid[:40, :60]
    pair |= (yy - 20) ** 2 + (xx - 20) ** 2 <= 81
    pair |= (yy - 20) ** 2 + (xx - 36) ** 2 <= 81  # two radius-9 disks overlapping by 2 px
    split = un.count_nuclei(pair)
    assert split.max() == 2 and (split > 0).sum() == pair.sum()
    report = un.segmentation_report(labels, labels > 0)
    assert report["dice"] == 1.0 and report["count_deviation"] == 0.0 and report["object_f1"] == 1.0
    missing = un.segmentation_report(labels, np.isin(labels, np.arange(1, n // 2 + 1)))
    assert missing["pred_count"] == n // 2 and missing["count_deviation"] == pytest.approx(100 * (n - n // 2) / n)
    assert un.count_nuclei(np.zeros((8, 8), bool)).max() == 0


def test_planted_nuclei_are_segmented_by_the_small_unet():
    rng = np.random.default_rng(0)
    train = [_disks(rng) for _ in range(4)]
    cfg = un.UNetConfig(depth=3, base=8, crop=48, iterations=80, lr=3e-3)
    model, hist = un.train_unet([t[0] for t in train], [t[1] > 0 for t in train], cfg, seed=0)
    assert hist["loss"].iloc[-10:].mean() < hist["loss"].iloc[:10].mean() / 2
    rgb, labels = _disks(np.random.default_rng(42))
    prob = un.predict_probability(model, rgb)
    assert prob.shape == labels.shape
    report = un.segmentation_report(labels, prob >= 0.5)
    assert report["dice"] >= 0.8 and report["object_f1"] >= 0.7 and report["count_deviation"] <= 30
    # seeded: the same seed gives the same weights
    short = cfg.with_(iterations=3)
    a, _ = un.train_unet([train[0][0]], [train[0][1] > 0], short, seed=5)
    b, _ = un.train_unet([train[0][0]], [train[0][1] > 0], short, seed=5)
    assert all(torch.equal(u, v) for u, v in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_training_rejects_mismatched_inputs():
    rgb, labels = _disks(np.random.default_rng(3))
    with pytest.raises(ValueError, match="one mask per image"):
        un.train_unet([rgb], [])
    with pytest.raises(ValueError, match="multiple of 4"):
        un.train_unet([rgb], [labels > 0], un.UNetConfig(depth=3, crop=66))
    with pytest.raises(ValueError, match="must equal the image's"):
        un.train_unet([rgb], [(labels > 0)[:50]], un.UNetConfig(crop=32))
