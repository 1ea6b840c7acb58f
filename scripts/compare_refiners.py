"""Fold-1 comparison of refiner variants (issue 16: the cpu refiner never suggests a fibroblast).

Bootstraps every FOV of a synthetic cohort (as notebook 02 does), trains the cpu refiner once per variant on the
whole bootstrap (the refiner is a function approximator: it never sees a truth), and scores its suggestions on the
FOVs of the validation fold (fold 1) only, against the generator's exact truth: detection F1, super-class MCC, the
per-super-class MCCs and how many suggestions of each class it makes. A variant is ``-`` (the profile's refiner) or
``field=value[+field=value]`` overriding :class:`~nucls_utils.suggestions.refine.RefinerConfig` (e.g.
``class_balance=0.5``). Usage, in a checkout whose ``data/pretrained`` holds the cpu trunk::

    .venv/bin/python scripts/compare_refiners.py --cohort data/synthetic/cpu \\
        --folds results/synthetic_cpu/01_data_prep/fold_assignment.csv \\
        --variants -,class_balance=0.5 --out data/refiner_comparison --threads 1

Models are cached per variant under ``--out`` (the notebook's refiner cache), so a re-run only scores.
"""

from __future__ import annotations

import argparse
import collections
import time
from pathlib import Path

import pandas as pd
from variant_fields import parse_overrides

from nucls_utils import io as nio
from nucls_utils import suggestions
from nucls_utils.io.naming import parse_fov_name
from nucls_utils.model import pretrain


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cohort", required=True, help="the synthetic cohort (data/synthetic/<profile>)")
    parser.add_argument("--folds", required=True, help="notebook 01's fold_assignment.csv of that cohort")
    parser.add_argument("--variants", default="-")
    parser.add_argument("--out", required=True, help="where the refiners are cached")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    records = nio.read_dataset(args.cohort)
    fold_of = dict(pd.read_csv(args.folds)[["slide_name", "fold"]].itertuples(index=False, name=None))
    val = [i for i, r in enumerate(records) if fold_of[parse_fov_name(r.name).slide] == 1]
    bootstrap = suggestions.bootstrap_dataset(records, args.cohort, progress=False)
    truth = [records[i].nuclei for i in val]
    base = suggestions.REFINER_PROFILES["cpu"].with_(weights=pretrain.resolve_start("cpu", "pretrained"))
    rows = []
    for v in args.variants.split(","):
        cfg = base.with_(**parse_overrides(v, base))
        t0 = time.perf_counter()
        res = suggestions.refine_dataset(records, bootstrap, cfg, seed=args.seed, progress=False,
                                         cache_dir=Path(args.out) / v.replace("=", "-").replace("+", "_"))
        sug = [res.refined[i] for i in val]
        row = suggestions.suggestion_table(truth, {v: sug}).iloc[0].to_dict()
        made = collections.Counter(n.raw_class for s in sug for n in s)
        rows.append({"variant": v, "seed": args.seed, "F1": row["F1"], "MCC": row["MCC"],
                     **{k: row[k] for k in row if k.startswith("MCC_")},
                     "suggested": ", ".join(f"{k} {n}" for k, n in made.most_common()),
                     "seconds": round(time.perf_counter() - t0)})
        print(rows[-1], flush=True)
    print(f"validation fold: {len(val)} FOVs; bootstrap fibroblasts on them: "
          f"{sum(n.raw_class == 'fibroblast' for i in val for n in bootstrap[i])}")
    print(pd.DataFrame(rows).round(1).to_markdown(index=False))


if __name__ == "__main__":
    main()
