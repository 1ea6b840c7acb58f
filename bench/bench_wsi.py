"""Benchmark: the NuCLS model on whole slides (``nucls_utils.wsi``), in one run.

* **Workers**: tiles/s and nuclei/s of ``predict_slide`` on the larger slide with a local Dask cluster of 1 worker x
  2 torch threads against 2 workers x 1 thread (the ratio is printed; the cluster's start-up, a few seconds, is
  in the wall time, as a user pays it).
* **Memory**: peak resident memory of the whole prediction (in process, 2 threads) on a slide and on a slide of 4x
  its area (twice the side); each in its own child process, so each peak is that run's own. It must not grow with
  the slide: the ratio is printed against the issue's bound of 1.25.
* **Where the time goes**: the shares of reading and resampling, tissue detection, normalisation, the model, and
  tracing / writing, from the 1x run's summary.
* **Our model against stock torchvision Mask R-CNN** (``maskrcnn_resnet50_fpn``, ``weights=None``, 8 classes plus
  background, its own resize of the 512-px tiles to 800 px) on the same tiles, each wrapped as a tile predictor
  (the stock model's full-tile masks cropped to its boxes): tiles/s and the ratio.

The model: ``--model DIR`` (default: notebook 05's ``config3_fold1`` of the cpu run when it exists, else an untrained
cpu-profile model, said in the output; an untrained model returns up to its 300-detection cap per tile, the worst
case for the heads). Slides: the phantom's synthetic slide (``nucls_utils.phantom.slide``) of ``--side`` px a side
at 0.25 um/px and of twice that side, cached under ``data/synthetic/slides/``.

Run: ``.venv/bin/python bench/bench_wsi.py [--quick] [--side 2000] [--model DIR] [--stock-tiles 6]``
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
DEFAULT_MODEL = REPO / "results" / "synthetic_cpu" / "05_training" / "models" / "config3_fold1"


def _slide(side: int) -> Path:
    from nucls_utils.phantom.slide import SlideSpec, make_slide

    path = REPO / "data" / "synthetic" / "slides" / f"bench_{side}.tif"
    if not path.is_file():
        make_slide(path, SlideSpec(width_px=side, height_px=side), seed=11, progress=False)
    return path


def _untrained_model(folder: Path) -> Path:
    import torch

    from nucls_utils.model.architecture import build_model
    from nucls_utils.model.train import MODEL_PROFILES

    cfg = MODEL_PROFILES["cpu"].with_(weights=None)
    torch.manual_seed(0)
    net = build_model(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"model_config": cfg.to_dict(), "state_dict": net.state_dict()}, folder / "model.pt")
    return folder


def child(args) -> None:
    """One prediction in this process; prints a JSON line with its summary and peak resident memory."""
    import resource

    import torch

    from nucls_utils.wsi import predict as wp

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as out:
        s = wp.predict_slide(args.slide, args.model, out, workers=args.workers, threads=args.threads,
                             progress=False)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"nuclei": s["nuclei"], "tiles": s["run"]["tiles_predicted"], "seconds": s["run"]["seconds"],
                      "peak_mb": peak_mb, "slide_mm2": s["tissue_mm2"]}))


def _run_child(slide: Path, model: Path, workers: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", "--slide", str(slide), "--model", str(model), "--workers",
           str(workers), "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _stock_predictor():
    """Stock torchvision Mask R-CNN as a tile predictor returning Detections (masks cropped to boxes, 28 x 28)."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from nucls_utils import taxonomy as tx
    from nucls_utils.model.detections import Detections

    classes = tuple(tx.MAIN_CLASSES)
    torch.manual_seed(0)
    net = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(classes) + 1).eval()

    def predict(rgb):
        x = torch.from_numpy(np.ascontiguousarray(rgb[..., :3])).permute(2, 0, 1).float() / 255.0
        with torch.no_grad():
            out = net([x])[0]
        boxes = out["boxes"].numpy()
        n = len(boxes)
        probs = np.zeros((n, len(classes)), np.float32)
        probs[np.arange(n), out["labels"].numpy() - 1] = 1.0
        masks = np.zeros((n, 28, 28), np.float32)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            crop = out["masks"][k:k + 1, :, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
            masks[k] = F.interpolate(crop, size=(28, 28), mode="bilinear", align_corners=False)[0, 0].numpy()
        return Detections(boxes, out["scores"].numpy(), probs, classes, masks)

    return predict


def compare_stock(slide: Path, model: Path, n_tiles: int, threads: int) -> dict:
    """Tiles/s of our model and of stock Mask R-CNN on the same ``n_tiles`` tissue tiles of ``slide``."""
    import torch

    from nucls_utils.model.train import load_trained
    from nucls_utils.wsi import predict as wp
    from nucls_utils.wsi.reader import open_slide

    torch.set_num_threads(threads)
    plan = wp.plan_slide(slide)
    jobs = plan.jobs[:n_tiles]
    with open_slide(slide) as s:
        tiles = [wp._normalise(wp.read_model_window(s, plan.model_scale, *j.window), plan.stain_matrix) for j in jobs]
    ours = load_trained(model)
    stock = _stock_predictor()
    res = {}
    for name, fn in (("nucls", ours.predict), ("stock", stock)):
        fn(tiles[0][:64, :64])  # warm-up
        t = time.perf_counter()
        n = sum(len(fn(tile)) for tile in tiles)
        sec = time.perf_counter() - t
        res[name] = {"tiles_per_s": len(tiles) / sec, "nuclei_per_s": n / sec, "seconds": sec}
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--slide", type=Path)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--side", type=int, default=2000, help="side of the 1x slide, px at 0.25 um/px")
    parser.add_argument("--stock-tiles", type=int, default=6)
    parser.add_argument("--quick", action="store_true", help="a 1000-px slide and 2 stock tiles (the suite's check)")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    side = 1000 if args.quick else args.side
    stock_tiles = 2 if args.quick else args.stock_tiles
    with tempfile.TemporaryDirectory() as tmp:
        if args.model is not None:
            model, what = args.model, f"{args.model.name} (given)"
        elif DEFAULT_MODEL.joinpath("model.pt").is_file():
            model, what = DEFAULT_MODEL, "notebook 05's config3_fold1 (cpu run)"
        else:
            model, what = _untrained_model(Path(tmp) / "untrained"), "an untrained cpu-profile model"
        s1, s4 = _slide(side), _slide(2 * side)
        print(f"model: {what}; slides {side} and {2 * side} px a side at 0.25 um/px")
        one = _run_child(s1, model, 0, 2)
        four = _run_child(s4, model, 0, 2)
        w12 = _run_child(s4, model, 1, 2)  # the larger slide: the cluster's start-up is a smaller share
        w21 = _run_child(s4, model, 2, 1)
        stock = compare_stock(s1, model, stock_tiles, 2)
    rows = []
    for name, r in (("in process, 2 threads, 1x", one), ("in process, 2 threads, 4x", four),
                    ("Dask 1 worker x 2 threads, 4x", w12), ("Dask 2 workers x 1 thread, 4x", w21)):
        wall = r["seconds"]["tiles_wall"]
        rows.append(f"{name:<32} {r['tiles']:>5} tiles {r['nuclei']:>7} nuclei  {r['tiles'] / wall:6.3f} tiles/s "
                    f"{r['nuclei'] / wall:8.1f} nuclei/s  peak {r['peak_mb']:7.0f} MB (client process)")
    print("\n".join(rows))
    sec = one["seconds"]
    parts = {"read + resample": sec["read"], "tissue detection": sec["tissue"] + sec["thumbnail"],
             "normalise": sec["normalise"], "model": sec["model"], "trace + write": sec["write"],
             "merge": sec["merge"]}
    total = sum(parts.values())
    print("time share (1x, in process): " + ", ".join(f"{k} {100 * v / total:.1f} %" for k, v in parts.items()))
    r_workers = (w21["tiles"] / w21["seconds"]["tiles_wall"]) / (w12["tiles"] / w12["seconds"]["tiles_wall"])
    print(f"ratio 2 workers x 1 thread vs 1 worker x 2 threads (tiles/s, 4x slide): {r_workers:.2f}")
    r_mem = four["peak_mb"] / one["peak_mb"]
    print(f"ratio peak memory 4x slide vs 1x slide: {r_mem:.3f} (bound 1.25: "
          f"{'within' if r_mem <= 1.25 else 'OVER'})")
    print(f"ours vs stock Mask R-CNN on the same {stock_tiles} tiles: {stock['nucls']['tiles_per_s']:.3f} vs "
          f"{stock['stock']['tiles_per_s']:.3f} tiles/s, ratio {stock['nucls']['tiles_per_s'] / stock['stock']['tiles_per_s']:.2f}")


if __name__ == "__main__":
    main()
