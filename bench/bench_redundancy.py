"""Benchmark: the NP-redundancy simulation of notebook 04 (paper Fig 3e), batched EM against one EM call per problem.

The simulation re-infers the NP-label for every (realisation, k) pair. Ours stacks ``--batch`` such problems into
one ``(B, I, W)`` label array solved by a single vectorised Dawid-Skene call
(:func:`nucls_utils.interrater.redundancy.simulate_redundancy` with ``batch=32``); the peer is the same simulation
with ``batch=1``, i.e. one EM call per (realisation, k), the way a loop over realisations would run it. Both use
the same seed, so their first realisations are the same problems: the script checks that they give identical rows,
prints the wall time of the whole simulation in the cpu-profile setting (100 realisations, k = 2..15, super-classes,
set E, FOVs with >= 16 NPs) and the per-inference speed ratio (absolute times on shared machines are noise). The
peer runs fewer realisations (``--peer-realisations``) to keep the benchmark short; the ratio is per inference.

Inputs: a study written by notebook 02 (default: the cpu study under /tmp/cpu_run if present, else the smoke one
under /tmp/smoke_run, else the repository's results/); its truth is inferred here exactly as notebook 03 does.

Run: ``.venv/bin/python bench/bench_redundancy.py [STUDY_DIR] [--realisations 100 --peer-realisations 10
--batch 32]``
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from nucls_utils.interrater import analysis as an
from nucls_utils.interrater.redundancy import simulate_redundancy

REPO = Path(__file__).resolve().parents[1]
CANDIDATES = [Path("/tmp/cpu_run/results/synthetic_cpu/02_suggestions/study"),
              REPO / "results" / "synthetic_cpu" / "02_suggestions" / "study",
              Path("/tmp/smoke_run/results/synthetic_smoke/02_suggestions/study"),
              REPO / "results" / "synthetic_smoke" / "02_suggestions" / "study"]


def default_study() -> Path:
    for c in CANDIDATES:
        if (c / "multirater").is_dir():
            return c
    raise SystemExit("no study found; run ./run_all.sh --profile cpu --only 02 (or pass STUDY_DIR)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", nargs="?", type=Path, default=None)
    parser.add_argument("--realisations", type=int, default=100, help="cpu profile: 100 (paper: 1000)")
    parser.add_argument("--peer-realisations", type=int, default=10)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    study_dir = args.study or default_study()

    t0 = time.perf_counter()
    study = an.load_multirater_study(study_dir)
    table = an.anchor_tables(study, [an.PRIMARY_IOU], progress=False)[an.PRIMARY_IOU]
    tt = an.build_truth_tables(table, evalsets=["E"])
    labels, fov, truth, info = an.redundancy_inputs(tt, "E", "super", 16)
    prep = time.perf_counter() - t0
    print(f"study {study_dir}: {len(study.fovnames)} FOVs; simulation population {info['n_anchors']} anchors x "
          f"{info['n_nps']} NPs in {info['n_fovs']} FOVs with >= {info['min_nps_used']} NPs "
          f"({info['n_real']} P-truth nuclei); clustering + truth inference {prep:.1f} s")
    ks = range(2, 16)

    def run(n: int, batch: int) -> tuple[pd.DataFrame, float]:
        t = time.perf_counter()
        sim = simulate_redundancy(labels, fov, truth, ks=ks, n_realisations=n, rng=np.random.default_rng(args.seed),
                                  batch=batch, progress=False)
        return sim, time.perf_counter() - t

    ours, t_ours = run(args.realisations, args.batch)
    peer_n = min(args.peer_realisations, args.realisations)
    peer, t_peer = run(peer_n, 1)
    pd.testing.assert_frame_equal(ours.iloc[:len(peer)].reset_index(drop=True), peer, check_exact=False, rtol=1e-9)
    per_ours, per_peer = t_ours / len(ours), t_peer / len(peer)
    print(f"whole simulation, {args.realisations} realisations x {len(ks)} k = {len(ours)} EM inferences, "
          f"batch {args.batch}: {t_ours:.1f} s ({1e3 * per_ours:.1f} ms per inference)")
    print(f"one EM call per (realisation, k), {peer_n} realisations = {len(peer)} inferences: {t_peer:.1f} s "
          f"({1e3 * per_peer:.1f} ms per inference); identical rows")
    print(f"batched vs one call per problem: x{per_peer / per_ours:.2f} faster per inference "
          f"(the peer would take about {per_peer * len(ours):.0f} s for the whole simulation)")


if __name__ == "__main__":
    main()
