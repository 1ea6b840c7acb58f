"""Evaluation of stored predictions and the paper's model tables and figures (notebook 06).

Every number comes from :func:`nucls_utils.evaluation.evaluate_model` (COCO AP@.5 and mAP@.5:.95 with ambiguous
nuclei as crowd, Hungarian matching at IOU >= 0.5, median IOU/DICE over boundary-annotated matches, accuracy, MCC,
AUROC micro and macro, super-classes by summing probabilities). Tables show percentages with one decimal, as the
paper does; fold 1 is the validation fold, shown but left out of the mean (SD) row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paper
from .. import taxonomy as tx
from ..evaluation import ImagePrediction, evaluate_model
from .data import FovSample, eval_truth
from .detections import Detections
from .experiments import Experiment, load_predictions

__all__ = ["evaluate_samples", "evaluate_plan", "in_table", "TABLES_SEPARATOR", "TABLE1_COLUMNS", "table1", "table_s3", "table_s4", "table_s5",
           "table_s6", "paper_vs_run", "table1_paper_vs_run", "vs_generator_truth", "truth_ceiling",
           "PAPER_TABLE1", "PAPER_S5", "PAPER_S6_MEAN", "PAPER_S3"]

#: Table 1's metric columns (result keys of :func:`evaluate_model`) and their headers.
TABLE1_COLUMNS: dict[str, str] = {
    "det_n": "det N", "ap50": "AP@.5", "map": "mAP@.5:.95",
    "seg_n": "seg N", "seg_median_iou": "median IOU", "seg_median_dice": "median DICE",
    "cls_n": "cls N",
    "main_accuracy": "main acc", "main_mcc": "main MCC", "main_auroc_micro": "main µAUROC",
    "main_auroc_macro": "main MAUROC",
    "super_accuracy": "super acc", "super_mcc": "super MCC", "super_auroc_micro": "super µAUROC",
    "super_auroc_macro": "super MAUROC",
}
_COUNTS = ("det_n", "seg_n", "cls_n")

#: The paper's Table 1 mean (SD) rows, ``{truth: {metric: (mean, sd)}}`` (percent; read from :mod:`nucls_utils.paper`).
PAPER_TABLE1 = {t: paper.table1_metrics(t) for t in ("corrected", "ptruth")}
#: Table S5 (fold 1), ``{config: {metric: value}}``, reported cells only.
PAPER_S5 = paper.table_s5()
#: Table S6 mean over folds (model trained on uncorrected data, tested on corrected data).
PAPER_S6_MEAN = paper.table_s6_mean()
#: Table S3, ResNet-18 AP@.5 by scale factor (fold 1).
PAPER_S3 = paper.table_s3()


# ---------------------------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------------------------
def evaluate_samples(samples: Sequence[FovSample], preds: dict[str, Detections]) -> dict:
    """:func:`evaluate_model` of stored predictions against the truth of ``samples`` (matched by FOV name)."""
    missing = [s.name for s in samples if s.name not in preds]
    if missing:
        raise KeyError(f"no stored prediction for {len(missing)} FOV(s), e.g. {missing[0]}")
    return evaluate_model([eval_truth(s) for s in samples], [preds[s.name].to_eval() for s in samples])


def evaluate_plan(plan: Sequence[Experiment], out_root: str | Path, truths: dict[str, list[FovSample]],
                  progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """Evaluate every experiment's stored predictions against every truth it has predictions for.

    Parameters
    ----------
    truths : ``{truth name: samples}``; ``'corrected'`` (and e.g. ``'generator'``) are scored on the predictions
        ``predictions_test.npz``; any other name ``X`` on ``predictions_X.npz``.

    Returns
    -------
    rows : DataFrame, one row per (experiment, truth): experiment fields and every scalar metric (fractions).
    details : ``{(experiment, truth): full result dict}`` (matched pairs, per-class scores, confusion tables).
    """
    from ..progress import tqdm

    rows, details = [], {}
    for exp in tqdm(plan, desc="evaluating", disable=not progress):
        for truth_name, samples in truths.items():
            fname = "test" if truth_name in ("corrected", "generator") else truth_name
            path = Path(out_root) / exp.name / f"predictions_{fname}.npz"
            if not path.is_file():
                continue
            preds = load_predictions(path)
            subset = [s for s in samples if s.name in preds]
            if not subset:
                continue
            res = evaluate_samples(subset, preds)
            details[(exp.name, truth_name)] = res
            rows.append({"experiment": exp.name, "truth": truth_name, "fold": exp.fold, "config": exp.config,
                         "tables": TABLES_SEPARATOR.join(exp.tables),
                         "training_data": exp.training_data, "level": exp.model.level,
                         "scale_factor": exp.model.scale_factor, "n_fovs": len(subset),
                         **{k: v for k, v in res.items() if np.isscalar(v)}})
    return pd.DataFrame(rows), details


# ---------------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------------
#: How the ``tables`` column of :func:`evaluate_plan`'s rows joins an experiment's tables.
TABLES_SEPARATOR = "; "


def in_table(rows: pd.DataFrame, table: str) -> pd.Series:
    """Which rows of :func:`evaluate_plan` come from experiments that feed ``table`` (e.g. ``'Table 1'``): the plan's
    own record (:attr:`Experiment.tables <nucls_utils.model.experiments.Experiment>`), not the experiment names."""
    return rows["tables"].map(lambda t: table in str(t).split(TABLES_SEPARATOR)).astype(bool)


def _pct(df: pd.DataFrame) -> pd.DataFrame:
    out = df.copy()
    for k in TABLE1_COLUMNS:
        if k in out and k not in _COUNTS:
            out[k] = (100 * out[k].astype(float)).round(1)
    return out


def table1(rows: pd.DataFrame, truth: str, config: str = "3", training_data: str = "corrected",
           mean_folds: Sequence[int] | None = None) -> pd.DataFrame:
    """Table 1 (or Table S6 with ``training_data='uncorrected'``): one row per fold, then ``Mean (SD)``.

    The mean is over folds 2-5 by default (fold 1 is the validation fold); for the P-truth half, over every fold
    that has P-truth FOVs except fold 1... unless only fold 1 exists, when the mean row is omitted.
    """
    feeds = "Table 1" if training_data == "corrected" else "Table S6"
    sel = rows[(rows["truth"] == truth) & (rows["config"] == config) & (rows["training_data"] == training_data)
               & in_table(rows, feeds)]
    sel = _pct(sel.sort_values("fold"))
    cols = [c for c in TABLE1_COLUMNS if c in sel]
    table = sel[["fold", *cols]].astype({"fold": object}).reset_index(drop=True)
    table["fold"] = [f"{f} (val)" if f == 1 else str(f) for f in sel["fold"]]
    folds = [f for f in sel["fold"] if f != 1] if mean_folds is None else list(mean_folds)
    use = sel[sel["fold"].isin(folds)]
    if len(use) >= 1:
        mean = {"fold": f"Mean (SD), folds {','.join(map(str, folds))}"}
        for c in cols:
            if c in _COUNTS:
                mean[c] = int(use[c].sum())
            else:
                m, s = use[c].mean(), use[c].std(ddof=1) if len(use) > 1 else float("nan")
                mean[c] = f"{m:.1f} ({s:.1f})" if np.isfinite(s) else f"{m:.1f}"
        table = pd.concat([table.astype(object), pd.DataFrame([mean])], ignore_index=True)
    return table.rename(columns=TABLE1_COLUMNS)


def table_s5(rows: pd.DataFrame, truth: str = "corrected") -> pd.DataFrame:
    """Table S5: classification ablations on fold 1, with the paper's values beside ours."""
    sel = rows[(rows["truth"] == truth) & (rows["fold"] == 1) & (rows["training_data"] == "corrected")
               & in_table(rows, "Table S5")]
    out = []
    desc = {"1": "near-vanilla Mask R-CNN (per-class boxes and NMS), hybrid training",
            "2": "class-agnostic boxes + global NMS on objectness",
            "3": "+ 4 classification convolutions (final NuCLS model)",
            "4": "config 2's detector, then an independent thumbnail classifier",
            "6": "config 2 trained on super-classes"}
    for _, r in sel.sort_values("config").iterrows():
        reported = PAPER_S5.get(r["config"], {})
        super_only = r["level"] == "super"
        ours = (r["ap50"], None if super_only else r["main_mcc"], r["super_mcc"],
                None if super_only else r["main_auroc_micro"], r["super_auroc_micro"],
                None if super_only else r["main_auroc_macro"], r["super_auroc_macro"])
        row = {"config": r["config"], "description": desc.get(r["config"], "")}
        for name, o, k in zip(("AP@.5", "MCC main", "MCC super", "µAUROC main", "µAUROC super", "MAUROC main",
                               "MAUROC super"), ours, paper.TABLE_S5_METRICS, strict=True):
            row[name] = None if o is None or not np.isfinite(o) else round(100 * o, 1)
            row[f"{name} (paper)"] = reported.get(k)
        out.append(row)
    return pd.DataFrame(out)


def table_s3(rows: pd.DataFrame, stride: int) -> pd.DataFrame:
    """Table S3: AP@.5 on fold 1 by scale factor (ResNet-18), with input pixels per feature-map cell."""
    sel = rows[(rows["truth"] == "corrected") & (rows["fold"] == 1) & (rows["config"] == "3")
               & (rows["training_data"] == "corrected")
               & in_table(rows, "Table S3")].sort_values("scale_factor")
    return pd.DataFrame({
        "scale factor": sel["scale_factor"].to_numpy(),
        "input px per feature cell": [round(stride / s, 1) for s in sel["scale_factor"]],
        "TIL (~30 px) in feature cells": [round(30 * s / stride, 2) for s in sel["scale_factor"]],
        "AP@.5": (100 * sel["ap50"]).round(1).to_numpy(),
        "AP@.5 (paper, R18)": [PAPER_S3.get(round(s, 2)) for s in sel["scale_factor"]],
        "experiment": sel["experiment"].to_numpy(),
    })


def table_s4(details: dict, experiments: Sequence[str], truth: str) -> pd.DataFrame:
    """Table S4: per-super-class MCC and AUROC (one-vs-rest) of each fold, in percent; also each super-class's recall
    (share of its matched true nuclei predicted as it: whether the model predicts the class at all, issue 16)."""
    rows = []
    for name in experiments:
        res = details.get((name, truth))
        if res is None:
            continue
        per = res["super"]["per_class"]
        row = {"experiment": name, "MCC overall": res["super"]["mcc"], "µAUROC": res["super"]["auroc_micro"],
               "MAUROC": res["super"]["auroc_macro"]}
        for cls in ("tumor_any", "nonTIL_stromal", "sTIL"):
            if cls in per.index:
                row[f"MCC {cls}"] = per.loc[cls, "mcc"]
                row[f"AUROC {cls}"] = per.loc[cls, "auroc"]
                positives = per.loc[cls, "tp"] + per.loc[cls, "fn"]
                row[f"recall {cls}"] = per.loc[cls, "tp"] / positives if positives else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    num = df.columns.drop("experiment")
    df[num] = (100 * df[num].astype(float)).round(1)
    return df


def table_s6(rows: pd.DataFrame) -> pd.DataFrame:
    """Table S6: trained on uncorrected vs corrected single-rater data, both tested on corrected data."""
    sel = rows[(rows["truth"] == "corrected") & (rows["config"] == "3")
               & (in_table(rows, "Table 1") | in_table(rows, "Table S6"))]
    folds = sorted(set(sel.loc[sel["training_data"] == "uncorrected", "fold"]))
    sel = _pct(sel[sel["fold"].isin(folds)])
    keys = [k for k in TABLE1_COLUMNS if k not in _COUNTS]
    out = sel.groupby("training_data")[keys].mean().round(1).T
    out.columns = [f"trained on {c} (folds {','.join(map(str, folds))})" for c in out.columns]
    out["paper, uncorrected (mean)"] = [PAPER_S6_MEAN.get(k) for k in out.index]
    out.index = [TABLE1_COLUMNS[k] for k in out.index]
    return out.reset_index(names="metric")


def paper_vs_run(table1_rows: pd.DataFrame, truth: str) -> pd.DataFrame:
    """Mean of this run's Table 1 (folds 2-5, or every fold for P-truth) beside the paper's mean (SD)."""
    which = "corrected" if truth == "corrected" else "ptruth"
    sel = table1_rows[(table1_rows["truth"] == truth) & (table1_rows["config"] == "3")
                      & (table1_rows["training_data"] == "corrected")
                      & in_table(table1_rows, "Table 1")]
    use = sel[sel["fold"] != 1] if (sel["fold"] != 1).any() else sel
    out = []
    for k, (pm, ps) in PAPER_TABLE1[which].items():
        v = 100 * use[k].astype(float)
        out.append({"metric": TABLE1_COLUMNS[k], "paper mean": pm, "paper SD": ps,
                    "this run mean": round(v.mean(), 1) if v.notna().any() else None,
                    "this run SD": round(v.std(ddof=1), 1) if v.notna().sum() > 1 else None,
                    "folds": ",".join(map(str, sorted(use["fold"]))), "paper_key": f"table1.{which}.{k}"})
    return pd.DataFrame(out)


def table1_paper_vs_run(rows: pd.DataFrame, ptruth: bool) -> pd.DataFrame:
    """Notebook 06's ``nb06_paper_vs_run_table1``: :func:`paper_vs_run` against the corrected single-rater truth,
    and, when the run has the P-truth of the E set (``ptruth``), against it too, one block per truth."""
    pvr = paper_vs_run(rows, "corrected")
    if ptruth:
        pvr = pd.concat([pvr.assign(truth="corrected single-rater"),
                         paper_vs_run(rows, "ptruth").assign(truth="P-truth (E)")], ignore_index=True)
    return pvr


def vs_generator_truth(rows: pd.DataFrame) -> pd.DataFrame:
    """Each model scored against the corrected single-rater truth and against the generator's exact truth
    (synthetic cohort), side by side, percent (notebook 06's ``nb06_vs_generator_truth``)."""
    cols = ["experiment", "truth", "ap50", "map", "seg_median_dice", "main_mcc", "super_mcc", "super_auroc_micro"]
    both = rows[rows["truth"].isin(["corrected", "generator"])][cols]
    gen = both.pivot_table(index="experiment", columns="truth", values=cols[2:])
    gen = (100 * gen).round(1)
    gen.columns = [f"{m} vs {t}" for m, t in gen.columns]
    return gen.reset_index()


def truth_ceiling(truth: Sequence[FovSample], generator: Sequence[FovSample], fold_of_slide: dict[str, int], *,
                  seed: int = 0) -> pd.DataFrame:
    """What a perfect model would score against a noisy truth (synthetic cohort): the generator's exact nuclei, with
    their true classes and boundaries, scored as predictions against ``truth`` (e.g. the corrected single-rater
    data) by :func:`evaluate_model`, one row per test fold (slides' folds from ``fold_of_slide``).

    Every generator nucleus gets a seeded random detection score (a perfect detector has no ranking to give), so
    AP@.5 is the precision-recall area of the truth's own errors: nuclei it misses and boxes it adds or draws more
    than IOU 0.5 off. The MCCs are those of the true classes against the truth's labels on matched nuclei."""
    gen = {g.name: g for g in generator}
    rng = np.random.default_rng(seed)
    rows = []
    for fold in sorted(set(fold_of_slide.values())):
        pairs = [(t, gen[t.name]) for t in truth if fold_of_slide.get(t.slide) == fold and t.name in gen]
        if not pairs:
            continue
        truths, preds = [], []
        for t, g in pairs:
            truths.append(eval_truth(t))
            main = [tx.to_main(c) for c in g.classes]
            probs = np.array([[float(m == c) for c in tx.MAIN_CLASSES] for m in main]).reshape(-1, len(tx.MAIN_CLASSES))
            preds.append(ImagePrediction(g.boxes.astype(float), rng.random(len(g.boxes)), probs, tx.MAIN_CLASSES,
                                         [m.copy() for m in g.masks]))
        res = evaluate_model(truths, preds)
        n_truth = res["det_n"]
        rows.append({"fold": fold, "fovs": len(pairs), "truth nuclei": n_truth, "generator nuclei": res["n_pred"],
                     "matched at IOU 0.5": len(res["pairs"]), "AP@.5": res["ap50"], "mAP@.5:.95": res["map"],
                     "median DICE": res["seg_median_dice"], "main MCC": res["main_mcc"],
                     "super MCC": res["super_mcc"]})
    df = pd.DataFrame(rows)
    pct = ["AP@.5", "mAP@.5:.95", "median DICE", "main MCC", "super MCC"]
    df[pct] = (100 * df[pct].astype(float)).round(1)
    return df
