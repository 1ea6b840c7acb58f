"""Benchmark: DTALE's interpretable features (Table S8), one HistomicsTK call per FOV against one per nucleus.

Three ways to get the 62 features of every nucleus, in the same run on the same FOVs, label images and
hematoxylin channels (the annotation outlines rasterised into one label image per FOV):

* **batched** (ours, :func:`nucls_utils.dtale.nuclei_features`): one ``compute_nuclei_features`` call per FOV on
  the label image of all its nuclei;
* **per nucleus, crop**: one call per nucleus on its box plus a 16-px margin (``per_nucleus=True``);
* **per nucleus, full frame** (the reference's way, notes 2h): one call per nucleus on a FOV-sized label image
  holding only that nucleus (``--no-full-frame`` skips it).

Printed: seconds per 1,000 nuclei for each, the ratios to batched (absolute times on a shared machine are noise),
the largest difference of any feature to batched, the time of the stain unmixing (once per FOV, shared by all)
and the share of nuclei with all 62 features.

Run: ``.venv/bin/python bench/bench_dtale_features.py [DATASET_DIR] [--fovs N --repeats R --quick]``
(default dataset: ../shared/data/nucls_sample, else the synthetic cpu cohort data/synthetic/cpu).
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
from _timing import best_of

from nucls_utils import dtale as D
from nucls_utils.dtale.features import _htk_features
from nucls_utils.io.dataset import read_dataset
from nucls_utils.io.masks import rasterize_instances

REPO = Path(__file__).resolve().parent.parent
SAMPLE = Path(os.environ.get("NUCLS_SHARED_DATA", REPO.parent / "shared" / "data")) / "nucls_sample"
SYNTHETIC = REPO / "data" / "synthetic" / "cpu"


def full_frame(lab: np.ndarray, hema: np.ndarray) -> pd.DataFrame:
    """One call per nucleus on a FOV-sized label image that holds only that nucleus."""
    rows = [_htk_features(np.where(lab == k, k, 0).astype(np.int32), hema) for k in np.unique(lab[lab > 0])]
    return pd.concat(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="?", default=None, help="dataset folder (csv/ + rgb/)")
    parser.add_argument("--fovs", type=int, default=0, help="first N FOVs (0 = all)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--no-full-frame", action="store_true", help="skip the per-nucleus full-frame mode")
    parser.add_argument("--quick", action="store_true", help="4 FOVs, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.fovs, args.repeats = 4, 1
    root = Path(args.data) if args.data else (SAMPLE if (SAMPLE / "csv").is_dir() else SYNTHETIC)
    records = read_dataset(root)
    if args.fovs:
        records = records[:args.fovs]
    fovs = []
    t0 = time.perf_counter()
    rgbs = [r.read_rgb() for r in records]
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    hemas = [D.hematoxylin_channel(rgb) for rgb in rgbs]
    t_stain = time.perf_counter() - t0
    for r, hema in zip(records, hemas, strict=True):
        fovs.append((rasterize_instances(r.nuclei, r.image_shape), hema))
    n = sum(len(np.unique(lab[lab > 0])) for lab, _ in fovs)
    print(f"{root}: {len(fovs)} FOVs, {n} nuclei (read {t_read:.2f} s; Macenko unmixing {t_stain:.2f} s, "
          f"{1e3 * t_stain / len(fovs):.0f} ms per FOV, shared by all modes)")

    results: dict[str, list[pd.DataFrame]] = {}
    D.nuclei_features(*fovs[0])  # warm-up (imports, first-call costs), so that no mode pays them
    D.nuclei_features(*fovs[0], per_nucleus=True)

    def run(name, fn):
        def once():
            results[name] = [fn(lab, hema) for lab, hema in fovs]
        return best_of(once, args.repeats)

    times = {"batched (1 call per FOV)": run("batched", lambda lab, h: D.nuclei_features(lab, h)),
             "per nucleus, crop": run("crop", lambda lab, h: D.nuclei_features(lab, h, per_nucleus=True))}
    if not args.no_full_frame:
        times["per nucleus, full frame"] = run("full", full_frame)
    base = pd.concat(results["batched"])[list(D.TABLE_S8_FEATURES)]
    t_base = times["batched (1 call per FOV)"]
    for (label, t), key in zip(times.items(), results, strict=True):
        other = pd.concat(results[key])[list(D.TABLE_S8_FEATURES)]
        diff = float(np.nanmax(np.abs(other.to_numpy() - base.to_numpy()))) if key != "batched" else 0.0
        print(f"{label:26s} {1e3 * t / n:7.1f} s per 1,000 nuclei ({t:.2f} s)  x{t / t_base:.2f} of batched  "
              f"max |diff| vs batched {diff:.2g}")
    complete = (~base.isna().any(axis=1)).mean()
    print(f"nuclei with all 62 features: {100 * complete:.2f}% ({int((~base.isna().any(axis=1)).sum())}/{n})")
    crop = times["per nucleus, crop"]
    print(f"speed-up of batched: x{crop / t_base:.2f} vs per-nucleus crops"
          + (f", x{times['per nucleus, full frame'] / t_base:.2f} vs per-nucleus full frames"
             if "per nucleus, full frame" in times else ""))


if __name__ == "__main__":
    main()
