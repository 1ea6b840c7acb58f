"""Benchmark: Dawid-Skene EM throughput, ours against crowd-kit, on the same answers in the same run.

Ours (:func:`nucls_utils.interrater.em.dawid_skene`: sparse one-hot, two sparse-dense products per iteration)
against crowd-kit's ``DawidSkene`` (pandas group-bys). Both run exactly ``--iters`` iterations (crowd-kit with
``tol=-inf``, so its stopping rule never fires). The default problem has the redundancy simulation's size:
2000 anchors x 20 NPs x 14 labels (13 raw classes + undetected), half of the answers missing. Printed: items x
iterations per second for each, the speed ratio (absolute times on shared machines are noise), and the share
of identical labels. Then the batched mode: ``--batch`` independent realisations in one call against a loop of
single calls.

Run: ``.venv/bin/python bench/bench_em.py [--items 2000 --workers 20 --classes 14 --iters 70 --batch 20]``
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd
from _timing import best_of

from nucls_utils.interrater.em import dawid_skene, infer_labels


def planted_answers(rng: np.random.Generator, n_batch: int, n_items: int, n_workers: int, n_classes: int,
                    p_missing: float) -> np.ndarray:
    """Answers (B, I, W) of workers with planted confusion matrices (accuracy 0.3-0.9), -1 = missing."""
    k = n_classes
    accuracy = rng.uniform(0.3, 0.9, (n_batch, n_workers))
    off = rng.dirichlet(np.ones(k - 1), size=(n_batch, n_workers, k)) * (1.0 - accuracy)[..., None, None]
    cms = np.zeros((n_batch, n_workers, k, k))
    cms[..., ~np.eye(k, dtype=bool)] = off.reshape(n_batch, n_workers, -1)
    cms[..., np.arange(k), np.arange(k)] = accuracy[..., None]
    truth = rng.integers(0, k, (n_batch, n_items))
    rows = cms[np.arange(n_batch)[:, None, None], np.arange(n_workers)[None, None, :], truth[..., None]]
    labels = (rng.random((n_batch, n_items, n_workers))[..., None] > np.cumsum(rows, axis=-1)).sum(-1)
    labels = labels.clip(max=k - 1)
    labels[rng.random(labels.shape) < p_missing] = -1
    return labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--classes", type=int, default=14)
    parser.add_argument("--iters", type=int, default=70)
    parser.add_argument("--missing", type=float, default=0.5, help="share of missing answers")
    parser.add_argument("--batch", type=int, default=20, help="realisations for the batched comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from crowdkit.aggregation import DawidSkene

    rng = np.random.default_rng(args.seed)
    k, n_iter = args.classes, args.iters
    labels = planted_answers(rng, 1, args.items, args.workers, k, args.missing)[0]
    i, w = np.nonzero(labels >= 0)
    long = pd.DataFrame({"task": i, "worker": w, "label": labels[i, w]})
    names = np.array([f"class{c:02d}" for c in range(k)] + ["DidNotAnnotateFOV"], dtype=object)
    wide = pd.DataFrame(names[labels])

    def run_crowdkit() -> pd.Series:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # crowd-kit 1.4.2 triggers pandas deprecation warnings
            model = DawidSkene(n_iter=n_iter, tol=float("-inf"))
            out = model.fit_predict(long)
        assert len(model.loss_history_) == n_iter
        return out

    ours_res = dawid_skene(labels, k, n_iter=n_iter)
    theirs_labels = run_crowdkit()
    same = (theirs_labels.to_numpy() == ours_res.labels[theirs_labels.index.to_numpy()]).mean()
    t_ours = best_of(lambda: dawid_skene(labels, k, n_iter=n_iter), args.repeats + 2)
    t_table = best_of(lambda: infer_labels(wide, n_iter=n_iter), args.repeats + 2)
    t_theirs = best_of(run_crowdkit, args.repeats)
    work = args.items * n_iter
    print(f"{args.items} items x {args.workers} workers x {k} classes, {int((labels >= 0).sum())} answers, "
          f"{n_iter} iterations; identical labels {same:.2%}")
    print(f"dawid_skene (int array): {work / t_ours:,.0f} items*iter/s ({t_ours * 1e3:.1f} ms) | "
          f"infer_labels (string DataFrame): {work / t_table:,.0f} items*iter/s ({t_table * 1e3:.1f} ms) | "
          f"crowd-kit DawidSkene: {work / t_theirs:,.0f} items*iter/s ({t_theirs * 1e3:.1f} ms)")
    print(f"speed-up vs crowd-kit: x{t_theirs / t_ours:.1f} (array), x{t_theirs / t_table:.1f} (DataFrame)")

    if args.batch > 0:
        batch = planted_answers(rng, args.batch, args.items, args.workers, k, args.missing)
        together = dawid_skene(batch, k, n_iter=n_iter)
        for b in (0, args.batch - 1):
            np.testing.assert_allclose(together.posteriors[b], dawid_skene(batch[b], k, n_iter=n_iter).posteriors,
                                       rtol=1e-10, atol=1e-12)
        t_batch = best_of(lambda: dawid_skene(batch, k, n_iter=n_iter), args.repeats)
        t_loop = best_of(lambda: [dawid_skene(x, k, n_iter=n_iter) for x in batch], args.repeats)
        work_b = args.batch * work
        print(f"batched: {args.batch} realisations in one call {work_b / t_batch:,.0f} items*iter/s "
              f"({t_batch:.2f} s) | loop of single calls {work_b / t_loop:,.0f} items*iter/s ({t_loop:.2f} s) | "
              f"x{t_loop / t_batch:.2f}; vs crowd-kit (one call timed above, x{args.batch}): "
              f"x{args.batch * t_theirs / t_batch:.0f}")


if __name__ == "__main__":
    main()
