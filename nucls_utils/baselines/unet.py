"""Seed 003's system: U-Nets for nucleus segmentation, validated by counting nuclei and by pixel overlap.

The seed trains two U-Nets on CryoNuSeg (a small one with fewer levels and the full depth of Ronneberger et al.),
standardises each channel, augments with random flips, rotations and elastic deformation, trains with binary
cross-entropy and Adam (learning rate 1e-4), and validates by counting nuclei (it reports count deviations of 42.6 and
56.0 % for its two nets) and by the pixels both masks share.

Here:

* :class:`UNet`: ``depth`` levels of two 3 x 3 convolutions (padded, so the output has the input's size; batch norm
  and ReLU after each), max pooling down and transposed convolutions up, skip connections by concatenation, one
  logit per pixel. The seed's small net is ``depth=3``; the full Ronneberger depth is ``depth=5`` (four poolings).
  Channels start at ``base`` and double per level (Ronneberger: 64; scaled down for the cpu budget, stated by the
  caller's profile).
* :func:`standardise`: each channel of each image to mean 0, SD 1.
* :func:`augment_pair`: a random flip, a 90-degree rotation and an elastic deformation (a random displacement field
  smoothed by a Gaussian, applied to the image bilinearly and to the mask by nearest neighbour).
* :func:`train_unet`: random crops of the training images, BCE on the logits, Adam.
* :func:`count_nuclei`: the predicted mask split into nuclei by a watershed of its distance transform from one
  marker per local maximum (at least ``min_distance`` px apart); fragments under ``min_size`` px are dropped.
* :func:`segmentation_report`: pixel TP / FP / FN fractions and Dice (:func:`~nucls_utils.evaluation.pixel_scores`),
  the count deviation in % of the true count, and the object-level detection F1 at IOU >= 0.5.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from scipy import ndimage as ndi
from torch import nn

from ..evaluation import f1_from_counts, instance_overlaps, pixel_scores
from ._seed import seeded

__all__ = ["UNetConfig", "UNet", "standardise", "augment_pair", "train_unet", "predict_probability", "count_nuclei",
           "segmentation_report"]


@dataclass(frozen=True)
class UNetConfig:
    """Settings of a U-Net baseline (see the module docstring)."""

    depth: int = 3  # levels: 3 the seed's small net, 5 the full Ronneberger depth
    base: int = 16  # channels of the first level, doubled per level (Ronneberger: 64)
    crop: int = 96  # training crops, px (a multiple of 2 ** (depth - 1))
    batch_size: int = 4
    iterations: int = 300
    lr: float = 1e-4
    elastic_alpha: float = 8.0  # displacement scale, px
    elastic_sigma: float = 6.0  # smoothing of the displacement field, px

    def with_(self, **changes) -> UNetConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
                         nn.Conv2d(c_out, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class UNet(nn.Module):
    """A U-Net with ``depth`` levels and ``base`` channels at the first (see the module docstring)."""

    def __init__(self, depth: int = 3, base: int = 16, in_channels: int = 3) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"a U-Net needs at least 2 levels, not {depth}")
        widths = [base * 2 ** k for k in range(depth)]
        self.depth = depth
        self.down = nn.ModuleList([_block(in_channels if k == 0 else widths[k - 1], widths[k]) for k in range(depth)])
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[k], widths[k - 1], 2, stride=2)
                                 for k in range(depth - 1, 0, -1)])
        self.merge = nn.ModuleList([_block(2 * widths[k - 1], widths[k - 1]) for k in range(depth - 1, 0, -1)])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        multiple = 2 ** (self.depth - 1)
        if x.shape[-1] % multiple or x.shape[-2] % multiple:
            raise ValueError(f"input sides {tuple(x.shape[-2:])} must be multiples of {multiple} at depth {self.depth}")
        skips = []
        for k, block in enumerate(self.down):
            x = block(x if k == 0 else self.pool(x))
            skips.append(x)
        for up, merge, skip in zip(self.up, self.merge, reversed(skips[:-1]), strict=True):
            x = merge(torch.cat([up(x), skip], dim=1))
        return self.head(x)[:, 0]


def standardise(rgb: np.ndarray) -> np.ndarray:
    """Each channel of an ``(H, W, C)`` image to mean 0 and SD 1 (a flat channel to 0), float32."""
    x = np.asarray(rgb, dtype=np.float32)
    mean = x.mean(axis=(0, 1), keepdims=True)
    sd = x.std(axis=(0, 1), keepdims=True)
    return (x - mean) / np.where(sd > 0, sd, 1.0)


def augment_pair(image: np.ndarray, mask: np.ndarray, rng: np.random.Generator, alpha: float = 8.0,
                 sigma: float = 6.0) -> tuple[np.ndarray, np.ndarray]:
    """A random flip, 90-degree rotation and elastic deformation of an ``(H, W, C)`` image and its ``(H, W)`` mask
    (returned as bool: any non-zero pixel is nucleus)."""
    image, codes = _augment_codes(image, np.asarray(mask) != 0, rng, alpha, sigma)
    return image, codes != 0


def _augment_codes(image: np.ndarray, codes: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """:func:`augment_pair` of an image and an integer code map (moved by nearest neighbour, codes kept)."""
    k = int(rng.integers(0, 4))
    image, codes = np.rot90(image, k), np.rot90(codes, k)
    if rng.random() < 0.5:
        image, codes = image[:, ::-1], codes[:, ::-1]
    if alpha > 0:
        h, w = codes.shape
        dy = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
        dx = ndi.gaussian_filter(rng.uniform(-1, 1, (h, w)), sigma) * alpha
        yy, xx = np.mgrid[:h, :w].astype(np.float64)
        coords = np.array([yy + dy, xx + dx])
        image = np.stack([ndi.map_coordinates(image[..., c], coords, order=1, mode="reflect")
                          for c in range(image.shape[2])], axis=-1)
        codes = ndi.map_coordinates(codes.astype(np.uint8), coords, order=0, mode="reflect")
    return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(codes, dtype=np.uint8)


def train_unet(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], config: UNetConfig | None = None, *,
               ignore: Sequence[np.ndarray] | None = None, seed: int = 0) -> tuple[UNet, pd.DataFrame]:
    """Train a :class:`UNet` on RGB ``images`` and their nucleus ``masks`` (any non-zero pixel is nucleus).

    Each update draws ``batch_size`` random crops (image chosen at random, crop anywhere inside it), standardises
    them per channel and augments them (:func:`augment_pair`). ``ignore``: optional boolean maps, one per image, of
    pixels whose label is unknown (e.g. the box of a nucleus annotated by a box only): they are left out of the loss.
    Returns the model (eval mode) and the loss history (``iteration``, ``loss``)."""
    cfg = config or UNetConfig()
    if len(images) != len(masks) or not images:
        raise ValueError("give one mask per image, and at least one image")
    multiple = 2 ** (cfg.depth - 1)
    if cfg.crop % multiple:
        raise ValueError(f"crop {cfg.crop} must be a multiple of {multiple} at depth {cfg.depth}")
    if ignore is not None and len(ignore) != len(images):
        raise ValueError(f"give one ignore map per image ({len(ignore)} for {len(images)} images)")
    for i, (im, m) in enumerate(zip(images, masks, strict=True)):
        if im.shape[:2] != m.shape or min(m.shape) < cfg.crop:
            raise ValueError(f"image {i}: mask shape {m.shape} must equal the image's {im.shape[:2]} and be at least "
                             f"{cfg.crop} px on each side")
        if ignore is not None and np.shape(ignore[i]) != m.shape:
            raise ValueError(f"image {i}: ignore map shape {np.shape(ignore[i])} differs from the mask's {m.shape}")
    # one code map per image: 0 background, 1 nucleus, 2 unknown (left out of the loss)
    codes = [(np.asarray(m) != 0).astype(np.uint8) if ignore is None
             else np.where(np.asarray(ignore[i], dtype=bool), 2, np.asarray(m) != 0).astype(np.uint8)
             for i, m in enumerate(masks)]
    rng = np.random.default_rng(seed)
    std = [standardise(im) for im in images]
    rows = []
    with seeded(seed):
        model = UNet(cfg.depth, cfg.base)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        loss_fn = nn.BCEWithLogitsLoss(reduction="none")
        model.train()
        for it in range(cfg.iterations):
            xs, ys = [], []
            for _ in range(cfg.batch_size):
                i = int(rng.integers(len(std)))
                h, w = masks[i].shape
                y0, x0 = int(rng.integers(0, h - cfg.crop + 1)), int(rng.integers(0, w - cfg.crop + 1))
                im, c = _augment_codes(std[i][y0:y0 + cfg.crop, x0:x0 + cfg.crop],
                                       codes[i][y0:y0 + cfg.crop, x0:x0 + cfg.crop], rng, cfg.elastic_alpha,
                                       cfg.elastic_sigma)
                xs.append(im.transpose(2, 0, 1))
                ys.append(c)
            x = torch.from_numpy(np.stack(xs))
            c = torch.from_numpy(np.stack(ys))
            known = (c != 2).float()
            per_pixel = loss_fn(model(x), (c == 1).float())
            loss = (per_pixel * known).sum() / known.sum().clamp(min=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            rows.append({"iteration": it + 1, "loss": loss.item()})
    model.eval()
    return model, pd.DataFrame(rows)


def predict_probability(model: UNet, rgb: np.ndarray) -> np.ndarray:
    """Nucleus probability per pixel of a whole image (padded by reflection to a multiple of the net's stride and
    cropped back), ``(H, W)`` float32."""
    x = standardise(rgb)
    h, w = x.shape[:2]
    m = 2 ** (model.depth - 1)
    ph, pw = (-h) % m, (-w) % m
    x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))[None])[0]
    return torch.sigmoid(logits).numpy()[:h, :w].astype(np.float32)


def count_nuclei(mask: np.ndarray, min_distance: int = 5, min_size: int = 20) -> np.ndarray:
    """Split a binary nucleus mask into nuclei (see the module docstring); returns the label image (0 background)."""
    from skimage.feature import peak_local_max
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    m = np.asarray(mask) != 0
    if not m.any():
        return np.zeros(m.shape, dtype=np.int32)
    dist = ndi.distance_transform_edt(m)
    components, _ = ndi.label(m)
    peaks = peak_local_max(dist, min_distance=min_distance, labels=components, exclude_border=False)
    markers = np.zeros(m.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=m)
    labels = remove_small_objects(labels, max_size=min_size - 1) if min_size > 1 else labels
    # consecutive ids, 1..n
    ids = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[labels]


def segmentation_report(true_labels: np.ndarray, pred_mask: np.ndarray, *, min_distance: int = 5,
                        min_size: int = 20) -> dict:
    """Seed 003's validation of one image plus the field's object-level F1: pixel ``tp``, ``fp``, ``fn`` (fractions
    of the true nucleus pixels) and ``dice``; ``true_count``, ``pred_count`` and ``count_deviation`` (``|pred -
    true| / true`` in %); ``object_f1`` of the counted nuclei against the true ones at IOU >= 0.5."""
    pix = pixel_scores(true_labels, pred_mask)
    pred_labels = count_nuclei(pred_mask, min_distance, min_size)
    ov = instance_overlaps(true_labels, pred_labels)
    tp = int((ov.iou > 0.5).sum())
    n_true, n_pred = len(ov.true_ids), len(ov.pred_ids)
    return {"tp": pix["tp"], "fp": pix["fp"], "fn": pix["fn"], "dice": pix["dice"], "true_count": n_true,
            "pred_count": n_pred,
            "count_deviation": 100.0 * abs(n_pred - n_true) / n_true if n_true else float("nan"),
            "object_f1": float(f1_from_counts(tp, n_pred - tp, n_true - tp))}
