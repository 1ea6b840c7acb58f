"""Notebooks 03 and 04's "paper vs this run" tables (paper values from :mod:`nucls_utils.paper`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from ... import paper
from .truth import _UNBIASED, PRIMARY_IOU

__all__ = [
    "agreement_paper_vs_run", "paper_vs_run", "redundancy_paper_vs_run",
]


def paper_vs_run(rows: Iterable[tuple[str | None, str, float | str | None, str]]) -> pd.DataFrame:
    """A "paper vs this run" table from ``(paper reference, quantity, this run, note)`` rows: the paper's value and
    source come from :mod:`nucls_utils.paper` (reference ``None``: a row the paper has no number for), ``role`` says
    whether the simulated crowd was fitted to the row (:func:`nucls_utils.crowd.calibrate.role`); numbers are
    rounded to 3 significant digits for display, NaN shown empty."""
    from ...crowd.calibrate import role

    out = pd.DataFrame([paper.row(ref, q, v, note) if ref is not None else
                        {"quantity": q, "paper": None, "this_run": v, "note": note, "source": None, "paper_key": None}
                        for ref, q, v, note in rows],
                       columns=["quantity", "paper", "this_run", "note", "source", "paper_key"])
    out.insert(4, "role", [role(k) for k in out["paper_key"]])
    for c in ("paper", "this_run"):
        out[c] = [(float(f"{v:.3g}") if isinstance(v, float | np.floating) and np.isfinite(v) else v)
                  if v is not None else None for v in out[c]]
    return out


def agreement_paper_vs_run(*, np_det: dict, np_det_pooled: dict | None, roc_main: dict, alpha: pd.DataFrame,
                           self_agree: pd.DataFrame, auroc_boot: pd.DataFrame, auroc_tests: pd.DataFrame,
                           np_accuracy: pd.DataFrame, ease16: pd.DataFrame, n_fovs: int,
                           clicked: pd.DataFrame | None = None, boundaries: pd.DataFrame | None = None,
                           evalset: str = "E", effect: pd.DataFrame | None = None) -> pd.DataFrame:
    """The "paper vs this run" table of notebook 03 from its results (percentages as the paper quotes them)."""
    def alpha_at(raters: str, level: str) -> float:
        a = alpha[(alpha["min_iou"] == PRIMARY_IOU) & (alpha["raters"] == raters) & (alpha["level"] == level)
                  & (alpha["min_detections"] == 2)]
        return 100 * float(a["alpha"].iloc[0]) if len(a) else np.nan

    def stat(df: pd.DataFrame | None, value: str, group: str, fn: str, s: str = evalset) -> float:
        if df is None or df.empty:
            return np.nan
        d = df[(df["evalset"] == s) & (df["group"].isin(("SP", "JP") if group == "Ps" else ("NP",)))][value]
        return float(getattr(d, fn)()) if len(d) else np.nan

    main_alpha = alpha[(alpha["min_iou"] == PRIMARY_IOU) & (alpha["raters"] == "Ps") & (alpha["level"] == "main")
                       & (alpha["min_detections"] == 2)]
    n_anchors = int(main_alpha["n_anchors"].iloc[0]) if len(main_alpha) else np.nan
    mcc = np_accuracy.loc[np_accuracy["group"] == "NP", "mcc_pooled_ovr"].dropna() * 100
    boot = auroc_boot.set_index("evalset") if len(auroc_boot) else pd.DataFrame()
    test = auroc_tests[(auroc_tests["set_a"] == evalset) & (auroc_tests["set_b"] == _UNBIASED)] \
        if len(auroc_tests) else pd.DataFrame()
    ease = ease16.set_index("class")
    rows = [
        ("fig3a.np_detection_ap", "NP-label detection AP (E, IOU 0.25)", np_det["ap"],
         "anchors with >= 2 NP detections; y = P-truth calls it a nucleus; score 1 - P(undetected)"),
        ("fig3a.np_detection_ap", "NP-label detection AP, IOU 0.25/0.5/0.75 pooled",
         np_det_pooled["ap"] if np_det_pooled else np.nan, "the reference's query reads all thresholds at once"),
        ("fig3b.np_auroc_micro", "NP-label AUROC, micro (E, main classes)", roc_main["micro"],
         f"{roc_main['n']} P-truth nuclei"),
        ("fig3b.np_auroc_macro", "NP-label AUROC, macro (E, main classes)", roc_main["macro"],
         "area of the mean ROC curve"),
        ("fig3.np_mcc_low", "NP classification MCC x 100, lowest NP", mcc.min() if len(mcc) else np.nan,
         "pooled one-vs-rest, main classes, E"),
        ("fig3.np_mcc_high", "NP classification MCC x 100, highest NP", mcc.max() if len(mcc) else np.nan, ""),
        ("fig5a.anchors_iou025", "P-truth nuclei at IOU 0.25 (>= 2 P detections)", n_anchors,
         f"scales with the number of multi-rater FOVs ({n_fovs} here)"),
        ("fig5c.alpha_ps_main", "alpha x 100, Ps, main classes, IOU 0.25", alpha_at("Ps", "main"),
         "classification; P-truth nuclei detected by >= 2 Ps"),
        ("fig5.alpha_ps_super", "alpha x 100, Ps, super-classes", alpha_at("Ps", "super"), "same anchors"),
        ("fig5.alpha_nps_super", "alpha x 100, NPs, super-classes", alpha_at("NPs", "super"), "same anchors"),
        ("fig4d.self_kappa_ps", "self-agreement kappa x 100, Ps, mean (E vs U-control)",
         100 * stat(self_agree, "kappa", "Ps", "mean"), "main classes, classification"),
        ("fig4d.self_kappa_ps:sd", "self-agreement kappa x 100, Ps, SD", 100 * stat(self_agree, "kappa", "Ps", "std"),
         ""),
        ("fig4d.self_kappa_nps", "self-agreement kappa x 100, NPs, mean",
         100 * stat(self_agree, "kappa", "NPs", "mean"), ""),
        ("fig4d.self_kappa_nps:sd", "self-agreement kappa x 100, NPs, SD",
         100 * stat(self_agree, "kappa", "NPs", "std"), ""),
        ("fig4e.np_auroc_e", "NP-label AUROC micro, E (with suggestions)",
         boot.at[evalset, "micro"] if evalset in boot.index and "micro" in boot.columns else np.nan,
         "main classes, each set vs its own P-truth"),
        ("fig4e.np_auroc_u", "NP-label AUROC micro, U-control (without)",
         boot.at[_UNBIASED, "micro"] if _UNBIASED in boot.index and "micro" in boot.columns else np.nan, ""),
        ("fig4e.np_auroc_pvalue", "E vs U-control, Mann-Whitney p (bootstrap AUROCs)",
         float(test["pvalue"].iloc[0]) if len(test) else np.nan,
         (f"E higher in {100 * float(test['share_a_higher'].iloc[0]):.0f} % of resamples; " if len(test) else "")
         + "p shrinks with the number of resamples"),
        ("figS8.stils_by_16_nps", "sTILs detected by 16+ NPs, %",
         ease.at["sTILs", "percent"] if "sTILs" in ease.index else np.nan,
         f"of {int(ease.at['sTILs', 'n']) if 'sTILs' in ease.index else 0} sTILs (E)"),
        ("figS8.fibroblasts_by_16_nps", "fibroblasts detected by 16+ NPs, %",
         ease.at["fibroblasts", "percent"] if "fibroblasts" in ease.index else np.nan,
         f"of {int(ease.at['fibroblasts', 'n']) if 'fibroblasts' in ease.index else 0} fibroblasts (E)"),
    ]
    if effect is not None and len(effect) and evalset in set(effect["evalset"]):
        eff = effect.set_index("evalset").loc[evalset]
        rows += [(None, f"NP-label AUROC micro, {evalset}, vs the generator's truth", eff["true_auroc"],
                  "the true accuracy the analysis above estimates"),
                 (None, "NP-label AUROC micro, U-control, vs the generator's truth", eff["true_reference_auroc"], ""),
                 (None, f"effect of suggestions ({evalset} - U-control), inferred vs true",
                  f"{eff['inferred_effect']:+.3f} vs {eff['true_effect']:+.3f}",
                  "same sign" if eff["same_sign"] else "OPPOSITE SIGNS: the analysis misreads the planted effect"),
                 (None, f"NP-label true class accuracy x 100, {evalset} vs U-control",
                  f"{100 * eff['true_accuracy']:.1f} vs {100 * eff['true_reference_accuracy']:.1f}",
                  "share of true nuclei the NP-label gives their true main class (generator's truth)")]
    if clicked is not None and len(clicked):
        e = clicked[clicked["evalset"] == evalset]["psegmented"]
        rows += [("fig4b.clicked_e", "clicked suggestions per participant, E, mean %",
                  e.mean() if len(e) else np.nan, "share of detected P-truth nuclei"),
                 ("fig4b.clicked_e:sd", "clicked suggestions per participant, E, SD %",
                  e.std() if len(e) else np.nan, "")]
    if boundaries is not None and len(boundaries):
        d = 100 * boundaries[(boundaries["evalset"] == evalset) & (boundaries["boundary_correct"] == True)][  # noqa: E712
            "dice"].dropna()
        rows += [("fig4c.boundary_dice_e", "DICE of boundaries judged correct, E, mean",
                  d.mean() if len(d) else np.nan, "vs the generator's boundary (paper: vs an SP's traces)"),
                 ("fig4c.boundary_dice_e:sd", "DICE of boundaries judged correct, E, SD",
                  d.std() if len(d) else np.nan, "")]
    return paper_vs_run(rows)


def redundancy_paper_vs_run(findings: pd.DataFrame, *, target_nps: int, n_realisations: int,
                            info: Mapping) -> pd.DataFrame:
    """The "paper vs this run" table of notebook 04 (Fig 3e): where accuracy plateaus, whether stromal nuclei
    need more NPs, and the simulation's size. (No wall time: a table is a function of the inputs and the seed,
    byte-identical between runs; the notebook prints the timing.)"""
    f = findings.set_index("metric")

    def k(m: str) -> float:
        return float(f.at[m, "plateau_k"]) if m in f.index else np.nan

    stromal, others = k("auroc_nonTIL_stromal"), [k("auroc_tumor_any"), k("auroc_sTIL")]
    others = [o for o in others if np.isfinite(o)]
    if np.isfinite(stromal) and others:
        verdict = (f"{'yes' if stromal > max(others) else 'no'}: stromal plateaus at k = {stromal:g}, "
                   f"tumor/sTILs at {'/'.join(f'{o:g}' for o in others)}")
    else:
        verdict = None
    plateau = "fig3e.redundancy_plateau_k"
    rows = [(plateau, "NPs per FOV where detection F1 stops improving (95 % of the gain)", k("det_f1"),
             "median over realisations"),
            (plateau, "... classification MCC", k("mcc_pooled_ovr"), ""),
            (plateau, "... AUROC micro", k("auroc_micro"), ""),
            (plateau, "... AUROC macro", k("auroc_macro"), ""),
            ("fig3e.stromal_need_more_nps", "stromal nuclei need more NPs than tumor or sTILs", verdict,
             "per-class AUROC plateaus"),
            ("fig3e.total_nps", "total NPs held constant at", target_nps,
             f"most common number of distinct NPs over realisations ({info.get('n_nps')} NPs in "
             f"{info.get('n_fovs')} FOVs with >= {info.get('min_nps_used')} NPs)"),
            ("fig3e.realisations", "realisations per NPs-per-FOV value", n_realisations, "")]
    return paper_vs_run(rows)
