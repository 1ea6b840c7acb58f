"""Benchmark: notebook 05's plan runner on a 2-core CPU, two one-thread worker processes (the cpu profile's
``PLAN_PARALLELISM``) against its peer, one in-process worker with 2 torch threads, in the same run.

Both run the same two cpu-profile config-3 experiments (``--updates`` updates each, detection frozen half-way, no
evaluation or checkpoints; then predictions on the fold's test FOVs) on the smoke cohort, generated into a temporary
folder. Printed: seconds for each, then ``ratio (1 worker x 2 threads) / (2 workers x 1 thread)``; above 1 means the
parallel plan is faster. Absolute times on shared machines are noise; the ratio within one run is not.

Run: ``.venv/bin/python bench/bench_plan_parallelism.py [--updates 60]``
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from nucls_utils.io.dataset import read_dataset
from nucls_utils.io.folds import hospital_kfold
from nucls_utils.model import experiments as ex
from nucls_utils.model.data import load_fov_samples
from nucls_utils.model.train import profile_configs
from nucls_utils.phantom import generate_cohort


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        samples = load_fov_samples(read_dataset(generate_cohort(root / "smoke", "smoke", 0, progress=False)),
                                   progress=False)
        data = ex.ExperimentData(samples={"corrected": samples, "uncorrected": samples},
                                 assignment=hospital_kfold([s.slide for s in samples], n_folds=3, seed=0))
        plan = [e for e in ex.experiment_plan("cpu", [1, 2], weights=None) if e.config == "3"]
        _, schedule = profile_configs("cpu")
        tcfg = schedule.with_(iterations=args.updates, freeze_detection_at=args.updates // 2, checkpoint_every=0,
                              eval_every=0)
        seconds = {}
        for workers, threads in ((1, 2), (2, 1)):
            t0 = time.perf_counter()
            ex.run_plan(plan, data, root / f"w{workers}", profile="cpu", workers=workers, threads=threads,
                        progress=False, train_config=tcfg)
            seconds[workers] = time.perf_counter() - t0
            print(f"{workers} worker(s) x {threads} thread(s): {seconds[workers]:.1f} s for 2 x {args.updates} updates",
                  flush=True)
    print(f"ratio (1 worker x 2 threads) / (2 workers x 1 thread): {seconds[1] / seconds[2]:.2f}")


if __name__ == "__main__":
    main()
