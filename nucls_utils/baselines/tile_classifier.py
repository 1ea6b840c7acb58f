"""Seed 002's system: a tile classifier (adapted LeNet-5) whose sliding-window output becomes a nuclei mask.

The seed classifies 256 x 256 tiles of its own slides as "contains a nucleus / contains none" and turns a slide into
a binary mask by sliding that window with half-window overlap and averaging the probabilities each pixel receives.
It trains with label smoothing 0.1, cutout, AdamW (weight decay 1e-4), gradient clipping, ReduceLROnPlateau and
early stopping, then adds pseudo-labels (confidence >= 0.95) of unlabelled tiles over several rounds.

Here the same system runs on NuCLS FOVs at 0.2 microns per pixel, where a 256 px tile (51 microns) would hold a
dozen nuclei and almost never be negative; the tile is scaled to about one nucleus instead:

* **Tile** :attr:`TileClassifierConfig.tile` px (32 px = 6.4 microns by default), cut on a grid with stride half a
  tile. A tile is **positive** when at least ``positive_fraction`` (20 %) of its pixels are nucleus pixels of the
  truth mask, **negative** when none is, and left out of training when in between (a sliver of a nucleus at its
  edge: neither label is right).
* **Network** (:class:`LeNetTiles`): conv 3->6 (5 x 5, padding 2), average pool, conv 6->16 (5 x 5), average pool,
  conv 16->120 (5 x 5), ReLU after each, then FC -> 84 with dropout 0.5 and FC 84 -> 2, as the seed; the first FC's
  input size follows from the tile (120 x 1 x 1 at 28 px, 120 x 2 x 2 at 32 px).
* **Training** (:func:`train_tile_classifier`): flips, 90-degree rotations and the project's stain augmentation
  are left to the caller's tiles; here: random flips and rotations of every batch and one cutout square per tile,
  label smoothing, AdamW, gradient clipping, ReduceLROnPlateau on the validation loss and early stopping with the
  best weights restored. Seeded: torch's generators inside a fork, numpy through one ``Generator``.
* **Pseudo-labels** (:func:`fit_with_pseudo_labels`): a share of the training tiles has its labels withheld; each
  round labels those of the withheld tiles the current model calls with probability >= ``pseudo_threshold`` and
  trains a fresh model on the labelled plus the pseudo-labelled tiles.
* **Mask** (:func:`probability_map`): every window position (stride half a tile, the last window flush with the
  image's edge) adds its nucleus probability to all its pixels; the map is the mean per pixel, the mask
  ``probability >= 0.5``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..evaluation import f1_from_counts
from ._seed import seeded

__all__ = ["TileClassifierConfig", "LeNetTiles", "tile_grid", "tile_labels", "extract_tiles",
           "train_tile_classifier", "predict_tiles", "fit_with_pseudo_labels", "probability_map", "tile_f1",
           "save_tile_classifier", "load_tile_classifier"]


@dataclass(frozen=True)
class TileClassifierConfig:
    """Settings of the tile classifier (see the module docstring)."""

    tile: int = 32  # px at 0.2 microns per pixel (6.4 microns: about one nucleus)
    positive_fraction: float = 0.2  # a tile with at least this share of nucleus pixels contains a nucleus
    epochs: int = 20
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.1
    cutout: int = 8  # side of the square zeroed in each training tile (0: no cutout)
    grad_clip: float = 1.0
    patience: int = 4  # epochs without a better validation loss before stopping
    plateau_patience: int = 2  # epochs without a better validation loss before the learning rate is halved
    val_fraction: float = 0.2
    withheld_fraction: float = 0.5  # share of the training tiles whose labels the pseudo-labelling withholds
    pseudo_threshold: float = 0.95
    pseudo_rounds: int = 3

    def with_(self, **changes) -> TileClassifierConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


class LeNetTiles(nn.Module):
    """The seed's adapted LeNet-5 for ``tile`` x ``tile`` RGB tiles (at least 28 px); two logits: none, nucleus."""

    def __init__(self, tile: int = 32) -> None:
        super().__init__()
        side = ((tile // 2) - 4) // 2 - 4
        if side < 1:
            raise ValueError(f"tile {tile} px is too small for LeNet-5's three 5 x 5 convolutions (at least 28 px)")
        self.tile = int(tile)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.AvgPool2d(2, 2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.AvgPool2d(2, 2),
            nn.Conv2d(16, 120, 5), nn.ReLU())
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(120 * side * side, 84), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(84, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def tile_grid(height: int, width: int, tile: int, stride: int) -> np.ndarray:
    """Top-left corners ``(y, x)`` of the windows that cover an image with this stride, the last row and column
    flush with the image's edge. An image smaller than a tile has no window."""
    if height < tile or width < tile:
        return np.zeros((0, 2), dtype=int)

    def starts(n: int) -> np.ndarray:
        s = np.arange(0, n - tile + 1, stride)
        return s if s[-1] == n - tile else np.r_[s, n - tile]

    ys, xs = np.meshgrid(starts(height), starts(width), indexing="ij")
    return np.column_stack([ys.ravel(), xs.ravel()])


def tile_labels(nucleus_mask: np.ndarray, corners: np.ndarray, tile: int, positive_fraction: float
                ) -> tuple[np.ndarray, np.ndarray]:
    """Per window: the share of nucleus pixels, and the label (1 contains a nucleus, 0 none, -1 left out)."""
    m = np.asarray(nucleus_mask) != 0
    integral = np.pad(m.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    y, x = corners[:, 0], corners[:, 1]
    count = integral[y + tile, x + tile] - integral[y, x + tile] - integral[y + tile, x] + integral[y, x]
    frac = count / float(tile * tile)
    labels = np.where(frac >= positive_fraction, 1, np.where(count == 0, 0, -1))
    return frac, labels


def extract_tiles(rgb: np.ndarray, corners: np.ndarray, tile: int) -> np.ndarray:
    """``(N, tile, tile, 3)`` uint8 windows of ``rgb`` at ``corners``."""
    rgb = np.asarray(rgb)
    windows = np.lib.stride_tricks.sliding_window_view(rgb, (tile, tile), axis=(0, 1))  # (H', W', 3, t, t)
    return np.ascontiguousarray(windows[corners[:, 0], corners[:, 1]].transpose(0, 2, 3, 1))


def _to_tensor(tiles: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(tiles)).permute(0, 3, 1, 2).float().div_(255.0)


def _augment(x: torch.Tensor, rng: np.random.Generator, cutout: int) -> torch.Tensor:
    k = int(rng.integers(0, 4))
    x = torch.rot90(x, k, dims=(2, 3))
    if rng.random() < 0.5:
        x = torch.flip(x, dims=(3,))
    if cutout > 0:
        x = x.clone()
        n, _, h, w = x.shape
        ys = rng.integers(0, h - cutout + 1, n)
        xs = rng.integers(0, w - cutout + 1, n)
        for i in range(n):
            x[i, :, ys[i]:ys[i] + cutout, xs[i]:xs[i] + cutout] = 0.0
    return x


def _split(y: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a stratified train / validation split."""
    val = []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        val.append(idx[: max(1, int(round(fraction * len(idx))))] if len(idx) > 1 else idx[:0])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, int)
    train_idx = np.setdiff1d(np.arange(len(y)), val_idx)
    return train_idx, val_idx


def train_tile_classifier(tiles: np.ndarray, labels: np.ndarray, config: TileClassifierConfig | None = None, *,
                          seed: int = 0) -> tuple[LeNetTiles, pd.DataFrame]:
    """Train a :class:`LeNetTiles` on ``tiles`` (N, t, t, 3 uint8) with ``labels`` (N,) in {0, 1}.

    Returns the model with the weights of its best validation loss (eval mode) and the history (one row per epoch:
    ``epoch``, ``lr``, ``train_loss``, ``val_loss``, ``val_f1``)."""
    cfg = config or TileClassifierConfig()
    labels = np.asarray(labels)
    if tiles.ndim != 4 or tiles.shape[1:] != (cfg.tile, cfg.tile, 3):
        raise ValueError(f"tiles must be (N, {cfg.tile}, {cfg.tile}, 3), not {tiles.shape}")
    if len(tiles) != len(labels) or not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be one 0 or 1 per tile")
    if len(np.unique(labels)) < 2:
        raise ValueError("the training tiles hold one class only: nothing to tell apart")
    rng = np.random.default_rng(seed)
    train_idx, val_idx = _split(labels, cfg.val_fraction, rng)
    x_all = _to_tensor(tiles)
    y_all = torch.from_numpy(labels.astype(np.int64))
    with seeded(seed):
        model = LeNetTiles(cfg.tile)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=cfg.plateau_patience)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        best, best_state, waited, rows = np.inf, None, 0, []
        for epoch in range(cfg.epochs):
            model.train()
            order = rng.permutation(train_idx)
            total = 0.0
            for start in range(0, len(order), cfg.batch_size):
                b = order[start:start + cfg.batch_size]
                x = _augment(x_all[b], rng, cfg.cutout)
                loss = loss_fn(model(x), y_all[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                total += loss.item() * len(b)
            model.eval()
            with torch.no_grad():
                logits = model(x_all[val_idx]) if len(val_idx) else torch.zeros((0, 2))
                val_loss = float(loss_fn(logits, y_all[val_idx])) if len(val_idx) else total / len(order)
            pred = logits.argmax(1).numpy()
            truth = labels[val_idx]
            val_f1 = tile_f1(truth, pred)
            rows.append({"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"], "train_loss": total / len(order),
                         "val_loss": val_loss, "val_f1": val_f1})
            sched.step(val_loss)
            if val_loss < best - 1e-6:
                best, waited = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                waited += 1
                if waited >= cfg.patience:
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    model.eval()
    return model, pd.DataFrame(rows)


def predict_tiles(model: LeNetTiles, tiles: np.ndarray, batch: int = 512) -> np.ndarray:
    """Nucleus probability of each tile (N,)."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(tiles), batch):
            out.append(torch.softmax(model(_to_tensor(tiles[start:start + batch])), 1)[:, 1].numpy())
    return np.concatenate(out) if out else np.zeros(0)


def fit_with_pseudo_labels(tiles: np.ndarray, labels: np.ndarray, config: TileClassifierConfig | None = None, *,
                           seed: int = 0) -> tuple[LeNetTiles, pd.DataFrame]:
    """The seed's semi-supervised training: withhold the labels of ``withheld_fraction`` of the tiles (stratified),
    train on the rest, then for ``pseudo_rounds`` rounds pseudo-label the withheld tiles the current model is sure
    of (probability >= ``pseudo_threshold`` either way) and train a fresh model on both.

    Returns the last model and one row per round (0 = labelled tiles only): tiles used, pseudo-labels added,
    their accuracy against the withheld labels, and the validation F1 of the round's best epoch."""
    cfg = config or TileClassifierConfig()
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    kept, withheld = _split(labels, 1.0 - cfg.withheld_fraction, rng)
    model, hist = train_tile_classifier(tiles[kept], labels[kept], cfg, seed=seed)
    rows = [{"round": 0, "labelled": len(kept), "withheld": len(withheld), "pseudo_labels": 0,
             "pseudo_accuracy": np.nan, "val_f1": float(hist["val_f1"].iloc[hist["val_loss"].idxmin()])}]
    for r in range(1, cfg.pseudo_rounds + 1):
        p = predict_tiles(model, tiles[withheld])
        sure = (p >= cfg.pseudo_threshold) | (p <= 1.0 - cfg.pseudo_threshold)
        pseudo = (p[sure] >= 0.5).astype(int)
        x = np.concatenate([tiles[kept], tiles[withheld][sure]])
        y = np.concatenate([labels[kept], pseudo])
        model, hist = train_tile_classifier(x, y, cfg, seed=seed + r)
        rows.append({"round": r, "labelled": len(kept), "withheld": len(withheld), "pseudo_labels": int(sure.sum()),
                     "pseudo_accuracy": float(np.mean(pseudo == labels[withheld][sure])) if sure.any() else np.nan,
                     "val_f1": float(hist["val_f1"].iloc[hist["val_loss"].idxmin()])})
    return model, pd.DataFrame(rows)


def probability_map(model: LeNetTiles, rgb: np.ndarray, stride: int | None = None, batch: int = 512) -> np.ndarray:
    """Per-pixel nucleus probability of an image: the mean over the windows (stride half a tile by default) that
    cover the pixel (see the module docstring). ``(H, W)`` float32; NaN where no window fits (an image smaller than
    a tile)."""
    tile = model.tile
    stride = stride or tile // 2
    h, w = np.asarray(rgb).shape[:2]
    corners = tile_grid(h, w, tile, stride)
    total = np.zeros((h, w), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.int32)
    for start in range(0, len(corners), batch):
        c = corners[start:start + batch]
        p = predict_tiles(model, extract_tiles(rgb, c, tile), batch=batch)
        for (y, x), v in zip(c, p, strict=True):
            total[y:y + tile, x:x + tile] += v
            count[y:y + tile, x:x + tile] += 1
    with np.errstate(invalid="ignore"):
        return (total / np.where(count > 0, count, np.nan)).astype(np.float32)


def tile_f1(truth: np.ndarray, pred: np.ndarray, average: str = "positive") -> float:
    """F1 of tile labels: of the "contains a nucleus" class (``average='positive'``), or the mean of both classes'
    F1 weighted by their number of true tiles (``'weighted'``, how the seed reports its test F1 of 97.3 %)."""
    truth, pred = np.asarray(truth), np.asarray(pred)

    def f1(c: int) -> float:
        tp = int(np.sum((truth == c) & (pred == c)))
        return float(f1_from_counts(tp, int(np.sum((truth != c) & (pred == c))), int(np.sum((truth == c) & (pred != c)))))

    if average == "positive":
        return f1(1)
    if average == "weighted":
        n = len(truth)
        return sum(np.sum(truth == c) / n * f1(c) for c in (0, 1) if np.any(truth == c)) if n else 0.0
    raise ValueError(f"average must be 'positive' or 'weighted', not {average!r}")


def save_tile_classifier(model: LeNetTiles, path, info: dict | None = None):
    """Write ``model`` (its tile side and weights, and ``info``) to ``path`` atomically; returns the path."""
    from pathlib import Path

    from ..io.atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save({"kind": "LeNetTiles", "tile": model.tile, "state_dict": model.state_dict(), "info": info or {}},
                   tmp)
    return path


def load_tile_classifier(path, device: str | None = None) -> LeNetTiles:
    """A tile classifier written by :func:`save_tile_classifier` (eval mode)."""
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no tile classifier file (notebook 08 writes results/<data>/08_baselines/"
                                "tile_classifier_fold1.pt)")
    blob = torch.load(path, map_location=device or "cpu", weights_only=False)
    if not isinstance(blob, dict) or blob.get("kind") != "LeNetTiles":
        raise ValueError(f"{path}: not a tile classifier written by save_tile_classifier")
    model = LeNetTiles(blob["tile"])
    model.load_state_dict(blob["state_dict"])
    return model.eval()
