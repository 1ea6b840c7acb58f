"""A ResNet-18 trunk pretrained on a synthetic cohort that shares nothing with the study: the cpu models' start.

The paper's models start from ImageNet weights. Offline (and on 2 cores) that start is not available and a
detector trained from random weights for a few hundred updates learns the argmax, not the features (README). This
module trains the trunk once, with dense targets the phantom gives for free, and caches it:

* **Cohort**: :func:`nucls_utils.phantom.generate_cohort` with ``namespace="pretrain"``: its own random streams
  and its own hospitals (``Q0``, ``Q1``, ...; the study's are ``Y0``, ``Y1``, ...) and a fixed seed
  (:data:`PRETRAIN_COHORT_SEED`), so no slide, FOV or test fold of any study cohort is ever seen; its annotations
  are the exact true outlines.
* **Targets** (per pixel, at a quarter of the input resolution): the nucleus's main class (7 classes, background;
  AMBIGUOUS nuclei ignored), with class-balanced loss weights so that rare classes (fibroblasts, plasma cells)
  shape the features as much as tumour nuclei; and the nucleus boundary (a binary map, 2 px wide), which separates
  touching nuclei as a detector must. Both come from the cohort's mask PNGs.
* **Network**: torchvision's ResNet-18 up to ``layer3`` with a light top-down decoder (``layer3`` -> ``layer2``
  -> ``layer1``, 64 channels) and two 1 x 1 heads. Only the trunk is kept (``layer4`` and ``fc`` keep their
  initial weights, so the file loads into a full ``resnet18`` with ``strict=True``).
* **Input**: random crops, random scale 1-2x (the NuCLS cpu model sees its input at 2x, the refiner at 1x),
  flips and 90 degree turns, the stain augmentation of training (:func:`.data.stain_augment`), ImageNet
  mean/std normalisation as torchvision's detection transform applies.

* **Detector** (cpu and smoke profiles, ``PretrainConfig.detector_iterations``): the profile's NuCLS model, trained
  from that trunk on the same cohort (exact outlines, main classes) with the profile's schedule and no detection
  freeze. Study models whose config sets ``detector_start`` copy its detection layers (trunk, neck, RPN, box head
  and regression, mask branch); with ``classifier_start`` the final model (config 3, main classes: the detector's
  own architecture) copies its classifier too and fine-tunes it on the study's labels, while configs 1, 2 and 6
  classify from the copied box head through a fresh ``cls_score``. Without the detector, 300 cpu updates leave the
  RPN and box regression undertrained; without its classifier, 360 classification updates leave config 3's own
  classification layers behind config 2's (README).

Both are cached under ``data/pretrained/<key>/`` (``backbone.pt``, ``detector.pt``, ``manifest.json``), keyed by
the generator version, the cohort's profile and seed and the :class:`PretrainConfig` (with the detector's model
and schedule); the same key is reused, another is rebuilt. :func:`weights_token` names it in model configs
(``"pretrained:<key>"``), so no machine path enters a cache key or the supplement.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from torch import nn

from .. import taxonomy as tx
from ..profiles import stage_settings
from ..progress import tqdm

__all__ = ["PretrainConfig", "PRETRAIN_PROFILES", "PRETRAIN_COHORT_SEED", "PRETRAIN_VERSION", "TOKEN_PREFIX",
           "pretrain_key", "pretrained_dir", "weights_token", "weights_path", "detector_path", "pretrain_detector",
           "ensure_pretrained", "pretrain_trunk", "dense_targets", "TrunkSegmenter", "pretraining_info",
           "resolve_start"]

#: Bump when the pretraining's code changes what it produces.
PRETRAIN_VERSION = "2"
#: The pretraining cohort's seed: fixed, so one trunk serves every study seed (its streams differ from a study
#: cohort's of the same seed anyway: namespace ``pretrain``).
PRETRAIN_COHORT_SEED = 1729
TOKEN_PREFIX = "pretrained:"
_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
_CLASSES = tuple(c for c in tx.MAIN_CLASSES if c != tx.AMBIGUOUS)


@dataclass(frozen=True)
class PretrainConfig:
    """Pretraining schedule. ``iterations`` counts AdamW updates of ``batch_size`` crops of ``crop`` px."""

    cohort_profile: str = "cpu"
    iterations: int = 600
    batch_size: int = 8
    crop: int = 128
    scale_range: tuple[float, float] = (1.0, 2.0)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    boundary_weight: float = 1.0
    class_balance: float = 0.5  # class loss weights ~ (pixel share) ** -class_balance, background included
    # a detector (the NuCLS model of profile ``detector_model``, main classes) trained on the same cohort from the
    # trunk for ``detector_iterations`` updates of that profile's schedule; 0: none. Models whose config sets
    # ``detector_start`` copy its detection layers (and, with ``classifier_start``, its classifier)
    detector_iterations: int = 0
    detector_model: str = ""
    # peak learning rate of the detector's one-cycle schedule (None: that profile's study schedule's); the study
    # models then fine-tune from it at their own, lower rate
    detector_lr: float | None = None

    def with_(self, **changes) -> PretrainConfig:
        return replace(self, **changes)


#: Pretraining schedules of each compute profile (settings in :data:`nucls_utils.profiles.STAGES`; the paper profile
#: starts from ImageNet when it can load it).
PRETRAIN_PROFILES: dict[str, PretrainConfig] = {p: PretrainConfig(**kw) for p, kw in stage_settings("pretrain").items()}


def pretrain_key(config: PretrainConfig, seed: int = PRETRAIN_COHORT_SEED) -> str:
    from ..phantom import GENERATOR_VERSION

    parts = {"generator_version": GENERATOR_VERSION, "pretrain_version": PRETRAIN_VERSION, "seed": int(seed),
             "config": asdict(config)}
    if config.detector_iterations:
        model_cfg, schedule = _detector_configs(config, "backbone.pt")
        parts["detector"] = {"model": asdict(model_cfg), "schedule": asdict(schedule)}
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pretrained_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where pretrained trunks are cached (``data/pretrained`` of the repository unless ``root`` is given or
    ``NUCLS_PRETRAINED_DIR`` is set)."""
    if root is not None:
        return Path(root)
    env = os.environ.get("NUCLS_PRETRAINED_DIR")
    if env:
        return Path(env)
    from ..config import REPO_ROOT

    return REPO_ROOT / "data" / "pretrained"


def weights_token(key: str) -> str:
    """How a model config names a cached pretrained trunk (no machine path)."""
    return f"{TOKEN_PREFIX}{key}"


def weights_path(token: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The ``backbone.pt`` of a ``pretrained:<key>`` token; a clear error when it was never built here."""
    if not token.startswith(TOKEN_PREFIX):
        raise ValueError(f"{token!r} is not a pretrained-trunk token ({TOKEN_PREFIX}<key>)")
    path = pretrained_dir(root) / token[len(TOKEN_PREFIX):] / "backbone.pt"
    if not path.is_file():
        raise FileNotFoundError(f"the pretrained trunk {token} is not in {path.parent.name}/ of the cache: build it "
                                "with nucls_utils.model.pretrain.ensure_pretrained (run_all.sh does)")
    return path


def detector_path(token: str, root: str | os.PathLike[str] | None = None) -> Path:
    """The ``detector.pt`` pretrained with the trunk of a ``pretrained:<key>`` token; a clear error when that
    pretraining has no detector."""
    path = weights_path(token, root).parent / "detector.pt"
    if not path.is_file():
        raise FileNotFoundError(f"the pretraining {token} has no detector (its PretrainConfig sets no "
                                "detector_iterations); build the model without detector_start")
    return path


def pretraining_info(token: str, root: str | os.PathLike[str] | None = None) -> dict:
    """The manifest of a cached trunk (key, config, cohort, seconds, final losses)."""
    return json.loads((weights_path(token, root).parent / "manifest.json").read_text())


# ---------------------------------------------------------------------------------------------------------------
# Targets and network
# ---------------------------------------------------------------------------------------------------------------

def dense_targets(codes: np.ndarray, instances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel targets of one FOV from its decoded mask (:meth:`~nucls_utils.io.FovRecord.read_mask`).

    Returns
    -------
    classes : (H, W) int64
        0 = background, ``k`` = main class ``_CLASSES[k - 1]``, -1 = ignored (AMBIGUOUS nuclei, FOV margin codes).
    boundary : (H, W) float32
        1 on the 2 px wide boundary of each nucleus (one pixel inside, one outside; between touching nuclei
        too), else 0.
    """
    codes = np.asarray(codes)
    instances = np.asarray(instances)
    lut = np.full(256, -1, np.int64)
    lut[0] = 0
    lut[tx.FOV_GT_CODE] = 0
    for name, code in tx.GT_CODES.items():
        if 0 < code < 256:
            main = tx.to_main(name)
            lut[code] = _CLASSES.index(main) + 1 if main in _CLASSES else -1
    classes = lut[np.clip(codes, 0, 255)]
    classes[(instances == 0) & (classes > 0)] = 0
    # a pixel whose 3 x 3 neighbourhood holds two labels: the ring just inside and just outside each nucleus
    boundary = (ndi.grey_dilation(instances, size=3) != ndi.grey_erosion(instances, size=3)).astype(np.float32)
    return classes, boundary


class TrunkSegmenter(nn.Module):
    """ResNet-18 (to ``layer3``) + a top-down decoder at stride 4 + class and boundary heads."""

    def __init__(self, n_classes: int = len(_CLASSES) + 1, width: int = 64):
        super().__init__()
        from torchvision.models import resnet18

        self.body = resnet18(weights=None)
        self.lat3 = nn.Conv2d(256, width, 1)
        self.lat2 = nn.Conv2d(128, width, 1)
        self.lat1 = nn.Conv2d(64, width, 1)
        self.smooth = nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True))
        self.classes = nn.Conv2d(width, n_classes, 1)
        self.boundary = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        c1 = b.layer1(x)
        c2 = b.layer2(c1)
        c3 = b.layer3(c2)
        p = self.lat3(c3)
        p = F.interpolate(p, size=c2.shape[-2:], mode="nearest") + self.lat2(c2)
        p = F.interpolate(p, size=c1.shape[-2:], mode="nearest") + self.lat1(c1)
        p = self.smooth(p)
        return self.classes(p), self.boundary(p)[:, 0]


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------

class _PretrainData:
    """Every FOV of the pretraining cohort in memory (RGB + targets) and a seeded batch sampler."""

    def __init__(self, records, config: PretrainConfig):
        self.config = config
        self.images, self.classes, self.boundaries = [], [], []
        for rec in records:
            rgb = rec.read_rgb()
            codes, inst = rec.read_mask()
            cls, bnd = dense_targets(codes, inst)
            self.images.append(rgb)
            self.classes.append(cls)
            self.boundaries.append(bnd)
        counts = np.bincount(np.concatenate([c[c >= 0].ravel() for c in self.classes]),
                             minlength=len(_CLASSES) + 1).astype(float)
        share = np.maximum(counts / counts.sum(), 1e-4)
        w = share ** -config.class_balance
        self.class_weights = torch.tensor(w / (w * share).sum(), dtype=torch.float32)
        self.pixel_counts = counts

    def batch(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from .data import stain_augment

        cfg = self.config
        scale = float(rng.uniform(*cfg.scale_range))
        side = max(32, int(round(cfg.crop / scale)))
        xs, ys, bs = [], [], []
        for _ in range(cfg.batch_size):
            i = int(rng.integers(len(self.images)))
            img, cls, bnd = self.images[i], self.classes[i], self.boundaries[i]
            h, w = cls.shape
            y0 = int(rng.integers(0, max(h - side, 0) + 1))
            x0 = int(rng.integers(0, max(w - side, 0) + 1))
            sl = (slice(y0, y0 + side), slice(x0, x0 + side))
            im, c, b = stain_augment(img[sl], rng), cls[sl], bnd[sl]
            k = int(rng.integers(4))
            flip = bool(rng.random() < 0.5)
            im, c, b = (np.rot90(a, k) for a in (im, c, b))
            if flip:
                im, c, b = (a[:, ::-1] for a in (im, c, b))
            pad = ((0, side - c.shape[0]), (0, side - c.shape[1]))
            xs.append(np.pad(im, (*pad, (0, 0)), constant_values=255))
            ys.append(np.pad(c, pad, constant_values=-1))
            bs.append(np.pad(b, pad))
        x = torch.from_numpy(np.ascontiguousarray(np.stack(xs))).permute(0, 3, 1, 2).float().div_(255.0)
        x = F.interpolate(x, size=(cfg.crop, cfg.crop), mode="bilinear", align_corners=False)
        x = (x - _MEAN) / _STD
        y = torch.from_numpy(np.ascontiguousarray(np.stack(ys)))[:, None].float()
        b = torch.from_numpy(np.ascontiguousarray(np.stack(bs)))[:, None]
        out = cfg.crop // 4
        y = F.interpolate(y, size=(out, out), mode="nearest")[:, 0].long()
        b = (F.adaptive_max_pool2d(b, (out, out))[:, 0] > 0).float()
        return x, y, b


# ---------------------------------------------------------------------------------------------------------------
# Training and the cache
# ---------------------------------------------------------------------------------------------------------------

def pretrain_trunk(records, config: PretrainConfig, seed: int = 0, *, progress: bool = True,
                   desc: str = "pretraining the trunk") -> tuple[dict, dict]:
    """Train :class:`TrunkSegmenter` on ``records`` (FOVs with exact masks); return ``(resnet18 state, info)``.

    Deterministic for a seed on one machine: initial weights from a forked torch RNG, batches from
    ``numpy.random.default_rng(seed)``.
    """
    t0 = time.perf_counter()
    data = _PretrainData(records, config)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = TrunkSegmenter()
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=max(config.iterations, 1),
                                                pct_start=0.15)
    cw = data.class_weights
    history = []
    net.train()
    for _ in tqdm(range(config.iterations), desc=desc, disable=not progress):
        x, y, b = data.batch(rng)
        logits, bnd = net(x)
        loss_c = F.cross_entropy(logits, y, weight=cw, ignore_index=-1)
        pos = b.mean().clamp(1e-3, 0.5)
        loss_b = F.binary_cross_entropy_with_logits(bnd, b, pos_weight=(1 - pos) / pos)
        loss = loss_c + config.boundary_weight * loss_b
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history.append((loss_c.item(), loss_b.item()))
    tail = np.asarray(history[-50:] or [(np.nan, np.nan)])
    info = {"iterations": config.iterations, "seconds": round(time.perf_counter() - t0, 1),
            "final_class_loss": round(float(tail[:, 0].mean()), 4),
            "final_boundary_loss": round(float(tail[:, 1].mean()), 4),
            "first_class_loss": round(float(history[0][0]), 4) if history else None,
            "n_fovs": len(records), "pixel_share": {c: round(float(v), 5) for c, v in zip(
                ("background", *_CLASSES), data.pixel_counts / data.pixel_counts.sum(), strict=True)}}
    state = {k: v.detach().clone() for k, v in net.body.state_dict().items()}
    return state, info


def _detector_configs(config: PretrainConfig, trunk_file: str | os.PathLike[str]):
    """``(model config, schedule)`` of the pretrained detector: the ``detector_model`` profile's final model from the
    trunk in ``trunk_file``, trained without a detection freeze for ``detector_iterations`` updates."""
    from .train import MODEL_PROFILES, TRAIN_PROFILES

    if config.detector_model not in MODEL_PROFILES:
        raise ValueError(f"PretrainConfig.detector_model must be one of {', '.join(MODEL_PROFILES)}, not "
                         f"{config.detector_model!r}")
    model_cfg = MODEL_PROFILES[config.detector_model].with_(weights=str(trunk_file), detector_start=False,
                                                           classifier_start=False)
    n = config.detector_iterations
    # unweighted classification loss (exact labels); the study's fine-tuning of a passed-on classifier re-weights
    schedule = TRAIN_PROFILES[config.detector_model].with_(iterations=n, freeze_detection_at=None, finetune_lr=None,
                                                           eval_every=0, checkpoint_every=n, class_balance=0.0)
    if config.detector_lr is not None:
        schedule = schedule.with_(lr=config.detector_lr)
    return model_cfg, schedule


def pretrain_detector(records, config: PretrainConfig, trunk_file: str | os.PathLike[str], work_dir: Path,
                      seed: int = 0, *, progress: bool = True) -> tuple[dict, dict]:
    """Train the detector of ``config`` on ``records`` (exact outlines and main classes) from the trunk in
    ``trunk_file``; return ``(its state dict, info)``. ``work_dir`` holds the training files while it trains."""
    from .data import TrainingStream, fov_sampling_weights, load_fov_samples, macenko_normalise, model_classes
    from .train import train_model

    model_cfg, schedule = _detector_configs(config, trunk_file)
    samples = load_fov_samples(records, normalise=macenko_normalise, progress=False)
    stream = TrainingStream(samples, fov_sampling_weights(samples, level=model_cfg.level),
                            batch_size=schedule.batch_size, crop=schedule.crop, classes=model_classes(model_cfg.level),
                            seed=seed, augment=schedule.augment)
    t0 = time.perf_counter()
    model, history = train_model(model_cfg, schedule, stream, work_dir, seed=seed, progress=progress,
                                 desc="pretraining the detector", say=None)
    tail = history.tail(50)
    info = {"iterations": schedule.iterations, "seconds": round(time.perf_counter() - t0, 1),
            "final_losses": {c: round(float(tail[c].mean()), 4) for c in history.columns if c.startswith("loss")}}
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, info


def ensure_pretrained(config: PretrainConfig | str = "cpu", *, root: str | os.PathLike[str] | None = None,
                      seed: int = PRETRAIN_COHORT_SEED, progress: bool = True, say=print) -> str:
    """Build (or reuse) the pretrained trunk of ``config`` (a :class:`PretrainConfig` or a profile name) and return
    its :func:`weights_token`. The cohort and the trunk are cached under :func:`pretrained_dir`."""
    from ..io.atomic import atomic_dir
    from ..io.dataset import read_dataset
    from ..io.manifest import verify_manifest, write_manifest
    from ..phantom import GENERATOR_VERSION
    from ..phantom.cohort import ensure_cohort

    if isinstance(config, str):
        if config not in PRETRAIN_PROFILES:
            raise ValueError(f"unknown profile {config!r}; choose one of {', '.join(PRETRAIN_PROFILES)}")
        config = PRETRAIN_PROFILES[config]
    key = pretrain_key(config, seed)
    base = pretrained_dir(root)
    out = base / key
    expect = {"artefact": "pretrained-trunk", "key": key}
    if verify_manifest(out, expect=expect) is None:
        return weights_token(key)
    base.mkdir(parents=True, exist_ok=True)
    cohort_dir = base / f"cohort-{config.cohort_profile}-s{seed}"
    ensure_cohort(cohort_dir, config.cohort_profile, seed, progress=progress, say=say, namespace="pretrain")
    records = read_dataset(cohort_dir)
    state, info = pretrain_trunk(records, config, seed=seed, progress=progress)
    with atomic_dir(out, overwrite=True) as tmp:
        torch.save(state, tmp / "backbone.pt")
        if config.detector_iterations:
            work = tmp / "detector_training"
            det_state, info["detector"] = pretrain_detector(records, config, tmp / "backbone.pt", work, seed=seed,
                                                            progress=progress)
            torch.save(det_state, tmp / "detector.pt")
            shutil.rmtree(work)
        write_manifest(tmp, {**expect, "generator_version": GENERATOR_VERSION, "pretrain_version": PRETRAIN_VERSION,
                             "cohort": {"profile": config.cohort_profile, "seed": int(seed),
                                        "namespace": "pretrain",
                                        "hospitals": sorted({r.hospital for r in records})},
                             "config": asdict(config), **info})
    if say is not None:
        say(f"pretrained trunk {key}: {info['iterations']} updates in {info['seconds']:.0f} s on {len(records)} "
            f"FOVs of the pretraining cohort (class loss {info['first_class_loss']} -> {info['final_class_loss']})")
        if "detector" in info:
            say(f"pretrained detector: {info['detector']['iterations']} updates in "
                f"{info['detector']['seconds']:.0f} s")
    return weights_token(key)


def resolve_start(profile: str, requested: str | None = "", *, progress: bool = True, say=print) -> str | None:
    """The backbone start of a model of ``profile``: what a notebook passes as ``ModelConfig.weights``.

    ``requested``: ``""`` (the profile's default), ``"imagenet"``, ``"pretrained"``, ``"none"`` or a weights path.
    Default: the paper profile starts from ImageNet when torchvision can load the weights and from the synthetic
    pretrained trunk otherwise; the smoke and cpu profiles start from the pretrained trunk (reproducible offline).
    """
    from .architecture import _load_imagenet_resnet18

    req = (requested or "").strip()
    if req.lower() == "none":
        return None
    if req == "" and profile == "paper":
        req = "imagenet" if _load_imagenet_resnet18(warn=False) is not None else "pretrained"
    if req in ("", "pretrained"):
        return ensure_pretrained(profile, progress=progress, say=say)
    return req


def main(argv=None) -> int:
    """``python -m nucls_utils.model.pretrain --profile cpu``: build or reuse the profile's trunk (run_all.sh runs
    it before the notebooks); prints the start the models will use and how long it took."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nucls_utils.model.pretrain", description=main.__doc__)
    parser.add_argument("--profile", default="cpu", choices=sorted(PRETRAIN_PROFILES))
    parser.add_argument("--weights", default="", help="as the notebooks' backbone_weights parameter")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    start = resolve_start(args.profile, args.weights)
    took = time.perf_counter() - t0
    if start is None or not start.startswith(TOKEN_PREFIX):
        print(f"[pretrain] backbone start: {start or 'random weights'} (no synthetic pretraining needed)")
    else:
        info = pretraining_info(start)
        det = info.get("detector")
        det_txt = (f"; detector {det['iterations']} updates in {det['seconds']:.0f} s" if det else "; no detector")
        print(f"[pretrain] backbone start: {start}; trained {info['iterations']} updates in {info['seconds']:.0f} s "
              f"on {info['n_fovs']} FOVs of hospitals {', '.join(info['cohort']['hospitals'])}{det_txt}; this step "
              f"took {took:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
