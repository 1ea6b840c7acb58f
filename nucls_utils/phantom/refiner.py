"""Learned appearance refinement: rendered FOVs made to look like scanned H&E, content kept.

The procedural renderer (:mod:`.render`) draws every nucleus, cell and fibre where the ground truth says, but its
textures are not those of a scanned section: a small CNN trained to tell 64 px patches of rendered FOVs from patches
of real FOVs does so almost without error (held-out AUROC 0.999 for generator 2.4, even after each patch's colour
and contrast are standardised or it is blurred). This module adds a last rendering step that is *fitted* to real
H&E instead of hand-tuned: a small fully convolutional network (:class:`Refiner`) that adds a bounded correction to
each pixel of a rendered FOV, trained adversarially against real FOVs in the manner of simulated-plus-unsupervised
refinement (Shrivastava et al., CVPR 2017):

* a discriminator (the same four-block patch CNN as the realism report's patch test) learns to tell refined patches
  from real ones; the refiner learns to make that hard (non-saturating GAN loss, a history of earlier refined
  patches shown to the discriminator);
* a **structure loss** keeps the content: the optical-density map of the refined patch, smoothed at 1.5 px and
  standardised per patch, must stay that of the rendered patch (L1), so nuclei stay where, and as large as, the
  ground truth says while their texture, edges and colour change; an **anchor loss** (L1 of 16 px block means of
  the RGB) keeps the refiner from drifting the colour of whole regions;
* half of the training patches are centred on annotated nuclei (both sides), half are placed at random.

**Experimental, off by default.** The study's cohort is the procedural rendering alone: no weights ship with the
package, and a cohort is refined only when :func:`.cohort.generate_cohort` is given a weights file
(``refiner_weights=``), which its manifest then records. ``python -m nucls_utils.phantom.refiner fit --real DIR --out
F`` fits weights on an unrefined cpu cohort of its own seed (:data:`FIT_COHORT_SEED`) against the real FOVs in DIR
(``--hospitals`` fits on a subset, so that the patch test can be run on FOVs the refiner never saw). Why it is not the
default (README, "Data modes"): a prototype fit of this recipe brought the patch C2ST of the cpu cohort from 0.9995 to 0.89 while keeping 26
of 28 per-class feature differences within 0.5 SD, but the package's fit with another seed brought it to 0.89 with only
14 of 28 kept, a third left it at 0.98, and averaging the weights over the fit (``ema``) kept the features and undid
most of the gain (0.98-1.00): the adversarial fit is not yet stable enough to stand as a calibration.

Inference is deterministic: one thread, float32, the same weights give the same bytes.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import functools
import hashlib
import io as _io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

__all__ = ["RefinerConfig", "FIT_COHORT_SEED", "refiner_info", "refine_image", "fit_refiner",
           "save_weights", "load_weights", "training_items", "fit_to_file", "main"]

#: Seed of the unrefined cpu cohort a refiner is fitted on (never a study cohort's seed: the study runs with seeds
#: 0, 1, ...; the fit cohort only has to be disjoint from what the refiner is judged on).
FIT_COHORT_SEED = 101


@dataclass(frozen=True)
class RefinerConfig:
    """Settings of a refiner fit (stored with the weights)."""

    steps: int = 2000
    batch: int = 16
    crop: int = 64
    channels: int = 32
    lr_refiner: float = 1e-4
    lr_discriminator: float = 5e-4
    structure_weight: float = 1.0
    anchor_weight: float = 1.0
    nucleus_share: float = 0.5
    history: int = 50
    max_delta: float = 0.35  # the largest correction of a pixel, in [0, 1] intensity units
    ema: float = 0.0  # > 0: return an exponential moving average of the refiner's weights (0: the last weights)
    seed: int = 0
    threads: int = 1


def _torch_modules():
    """The network classes (built on first use: importing this module does not import torch)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Res(nn.Module):
        def __init__(self, c: int):
            super().__init__()
            self.a = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")
            self.b = nn.Conv2d(c, c, 3, padding=1, padding_mode="reflect")

        def forward(self, x):
            return x + self.b(F.relu(self.a(x)))

    class Refiner(nn.Module):
        """Residual refiner: a full-resolution path (2 residual blocks), a half-resolution path (3 blocks) for
        context of about 40 px, merged and decoded by 2 more blocks into a correction ``max_delta * tanh(.)`` that is
        added to the input. The output layer starts at zero: an untrained refiner is the identity."""

        def __init__(self, c: int = 32, max_delta: float = 0.35):
            super().__init__()
            self.max_delta = max_delta
            self.inp = nn.Conv2d(3, c, 3, padding=1, padding_mode="reflect")
            self.enc = nn.Sequential(Res(c), Res(c))
            self.down = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, padding_mode="reflect")
            self.mid = nn.Sequential(Res(2 * c), Res(2 * c), Res(2 * c))
            self.up = nn.Conv2d(2 * c, c, 3, padding=1, padding_mode="reflect")
            self.dec = nn.Sequential(Res(c), Res(c))
            self.out = nn.Conv2d(c, 3, 1)
            nn.init.zeros_(self.out.weight)
            nn.init.zeros_(self.out.bias)

        def forward(self, x):
            h = self.enc(F.relu(self.inp(x)))
            m = self.mid(F.relu(self.down(h)))
            u = F.interpolate(m, size=h.shape[-2:], mode="bilinear", align_corners=False)
            h = self.dec(h + F.relu(self.up(u)))
            return x + self.max_delta * torch.tanh(self.out(F.relu(h)))

    from .realism import patch_cnn  # the discriminator is the realism report's patch-test CNN

    return Refiner, patch_cnn


# ------------------------------------------------------------------------------------------------------------
# Weights
# ------------------------------------------------------------------------------------------------------------
def save_weights(state: dict, meta: dict, path: str | Path) -> str:
    """Write a refiner's ``state`` (name -> tensor) and ``meta`` (JSON) to ``path`` (npz, atomically); returns the
    file's sha256."""
    from ..io.atomic import atomic_path
    from ..io.manifest import sha256_file

    arrays = {f"w:{k}": v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()}
    arrays["meta"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)
    buf = _io.BytesIO()
    np.savez_compressed(buf, **arrays)
    with atomic_path(Path(path)) as tmp:
        tmp.write_bytes(buf.getvalue())
    return sha256_file(path)


@functools.lru_cache(maxsize=4)
def _load(path: str, sha: str):
    import torch

    with np.load(path, allow_pickle=False) as z:
        meta = json.loads(z["meta"].tobytes().decode("utf-8"))
        state = {k[2:]: torch.from_numpy(z[k].copy()) for k in z.files if k.startswith("w:")}
    Refiner, _ = _torch_modules()
    cfg = meta["config"]
    net = Refiner(cfg["channels"], cfg["max_delta"])
    net.load_state_dict(state)
    net.eval()
    return net, meta


def load_weights(path: str | Path):
    """``(refiner network in eval mode, metadata)`` of a weights file. A missing or unreadable file is an error that
    names it and says how to fit one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"refiner weights not found: {path} (fit them with "
                                "`python -m nucls_utils.phantom.refiner fit --real DIR --out FILE`)")
    try:
        return _load(str(path), hashlib.sha256(path.read_bytes()).hexdigest())
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise ValueError(f"{path}: not a refiner weights file ({type(e).__name__}: {e})") from e


def refiner_info(path: str | Path) -> dict:
    """What a cohort records about the refiner it used: the weights' sha256, the generator version whose rendering
    they were fitted on, the fit's date and its real FOVs' count."""
    path = Path(path)
    _, meta = load_weights(path)
    return {"weights_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "generator_version": meta["generator_version"], "fitted": meta["date"], "real_fovs": len(meta["real_fovs"])}


def refine_image(rgb: np.ndarray, path: str | Path) -> np.ndarray:
    """Refine one rendered image: ``(H, W, 3) uint8`` in and out (H, W >= 4). Deterministic (one thread,
    float32)."""
    import torch

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8 or min(rgb.shape[:2]) < 4:
        raise ValueError(f"refine_image needs an (H, W, 3) uint8 image with H, W >= 4, got {rgb.dtype} {rgb.shape}")
    from .realism import _threads

    net, _ = load_weights(path)
    x = torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1)[None].div_(255.0)
    with _threads(1), torch.inference_mode():
        y = net(x)[0].clamp_(0.0, 1.0).mul_(255.0).permute(1, 2, 0).numpy()
    return np.rint(y).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------------
# Fitting
# ------------------------------------------------------------------------------------------------------------
def training_items(records: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(rgb, box centres (N, 2) as x, y)]`` of dataset records (:class:`nucls_utils.io.FovRecord`)."""
    out = []
    for r in records:
        c = np.array([[(n.xmin + n.xmax) / 2, (n.ymin + n.ymax) / 2] for n in r.nuclei], float).reshape(-1, 2)
        out.append((r.read_rgb(), c))
    return out


def _crops(items, n: int, size: int, nucleus_share: float, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, size, size, 3), np.uint8)
    half = size // 2
    for i in range(n):
        im, centres = items[int(rng.integers(len(items)))]
        h, w = im.shape[:2]
        if rng.random() < nucleus_share and len(centres):
            cx, cy = centres[int(rng.integers(len(centres)))]
            jx, jy = rng.integers(-3, 4, 2)
            x = int(np.clip(round(cx) - half + jx, 0, w - size))
            y = int(np.clip(round(cy) - half + jy, 0, h - size))
        else:
            y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
        p = im[y:y + size, x:x + size]
        if rng.random() < 0.5:
            p = p[:, ::-1]
        out[i] = np.rot90(p, int(rng.integers(4)))
    return out


def fit_refiner(synthetic: Sequence[tuple[np.ndarray, np.ndarray]], real: Sequence[tuple[np.ndarray, np.ndarray]],
                config: RefinerConfig = RefinerConfig(), *, progress: bool = True):
    """Fit a refiner (see the module docstring) on ``(rgb, nucleus centres)`` items of rendered (unrefined) and
    real FOVs.

    Returns ``(state_dict, history)``: the refiner's last weights (or their moving average over the fit when
    ``config.ema > 0``) and a DataFrame with the losses every 50 steps
    (``step``, ``d_loss``, ``adversarial``, ``structure``, ``anchor``, ``d_real``, ``d_fake``: the discriminator's
    mean probability of "real" on real and on refined patches). Deterministic for a config (its seed, on its number
    of threads).
    """
    import pandas as pd
    import torch
    import torch.nn.functional as F

    from ..progress import tqdm

    for name, items in (("synthetic", synthetic), ("real", real)):
        if not items:
            raise ValueError(f"fit_refiner: no {name} FOVs")
        small = [i for i, (im, _) in enumerate(items) if min(im.shape[:2]) < config.crop]
        if small:
            raise ValueError(f"fit_refiner: {name} FOV {small[0]} is {items[small[0]][0].shape[:2]}, smaller than "
                             f"the {config.crop} px crops")
    from .realism import _threads

    Refiner, discriminator = _torch_modules()
    rng = np.random.default_rng(config.seed)
    kern = torch.exp(-0.5 * (torch.arange(-4, 5, dtype=torch.float32) / 1.5) ** 2)
    kern = kern / kern.sum()

    def structure(x):  # total optical density, smoothed at 1.5 px, standardised per patch
        od = -torch.log10(x.clamp(min=1 / 255)).sum(1, keepdim=True)
        od = F.conv2d(F.conv2d(F.pad(od, (4, 4, 4, 4), mode="reflect"), kern.view(1, 1, 1, 9)), kern.view(1, 1, 9, 1))
        return (od - od.mean((2, 3), keepdim=True)) / (od.std((2, 3), keepdim=True) + 1e-3)

    def batch(items):
        p = _crops(items, config.batch, config.crop, config.nucleus_share, rng)
        return torch.from_numpy(p).permute(0, 3, 1, 2).float().div_(255.0)

    rows = []
    b = config.batch
    with _threads(config.threads), torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        G, D = Refiner(config.channels, config.max_delta), discriminator()
        opt_g = torch.optim.Adam(G.parameters(), config.lr_refiner, betas=(0.5, 0.999))
        opt_d = torch.optim.Adam(D.parameters(), config.lr_discriminator, betas=(0.5, 0.999))
        history: list = []
        avg = {name: v.detach().clone() for name, v in G.state_dict().items()}
        for step in tqdm(range(1, config.steps + 1), desc="refiner fit", disable=not progress):
            xs, xr = batch(synthetic), batch(real)
            raw = G(xs)
            fake = raw - (raw - raw.clamp(0, 1)).detach()  # the discriminator sees clamped pixels; gradients pass
            shown = fake.detach()
            if history and rng.random() < 0.5:
                shown = torch.cat([shown[:b // 2], history[int(rng.integers(len(history)))]])
            history = (history + [fake.detach()[:b - b // 2]])[-config.history:]
            out = D(torch.cat([xr, shown]))
            d_loss = F.softplus(-out[:b]).mean() + F.softplus(out[b:]).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            adv = F.softplus(-D(torch.cat([xr, fake]))[b:]).mean()
            struct = (structure(fake) - structure(xs)).abs().mean()
            anchor = (F.avg_pool2d(fake, 16) - F.avg_pool2d(xs, 16)).abs().mean()
            opt_g.zero_grad()
            (adv + config.structure_weight * struct + config.anchor_weight * anchor).backward()
            opt_g.step()
            if config.ema > 0:
                with torch.no_grad():
                    for name, v in G.state_dict().items():
                        avg[name].mul_(config.ema).add_(v, alpha=1 - config.ema)
            if step % 50 == 0 or step == config.steps:
                p = torch.sigmoid(out.detach())
                rows.append({"step": step, "d_loss": d_loss.item(), "adversarial": adv.item(),
                             "structure": struct.item(), "anchor": anchor.item(), "d_real": p[:b].mean().item(),
                             "d_fake": p[b:].mean().item()})
    state = avg if config.ema > 0 else {name: v.detach().clone() for name, v in G.state_dict().items()}
    return state, pd.DataFrame(rows)


def fit_to_file(synthetic_records: Sequence, real_records: Sequence, config: RefinerConfig, out: str | Path, *,
                fit_cohort: dict | None = None, progress: bool = True):
    """Fit a refiner on dataset records (:class:`nucls_utils.io.FovRecord`: unrefined synthetic FOVs of this
    generator version, real FOVs) and write its weights to ``out`` with what a cohort records of them (config,
    generator version, the synthetic cohort, the real FOVs' names, date); the losses go beside it
    (``.history.csv``). Returns the losses."""
    from .cohort import GENERATOR_VERSION

    state, hist = fit_refiner(training_items(synthetic_records), training_items(real_records), config,
                              progress=progress)
    meta = {"config": asdict(config), "generator_version": GENERATOR_VERSION, "fit_cohort": fit_cohort,
            "real_fovs": sorted(r.name for r in real_records), "date": _dt.date.today().isoformat(),
            "final_losses": hist.iloc[-1].round(4).to_dict()}
    sha = save_weights(state, meta, out)
    hist.to_csv(Path(out).with_suffix(".history.csv"), index=False)
    if progress:
        print(f"refiner fitted on {len(real_records)} real FOVs, {config.steps} steps: {out} (sha256 {sha[:12]})")
    return hist


# ------------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    """``python -m nucls_utils.phantom.refiner fit --real DIR --out F [--hospitals A2,BH] [--steps N] [--seed S]``

    Generates the unrefined cpu cohort of :data:`FIT_COHORT_SEED` (cached under ``--work``), fits a refiner against
    the real FOVs in DIR (all of them, or those of ``--hospitals``) and writes the weights with their metadata.
    """
    from .. import io as nio
    from .cohort import GENERATOR_VERSION, cohort_problem, generate_cohort

    ap = argparse.ArgumentParser(prog="python -m nucls_utils.phantom.refiner", description=main.__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    fit = sub.add_parser("fit", help="fit the refiner against real FOVs")
    fit.add_argument("--real", required=True, help="real FOVs in the NuCLS single-rater layout (rgb/, csv/)")
    fit.add_argument("--hospitals", default="", help="comma-separated TCGA site codes to fit on (default: all)")
    fit.add_argument("--steps", type=int, default=RefinerConfig.steps)
    fit.add_argument("--seed", type=int, default=RefinerConfig.seed)
    fit.add_argument("--threads", type=int, default=RefinerConfig.threads)
    fit.add_argument("--out", required=True, help="weights file to write (.npz; the losses go beside it as .history.csv)")
    fit.add_argument("--ema", type=float, default=RefinerConfig.ema, help="moving average of the weights (0: the last)")
    fit.add_argument("--work", default="data/synthetic/refiner_fit", help="where the unrefined fit cohort is kept")
    args = ap.parse_args(argv)

    real_records = nio.read_dataset(args.real)
    if args.hospitals:
        keep = {h.strip() for h in args.hospitals.split(",") if h.strip()}
        real_records = [r for r in real_records if r.hospital in keep]
        if not real_records:
            print(f"refiner fit: no FOV of {args.real} is from hospitals {sorted(keep)}", file=sys.stderr)
            return 2
    cohort = Path(args.work) / f"cpu_seed{FIT_COHORT_SEED}_v{GENERATOR_VERSION}"
    if cohort_problem(cohort, "cpu", FIT_COHORT_SEED) is not None:
        generate_cohort(cohort, "cpu", FIT_COHORT_SEED, overwrite=True)
    config = RefinerConfig(steps=args.steps, seed=args.seed, threads=args.threads, ema=args.ema)
    hist = fit_to_file(nio.read_dataset(cohort), real_records, config, args.out,
                       fit_cohort={"profile": "cpu", "seed": FIT_COHORT_SEED})
    print(hist.tail(5).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
