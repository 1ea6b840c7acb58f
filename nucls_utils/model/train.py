"""Training schedules (profiles) and the training loop: checkpoints, resume, logs, the detection freeze.

The paper (Table S7) trains with SGD (lr 2e-3, momentum 0.9, weight decay 5e-4, no schedule) for 16,000 updates of
4 crops of 300 x 300 px, freezing detection after 15,000 updates and fine-tuning classification for the rest. That is
the ``paper`` profile, meant for a GPU. The ``cpu`` profile keeps every mechanism (hybrid losses, sampling weights,
stain augmentation, the freeze) on a budget a 2-core CPU can afford: a ResNet-18 truncated after ``layer3`` at scale
factor 2 (the same 8 input pixels per feature cell as the paper's ``layer4`` at scale factor 4), a 64-channel neck,
smaller crops and a one-cycle learning rate, because a network trained from scratch for a few hundred updates
does not converge at a constant 2e-3.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..io.atomic import atomic_path
from ..io.manifest import verify_manifest, write_manifest
from ..profiles import stage_settings
from ..progress import tqdm
from .architecture import ModelConfig, NucleusMaskRCNN, build_model, torch_seeded

__all__ = ["TrainingStopped", "TrainConfig", "TRAIN_PROFILES", "MODEL_PROFILES", "profile_configs", "freeze_detection",
           "train_model", "load_trained", "save_history", "load_history", "model_problem", "config_key", "MODEL_MANIFEST",
           "MODEL_FILES", "HISTORY_FILE", "hyperparameter_table"]

#: The files of a finished model and the manifest that records their sha256 and the reuse key.
HISTORY_FILE = "history.csv"
MODEL_FILES = ("model.pt", HISTORY_FILE, "training.json")
MODEL_MANIFEST = "model_manifest.json"


class TrainingStopped(RuntimeError):
    """Raised by :func:`train_model` when ``stop_after`` updates of this run are done: a deliberate stop that leaves
    what a killed run leaves (the checkpoint, no final weights), used to check that resuming is exact."""


@dataclass(frozen=True)
class TrainConfig:
    """A training schedule. ``iterations`` counts gradient updates; ``batch_size`` crops per update."""

    iterations: int
    batch_size: int = 4
    crop: int = 300
    lr: float = 2e-3
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "constant"  # 'constant' (paper) or 'onecycle' (peak ``lr``, warm-up share ``warmup``)
    warmup: float = 0.15
    freeze_detection_at: int | None = None  # updates after which only classification layers train
    finetune_lr: float | None = None  # learning rate after the freeze (default: ``lr``)
    # ROI sampling after the freeze (default: the model's): more, and more positive, ROIs per crop give the
    # classifier more nuclei per update at little cost once detection no longer trains
    finetune_rois_per_image: int | None = None
    finetune_positive_fraction: float | None = None
    grad_clip: float | None = None
    augment: bool = True  # stain augmentation (flip is always on)
    eval_every: int = 0  # 0: no evaluation during training (Fig. S10 curves need it)
    checkpoint_every: int = 100
    # classification loss weights ~ (class share in the stream) ** -class_balance (0: unweighted, the paper)
    class_balance: float = 0.0

    def with_(self, **changes) -> TrainConfig:
        return replace(self, **changes)


#: Training schedules of each compute profile (settings in :data:`nucls_utils.profiles.STAGES`).
TRAIN_PROFILES: dict[str, TrainConfig] = {p: TrainConfig(**kw) for p, kw in stage_settings("training").items()}
#: The final model (config 3) of each profile; ablations are changes to it (:data:`~.architecture.MODEL_CONFIGS`).
MODEL_PROFILES: dict[str, ModelConfig] = {p: ModelConfig(**kw) for p, kw in stage_settings("model").items()}


def profile_configs(profile: str) -> tuple[ModelConfig, TrainConfig]:
    """``(model config of the final model, training schedule)`` of a compute profile."""
    try:
        return MODEL_PROFILES[profile], TRAIN_PROFILES[profile]
    except KeyError:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(TRAIN_PROFILES)}") from None


def config_key(*parts) -> str:
    """A short hash of configs and other JSON-able parts: a trained model is reused only for the same key."""
    blob = json.dumps([asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts], sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _finetune_sampling(model: NucleusMaskRCNN, cfg: TrainConfig) -> None:
    """Switch the ROI sampler to the fine-tuning phase's size and positive fraction (where the schedule sets them)."""
    from torchvision.models.detection._utils import BalancedPositiveNegativeSampler

    if cfg.finetune_rois_per_image is None and cfg.finetune_positive_fraction is None:
        return
    old = model.roi_heads.fg_bg_sampler
    model.roi_heads.fg_bg_sampler = BalancedPositiveNegativeSampler(
        cfg.finetune_rois_per_image or old.batch_size_per_image,
        cfg.finetune_positive_fraction if cfg.finetune_positive_fraction is not None else old.positive_fraction)


def freeze_detection(model: NucleusMaskRCNN) -> list[torch.nn.Parameter]:
    """Freeze everything but the classification layers; return the parameters that still train.

    Trainable after the freeze: the classification convolutions, the classifier's own MLP and the 1x1 reduction of
    its own feature map (when the model has them) and the final linear classifier ``cls_score``. The shared box
    head, box regression, RPN, mask branch and backbone are frozen, and batch-norm running statistics stop updating
    (momentum 0), so detection is exactly preserved.
    """
    heads = model.roi_heads
    keep = set()
    # the classifier's own 1x1 reduction of its finer map (classifier_features='layer2') serves no detection layer
    for module in (heads.classification_convs, heads.cls_head, heads.cls_score,
                   getattr(model.backbone, "reduce_cls", None)):
        if module is not None:
            keep.update(id(p) for p in module.parameters())
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = 0.0
    return [p for p in model.parameters() if p.requires_grad]


def _optimizer(params, lr: float, cfg: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _scheduler(opt, cfg: TrainConfig, steps: int):
    if cfg.schedule == "onecycle" and steps > 0:
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(steps, 2),
                                                   pct_start=cfg.warmup)
    if cfg.schedule not in ("onecycle", "constant"):
        raise ValueError(f"schedule must be 'constant' or 'onecycle', not {cfg.schedule!r}")
    return None


def train_model(model_config: ModelConfig, train_config: TrainConfig, stream, out_dir: str | Path, *,
                seed: int = 0, evaluate: Callable[[NucleusMaskRCNN], dict] | None = None, progress: bool = True,
                desc: str = "training", device: str | None = None,
                class_weights=None, data_fingerprint: str | None = None,
                say: Callable[[str], None] | None = print,
                stop_after: int | None = None) -> tuple[NucleusMaskRCNN, pd.DataFrame]:
    """Train a model, checkpointing into ``out_dir``; resume or reuse what is already there. Training draws from
    torch's random generators seeded with ``seed`` inside :func:`~.architecture.torch_seeded` (the caller's random
    state is left as it was).

    Parameters
    ----------
    stream : iterator of ``(images, targets)`` with ``state_dict()`` / ``load_state_dict()``
        Training batches (see :class:`nucls_utils.model.data.TrainingStream`); its state is checkpointed so that a
        resumed run sees the same batches as an uninterrupted one.
    evaluate : callable, optional
        ``evaluate(model) -> dict of metrics``, called every ``train_config.eval_every`` updates and at the end
        (the Fig. S10 curves).
    class_weights : (n_classes + 1,) array, optional
        Per-label weights of the ROI classification loss (:func:`~.data.classification_loss_weights`); part of the
        reuse key. ``None``: unweighted.
    data_fingerprint : str, optional
        :func:`~.data.samples_fingerprint` of the training FOVs; part of the reuse key, so a model is retrained
        when its training data change (and only then).
    say : callable, optional
        Receives a one-line reason when a finished model in ``out_dir`` cannot be reused.
    stop_after : int, optional
        Stop as a killed run would after this many updates of this run: a checkpoint is written at that update
        (whatever ``checkpoint_every`` says), no final weights, and :class:`TrainingStopped` is raised. For checks
        of resume (:func:`~.experiments.paper_profile_check`); ``None`` trains to the end.

    Returns
    -------
    model : the trained model (eval mode)
    history : DataFrame, one row per update (``iteration``, ``lr``, ``loss`` and each loss term, ``seconds``), plus
        rows with ``eval_*`` columns where an evaluation ran.

    Files in ``out_dir``: ``checkpoint.pt`` (latest state, for resume), ``model.pt`` (final weights) and
    ``training.json`` (configs, key, weights source, timing) when done, ``history.csv``, and
    ``model_manifest.json`` (the key and the sha256 of those three files, checked before they are reused).
    """
    with torch_seeded(seed):
        return _train_model(model_config, train_config, stream, out_dir, seed=seed, evaluate=evaluate,
                            progress=progress, desc=desc, device=device, class_weights=class_weights,
                            data_fingerprint=data_fingerprint, say=say, stop_after=stop_after)


def _train_model(model_config: ModelConfig, train_config: TrainConfig, stream, out_dir: str | Path, *,
                 seed: int, evaluate: Callable[[NucleusMaskRCNN], dict] | None, progress: bool, desc: str,
                 device: str | None, class_weights, data_fingerprint: str | None,
                 say: Callable[[str], None] | None, stop_after: int | None) -> tuple[NucleusMaskRCNN, pd.DataFrame]:
    """:func:`train_model`'s body, run inside its seeded block."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cw = None if class_weights is None else [round(float(w), 6) for w in np.asarray(class_weights).ravel()]
    parts = [model_config, train_config, seed]
    if cw is not None:
        parts.append(cw)
    if data_fingerprint is not None:
        parts.append({"training_data": data_fingerprint})
    key = config_key(*parts)
    problem = model_problem(out, key)
    if problem is None:
        return load_trained(out, device=device), load_history(out)
    if say is not None and (out / MODEL_MANIFEST).exists():
        say(f"{desc}: the trained model in {out.name}/ cannot be reused ({problem}): training again")

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = build_model(model_config).to(device)
    model.roi_heads.set_class_weights(cw)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    cfg = train_config
    freeze_at = cfg.freeze_detection_at if cfg.freeze_detection_at is not None else cfg.iterations
    opt = _optimizer(params, cfg.lr, cfg)
    sched = _scheduler(opt, cfg, min(freeze_at, cfg.iterations))
    history: list[dict] = []
    start = 0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        # on the CPU: RNG states must be CPU byte tensors; model and optimiser state are copied to the device
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("key") == key:
            start = int(ckpt["iteration"])
            # a checkpoint written at the freeze itself holds the detection phase's optimiser: the loop freezes
            # at its first step (it == freeze_at), as the uninterrupted run did
            if start > freeze_at:
                params = freeze_detection(model)
                _finetune_sampling(model, cfg)
                opt = _optimizer(params, cfg.finetune_lr or cfg.lr, cfg)
                sched = None
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            if sched is not None and ckpt.get("scheduler") is not None:
                sched.load_state_dict(ckpt["scheduler"])
            stream.load_state_dict(ckpt["stream"])
            torch.set_rng_state(ckpt["torch_rng"])
            if ckpt.get("cuda_rng") is not None and torch.device(device).type == "cuda":
                torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
            history = ckpt["history"]

    def save_checkpoint(it: int) -> None:
        state = {"key": key, "iteration": it, "model": model.state_dict(), "optimizer": opt.state_dict(),
                 "scheduler": sched.state_dict() if sched is not None else None, "stream": stream.state_dict(),
                 "torch_rng": torch.get_rng_state(), "history": history,
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.device(device).type == "cuda" else None}
        with atomic_path(ckpt_path) as tmp:
            torch.save(state, tmp)

    def run_eval(it: int) -> None:
        if evaluate is None:
            return
        model.eval()
        metrics = evaluate(model)
        model.train()
        history.append({"iteration": it, **{f"eval_{k}": v for k, v in metrics.items()}})

    bar = tqdm(range(start, cfg.iterations), desc=desc, disable=not progress, initial=start, total=cfg.iterations)
    t_start = time.perf_counter()
    for it in bar:
        if it == freeze_at:
            params = freeze_detection(model)
            _finetune_sampling(model, cfg)
            opt = _optimizer(params, cfg.finetune_lr or cfg.lr, cfg)
            sched = None
        t0 = time.perf_counter()
        images, targets = next(stream)
        images = [im.to(device) for im in images]
        targets = [{k: v.to(device) for k, v in t.items() if torch.is_tensor(v)} for t in targets]
        losses = model(images, targets)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise FloatingPointError(f"{desc}: loss is {total.item()} at update {it + 1} "
                                     f"({ {k: round(v.item(), 4) for k, v in losses.items()} })")
        opt.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        lr = opt.param_groups[0]["lr"]
        if sched is not None and it + 1 < freeze_at:
            sched.step()
        history.append({"iteration": it + 1, "lr": lr, "loss": total.item(),
                        **{k: v.item() for k, v in losses.items()}, "seconds": time.perf_counter() - t0})
        bar.set_postfix(loss=f"{total.item():.3f}")
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and it + 1 < cfg.iterations:
            run_eval(it + 1)
        stopping = stop_after is not None and it + 1 - start >= stop_after and it + 1 < cfg.iterations
        if stopping or (cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0 and it + 1 < cfg.iterations):
            save_checkpoint(it + 1)
        if stopping:
            raise TrainingStopped(f"{desc}: stopped after update {it + 1} of {cfg.iterations} (checkpoint kept)")
    run_eval(cfg.iterations)
    model.eval()
    seconds = time.perf_counter() - t_start
    frame = pd.DataFrame(history)
    with atomic_path(out / "model.pt") as tmp:
        torch.save({"model_config": model_config.to_dict(), "state_dict": model.state_dict()}, tmp)
    save_history(frame, out)
    info = {"key": key, "model_config": model_config.to_dict(), "train_config": asdict(cfg), "seed": seed,
            "weights_source": model.weights_source, "class_weights": cw, "device": device,
            "seconds_this_run": seconds,
            "iterations_this_run": cfg.iterations - start,
            "seconds_per_update": float(np.median([h["seconds"] for h in history if "seconds" in h]))
            if history else float("nan")}
    with atomic_path(out / "training.json") as tmp:
        Path(tmp).write_text(json.dumps(info, indent=2))
    write_manifest(out, {"key": key}, name=MODEL_MANIFEST, files=MODEL_FILES)
    ckpt_path.unlink(missing_ok=True)
    return model, frame


def model_problem(out_dir: str | Path, key: str) -> str | None:
    """Why the finished model in ``out_dir`` cannot be reused for ``key`` (``None``: it can)."""
    return verify_manifest(out_dir, name=MODEL_MANIFEST, expect={"key": key}, allow_extra=True)


def hyperparameter_table(profile: str) -> pd.DataFrame:
    """Table S7: every model and schedule setting of ``profile`` beside the paper's (the ``paper`` profile), as
    text, one row per ``setting``, with ``differs`` where they do."""
    base, schedule = profile_configs(profile)
    paper_model, paper_schedule = profile_configs("paper")
    ours = {**base.to_dict(), **schedule.__dict__}
    theirs = {**paper_model.to_dict(), **paper_schedule.__dict__}
    # as text, as the table prints them: a setting that is None reads "None" (in a frame it would become NaN, which
    # then "differed" from the paper's None)
    return pd.DataFrame({"setting": list(ours), "this run": [str(v) for v in ours.values()],
                         "paper (Table S7)": [str(theirs[k]) for k in ours],
                         "differs": [str(ours[k]) != str(theirs[k]) for k in ours]})


def save_history(history: pd.DataFrame, out_dir: str | Path) -> Path:
    """Store a training run's history (one row per logged update: ``iteration``, the loss terms, the held-out
    ``eval_*`` metrics where evaluated) in the model's folder, atomically; return the file."""
    path = Path(out_dir) / HISTORY_FILE
    with atomic_path(path) as tmp:
        history.to_csv(tmp, index=False)
    return path


def load_history(out_dir: str | Path) -> pd.DataFrame:
    """The history :func:`save_history` stored for the model in ``out_dir``: ``iteration`` as int, every other
    column as float (NaN where a metric was not evaluated at that update)."""
    path = Path(out_dir) / HISTORY_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no training history at {path}: the model in {Path(out_dir).name}/ was not trained "
                                "(run notebook 05)")
    df = pd.read_csv(path)
    if "iteration" not in df.columns:
        raise ValueError(f"{path}: no iteration column")
    bad = [c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])]
    if bad:
        raise ValueError(f"{path}: column {bad[0]} is not numeric")
    return df.astype({c: float for c in df.columns if c != "iteration"}).astype({"iteration": int})


def load_trained(out_dir: str | Path, device: str | None = None) -> NucleusMaskRCNN:
    """The trained model saved by :func:`train_model` in ``out_dir`` (eval mode)."""
    path = Path(out_dir) / "model.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no trained model at {path}")
    blob = torch.load(path, map_location=device or "cpu", weights_only=False)
    cfg = ModelConfig.from_dict(blob["model_config"])
    model = build_model(cfg.with_(weights=None))
    model.load_state_dict(blob["state_dict"])
    info = _read_json(Path(out_dir) / "training.json") or {}
    model.weights_source = info.get("weights_source", "unknown")
    if device:
        model.to(device)
    return model.eval()


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
