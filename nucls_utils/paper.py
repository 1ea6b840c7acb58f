"""The paper's numbers that this study compares with, each typed once.

Amgad et al., "NuCLS: A scalable crowdsourcing approach and dataset for nucleus classification and segmentation in
breast cancer", GigaScience 2022. Every "paper vs this run" table of the notebooks, and every paper column of the
model tables (Table 1, S3, S5, S6), reads its paper values from :data:`NUMBERS`; nothing else in the package or the
notebooks types a number of the paper. Each entry names where the paper reports it and states, in one line, the
query behind it as far as the paper and its reference code let us tell (``../shared/reference/nucls_algorithms.md``
discusses the doubtful ones). The neighbouring systems' own reported numbers (keys ``seed002.*``, ``seed003.*``), which
notebook 08 sets beside its baselines, live here too, so that no other paper's number is typed elsewhere either.

A table row refers to its paper number by key (column ``paper_key``); ``"<key>:sd"`` is the SD the paper gives next
to that number. :func:`lookup` resolves both, and the tests rebuild every paper-vs-run table and compare its paper
column with this module.

Examples
--------
>>> from nucls_utils import paper
>>> paper.value("fig3a.np_detection_ap")
0.68
>>> paper.lookup("fig4d.self_kappa_ps:sd")
7.9
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import pandas as pd

__all__ = ["PaperNumber", "NUMBERS", "get", "value", "sd", "lookup", "row", "table", "table1_metrics",
           "table1_n", "table_s5", "table_s6_mean", "table_s3", "TABLE1_METRICS", "TABLE_S5_METRICS"]


@dataclass(frozen=True)
class PaperNumber:
    """One number (or rule) the paper reports.

    Attributes
    ----------
    key : str
        ``<figure or table>.<name>``, e.g. ``"tableS2.refined_f1"``.
    value : float, int or str
    source : str
        Where the paper reports it ("Table S2", "Fig. 4d", "Results text").
    query : str
        One line: what was measured, on which data, against which reference.
    sd : float, optional
        The SD (or +- spread) the paper gives beside it.
    quoted : bool
        True when the value (and SD) is printed in the paper as it stands here; False when it is read from the
        paper's words (a verdict, "about half of" a count); the query then says how.
    """

    key: str
    value: float | int | str
    source: str
    query: str
    sd: float | None = None
    quoted: bool = True


# ---------------------------------------------------------------------------------------------------------------
# the numbers
# ---------------------------------------------------------------------------------------------------------------
_N = PaperNumber

_SCALARS: tuple[PaperNumber, ...] = (
    # data set (notebook 01)
    _N("dataset.hospitals", 18, "Introduction", "TCGA institutions (tissue-source sites) the slides come from"),
    _N("dataset.slides", 125, "Methods", "slides, one per patient (the public core set has 124)"),
    _N("dataset.corrected_nuclei", 64000, "Results text",
       "corrected single-rater nuclei (core set): 'half of these' 128,000 annotations underwent correction",
       quoted=False),
    _N("dataset.clicked_share_singlerater", 36.6, "Fig. 4b text",
       "share (%) of single-rater annotations whose suggested boundary was clicked (kept as a polyline)"),
    _N("dataset.fov_side_um", 65, "Definitions", "side of a field of view in microns ('~65 x 65 um')"),
    # suggestions (notebook 02, Table S2 / Fig. S4; quoted in the Fig. 4 text)
    _N("tableS2.bootstrap_f1", 31.7, "Table S2",
       "heuristic bootstrap detection F1 (%, IOU >= 0.5) against the corrected single-rater data"),
    _N("tableS2.refined_f1", 47.9, "Table S2",
       "Mask R-CNN-refined suggestions' detection F1 (%, IOU >= 0.5) against the corrected single-rater data"),
    _N("tableS2.bootstrap_region_mcc", 77.9, "Table S2",
       "MCC x 100 of the region-inherited class of bootstrap nuclei (super-classes), matched nuclei"),
    _N("tableS2.refined_model_mcc", 52.7, "Table S2",
       "MCC x 100 of the refined suggestions' Mask R-CNN class (super-classes), matched nuclei"),
    _N("tableS2.refined_model_stil_recall", 96.8, "Table S2", "sTIL recall (%) of the refined suggestions' model class"),
    _N("tableS2.refined_region_mcc", 67.6, "Table S2",
       "MCC x 100 of the region-inherited class of refined nuclei (super-classes), matched nuclei"),
    _N("tableS2.refined_region_stil_recall", 76.6, "Table S2",
       "sTIL recall (%) of the refined suggestions' region-inherited class"),
    # the annotation study (notebooks 02-03)
    _N("fig4b.clicked_e", 41.7, "Fig. 4b", "per participant, % of suggestions whose boundary was clicked, E set",
       sd=17.3),
    _N("fig4c.boundary_dice_e", 85.0, "Fig. 4c",
       "DICE x 100 of suggested boundaries the EM judged correct against manual traces, E set", sd=5.9),
    _N("fig3a.np_detection_ap", 0.68, "Fig. 3a",
       "average precision of the inferred NP-label's detection against the P-truth, E set (IOU 0.25/0.5/0.75 pooled)"),
    _N("fig3b.np_auroc_micro", 0.93, "Fig. 3b", "micro AUROC of the NP-label classification vs the P-truth, E set, "
                                                "main classes"),
    _N("fig3b.np_auroc_macro", 0.75, "Fig. 3b", "macro AUROC of the NP-label classification vs the P-truth, E set, "
                                                "main classes"),
    _N("fig3.np_mcc_low", 60.7, "Results text (Fig. 3)", "lowest per-NP classification MCC x 100 against the P-truth"),
    _N("fig3.np_mcc_high", 84.2, "Results text (Fig. 3)",
       "highest per-NP classification MCC x 100 against the P-truth"),
    _N("fig5a.anchors_iou025", 1238, "Fig. 5a",
       "P-truth nuclei (consensus anchors with >= 2 pathologist detections) at clustering IOU 0.25"),
    _N("fig5c.alpha_ps_main", 55.5, "Fig. 5c",
       "Krippendorff alpha x 100 among pathologists, main classes, anchors at IOU 0.25"),
    _N("fig5.alpha_ps_super", 66.1, "Results text (Fig. 5)", "Krippendorff alpha x 100 among pathologists, "
                                                             "super-classes"),
    _N("fig5.alpha_nps_super", 60.3, "Results text (Fig. 5)", "Krippendorff alpha x 100 among NPs, super-classes"),
    _N("fig4d.self_kappa_ps", 87.4, "Fig. 4d",
       "self-agreement Cohen kappa x 100 of pathologists, E vs U-control, mean over participants", sd=7.9),
    _N("fig4d.self_kappa_nps", 74.0, "Fig. 4d",
       "self-agreement Cohen kappa x 100 of NPs, E vs U-control, mean over participants", sd=12.6),
    _N("fig4e.np_auroc_e", 0.95, "Fig. 4e", "micro AUROC of the NP-label vs the P-truth in the E set (with "
                                            "suggestions)"),
    _N("fig4e.np_auroc_u", 0.92, "Fig. 4e", "micro AUROC of the NP-label vs the P-truth in the U-control set "
                                            "(without suggestions)"),
    _N("figS8.stils_by_16_nps", 53.3, "Fig. S8", "% of sTIL anchors detected by at least 16 NPs"),
    _N("figS8.fibroblasts_by_16_nps", 21.4, "Fig. S8", "% of fibroblast anchors detected by at least 16 NPs"),
    _N("fig4e.np_auroc_pvalue", "< 0.001", "Fig. 4e", "p-value of E vs U-control NP-label AUROC"),
    _N("fig3e.redundancy_plateau_k", 6, "Fig. 3e",
       "NPs per FOV beyond which the inferred label's accuracy improves little (NP-redundancy simulation)"),
    _N("fig3e.stromal_need_more_nps", "yes", "Fig. 3e text", "whether stromal nuclei need more NPs per FOV than "
                                                              "tumor nuclei or sTILs ('require more NPs per FOV')",
       quoted=False),
    _N("fig3e.total_nps", 18, "Methods (Fig. 3e)", "distinct NPs held constant across the simulation's realisations"),
    _N("fig3e.realisations", 1000, "Methods (Fig. 3e)", "realisations per number of NPs per FOV"),
    # DTALE (notebook 07)
    _N("fig7.disc_precision_tumor", 0.99, "Fig. 7", "precision of the discriminative DTALE node of tumor nuclei"),
    _N("fig7.disc_precision_stroma", 0.89, "Fig. 7", "precision of the discriminative DTALE node of stromal nuclei"),
    _N("fig7.disc_precision_stils", 0.98, "Fig. 7", "precision of the discriminative DTALE node of sTILs"),
    _N("figS14.lymphocyte_rep_f1", 0.74, "Fig. S14", "F1 of the representative DTALE node of lymphocytes"),
    _N("figS14.lymphocyte_rep_rule", "MajorAxisLength < 36.2 and Haralick.SumSq.Range > 2.1", "Fig. S14",
       "the representative DTALE rule of lymphocytes (major axis in pixels at 0.2 microns per pixel)"),
    _N("fig7.tree_max_depth", 7, "Methods (DTALE)", "maximum depth of the DTALE decision tree"),
    _N("fig7.tree_min_samples_leaf", 250, "Methods (DTALE)", "minimum nuclei per leaf of the DTALE decision tree"),
    # the neighbouring systems' own reports (notebook 08's baselines; ../shared/reference/seeds/)
    _N("seed002.tile_f1_weighted", 97.33, "seed 002 (tile classifier), Results",
       "test F1 (%, weighted over the two classes) of 256 px tiles labelled nucleus / no nucleus, its own data"),
    _N("seed003.count_deviation_small", 42.6, "seed 003 (U-Nets), notebook 05 as quoted by issue 18",
       "count deviation (%) of the small U-Net on CryoNuSeg, from issue 18's words 'the seed reports 42.6 / 56.0 % "
       "for its two nets on CryoNuSeg' (not in the seed text we hold)", quoted=False),
    _N("seed003.count_deviation_full", 56.0, "seed 003 (U-Nets), notebook 06 as quoted by issue 18",
       "count deviation (%) of the full-depth U-Net on CryoNuSeg, from issue 18's words 'the seed reports 42.6 / "
       "56.0 % for its two nets on CryoNuSeg' (not in the seed text we hold)", quoted=False),
)

#: Table 1's metric keys (results of :func:`nucls_utils.evaluation.evaluate_model`, percent) in the paper's order.
TABLE1_METRICS = ("ap50", "map", "seg_median_iou", "seg_median_dice", "main_accuracy", "main_mcc", "main_auroc_micro",
                  "main_auroc_macro", "super_accuracy", "super_mcc", "super_auroc_micro", "super_auroc_macro")
# Table 1, mean (SD) rows: corrected single-rater truth over folds 2-5; P-truth over folds 1, 3-5
_TABLE1 = {
    "corrected": ((74.8, 0.5), (33.0, 0.9), (79.3, 1.3), (88.5, 0.8), (68.4, 4.2), (55.7, 5.4), (92.8, 2.0),
                  (83.7, 2.9), (77.7, 5.7), (65.6, 7.9), (93.5, 2.7), (86.0, 3.2)),
    "ptruth": ((65.0, 5.4), (28.2, 4.0), (74.9, 2.3), (85.7, 1.5), (66.4, 2.1), (50.8, 6.0), (89.1, 6.0),
               (88.4, 2.1), (73.9, 9.6), (61.2, 13.8), (87.8, 9.2), (90.6, 4.4)),
}
_TABLE1_TRUTH = {"corrected": "the corrected single-rater data, mean over test folds 2-5",
                 "ptruth": "the P-truth of the E set, mean over folds 1 and 3-5"}
# Table 1 (top half): detection N per test fold
_TABLE1_N = (6102, 15442, 12672, 8260, 7295)
#: Table S5's metric keys, in the order of :data:`_TABLE_S5`'s tuples.
TABLE_S5_METRICS = ("ap50", "main_mcc", "super_mcc", "main_auroc_micro", "super_auroc_micro", "main_auroc_macro",
                    "super_auroc_macro")
# Table S5 (fold 1), per classification config; None: not reported (or lost in the text extraction)
_TABLE_S5 = {
    "1": (70.0, None, None, None, None, None, None),
    "2": (74.5, 57.0, 65.0, 93.4, 94.3, 85.2, 88.2),
    "3": (75.4, 59.6, 66.0, 93.5, 93.7, 84.7, 85.2),
    "4": (72.2, 52.6, 60.9, 91.0, 92.3, 82.4, 83.6),
    "6": (74.8, None, 63.6, None, 93.5, None, 85.9),
}
# Table S6, mean over folds 2-5: trained on the uncorrected single-rater data, tested on the corrected data
_TABLE_S6 = (72.9, 32.0, 78.8, 88.1, 66.4, 53.7, 92.2, 79.6, 76.1, 63.0, 92.7, 83.8)
# Table S3, ResNet-18 backbone, AP@.5 (fold 1) by the input's scale factor
_TABLE_S3 = {1.0: 61.7, 2.67: 76.4, 4.0: 75.0}


def _tables() -> tuple[PaperNumber, ...]:
    out = []
    for truth, cells in _TABLE1.items():
        for k, (m, s) in zip(TABLE1_METRICS, cells, strict=True):
            out.append(_N(f"table1.{truth}.{k}", m, "Table 1", f"{k} (%) against {_TABLE1_TRUTH[truth]}", sd=s))
    for fold, n in enumerate(_TABLE1_N, start=1):
        out.append(_N(f"table1.n.fold{fold}", n, "Table 1", f"detection N (countable nuclei) of test fold {fold}"))
    for config, cells in _TABLE_S5.items():
        for k, v in zip(TABLE_S5_METRICS, cells, strict=True):
            if v is not None:
                out.append(_N(f"tableS5.config{config}.{k}", v, "Table S5", f"{k} (%) of config {config}, fold 1"))
    for k, v in zip(TABLE1_METRICS, _TABLE_S6, strict=True):
        out.append(_N(f"tableS6.{k}", v, "Table S6", f"{k} (%) of models trained on uncorrected data, tested on "
                                                     "corrected data, mean over folds 2-5"))
    for f, v in _TABLE_S3.items():
        out.append(_N(f"tableS3.sf{f:g}.ap50", v, "Table S3", f"AP@.5 (%) at scale factor {f:g}, ResNet-18, fold 1"))
    return tuple(out)


def _index(numbers) -> Mapping[str, PaperNumber]:
    table: dict[str, PaperNumber] = {}
    for n in numbers:
        if n.key in table:
            raise ValueError(f"paper number {n.key!r} is defined twice")
        if ":" in n.key:
            raise ValueError(f"paper number key {n.key!r} may not contain ':'")
        table[n.key] = n
    return MappingProxyType(table)


#: Every paper number, by key.
NUMBERS: Mapping[str, PaperNumber] = _index(_SCALARS + _tables())


# ---------------------------------------------------------------------------------------------------------------
# access
# ---------------------------------------------------------------------------------------------------------------
def get(key: str) -> PaperNumber:
    """The :class:`PaperNumber` under ``key``; a ``KeyError`` names the closest keys when there is none."""
    try:
        return NUMBERS[key]
    except KeyError:
        stem = key.split(".")[0]
        near = [k for k in NUMBERS if k.startswith(stem)][:8]
        raise KeyError(f"no paper number {key!r}" + (f" (keys under {stem!r}: {', '.join(near)})" if near else ""))\
            from None


def value(key: str) -> float | int | str:
    """The paper's value under ``key``."""
    return get(key).value


def sd(key: str) -> float:
    """The SD the paper gives beside ``key``; ``KeyError`` if it gives none."""
    s = get(key).sd
    if s is None:
        raise KeyError(f"the paper gives no SD for {key!r}")
    return s


def lookup(ref: str) -> float | int | str:
    """A table cell's paper value from its reference: ``"<key>"`` (the value) or ``"<key>:sd"`` (its SD)."""
    key, _, part = ref.partition(":")
    if part not in ("", "sd"):
        raise KeyError(f"paper reference {ref!r}: only ':sd' may follow a key")
    return sd(key) if part == "sd" else value(key)


def row(ref: str, quantity: str, this_run, note: str = "") -> dict:
    """One row of a "paper vs this run" table: ``quantity, paper, this_run, note, source, paper_key``."""
    return {"quantity": quantity, "paper": lookup(ref), "this_run": this_run, "note": note,
            "source": get(ref.partition(":")[0]).source, "paper_key": ref}


def table() -> pd.DataFrame:
    """Every paper number: ``key, value, sd, source, query`` (for the supplement and the README)."""
    return pd.DataFrame([{"key": n.key, "value": n.value, "sd": n.sd, "source": n.source, "query": n.query}
                         for n in NUMBERS.values()])


# views in the shapes the model tables use -----------------------------------------------------------------------
def table1_metrics(truth: str) -> dict[str, tuple[float, float]]:
    """Table 1's mean (SD) row: ``{metric: (mean, sd)}`` for ``truth`` ``'corrected'`` or ``'ptruth'``."""
    if truth not in _TABLE1:
        raise ValueError(f"truth must be one of {sorted(_TABLE1)}, not {truth!r}")
    return {k: (value(f"table1.{truth}.{k}"), sd(f"table1.{truth}.{k}")) for k in TABLE1_METRICS}


def table1_n() -> dict[int, int]:
    """Table 1's detection N per test fold."""
    return {f: int(value(f"table1.n.fold{f}")) for f in range(1, len(_TABLE1_N) + 1)}


def table_s5() -> dict[str, dict[str, float]]:
    """Table S5 (fold 1): ``{config: {metric: value}}``, reported cells only."""
    return {c: {k: value(f"tableS5.config{c}.{k}") for k in TABLE_S5_METRICS if f"tableS5.config{c}.{k}" in NUMBERS}
            for c in _TABLE_S5}


def table_s6_mean() -> dict[str, float]:
    """Table S6's mean row: ``{metric: value}``."""
    return {k: value(f"tableS6.{k}") for k in TABLE1_METRICS}


def table_s3() -> dict[float, float]:
    """Table S3: ``{scale factor: AP@.5}`` (ResNet-18, fold 1)."""
    return {f: value(f"tableS3.sf{f:g}.ap50") for f in _TABLE_S3}
