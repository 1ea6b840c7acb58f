"""Benchmark: NuCLS model inference throughput, training step time and peak memory, against torchvision's stock
Mask R-CNN, in the same run on the same inputs.

Models (all untrained, ``weights=None``, so no download and the same random-weight regime for everyone):

* ``stock``: ``torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
  num_classes=9)`` with its own resize (short side to 800 px, long side at most 1333 px) and full-image masks;
* ``nucls-paper``: ``ModelConfig(weights=None)``, the paper's final model (ResNet-18 to layer4, scale factor 4);
* ``nucls-cpu``: the cpu profile (ResNet-18 to layer3, scale factor 2, narrow neck and heads).

Each model runs in its own child process (this script with ``--child``), which also measures the peak resident
memory of its inference and of its training step separately (the peak is reset between phases through
``/proc/self/clear_refs``; where that is not writable, the peaks are cumulative and say so). Inference: each
model's own API on the same RGB images (``model.predict`` for NuCLS, ``model([tensor])`` with outputs moved to the
host for the stock model), megapixels of *input* per second. Training: seconds per SGD iteration on a batch of two
300 x 300 crops with 25 nuclei each (boxes, labels 1-8, masks, hybrid ``ismask`` flags; the stock model ignores
``ismask``). Each phase is preceded by one warm-up call on a tiny input. Printed: one table, then one ``ratio vs
stock`` line per NuCLS config (absolute times on shared machines are noise; ratios within one run are not).

CPU runs use one thread by default (``--threads``): on a shared machine more threads mostly measure the neighbours.

Run: ``.venv/bin/python bench/bench_inference.py [--device cpu|cuda] [--quick] [--size 512 --images N]``
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _timing import best_of

REPO = Path(__file__).resolve().parent.parent
FOV_DIR = REPO / "data" / "synthetic" / "cpu" / "rgb"
MODELS = ("stock", "nucls-paper", "nucls-cpu")
CPU_PROFILE = dict(weights=None, backbone_layer="layer3", scale_factor=2.0, roi_size=7, representation=256,
                   box_batch_size_per_image=128, rpn_pre_nms_top_n=1000, rpn_post_nms_top_n=500, mask_channels=64,
                   neck_channels=64)
#: --quick only: fewer proposals and ROI samples, so that the smoke test takes seconds (the paper config's box head
#: has 512 x 14 x 14 inputs, about 0.2 GFLOP per ROI, applied twice: sampling 512 ROIs per crop costs minutes).
QUICK_NUCLS = dict(rpn_pre_nms_top_n=300, rpn_post_nms_top_n=100, box_batch_size_per_image=32, detections_per_img=50)
QUICK_STOCK = dict(rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=100, rpn_pre_nms_top_n_train=300,
                   rpn_post_nms_top_n_train=100, box_batch_size_per_image=32, box_detections_per_img=50)


# ---------------------------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------------------------
def load_images(n: int, size: int, seed: int = 0) -> tuple[list[np.ndarray], str]:
    """``n`` RGB images of ``size x size``: 2 x 2 mosaics of synthetic FOVs when present, else random pixels."""
    fovs = sorted(FOV_DIR.glob("*.png")) if FOV_DIR.is_dir() else []
    if len(fovs) < 4 * n:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(n)], "random pixels"
    from PIL import Image

    half = (size + 1) // 2
    out = []
    for i in range(n):
        img = np.full((2 * half, 2 * half, 3), 255, dtype=np.uint8)
        for k, path in enumerate(fovs[4 * i:4 * i + 4]):
            fov = np.asarray(Image.open(path).convert("RGB"))[:half, :half]
            y, x = (k // 2) * half, (k % 2) * half
            img[y:y + fov.shape[0], x:x + fov.shape[1]] = fov
        out.append(np.ascontiguousarray(img[:size, :size]))
    return out, f"2 x 2 mosaics of {FOV_DIR.relative_to(REPO)} FOVs"


def training_batch(crop: int, n_nuclei: int, seed: int):
    """Two crops with ``n_nuclei`` dark ellipses each, and their targets (boxes, labels, masks, ismask)."""
    import torch

    rng = np.random.default_rng(seed)
    images, targets = [], []
    yy, xx = np.mgrid[0:crop, 0:crop] + 0.5
    for _ in range(2):
        img = np.empty((crop, crop, 3), dtype=np.float32)
        img[:] = np.array([0.92, 0.78, 0.87], dtype=np.float32)
        boxes, masks = [], []
        r_max = max(3.0, min(14.0, crop / 10))
        for _ in range(n_nuclei):
            a, b = rng.uniform(r_max / 2, r_max, 2)
            cx, cy = rng.uniform(r_max, crop - r_max, 2)
            m = ((xx - cx) / a) ** 2 + ((yy - cy) / b) ** 2 <= 1
            ys, xs = np.nonzero(m)
            img[m] = np.array([0.35, 0.15, 0.47], dtype=np.float32)
            boxes.append((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1))
            masks.append(m)
        images.append(torch.from_numpy(img).permute(2, 0, 1).contiguous())
        targets.append({
            "boxes": torch.tensor(np.asarray(boxes, dtype=np.float32)),
            "labels": torch.tensor(rng.integers(1, 9, n_nuclei), dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks).astype(np.uint8)),
            "ismask": torch.from_numpy(rng.random(n_nuclei) < 0.5),
        })
    return images, targets


# ---------------------------------------------------------------------------------------------------------------
# Child: one model, all measurements
# ---------------------------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float | None:
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return None
    m = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) / 1024 if m else None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark of this process; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    peak = _status_mb("VmHWM")
    if peak is not None:
        return peak
    import resource

    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, kB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / scale / 1024


def _build(name: str, stock_size: tuple[int, int] | None, small_heads: bool):
    import torch
    import torchvision

    torch.manual_seed(0)
    if name == "stock":
        kw = {} if stock_size is None else {"min_size": stock_size[0], "max_size": stock_size[1]}
        if small_heads:
            kw.update(QUICK_STOCK)
        return torchvision.models.detection.maskrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                                                  num_classes=9, **kw)
    from nucls_utils.model import ModelConfig, build_model

    config = ModelConfig(weights=None) if name == "nucls-paper" else ModelConfig(**CPU_PROFILE)
    return build_model(config.with_(**QUICK_NUCLS) if small_heads else config)


def child(spec: dict) -> dict:
    import torch

    from nucls_utils.model.architecture import NucleusMaskRCNN

    if spec["threads"] > 0:
        torch.set_num_threads(spec["threads"])
    if spec["device"] == "auto":
        spec["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    elif spec["device"] == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but torch sees no CUDA device")
    device = torch.device(spec["device"])
    cuda = device.type == "cuda"
    stock_size = tuple(spec["stock_size"]) if spec["stock_size"] else None
    model = _build(spec["model"], stock_size, spec["quick"]).to(device)
    rss_build = _status_mb("VmRSS") or _peak_mb()
    n_params = sum(p.numel() for p in model.parameters())
    images = list(np.load(spec["images"]).values())

    def sync():
        if cuda:
            torch.cuda.synchronize()

    if isinstance(model, NucleusMaskRCNN):
        def infer(rgb):
            return model.predict(rgb)
    else:
        @torch.no_grad()
        def infer(rgb):
            model.eval()
            x = torch.as_tensor(rgb).permute(2, 0, 1).float().div_(255.0).to(device)
            return [{k: v.cpu() for k, v in out.items()} for out in model([x])]

    def timed(fn, repeats):
        sync()
        return best_of(lambda: (fn(), sync()), repeats)

    def warm_stock(fn):
        """Warm up the stock model on a tiny resize (its transform would blow any input up to 800 px)."""
        if isinstance(model, NucleusMaskRCNN):
            return fn()
        old = model.transform.min_size, model.transform.max_size
        model.transform.min_size, model.transform.max_size = (64,), 64
        try:
            return fn()
        finally:
            model.transform.min_size, model.transform.max_size = old

    # inference
    tiny = np.ascontiguousarray(images[0][:64, :64])
    if not spec["quick"]:  # --quick is a smoke test: no warm-up
        warm_stock(lambda: infer(tiny))
    exact = _reset_peak()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_infer = timed(lambda: [infer(im) for im in images], spec["repeats"])
    peak_infer = _peak_mb()
    cuda_infer = torch.cuda.max_memory_allocated() / 2**20 if cuda else None

    # training
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-4, momentum=0.9)

    def step(batch):
        ims, tgts = batch
        ims = [im.to(device) for im in ims]
        tgts = [{k: v.to(device) for k, v in t.items() if k != "ismask" or isinstance(model, NucleusMaskRCNN)}
                for t in tgts]
        losses = model(ims, tgts)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    if not spec["quick"]:
        warm_stock(lambda: step(training_batch(64, 4, seed=1)))
    batch = training_batch(spec["crop"], spec["nuclei"], seed=2)
    exact = _reset_peak() and exact
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t_train = timed(lambda: step(batch), spec["train_iters"])
    peak_train = _peak_mb()
    cuda_train = torch.cuda.max_memory_allocated() / 2**20 if cuda else None
    pixels = sum(im.shape[0] * im.shape[1] for im in images)
    return {"model": spec["model"], "params_m": n_params / 1e6, "mp_per_s": pixels / 1e6 / t_infer,
            "s_per_image": t_infer / len(images), "s_per_iter": t_train, "rss_build_mb": rss_build,
            "peak_infer_mb": peak_infer, "peak_train_mb": peak_train, "peaks_exact": exact,
            "cuda_infer_mb": cuda_infer, "cuda_train_mb": cuda_train, "threads": torch.get_num_threads(),
            "device": spec["device"], "torch": torch.__version__}


# ---------------------------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------------------------
def _cuda_visible() -> bool:
    """Whether an NVIDIA driver is present, without importing torch (the children decide for real)."""
    return Path("/proc/driver/nvidia/version").exists()


def run_child(spec: dict) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                          capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['model']} child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda when available")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 64 px images and crops, the stock model resized to 128 px, fewer "
                             "proposals and ROI samples (QUICK_NUCLS, QUICK_STOCK), 1 repeat, no warm-up")
    parser.add_argument("--size", type=int, default=None, help="side of the inference images (default 512)")
    parser.add_argument("--images", type=int, default=None, help="inference images (default 4 on cuda, 1 on cpu)")
    parser.add_argument("--repeats", type=int, default=None, help="inference repeats, best kept (cuda 3, cpu 1)")
    parser.add_argument("--train-iters", type=int, default=None, help="timed training iterations (cuda 5, cpu 1)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads; 0 = torch's default (cpu: 1)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated subset of {MODELS}")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return

    device = args.device or "auto"  # the children import torch; the first one resolves 'auto'
    gpu = device == "cuda" or (device == "auto" and _cuda_visible())
    if args.quick:
        size, n_images, repeats, iters, crop, nuclei, stock_size = 64, 1, 1, 1, 64, 5, (128, 128)
    else:
        size, n_images = 512, (4 if gpu else 1)
        repeats, iters, crop, nuclei, stock_size = (3 if gpu else 1), (5 if gpu else 1), 300, 25, None
    size = args.size or size
    n_images = args.images or n_images
    repeats = args.repeats or repeats
    iters = args.train_iters or iters
    threads = args.threads if args.threads is not None else (0 if gpu else 1)
    models = [m for m in args.models.split(",") if m]
    if "stock" not in models or any(m not in MODELS for m in models):
        parser.error(f"--models must include 'stock' and name only {MODELS}")

    images, source = load_images(n_images, size)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "images.npz"
        np.savez(path, *images)
        results = {}
        for name in models:  # one after the other: side by side, they would time each other
            spec = {"model": name, "device": device, "threads": threads, "images": str(path), "repeats": repeats,
                    "train_iters": iters, "crop": crop, "nuclei": nuclei, "stock_size": stock_size,
                    "quick": args.quick}
            results[name] = run_child(spec)
            device = results[name]["device"]  # 'auto' resolved by the first child

    gpu = device == "cuda"
    thr = results["stock"]["threads"]
    stock_resize = "short side 800 px" if stock_size is None else f"short side {stock_size[0]} px (--quick)"
    print(f"device {device}" + ("" if gpu else f" ({thr} thread{'s' * (thr > 1)})")
          + f", torch {results['stock']['torch']}"
          + f" | inference: {n_images} image(s) of {size} x {size} px ({source}), best of {repeats}"
          + f" | training: batch 2 of {crop} x {crop} crops, {nuclei} nuclei each, best of {iters}"
          + f" | stock resize: {stock_resize}")
    mem = "GPU peak MiB infer/train" if gpu else "peak RSS MiB (after build / infer / train)"
    print(f"{'model':<13} {'params':>8} {'infer MP/s':>11} {'s/image':>8} {'train s/iter':>13}   {mem}")
    for name, r in results.items():
        if gpu:
            m = f"{r['cuda_infer_mb']:.0f} / {r['cuda_train_mb']:.0f}"
        else:
            m = f"{r['rss_build_mb']:.0f} / {r['peak_infer_mb']:.0f} / {r['peak_train_mb']:.0f}"
        print(f"{name:<13} {r['params_m']:>7.1f}M {r['mp_per_s']:>11.3f} {r['s_per_image']:>8.2f} "
              f"{r['s_per_iter']:>13.2f}   {m}")
    if not all(r["peaks_exact"] for r in results.values()):
        print("note: /proc/self/clear_refs not writable: training peaks include the inference phase")
    s = results["stock"]
    for name, r in results.items():
        if name == "stock":
            continue
        key_i, key_t = ("cuda_infer_mb", "cuda_train_mb") if gpu else ("peak_infer_mb", "peak_train_mb")
        print(f"ratio vs stock [{name}]: inference throughput x{r['mp_per_s'] / s['mp_per_s']:.2f}, "
              f"training speed x{s['s_per_iter'] / r['s_per_iter']:.2f}, "
              f"peak memory inference x{r[key_i] / s[key_i]:.2f}, training x{r[key_t] / s[key_t]:.2f}")


if __name__ == "__main__":
    main()
