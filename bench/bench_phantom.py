"""Benchmark: generating the synthetic cohort of a profile (default: cpu).

Prints the wall time, the time per FOV, the share of a one-hour run_all budget it uses, and a ratio against a peer
measured in the same run: only encoding and writing the same cohort's PNGs and CSVs (the I/O floor any generator
pays), so the ratio says how much the simulation and rendering add on top.

Run: ``.venv/bin/python bench/bench_phantom.py [PROFILE]``.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from nucls_utils import io as nio
from nucls_utils.phantom import PROFILE_SPECS, generate_cohort


def main(profile: str = "cpu") -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        root = generate_cohort(Path(tmp) / "cohort", profile, 0, progress=False)
        gen = time.perf_counter() - t
        records = nio.read_dataset(root)
        images = {r.name: r.read_rgb() for r in records}
        t = time.perf_counter()
        nio.write_dataset(records, Path(tmp) / "copy", images=images, masks=True)
        floor = time.perf_counter() - t
    n = PROFILE_SPECS[profile].n_fovs
    print(f"profile {profile}: {n} FOVs, {sum(len(r.nuclei) for r in records)} nuclei")
    print(f"generation: {gen:.1f} s ({1000 * gen / n:.0f} ms per FOV), {100 * gen / 3600:.1f} % of a one-hour budget")
    print(f"peer (write the same PNGs/CSVs/masks only): {floor:.1f} s | generation / peer = x{gen / floor:.1f}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "cpu")
