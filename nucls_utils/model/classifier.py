"""Table S5 config 4: a detector followed by an independent classifier of nucleus thumbnails.

The detection model (config 2's) proposes boxes; each box is cut out of the image with some context and classified
by a separate CNN trained on thumbnails of the ground-truth nuclei. This module holds that second stage:

* :func:`extract_thumbnails`: fixed-size square thumbnails centred on the boxes. The square's side is
  ``max(box side) * margin + pad`` px (at least ``min_side``); parts outside the image are white (255), so a
  nucleus at the border stays centred. All thumbnails of an image come from one ``roi_align`` call (bilinear,
  averaging over ``ceil(side / size)`` samples per output pixel when shrinking).
* :class:`ThumbnailClassifier`: the CNN, with logits over the 7 main classes (``model_classes('main')`` without
  AMBIGUOUS, in that order, the column order of a main-level NuCLS model's :class:`~.detections.Detections`).
  ``arch='compact'`` (the smoke and cpu profiles; 64 x 64 px thumbnails) is four conv-BN-ReLU blocks each halving
  the resolution, global average pooling and a linear layer; ``arch='resnet18'`` (the paper profile; 96 x 96 px)
  is torchvision's ResNet-18 with ``weights=None`` and trainable batch norm, its last layer replaced.
* :func:`train_thumbnail_classifier`: trains on the training FOVs' ground-truth boxes (AMBIGUOUS nuclei
  excluded) with class-balanced sampling (each nucleus drawn with probability proportional to the inverse of its
  class's count), box jitter (centre and sides +-``jitter`` of the side, so detector boxes are tolerated), random
  flips and 90-degree rotations, and :func:`~.data.stain_augment` on each thumbnail. One
  ``numpy.random.Generator`` (seeded) drives all draws and ``torch.manual_seed(seed)`` the initialisation, so a
  run is reproducible. Results are stored in ``out_dir`` and reused when the key (config, seed, training data)
  matches.
* :func:`classify_detections`: replaces a detector's class probabilities by the classifier's softmax.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import taxonomy as tx
from ..io.atomic import atomic_path
from ..io.manifest import verify_manifest, write_manifest
from ..profiles import stage_settings
from ..progress import tqdm
from .architecture import json_fields, torch_seeded
from .data import model_classes, samples_fingerprint, stain_augment
from .detections import Detections

#: sha256 of the classifier's files, checked before they are reused
MANIFEST_NAME = "classifier_manifest.json"

__all__ = ["ClassifierConfig", "CLASSIFIER_PROFILES", "classifier_config", "CLASSIFIER_CLASSES",
           "thumbnail_squares", "extract_thumbnails", "ThumbnailClassifier", "build_classifier",
           "train_thumbnail_classifier", "load_classifier", "classify_detections"]

#: Output columns of the classifier: the main classes without AMBIGUOUS, in model order.
CLASSIFIER_CLASSES: tuple[str, ...] = tuple(c for c in model_classes("main") if c != tx.AMBIGUOUS)


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture, thumbnail geometry and training schedule of a thumbnail classifier."""

    arch: str = "resnet18"  # 'compact' (4 conv blocks) or 'resnet18' (torchvision, weights=None)
    size: int = 96  # thumbnail side in px after resizing
    margin: float = 1.5  # square side = max(box side) * margin + pad, at least min_side
    pad: float = 8.0
    min_side: float = 32.0
    channels: tuple[int, ...] = (32, 64, 128, 192)  # widths of the compact net's blocks
    dropout: float = 0.2
    iterations: int = 6000
    batch_size: int = 128
    optimizer: str = "adamw"  # 'adamw' or 'sgd' (momentum 0.9)
    lr: float = 1e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-4
    warmup: float = 0.15
    label_smoothing: float = 0.05
    jitter: float = 0.1  # box centre shift and side change, each up to +-jitter of the side
    stain: bool = True  # stain_augment on each training thumbnail
    rotate: bool = True  # random horizontal flip and k * 90 degree rotation

    def with_(self, **changes) -> ClassifierConfig:
        return replace(self, **changes)

    def to_dict(self) -> dict:
        return asdict(self)


#: Classifier settings of each compute profile (settings in :data:`nucls_utils.profiles.STAGES`).
CLASSIFIER_PROFILES: dict[str, ClassifierConfig] = {
    p: ClassifierConfig(**kw) for p, kw in stage_settings("classifier").items()
}


def classifier_config(profile: str) -> ClassifierConfig:
    try:
        return CLASSIFIER_PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(CLASSIFIER_PROFILES)}") from None


# ------------------------------------------------------------------------------------------------------------
# Thumbnails
# ------------------------------------------------------------------------------------------------------------
def thumbnail_squares(boxes: np.ndarray, margin: float = 1.5, pad: float = 8.0,
                      min_side: float = 32.0) -> np.ndarray:
    """``(N, 4)`` float64 squares ``(x0, y0, x1, y1)`` centred on ``boxes`` with side
    ``max(max(w, h) * margin + pad, min_side)``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    side = np.maximum(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]) * margin + pad, min_side)
    half = side / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def extract_thumbnails(rgb: np.ndarray, boxes: np.ndarray, size: int = 64, *, margin: float = 1.5,
                       pad: float = 8.0, min_side: float = 32.0, as_tensor: bool = False):
    """Square thumbnails centred on ``boxes``, resized to ``size`` x ``size``; white outside the image.

    Parameters
    ----------
    rgb : (H, W, 3) uint8
    boxes : (N, 4)
        ``(xmin, ymin, xmax, ymax)`` pixel corners.

    Returns
    -------
    (N, size, size, 3) uint8 ndarray, or with ``as_tensor`` an (N, 3, size, size) float32 tensor in [0, 1]
    (not rounded to uint8).
    """
    from torchvision.ops import roi_align

    rgb = np.asarray(rgb)[..., :3]
    sq = thumbnail_squares(boxes, margin, pad, min_side)
    n = len(sq)
    if n == 0:
        if as_tensor:
            return torch.zeros((0, 3, size, size), dtype=torch.float32)
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    h, w = rgb.shape[:2]
    # a white canvas covering every square (plus a pixel for the bilinear neighbours), the image pasted in
    ex0, ey0 = int(math.floor(sq[:, 0].min())) - 1, int(math.floor(sq[:, 1].min())) - 1
    ex1, ey1 = int(math.ceil(sq[:, 2].max())) + 1, int(math.ceil(sq[:, 3].max())) + 1
    canvas = np.full((ey1 - ey0, ex1 - ex0, 3), 255, dtype=np.uint8)
    ix0, iy0, ix1, iy1 = max(ex0, 0), max(ey0, 0), min(ex1, w), min(ey1, h)
    if ix1 > ix0 and iy1 > iy0:
        canvas[iy0 - ey0:iy1 - ey0, ix0 - ex0:ix1 - ex0] = rgb[iy0:iy1, ix0:ix1]
    # element-wise conversions in numpy: torch's multi-threaded kernels cost milliseconds on tiny tensors when
    # the CPU cores are busy
    image = torch.from_numpy(np.ascontiguousarray(canvas.transpose(2, 0, 1)[None], dtype=np.float32))
    rois = np.zeros((n, 5), dtype=np.float32)
    rois[:, 1:] = sq - np.array([ex0, ey0, ex0, ey0], dtype=np.float64)
    thumbs = roi_align(image, torch.from_numpy(rois), output_size=(size, size), spatial_scale=1.0,
                       sampling_ratio=-1, aligned=True).numpy()
    if as_tensor:
        return torch.from_numpy(thumbs * np.float32(1 / 255.0))
    return np.clip(np.rint(thumbs), 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


# ------------------------------------------------------------------------------------------------------------
# The network
# ------------------------------------------------------------------------------------------------------------
class ThumbnailClassifier(nn.Module):
    """CNN over ``(B, 3, size, size)`` thumbnails in [0, 1] -> ``(B, 7)`` logits over :data:`CLASSIFIER_CLASSES`.

    ``config.arch == 'compact'`` (smoke/cpu profiles, 64 px thumbnails): four blocks of 3x3 conv, batch norm,
    ReLU and 2x2 max pooling (widths ``config.channels``; the last two blocks have a second 3x3 conv), global
    average pooling, dropout and a linear layer. ``'resnet18'`` (paper profile, 96 px): torchvision's ResNet-18,
    ``weights=None``, trainable :class:`~torch.nn.BatchNorm2d`, ``fc`` replaced by dropout + a 7-way linear layer.
    """

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.classes: tuple[str, ...] = CLASSIFIER_CLASSES
        k = len(self.classes)
        if config.arch == "compact":
            layers: list[nn.Module] = []
            cin = 3
            for i, cout in enumerate(config.channels):
                layers += [nn.Conv2d(cin, cout, 3, stride=2 if i == 0 else 1, padding=1, bias=False),
                           nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
                if i >= 2:
                    layers += [nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                               nn.ReLU(inplace=True)]
                layers.append(nn.MaxPool2d(2))
                cin = cout
            layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            self.features = nn.Sequential(*layers)
            self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(cin, k))
        elif config.arch == "resnet18":
            from torchvision.models import resnet18

            body = resnet18(weights=None, norm_layer=nn.BatchNorm2d)
            width = body.fc.in_features
            body.fc = nn.Identity()
            self.features = body
            self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, k))
        else:
            raise ValueError(f"arch must be 'compact' or 'resnet18', not {config.arch!r}")
        self.register_buffer("_mean", torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("_std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features((x - self._mean) / self._std))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def predict_proba(self, rgb: np.ndarray, boxes: np.ndarray, max_batch: int | None = None) -> np.ndarray:
        """``(N, 7)`` float32 softmax of the thumbnails of ``boxes`` in ``rgb`` (eval mode; one forward unless
        ``max_batch`` splits it)."""
        cfg = self.config
        x = extract_thumbnails(rgb, boxes, cfg.size, margin=cfg.margin, pad=cfg.pad, min_side=cfg.min_side,
                               as_tensor=True)
        if len(x) == 0:
            return np.zeros((0, len(self.classes)), dtype=np.float32)
        was_training = self.training
        self.eval()
        try:
            dev = self.device
            step = max_batch or len(x)
            probs = [F.softmax(self(x[i:i + step].to(dev)).float(), dim=1).cpu() for i in range(0, len(x), step)]
        finally:
            self.train(was_training)
        return torch.cat(probs).numpy().astype(np.float32)


def build_classifier(config: ClassifierConfig) -> ThumbnailClassifier:
    return ThumbnailClassifier(config)


# ------------------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------------------
def _training_nuclei(samples: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fov index, box, class index)`` of every non-ambiguous ground-truth nucleus."""
    col = {c: i for i, c in enumerate(CLASSIFIER_CLASSES)}
    fov, boxes, labels = [], [], []
    for f, s in enumerate(samples):
        for b, c in zip(np.asarray(s.boxes).reshape(-1, 4), s.classes, strict=True):
            c = str(c)
            if c == tx.AMBIGUOUS:
                continue
            if c not in col:
                raise ValueError(f"FOV {s.name}: nucleus class {c!r} is not one of {CLASSIFIER_CLASSES + (tx.AMBIGUOUS,)}")
            fov.append(f)
            boxes.append(b)
            labels.append(col[c])
    return (np.asarray(fov, dtype=np.int64), np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
            np.asarray(labels, dtype=np.int64))


def _key(cfg: ClassifierConfig, seed: int, fingerprint: str) -> str:
    blob = json.dumps([cfg.to_dict(), seed, fingerprint], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _jitter(boxes: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """Shift each box's centre and rescale each side by up to +-``amount`` of the side (4 draws per box)."""
    if amount <= 0 or not len(boxes):
        return boxes
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    d = rng.uniform(-amount, amount, size=(len(boxes), 4))
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 + d[:, 0] * w
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 + d[:, 1] * h
    w2, h2 = w * (1 + d[:, 2]) / 2, h * (1 + d[:, 3]) / 2
    return np.stack([cx - w2, cy - h2, cx + w2, cy + h2], axis=1)


def _batch(samples: Sequence, fov: np.ndarray, boxes: np.ndarray, cfg: ClassifierConfig,
           rng: np.random.Generator) -> torch.Tensor:
    """Augmented thumbnails ``(B, 3, size, size)`` float in [0, 1], in the order of ``fov``/``boxes``."""
    boxes = _jitter(boxes, rng, cfg.jitter)
    thumbs = np.empty((len(fov), cfg.size, cfg.size, 3), dtype=np.uint8)
    for f in np.unique(fov):
        idx = np.flatnonzero(fov == f)
        thumbs[idx] = extract_thumbnails(samples[int(f)].rgb, boxes[idx], cfg.size, margin=cfg.margin,
                                         pad=cfg.pad, min_side=cfg.min_side)
    out = np.empty_like(thumbs)
    for i in range(len(thumbs)):
        t = thumbs[i]
        if cfg.stain:
            t = stain_augment(t, rng)
        if cfg.rotate:
            flip, k = rng.random() < 0.5, int(rng.integers(0, 4))
            if flip:
                t = t[:, ::-1]
            t = np.rot90(t, k)
        out[i] = t
    x = np.ascontiguousarray(out.transpose(0, 3, 1, 2), dtype=np.float32)
    return torch.from_numpy(x * np.float32(1 / 255.0))


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def train_thumbnail_classifier(samples: Sequence, out_dir: str | Path, *, profile: str = "cpu",
                               config: ClassifierConfig | None = None, seed: int = 0, progress: bool = True,
                               device: str | None = None) -> tuple[ThumbnailClassifier, dict]:
    """Train (or reuse) a thumbnail classifier on the ground-truth nuclei of ``samples`` (FovSample list).

    Parameters
    ----------
    profile : 'smoke', 'cpu' or 'paper'
        Selects :data:`CLASSIFIER_PROFILES`; ``config`` overrides it.

    Returns
    -------
    model : ThumbnailClassifier (eval mode)
    info : dict
        ``seconds`` (training time of the run that produced the weights), ``seconds_per_update`` (median),
        ``n_train`` (non-ambiguous training nuclei), ``class_counts``, ``key``, ``reused`` (bool).

    Files in ``out_dir``: ``classifier.pt`` (config and weights) and ``classifier.json`` (config, key, seed,
    timing, class counts) and ``classifier_manifest.json`` (their sha256). They are reused when the key (config,
    seed and :func:`~.data.samples_fingerprint` of the training FOVs) matches and both files are unchanged.

    Raises
    ------
    ValueError
        No non-ambiguous nucleus in ``samples``, or a class outside the main classes.
    """
    cfg = config or classifier_config(profile)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    samples = list(samples)
    fov, boxes, labels = _training_nuclei(samples)
    if not len(labels):
        raise ValueError("no non-ambiguous nucleus in the training FOVs; cannot train a thumbnail classifier")
    counts = np.bincount(labels, minlength=len(CLASSIFIER_CLASSES))
    key = _key(cfg, seed, samples_fingerprint(samples))
    done = _read_json(out / "classifier.json")
    problem = verify_manifest(out, name=MANIFEST_NAME, expect={"key": key}, allow_extra=True)
    if done is not None and done.get("key") == key and problem is None:
        model = load_classifier(out, device=device)
        return model, {"seconds": done["seconds"], "seconds_per_update": done["seconds_per_update"],
                       "n_train": done["n_train"], "class_counts": done["class_counts"], "key": key,
                       "reused": True}

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    with torch_seeded(seed):  # the caller's torch random state is left as it was
        rng = np.random.default_rng(seed)
        model = build_classifier(cfg).to(device)
        model.train()
        # class-balanced: every present class equally likely, nuclei of a class uniformly
        p = 1.0 / counts[labels]
        p = p / p.sum()
        if cfg.optimizer == "adamw":
            opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay)
        else:
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', not {cfg.optimizer!r}")
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.iterations, 2),
                                                    pct_start=cfg.warmup)
        loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
        step_seconds, losses = [], []
        t_start = time.perf_counter()
        bar = tqdm(range(cfg.iterations), desc="thumbnail classifier", disable=not progress)
        for _ in bar:
            t0 = time.perf_counter()
            idx = rng.choice(len(labels), size=cfg.batch_size, replace=True, p=p)
            x = _batch(samples, fov[idx], boxes[idx], cfg, rng).to(device)
            y = torch.from_numpy(labels[idx]).to(device)
            loss = loss_fn(model(x), y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"thumbnail classifier: loss is {loss.item()}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.item()))
            step_seconds.append(time.perf_counter() - t0)
            bar.set_postfix(loss=f"{losses[-1]:.3f}")
        seconds = time.perf_counter() - t_start
        model.eval()
        with atomic_path(out / "classifier.pt") as tmp:
            torch.save({"config": cfg.to_dict(), "classes": list(CLASSIFIER_CLASSES),
                        "state_dict": model.state_dict()}, tmp)
        info = {"key": key, "config": cfg.to_dict(), "seed": seed, "device": device, "seconds": seconds,
                "seconds_per_update": float(np.median(step_seconds)) if step_seconds else float("nan"),
                "n_train": int(len(labels)), "n_train_fovs": len(samples),
                "class_counts": {c: int(n) for c, n in zip(CLASSIFIER_CLASSES, counts, strict=True)},
                "final_loss": float(np.mean(losses[-10:])) if losses else float("nan")}
        with atomic_path(out / "classifier.json") as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2))
        write_manifest(out, {"key": key}, name=MANIFEST_NAME, files=["classifier.pt", "classifier.json"])
        return model, {**{k: info[k] for k in ("seconds", "seconds_per_update", "n_train", "class_counts", "key")},
                       "reused": False}


def load_classifier(out_dir: str | Path, device: str | None = None) -> ThumbnailClassifier:
    """The classifier saved by :func:`train_thumbnail_classifier` in ``out_dir`` (eval mode)."""
    path = Path(out_dir) / "classifier.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained thumbnail classifier at {path}")
    blob = torch.load(path, map_location=device or "cpu", weights_only=False)
    cfg = ClassifierConfig(**json_fields(blob["config"]))
    if tuple(blob.get("classes", CLASSIFIER_CLASSES)) != CLASSIFIER_CLASSES:
        raise ValueError(f"{path}: classifier classes {blob.get('classes')} differ from {CLASSIFIER_CLASSES}")
    model = build_classifier(cfg)
    model.load_state_dict(blob["state_dict"])
    if device:
        model.to(device)
    return model.eval()


# ------------------------------------------------------------------------------------------------------------
# Inference
# ------------------------------------------------------------------------------------------------------------
def classify_detections(model: ThumbnailClassifier, rgb: np.ndarray, detections: Detections,
                        max_batch: int | None = None) -> Detections:
    """``detections`` with the classifier's class probabilities.

    Boxes, scores and mask probabilities are kept; ``probs`` is the classifier's softmax over the thumbnails of
    the boxes (one forward pass for the whole image unless ``max_batch`` splits it), ``classes`` the 7 main
    classes (:data:`CLASSIFIER_CLASSES`, the columns of a main-level NuCLS model). ``features`` (the detector's
    representation) is dropped, since it no longer produced the probabilities.
    """
    probs = model.predict_proba(rgb, detections.boxes, max_batch=max_batch)
    return Detections(detections.boxes.copy(), detections.scores.copy(), probs, model.classes,
                      None if detections.mask_probs is None else detections.mask_probs.copy(), None)
