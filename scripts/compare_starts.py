"""Fold-1 comparison of the NuCLS model's backbone starts (issue 16): from scratch vs the synthetic-pretrained trunk.

Trains the final model (config 3) on fold 1 of a finished cpu run's data (notebooks 01-02 must have run into
``--results``) once per variant ``start:updates:freeze_at[:field=value,...]`` (extra fields override the training schedule,
e.g. ``lr=0.005``, or the model, prefixed ``model.``, e.g. ``model.neck_channels=128``; separated by ``+``) and scores each on the fold's test FOVs (corrected
single-rater) and, for transfer, detection on the 17 real FOVs of ``../shared/data/nucls_sample``. Usage::

    .venv/bin/python scripts/compare_starts.py --results results \\
        --variants pretrained:560:200,scratch:560:200 --out data/start_comparison

Training seconds are wall time on this machine; compare them only between variants run alone.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from variant_fields import parse_overrides

from nucls_utils import config
from nucls_utils.config import find_real_sample
from nucls_utils.evaluation import evaluate_model
from nucls_utils.io.dataset import read_dataset
from nucls_utils.model import experiments as ex
from nucls_utils.model import pretrain
from nucls_utils.model.data import eval_truth, load_fov_samples, macenko_normalise
from nucls_utils.model.study import load_model_inputs
from nucls_utils.model.train import load_trained, profile_configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", required=True, help="results/ folder of a cpu run (notebooks 01-02 done)")
    parser.add_argument("--variants", default="pretrained:560:200,scratch:560:200")
    parser.add_argument("--out", required=True, help="where the models go")
    parser.add_argument("--seed", type=int, default=0, help="training seed of the models")
    parser.add_argument("--run-seed", type=int, default=0,
                        help="seed of the run whose results/ are read (its cohort is left as it is)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    scratch = Path(args.out) / "scratch_outputs"
    ctx = config.start_run("05_training", data_dir="", profile="cpu", seed=args.run_seed, results_dir=args.results,
                           figures_dir=str(scratch), tables_dir=str(scratch))
    inputs = load_model_inputs(ctx, normalise=True, progress=False)
    data = ex.ExperimentData(samples=inputs.samples, assignment=inputs.assignment)
    pool = inputs.samples["corrected"]
    _, te = ex.fold_split(inputs.assignment, 1, [s.slide for s in pool])
    test = [pool[i] for i in te]
    truths = [eval_truth(s) for s in test]
    real_dir = find_real_sample("auto")
    real = load_fov_samples(read_dataset(real_dir), normalise=macenko_normalise, progress=False) if real_dir else []
    exp_model_default, schedule = profile_configs("cpu")
    rows = []
    for v in args.variants.split(","):
        start, updates, freeze, *extra = v.split(":")
        items = extra[0].split("+") if extra else []
        train_changes = parse_overrides("+".join(i for i in items if not i.startswith("model.")), schedule)
        model_changes = parse_overrides("+".join(i.removeprefix("model.") for i in items if i.startswith("model.")),
                                        exp_model_default)
        weights = None if start == "scratch" else pretrain.resolve_start("cpu", "pretrained")
        exp = next(e for e in ex.experiment_plan("cpu", [1], weights=weights) if e.name == "config3_fold1")
        if model_changes:
            exp = replace(exp, model=exp.model.with_(**model_changes))
        tcfg = schedule.with_(iterations=int(updates), freeze_detection_at=int(freeze), **train_changes)
        folder = Path(args.out) / v.replace(":", "_").replace("=", "-").replace("+", "_")
        t0 = time.perf_counter()
        s = ex.run_experiment(exp, data, folder, profile="cpu", train_config=tcfg, seed=args.seed, device="cpu",
                              progress=False)
        model = load_trained(folder / exp.name)
        r = evaluate_model(truths, [model.predict(x.rgb).to_eval() for x in test])
        pairs = r["pairs"]
        row = {"start": start, "updates": int(updates), "freeze_at": int(freeze), "changes": "+".join(extra) or "-",
               "train_s": round(s["seconds"]),
               "AP@.5": round(100 * r["ap50"], 1), "main MCC": round(100 * r["main_mcc"], 1),
               "super MCC": round(100 * r["super_mcc"], 1)}
        for sc in ("tumor_any", "nonTIL_stromal", "sTIL", "other_nucleus"):
            m = pairs["true_super"] == sc
            row[f"recall {sc}"] = round(float((pairs.loc[m, "pred_super"] == sc).mean()), 3) if m.any() else None
        if real:
            rr = evaluate_model([eval_truth(x) for x in real], [model.predict(x.rgb).to_eval() for x in real])
            row["real 17 FOVs AP@.5"] = round(100 * rr["ap50"], 1)
        row["wall_s"] = round(time.perf_counter() - t0)
        rows.append(row)
        print(row, flush=True)
    print(pd.DataFrame(rows).to_markdown(index=False))


if __name__ == "__main__":
    main()
