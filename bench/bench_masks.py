"""Benchmark: rasterising a FOV's instance mask.

Ours (:func:`nucls_utils.io.rasterize_instances`: each polygon filled within its own box) against a common peer,
filling each polygon over the whole image with ``skimage.draw.polygon2mask`` and painting it in. Both run in the
same process on the same FOVs; the script prints the time ratio (absolute times on shared machines are noise) and
checks that both give the same mask.

Run: ``.venv/bin/python bench/bench_masks.py [DATASET_DIR]`` (default: ../shared/data/nucls_sample).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from _timing import best_of
from skimage.draw import polygon2mask

from nucls_utils import io as nio
from nucls_utils.io.masks import _EDGE_NUDGE


def peer(nuclei, shape):
    labels = np.zeros(shape, dtype=np.int32)
    for k in np.argsort([-n.area for n in nuclei], kind="stable"):
        n = nuclei[k]
        if n.is_polygon:
            verts = np.stack([np.asarray(n.coords_y) - 0.5 + _EDGE_NUDGE[1],
                              np.asarray(n.coords_x) - 0.5 + _EDGE_NUDGE[0]], axis=1)
            m = polygon2mask(shape, verts)
        else:
            m = np.zeros(shape, bool)
            m[max(n.ymin, 0):n.ymax, max(n.xmin, 0):n.xmax] = True
        labels[m] = k + 1
    return labels


def main(root: str) -> None:
    records = nio.read_dataset(root)
    for r in records:
        assert np.array_equal(nio.rasterize_instances(r.nuclei, r.image_shape), peer(r.nuclei, r.image_shape))
    ours = best_of(lambda: [nio.rasterize_instances(r.nuclei, r.image_shape) for r in records])
    theirs = best_of(lambda: [peer(r.nuclei, r.image_shape) for r in records])
    n = sum(len(r.nuclei) for r in records)
    print(f"{len(records)} FOVs, {n} nuclei; identical masks")
    print(f"rasterize_instances: {ours * 1e3:.1f} ms | full-image polygon2mask peer: {theirs * 1e3:.1f} ms | "
          f"speed-up x{theirs / ours:.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).resolve().parents[2] / "shared/data/nucls_sample"))
