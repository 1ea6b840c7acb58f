"""Seed 004's Cyclic Learning front end: LRP conserves relevance and finds the planted evidence; pseudo masks cut
from the relevance maps of a classifier trained on image-level labels recover planted blobs (Dice >= 0.7)."""

from __future__ import annotations

import numpy as np
import pytest
from toy_nuclei import planted_disks

from nucls_utils.baselines import cyclic as cy


def _tile(rng: np.random.Generator, n: int, size: int = 40) -> tuple[np.ndarray, np.ndarray]:
    return planted_disks(rng, n, size, radius=(5, 7), margin=7)


@pytest.fixture(scope="module")
def front_end():
    rng = np.random.default_rng(0)
    tiles, labels = [], []
    for i in range(240):
        t, _ = _tile(rng, 0 if i % 2 == 0 else int(rng.integers(1, 3)))
        tiles.append(t)
        labels.append(i % 2)
    model, hist = cy.train_front_end(np.stack(tiles), np.array(labels), cy.FrontEndConfig(epochs=8), seed=0)
    return model, hist


def test_front_end_learns_the_image_level_labels(front_end):
    _, hist = front_end
    assert hist["accuracy"].iloc[-1] >= 0.95


def test_relevance_is_conserved_and_sits_on_the_nuclei(front_end):
    model, _ = front_end
    rng = np.random.default_rng(5)
    tiles = [_tile(rng, 2) for _ in range(6)]
    x = np.stack([t for t, _ in tiles])
    rel = cy.lrp_relevance(model, x)
    assert rel.shape == (6, 40, 40)
    logits = cy.front_end_logits(model, x)[:, 1]
    # the rules chosen conserve relevance up to what the first layer's bias and the gamma rule's shift take
    assert np.corrcoef(rel.sum(axis=(1, 2)), logits)[0, 1] > 0.9
    for r, (_, m) in zip(rel, tiles, strict=True):
        assert np.clip(r, 0, None)[m].mean() > 5 * np.clip(r, 0, None)[~m].mean()


def test_pseudo_masks_recover_planted_blobs(front_end):
    model, _ = front_end
    rng = np.random.default_rng(7)
    tiles = [_tile(rng, int(rng.integers(1, 3))) for _ in range(16)]
    rel = cy.lrp_relevance(model, np.stack([t for t, _ in tiles]))
    masks = [cy.pseudo_masks(r) for r in rel]
    assert cy.mean_dice([m for _, m in tiles], masks) >= 0.7
    assert all(m.max() >= 1 for m in masks)


def test_pseudo_masks_of_nothing_and_bad_labels():
    assert cy.pseudo_masks(-np.ones((8, 8))).max() == 0
    blob = np.zeros((20, 20))
    blob[5:10, 5:10] = 1.0
    blob[15, 15] = 1.0  # one pixel: under min_size
    assert cy.pseudo_masks(blob).max() == 1
    with pytest.raises(ValueError, match="both present"):
        cy.train_front_end(np.zeros((4, 8, 8, 3), np.uint8), np.ones(4, int))


def test_relevance_over_a_whole_fov_cuts_the_planted_nuclei(front_end):
    """Notebook 08's use of the front end: overlapping positive tiles of a larger image, each tile's relevance scaled
    to its own maximum and merged by the maximum, cut into pseudo nuclei (Dice >= 0.7 against the planted disks)."""
    from nucls_utils.baselines import study as bs
    from nucls_utils.baselines import tile_classifier as tc

    model, _ = front_end
    rng = np.random.default_rng(11)
    rgb, truth = planted_disks(rng, 9, 120, radius=(5, 7), margin=8)
    corners = tc.tile_grid(120, 120, 40, 20)
    _, labels = tc.tile_labels(truth, corners, 40, 0.02)
    rel = bs.relevance_map(model, rgb, labels, 40, cy.FrontEndConfig())
    assert rel.shape == (120, 120) and rel.max() <= 1.0 and rel.min() >= 0.0
    pseudo = cy.pseudo_masks(rel)
    assert cy.mean_dice([truth], [pseudo]) >= 0.7
    # no positive tile: no relevance anywhere
    assert bs.relevance_map(model, rgb, np.zeros(len(corners), int), 40, cy.FrontEndConfig()).max() == 0.0
