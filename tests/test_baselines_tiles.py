"""Seed 002's tile classifier as a baseline: windows, labels, the LeNet-5, training with pseudo-labels on a planted
toy problem it must solve, and the sliding-window mask."""

from __future__ import annotations

import numpy as np
import pytest
from toy_nuclei import planted_disks

from nucls_utils.baselines import tile_classifier as tc
from nucls_utils.evaluation import pixel_scores


def _scene(rng: np.random.Generator, n: int = 12, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """``n`` dark purple disks (radius 6-9 px) on pink: the image and its nucleus mask."""
    return planted_disks(rng, n, size, radius=(6, 9), margin=8)


def test_grid_covers_the_image_and_labels_count_nucleus_pixels():
    c = tc.tile_grid(100, 70, 32, 16)
    assert c[:, 0].max() == 100 - 32 and c[:, 1].max() == 70 - 32 and c.min() == 0
    assert len(np.unique(c, axis=0)) == len(c)
    assert tc.tile_grid(20, 70, 32, 16).shape == (0, 2)
    mask = np.zeros((64, 64), bool)
    mask[0:16, 0:16] = True  # a quarter of the first tile
    mask[40:42, 40:42] = True  # 4 pixels: a sliver
    corners = np.array([[0, 0], [32, 32], [32, 0]])
    frac, lab = tc.tile_labels(mask, corners, 32, 0.2)
    assert frac.tolist() == [0.25, 4 / 1024, 0.0] and lab.tolist() == [1, -1, 0]
    rgb = np.arange(64 * 64 * 3, dtype=np.uint8).reshape(64, 64, 3)
    tiles = tc.extract_tiles(rgb, corners, 32)
    assert tiles.shape == (3, 32, 32, 3) and np.array_equal(tiles[1], rgb[32:64, 32:64])


def test_lenet_follows_the_tile_size_and_rejects_too_small_tiles():
    import torch

    for tile, flat in ((28, 120), (32, 480), (64, 120 * 10 * 10)):
        net = tc.LeNetTiles(tile)
        assert net.classifier[1].in_features == flat
        assert net(torch.zeros(2, 3, tile, tile)).shape == (2, 2)
    with pytest.raises(ValueError, match="too small"):
        tc.LeNetTiles(24)


def test_planted_nuclei_are_found_by_tiles_and_the_mask_covers_them():
    rng = np.random.default_rng(0)
    # the seed's threshold 0.95 is the very probability label smoothing 0.1 trains towards, so a short training
    # rarely passes it; the mechanism is tested at 0.9
    cfg = tc.TileClassifierConfig(epochs=10, pseudo_rounds=1, pseudo_threshold=0.9)
    tiles, labels = [], []
    for _ in range(5):
        rgb, mask = _scene(rng)
        corners = tc.tile_grid(*mask.shape, cfg.tile, 8)
        _, lab = tc.tile_labels(mask, corners, cfg.tile, cfg.positive_fraction)
        tiles.append(tc.extract_tiles(rgb, corners[lab >= 0], cfg.tile))
        labels.append(lab[lab >= 0])
    x, y = np.concatenate(tiles), np.concatenate(labels)
    model, rounds = tc.fit_with_pseudo_labels(x, y, cfg, seed=0)
    assert rounds["round"].tolist() == [0, 1] and rounds.loc[1, "pseudo_labels"] > 0
    assert rounds.loc[1, "pseudo_accuracy"] >= 0.95
    # a new image: tiles classified, and the averaged sliding-window mask covers the nuclei (it is coarse by
    # construction: every pixel of a positive window is counted, so it also spills around them)
    rgb, mask = _scene(np.random.default_rng(99))
    corners = tc.tile_grid(*mask.shape, cfg.tile, 16)
    _, lab = tc.tile_labels(mask, corners, cfg.tile, cfg.positive_fraction)
    pred = (tc.predict_tiles(model, tc.extract_tiles(rgb, corners, cfg.tile)) >= 0.5).astype(int)
    keep = lab >= 0
    assert tc.tile_f1(lab[keep], pred[keep]) >= 0.9 and tc.tile_f1(lab[keep], pred[keep], "weighted") >= 0.9
    prob = tc.probability_map(model, rgb)
    assert prob.shape == mask.shape and np.isfinite(prob).all()
    s = pixel_scores(mask, prob >= 0.5)
    assert s["tp"] >= 0.95 and s["dice"] > 0.2
    # same seed, same model
    short = cfg.with_(epochs=2)
    a, _ = tc.train_tile_classifier(x, y, short, seed=3)
    b, _ = tc.train_tile_classifier(x, y, short, seed=3)
    assert all(np.array_equal(u.numpy(), v.numpy()) for u, v in zip(a.state_dict().values(), b.state_dict().values(),
                                                                     strict=True))


def test_training_rejects_bad_tiles_and_labels():
    x = np.zeros((4, 32, 32, 3), np.uint8)
    with pytest.raises(ValueError, match="one class only"):
        tc.train_tile_classifier(x, np.ones(4, int))
    with pytest.raises(ValueError, match="one 0 or 1 per tile"):
        tc.train_tile_classifier(x, np.array([0, 1, 2, 0]))
    with pytest.raises(ValueError, match=r"\(N, 32, 32, 3\)"):
        tc.train_tile_classifier(np.zeros((4, 16, 16, 3), np.uint8), np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="average must be"):
        tc.tile_f1(np.array([1]), np.array([1]), "macro")
