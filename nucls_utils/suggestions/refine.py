"""Refined suggestions: a Mask R-CNN trained on the bootstrapped suggestions, used as a function approximator.

The paper trains a Mask R-CNN on random 128 x 128 crops of the noisy bootstrap (at most 30 nuclei a crop) and applies
it to every FOV; because the network cannot fit the bootstrap's idiosyncratic errors, its output is cleaner than its
training labels. Here the network is torchvision's :class:`~torchvision.models.detection.MaskRCNN` with a slim ResNet-18 FPN
backbone trained from scratch (no weights can be downloaded; batch norm left trainable), configured for
nucleus-sized objects and trained with SGD on a one-cycle schedule; its training length comes from the profile
(:data:`REFINER_PROFILES`). Images are never resized: the transform's size limits are set to each image's own size,
so inference works on a FOV of any size. Detections pass a class-agnostic NMS (torchvision's runs per class).

Reproducibility: torch's global generator is seeded at random in every process, and torchvision's detection heads
draw their training samples from it (``torch.randperm``), so the weight initialisation (:func:`build_refiner`) and
the training loop (:func:`train_refiner`) each run under :func:`torch.random.fork_rng` seeded from ``seed``: the
same seed gives the same weights in every process (for the same number of torch threads), and the caller's global
torch state is left alone. Crops are drawn from an explicit ``numpy.random.Generator``.

Suggestions without a class the model learns (``unlabeled``: the bootstrap of FOVs without tissue-region maps) give
nothing to train on; :func:`refiner_classes` then makes the model class-agnostic (one class, ``unlabeled``), a pure
detector whose suggestions carry no class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch

from ..io.dataset import Nucleus
from ..io.masks import rasterize_instances
from ..profiles import stage_settings
from ..progress import tqdm
from .heuristic import instances_to_nuclei

__all__ = ["SUGGESTION_CLASSES", "CLASS_AGNOSTIC", "RefinerConfig", "REFINER_PROFILES", "build_refiner",
           "refiner_classes", "sample_crop", "BalancedCrops", "train_refiner", "refine_fov"]

#: Classes the bootstrap can suggest, in label order (label = index + 1; 0 is background).
SUGGESTION_CLASSES: tuple[str, ...] = ("tumor", "fibroblast", "lymphocyte", "plasma_cell", "ductal_epithelium")
#: The single class of a class-agnostic refiner (a nucleus detector whose suggestions carry no class).
CLASS_AGNOSTIC: tuple[str, ...] = ("unlabeled",)
#: Pixels of a nucleus a training crop must hold for it to be a target.
_MIN_PIXELS = 30


@dataclass(frozen=True)
class RefinerConfig:
    """Training schedule of the refinement model (SGD with momentum and a one-cycle learning rate)."""

    iterations: int
    batch_size: int = 4
    crop: int = 128
    max_nuclei: int = 30
    lr: float = 0.02  # peak of the one-cycle schedule
    warmup: float = 0.15  # share of the iterations spent ramping the learning rate up
    # detections kept as suggestions. A fitted setting: with the pretrained start, on the validation fold's FOVs
    # (fold 1) against the exact truth, 0.5 / 0.35 / 0.25 / 0.15 gave detection F1 48.6 / 54.8 / 57.5 / 57.0 and
    # class MCC 76.3 / 64.6 / 59.7 / 55.7 (the paper's refined MCC is 52.7); 0.3 trades the two
    score_threshold: float = 0.3
    nms_iou: float = 0.3  # class-agnostic NMS between detections of different classes
    channels: int = 64  # width of the FPN and of the box/mask heads
    # the ResNet-18's initial weights: None (random), 'imagenet', or a synthetic-pretrained trunk 'pretrained:<key>'
    # (:mod:`nucls_utils.model.pretrain`); part of the cache key
    weights: str | None = None
    # crops centred near a nucleus drawn with weight (its class's count) ** -class_balance (0: crops at uniformly
    # random positions, as the reference code; 1: every class equally often); for classes the bootstrap rarely
    # suggests (the code's fibroblast rule keeps 3 % fibroblasts). The smoke and cpu profiles use 1 (README)
    class_balance: float = 0.0

    def with_(self, **changes) -> RefinerConfig:
        return replace(self, **changes)


#: Refiner of each compute profile (settings in :data:`nucls_utils.profiles.STAGES`).
REFINER_PROFILES: dict[str, RefinerConfig] = {p: RefinerConfig(**kw) for p, kw in stage_settings("refiner").items()}


def refiner_classes(suggestions: Sequence[Sequence[Nucleus]]) -> tuple[str, ...]:
    """The classes a refiner learns from these (bootstrap) suggestions, in label order (label = index + 1).

    :data:`SUGGESTION_CLASSES` when any suggestion has one of them; :data:`CLASS_AGNOSTIC` when every suggestion is
    of another class (``unlabeled``: FOVs without tissue-region maps), so that the model still learns to detect.
    """
    if any(n.raw_class in SUGGESTION_CLASSES for sug in suggestions for n in sug):
        return SUGGESTION_CLASSES
    return CLASS_AGNOSTIC


def build_refiner(num_classes: int = len(SUGGESTION_CLASSES) + 1, channels: int = 64, seed: int | None = None,
                  weights: str | None = None):
    """A slim Mask R-CNN for nuclei at 0.2 microns per pixel.

    ResNet-18 (trainable batch norm: the frozen batch norm of torchvision's detection backbones is meant for
    pretrained weights and leaves a randomly initialised network unnormalised) up to ``layer3``, an FPN of
    ``channels`` channels on strides 4-16 plus a pooled level, anchors 12-96 px, box and mask heads of the same
    width. Images are never resized (see :func:`refine_fov`).

    ``weights``: the ResNet-18's start (None: random; ``'imagenet'``; ``'pretrained:<key>'``: a synthetic-pretrained
    trunk, :mod:`nucls_utils.model.pretrain`); the FPN and heads always start at random, batch norm stays trainable.

    ``num_classes`` counts the background. With ``seed`` the initial weights are a function of it (drawn under a
    forked torch RNG, leaving the global one untouched); without it they come from torch's global generator, which
    torch seeds at random in every process.
    """
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_refiner(num_classes, channels, weights=weights)
    from ..model.architecture import build_refiner_network

    return build_refiner_network(num_classes, channels, weights)


def _class_label(name: str, classes: Sequence[str] = SUGGESTION_CLASSES) -> int:
    if tuple(classes) == CLASS_AGNOSTIC:
        return 1
    return classes.index(name) + 1 if name in classes else 0


def sample_crop(rgb: np.ndarray, instances: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                config: RefinerConfig, min_pixels: int = _MIN_PIXELS, origin: tuple[int, int] | None = None
                ) -> tuple[torch.Tensor, dict] | None:
    """A random training crop with its targets, or ``None`` when the crop holds no usable nucleus.

    ``origin``: the crop's top-left corner ``(y0, x0)``; ``None`` draws it uniformly from ``rng``.

    Parameters
    ----------
    rgb : (H, W, 3) uint8
    instances : (H, W) int
        Bootstrap instance ids (0 = background).
    labels : (K + 1,) int
        Class label of each instance id (index 0 unused).
    """
    h, w = instances.shape
    c = config.crop
    if origin is None:
        y0 = int(rng.integers(0, max(h - c, 0) + 1))
        x0 = int(rng.integers(0, max(w - c, 0) + 1))
    else:
        y0, x0 = int(origin[0]), int(origin[1])
    inst = instances[y0:y0 + c, x0:x0 + c]
    ids, counts = np.unique(inst[inst > 0], return_counts=True)
    ids = ids[(counts >= min_pixels) & (labels[ids] > 0)]
    if ids.size == 0:
        return None
    if ids.size > config.max_nuclei:
        ids = rng.choice(ids, size=config.max_nuclei, replace=False)
    masks = np.stack([inst == i for i in ids])
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m)
        boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
    img = rgb[y0:y0 + c, x0:x0 + c]
    if rng.random() < 0.5:  # horizontal flip
        img, masks = img[:, ::-1], masks[:, :, ::-1]
        boxes = [(img.shape[1] - b[2], b[1], img.shape[1] - b[0], b[3]) for b in boxes]
    tensor = torch.from_numpy(np.array(img, dtype=np.float32)).permute(2, 0, 1) / 255.0
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels[ids], dtype=torch.int64),
              "masks": torch.from_numpy(np.ascontiguousarray(masks).astype(np.uint8))}
    return tensor, target


class BalancedCrops:
    """Crop origins near nuclei drawn with weight ``(count of the nucleus's class) ** -power``.

    Parameters
    ----------
    prepared : sequence of ``(rgb, instances, labels)``
        Training FOVs as :func:`train_refiner` prepares them (``labels[i]``: class label of instance ``i``, 0 =
        not a target).
    crop : int
        Crop side in pixels.
    power : float
        0: every target nucleus equally likely; 1: every class equally likely.
    min_pixels : int
        Nuclei with fewer pixels are not drawn (they are not targets of a crop either).
    """

    def __init__(self, prepared, crop: int, power: float, min_pixels: int = _MIN_PIXELS):
        fov, cy, cx, lab = [], [], [], []
        for k, (_, inst, labels) in enumerate(prepared):
            flat = inst.ravel()
            n = np.bincount(flat, minlength=len(labels))
            rows, cols = np.indices(inst.shape)
            sy = np.bincount(flat, weights=rows.ravel(), minlength=len(labels))
            sx = np.bincount(flat, weights=cols.ravel(), minlength=len(labels))
            ids = np.flatnonzero((n >= min_pixels) & (labels > 0))  # labels[0] = 0: background never drawn
            fov.append(np.full(ids.size, k))
            cy.append(sy[ids] / n[ids])
            cx.append(sx[ids] / n[ids])
            lab.append(labels[ids])
        self.fov, self.cy, self.cx = np.concatenate(fov), np.concatenate(cy), np.concatenate(cx)
        self.labels = np.concatenate(lab)
        if self.labels.size == 0:
            raise ValueError("no target nucleus to centre a crop on")
        counts = np.bincount(self.labels)
        w = counts[self.labels].astype(float) ** -float(power)
        self.p = w / w.sum()
        self.shapes = [inst.shape for _, inst, _ in prepared]
        self.crop = int(crop)

    def draw(self, rng: np.random.Generator) -> tuple[int, tuple[int, int]]:
        """``(FOV index, (y0, x0))`` of a crop that holds the drawn nucleus's centre, inside the FOV."""
        j = int(rng.choice(self.p.size, p=self.p))
        h, w = self.shapes[self.fov[j]]
        c = self.crop
        y0 = int(np.clip(int(self.cy[j]) - int(rng.integers(0, c)), 0, max(h - c, 0)))
        x0 = int(np.clip(int(self.cx[j]) - int(rng.integers(0, c)), 0, max(w - c, 0)))
        return int(self.fov[j]), (y0, x0)


def train_refiner(model, images: Sequence[np.ndarray], suggestions: Sequence[Sequence[Nucleus]],
                  config: RefinerConfig, seed: int = 0, progress: bool = True,
                  classes: Sequence[str] = SUGGESTION_CLASSES, max_tries: int = 200) -> pd.DataFrame:
    """Train ``model`` on random crops of FOVs labelled with their bootstrap suggestions.

    Parameters
    ----------
    model : torchvision MaskRCNN
        With ``len(classes) + 1`` classes (see :func:`build_refiner`).
    images : sequence of (H, W, 3) uint8
    suggestions : sequence of sequence of Nucleus
        The bootstrap of each image; a nucleus whose class is not in ``classes`` is not a training target (with
        :data:`CLASS_AGNOSTIC`, every nucleus is).
    config : RefinerConfig
    seed : int
        Crops come from ``numpy.random.default_rng(seed)``; torchvision's proposal sampling from a torch generator
        seeded with ``seed`` inside :func:`torch.random.fork_rng` (the caller's global torch state is untouched).
    classes : sequence of str
        Class of each label (label = index + 1).
    max_tries : int
        Random crops tried per batch element (``max_tries * batch_size`` per batch) before giving up: a crop holds
        no target when it falls where the bootstrap found no nucleus of a trainable class.

    Returns
    -------
    pandas.DataFrame
        The loss history, one row per iteration: ``iteration``, the learning rate used, ``loss`` and each term.

    Raises
    ------
    ValueError
        When no FOV has a suggestion of a trainable class.
    RuntimeError
        When ``max_tries * batch_size`` crops do not fill a batch.
    """
    rng = np.random.default_rng(seed)
    classes = tuple(classes)
    prepared = []
    for rgb, sug in zip(images, suggestions, strict=True):
        labels = np.array([0] + [_class_label(n.raw_class, classes) for n in sug], dtype=np.int64)
        if not (labels > 0).any():
            continue
        inst = rasterize_instances(sug, rgb.shape[:2])
        # a FOV whose trainable nuclei are all too small (or hidden) could never give a crop: leave it out
        if not ((np.bincount(inst.ravel(), minlength=len(labels)) >= _MIN_PIXELS) & (labels > 0)).any():
            continue
        prepared.append((rgb, inst, labels))
    if not prepared:
        found = sorted({n.raw_class for sug in suggestions for n in sug})
        raise ValueError(f"no FOV has a bootstrap suggestion to train on: the model learns {', '.join(classes)}; "
                         f"the {sum(map(len, suggestions))} suggestions are of class(es) {found or 'none'}")
    balanced = BalancedCrops(prepared, config.crop, config.class_balance) if config.class_balance else None
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(config.iterations, 1),
                                                pct_start=config.warmup)
    history = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for it in tqdm(range(config.iterations), desc="refinement model", disable=not progress):
            batch, tries = [], 0
            while len(batch) < config.batch_size:
                if tries >= max_tries * config.batch_size:
                    raise RuntimeError(
                        f"refinement model, iteration {it + 1}: {tries} random {config.crop} x {config.crop} px crops "
                        f"gave only {len(batch)} of {config.batch_size} with a bootstrap nucleus of a trainable class "
                        f"({', '.join(classes)}); the {len(prepared)} training FOVs have too few such nuclei")
                tries += 1
                if balanced is None:
                    rgb, inst, labels = prepared[int(rng.integers(len(prepared)))]
                    s = sample_crop(rgb, inst, labels, rng, config)
                else:
                    k, origin = balanced.draw(rng)
                    rgb, inst, labels = prepared[k]
                    s = sample_crop(rgb, inst, labels, rng, config, origin=origin)
                if s is not None:
                    batch.append(s)
            model.transform.min_size = (config.crop,)
            losses = model([b[0] for b in batch], [b[1] for b in batch])
            total = sum(losses.values())
            opt.zero_grad()
            total.backward()
            torch.nn.utils.clip_grad_norm_(params, 10.0)
            lr = opt.param_groups[0]["lr"]
            opt.step()
            sched.step()
            history.append({"iteration": it + 1, "lr": lr, "loss": total.item(),
                            **{k: v.item() for k, v in losses.items()}})
    return pd.DataFrame(history)


@torch.no_grad()
def refine_fov(model, rgb: np.ndarray, score_threshold: float = 0.5, nms_iou: float = 0.3,
               min_visible: float = 0.5, classes: Sequence[str] = SUGGESTION_CLASSES
               ) -> tuple[list[Nucleus], list[float]]:
    """Refined suggestions of one FOV: detections above ``score_threshold`` as polylines, with their confidences.

    ``classes`` names the model's labels (label = index + 1), as it was trained (see :func:`train_refiner`).

    torchvision's NMS runs per class, so one nucleus can come out twice with two classes; a class-agnostic NMS at
    ``nms_iou`` keeps the more confident. Overlapping masks are resolved in favour of the more confident detection,
    and a detection left with less than ``min_visible`` of its mask is dropped rather than kept as a fragment.
    """
    from ..model.architecture import class_agnostic_nms

    model.eval()
    h, w = rgb.shape[:2]
    model.transform.min_size = (min(h, w),)
    model.transform.max_size = max(h, w)
    x = torch.from_numpy(np.array(rgb[..., :3], dtype=np.float32)).permute(2, 0, 1) / 255.0
    heads = getattr(model, "roi_heads", None)
    if heads is not None:  # skip pasting the masks of detections that will be dropped anyway
        saved, heads.score_thresh = heads.score_thresh, score_threshold
    try:
        out = model([x])[0]
    finally:
        if heads is not None:
            heads.score_thresh = saved
    keep = torch.nonzero(out["scores"] >= score_threshold).flatten()
    keep = keep[class_agnostic_nms(out["boxes"][keep], out["scores"][keep], nms_iou)]
    scores = out["scores"][keep].numpy()
    labels = out["labels"][keep].numpy()
    masks = (out["masks"][keep, 0] > 0.5).numpy()
    instances = np.zeros((h, w), dtype=np.int32)
    for k in np.argsort(scores, kind="stable"):  # most confident painted last
        instances[masks[k]] = k + 1
    visible = np.bincount(instances.ravel(), minlength=len(scores) + 1)[1:]
    full = masks.sum(axis=(1, 2))
    names = {k + 1: classes[labels[k] - 1] for k in range(len(scores))
             if visible[k] > 0 and visible[k] >= min_visible * full[k]}
    nuclei, kept = instances_to_nuclei(instances, names, return_labels=True)
    return nuclei, [float(scores[lab - 1]) for lab in kept]
