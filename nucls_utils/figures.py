"""The study's figures and tables: one registry that names each one after the paper, says which notebook writes it,
what it shows and which package function draws or computes it; and the browsable supplement built from it.

``python -m nucls_utils.figures list`` prints name -> builder -> notebook -> caption for every entry;
``python -m nucls_utils.figures make NAME [--out OUT]`` draws one figure again from the inputs its notebook stored,
without running the notebook (seconds); ``python -m nucls_utils.figures supplement OUT`` writes ``OUT/supplement/index.html``: a gallery of the figures of a
run (thumbnail, caption, notebook, builder, commit), its tables, each executed notebook's HTML and the run summary
(time per notebook, profile, data). ``run_all.sh`` writes it after the last notebook.

Every figure is drawn by one plotting function of the package, its ``builder``. A notebook draws a figure with
:func:`draw`, which stores the builder's arguments (typed, with :mod:`nucls_utils.io.bundle`) under
``results/<dataset>/<notebook>/figure_inputs/<name>/``, calls the builder and saves the PNG and PDF; :func:`make`
reads those stored inputs back and calls the same builder, so a figure can be restyled and redrawn without the
computation behind it. A table's ``builder`` names the package function that computes it.
"""

from __future__ import annotations

import html
import importlib
import inspect
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Artifact", "REGISTRY", "artifact", "names", "write_supplement", "SUPPLEMENT_INDEX", "draw", "make",
           "builder_of", "inputs_dir", "FIGURE_INPUTS", "save_figure", "figure_metadata"]

SUPPLEMENT_INDEX = "index.html"
FIGURE_INPUTS = "figure_inputs"
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Artifact:
    """One figure or table of the study."""

    name: str  # file stem under figures/ or tables/ (PNG + PDF, or CSV + Markdown)
    kind: str  # 'figure' or 'table'
    notebook: str  # the notebook that writes it, e.g. '03_agreement'
    paper: str  # where the paper shows it ('Fig. 3b', 'Table 1'), or '' for the study's own checks
    caption: str
    builder: str  # the package function that draws / computes it
    synthetic_only: bool = False  # written only on the synthetic cohort
    optional: bool = False  # written only when its inputs exist (e.g. the core-set metadata)


_IP = "nucls_utils.plots.agreement."
_PL = "nucls_utils.plots.dataset."
_SG = "nucls_utils.plots.suggestions."
_RP = "nucls_utils.model.report."
_MP = "nucls_utils.plots.model."
_DT = "nucls_utils.dtale."
_DP = "nucls_utils.plots.dtale."
_BP = "nucls_utils.plots.baselines."
_BS = "nucls_utils.baselines.study."
_WP = "nucls_utils.plots.wsi."

_RT = "nucls_utils.phantom.realism.report_tables"
_F, _T = "figure", "table"
_ENTRIES: list[tuple] = [
    # 01_data_prep
    ("fig1a_class_counts", _F, "01_data_prep", "Fig. 1a", "nuclei per class at the raw, main and super-class levels",
     _PL + "plot_class_counts"),
    ("figS9_instances_and_sizes", _F, "01_data_prep", "Fig. S9", "nuclei per FOV and nucleus sizes, with COCO's values",
     _PL + "plot_instances_and_sizes"),
    ("figS9_instances_and_sizes_core", _F, "01_data_prep", "Fig. S9", "the same for the whole core set (metadata)",
     _PL + "plot_instances_and_sizes", False, True),
    ("fig6c_class_by_fold", _F, "01_data_prep", "Fig. 6c", "super-class composition of each hospital fold",
     _PL + "plot_class_by_fold"),
    ("fig6c_class_by_fold_core", _F, "01_data_prep", "Fig. 6c", "the same for the whole core set (metadata)",
     _PL + "plot_class_by_fold", False, True),
    ("nb01_example_fovs", _F, "01_data_prep", "", "example FOVs of the dataset", _PL + "plot_fov_gallery"),
    ("nb01_ground_truth_overlay", _F, "01_data_prep", "", "one FOV with its true outlines coloured by class",
     _PL + "plot_ground_truth_overlay"),
    ("nb01_stain_densities", _F, "01_data_prep", "", "hematoxylin and eosin densities per FOV, synthetic vs real",
     _PL + "plot_stain_ranges"),
    ("nb01_realism_report", _F, "01_data_prep", "", "how well classifiers tell synthetic from real nuclei",
     _PL + "plot_realism_report", True),
    ("nb01_real_vs_synthetic_grid", _F, "01_data_prep", "", "real and synthetic nuclei side by side",
     _PL + "plot_real_vs_synthetic_grid", True),
    ("nb01_dataset_summary", _T, "01_data_prep", "dataset summary", "FOVs, nuclei, classes and sizes of the dataset",
     "nucls_utils.summary.dataset_summary"),
    ("nb01_class_counts", _T, "01_data_prep", "Fig. 1a", "nuclei per class", "nucls_utils.summary.class_counts"),
    ("nb01_calibration_vs_real", _T, "01_data_prep", "", "the generator's calibration targets against the real data",
     "nucls_utils.summary.calibration_comparison", True),
    ("nb01_stain_densities", _T, "01_data_prep", "", "stain densities per FOV", "nucls_utils.summary.stain_table"),
    ("nb01_realism_summary", _T, "01_data_prep", "", "realism tests in one table", _RT, True),
    ("nb01_realism_c2st", _T, "01_data_prep", "", "classifier two-sample tests, by feature group", _RT, True),
    ("nb01_realism_smd", _T, "01_data_prep", "", "standardised mean differences of key features", _RT, True),
    ("nb01_realism_bootstrap", _T, "01_data_prep", "", "the heuristic bootstrap's accuracy on real and synthetic FOVs",
     _RT, True),
    ("nb01_realism_images", _T, "01_data_prep", "", "image statistics, real vs synthetic", _RT, True),
    ("figS9_size_categories", _T, "01_data_prep", "Fig. S9", "nuclei by COCO size category",
     "nucls_utils.summary.size_categories"),
    ("table1_folds_N_dataset", _T, "01_data_prep", "Table 1 N", "test nuclei per fold in this dataset",
     "nucls_utils.io.folds.fold_table"),
    ("table1_folds_N", _T, "01_data_prep", "Table 1 N", "test nuclei per fold on the core set, with and without its "
     "duplicated FOVs", "nucls_utils.io.folds.core_table1_n", False, True),
    ("fig6c_class_by_fold", _T, "01_data_prep", "Fig. 6c", "super-class shares per fold",
     "nucls_utils.summary.class_by_fold"),
    ("nb01_paper_vs_run", _T, "01_data_prep", "", "dataset numbers: paper vs this run", "nucls_utils.summary.paper_vs_run"),
    # 02_suggestions
    ("figS2_refinement_training", _F, "02_suggestions", "Fig. S2", "the refinement model's training loss",
     _SG + "plot_training_loss"),
    ("figS2_suggestion_examples", _F, "02_suggestions", "Fig. S2", "bootstrap and refined suggestions on example FOVs",
     _SG + "plot_suggestion_examples"),
    ("figS4_suggestion_accuracy_per_fov", _F, "02_suggestions", "Fig. S4", "suggestion accuracy per FOV",
     _SG + "plot_suggestion_accuracy_per_fov"),
    ("tableS2_suggestion_accuracy", _T, "02_suggestions", "Table S2", "accuracy of the bootstrap and refined suggestions",
     "nucls_utils.suggestions.assess.suggestion_table"),
    ("nb02_paper_vs_run", _T, "02_suggestions", "", "suggestions: paper vs this run",
     "nucls_utils.suggestions.assess.paper_vs_run"),
    # 03_agreement
    ("fig2_clustering_example", _F, "03_agreement", "Fig. 2", "participants' boxes clustered into anchors",
     _IP + "plot_clustering_example"),
    ("figS16_clustering_algorithm", _F, "03_agreement", "Fig. S16", "the constrained clustering, step by step",
     _IP + "plot_dendrogram_example"),
    ("fig3a_detection_accuracy", _F, "03_agreement", "Fig. 3a", "detection accuracy of participants and the NP-label",
     _IP + "plot_detection_accuracy"),
    ("fig3b_np_label_roc", _F, "03_agreement", "Fig. 3b", "ROC of the NP-label's classification vs the P-truth",
     _IP + "plot_np_label_roc"),
    ("figS3_super_class_accuracy", _F, "03_agreement", "Fig. S3", "accuracy at the super-class level",
     _IP + "plot_super_class_accuracy"),
    ("fig3c_pathologist_confusion", _F, "03_agreement", "Fig. 3c", "pathologists' calls against the P-truth",
     _IP + "plot_confusion"),
    ("fig3d_mds_kappa", _F, "03_agreement", "Fig. 3d", "participants placed by their pairwise kappa (MDS)",
     _IP + "plot_mds"),
    ("figS7_confusion", _F, "03_agreement", "Fig. S7", "pooled confusion of each group against the P-truth",
     _IP + "plot_confusions_s7"),
    ("figS8_ease_of_detection", _F, "03_agreement", "Fig. S8", "how many participants detect each nucleus, by class",
     _IP + "plot_ease_of_detection"),
    ("fig4b_clicked_suggestions", _F, "03_agreement", "Fig. 4b", "share of suggestions whose boundary was clicked",
     _IP + "plot_clicked_share"),
    ("fig4d_self_agreement", _F, "03_agreement", "Fig. 4d", "self-agreement kappa between sets", _IP + "plot_self_agreement"),
    ("fig4c_boundary_accuracy", _F, "03_agreement", "Fig. 4c", "DICE of the algorithmic boundaries judged correct",
     _IP + "plot_boundary_accuracy"),
    ("figS5_clicked_boundaries", _F, "03_agreement", "Fig. S5", "clicked boundaries per FOV and their accuracy",
     _IP + "plot_boundaries_s5"),
    ("fig4e_accuracy_by_set", _F, "03_agreement", "Fig. 4e", "NP-label accuracy with and without suggestions",
     _IP + "plot_roc_by_set"),
    ("fig5a_anchors_vs_threshold", _F, "03_agreement", "Fig. 5a", "anchors and alpha against the clustering threshold",
     _IP + "plot_anchors_and_alpha"),
    ("fig5c_alpha_by_threshold", _F, "03_agreement", "Fig. 5c", "Krippendorff's alpha by clustering threshold",
     _IP + "plot_alpha_by_iou"),
    ("fig5b_constraint_effect", _F, "03_agreement", "Fig. 5b", "effect of the clustering constraint",
     _IP + "plot_constraint_effect"),
    ("fig5d_pairwise_kappa", _F, "03_agreement", "Fig. 5d", "pairwise kappa within and between groups",
     _IP + "plot_pairwise_kappa"),
    ("nb03_truth_vs_generator", _F, "03_agreement", "", "the inferred truth against the generator's truth",
     _IP + "plot_truth_vs_generator", True),
    ("nb03_ptruth_composition", _T, "03_agreement", "", "classes of the P-truth anchors",
     "nucls_utils.interrater.analysis.ptruth_composition"),
    ("fig3a_participant_accuracy", _T, "03_agreement", "Fig. 3a", "accuracy of each participant",
     "nucls_utils.interrater.analysis.participant_accuracy"),
    ("fig3b_np_label_auroc", _T, "03_agreement", "Fig. 3b", "AUROC of the NP-label", "nucls_utils.interrater.analysis.np_label_roc_table"),
    ("figS8_detected_by_16_nps", _T, "03_agreement", "Fig. S8", "nuclei detected by at least 16 NPs, by class",
     "nucls_utils.interrater.analysis.detected_by_at_least"),
    ("fig4d_self_agreement", _T, "03_agreement", "Fig. 4d", "self-agreement kappa by group",
     "nucls_utils.interrater.analysis.self_agreement_table"),
    ("fig4e_np_label_auroc_by_set", _T, "03_agreement", "Fig. 4e", "NP-label AUROC per set, bootstrap intervals",
     "nucls_utils.interrater.analysis.np_label_auroc_bootstrap"),
    ("fig4e_tests", _T, "03_agreement", "Fig. 4e", "tests between the sets", "nucls_utils.interrater.analysis.auroc_set_tests"),
    ("fig4e_effect_inferred_vs_true", _T, "03_agreement", "Fig. 4e",
     "the effect of suggestions: inferred vs the generator's truth", "nucls_utils.interrater.analysis.suggestion_effect",
     True),
    ("fig5ac_krippendorff_alpha", _T, "03_agreement", "Figs. 5a, 5c", "Krippendorff's alpha by threshold",
     "nucls_utils.interrater.analysis.alpha_table"),
    ("fig5b_constraint_effect", _T, "03_agreement", "Fig. 5b", "the clustering constraint's effect",
     "nucls_utils.interrater.analysis.constraint_effect"),
    ("fig5d_pairwise_kappa_tests", _T, "03_agreement", "Fig. 5d", "tests of pairwise kappa between groups",
     "nucls_utils.interrater.analysis.kappa_group_tests"),
    ("nb03_truth_vs_generator", _T, "03_agreement", "", "inferred truth vs the generator's truth",
     "nucls_utils.interrater.analysis.truth_vs_generator", True),
    ("nb03_paper_vs_run", _T, "03_agreement", "", "agreement: paper vs this run",
     "nucls_utils.interrater.analysis.agreement_paper_vs_run"),
    ("nb03_roster_spread", _T, "03_agreement", "", "this roster among other rosters of the calibrated crowd",
     "nucls_utils.crowd.calibrate.roster_spread", True),
    # 04_em_simulations
    ("fig3e_np_redundancy", _F, "04_em_simulations", "Fig. 3e", "NP-label accuracy against NPs per FOV",
     _IP + "plot_redundancy"),
    ("nb04_np_redundancy_vs_generator", _F, "04_em_simulations", "", "the same scored against the generator's truth",
     _IP + "plot_redundancy", True),
    ("fig3e_np_redundancy", _T, "04_em_simulations", "Fig. 3e", "NP-label accuracy by NPs per FOV",
     "nucls_utils.interrater.analysis.summarize_redundancy"),
    ("nb04_plateau_vs_generator", _T, "04_em_simulations", "", "where accuracy plateaus, against the generator's truth",
     "nucls_utils.interrater.analysis.redundancy_findings", True),
    ("nb04_paper_vs_run", _T, "04_em_simulations", "", "redundancy: paper vs this run",
     "nucls_utils.interrater.analysis.redundancy_paper_vs_run"),
    # 05_training
    ("figS10_training_curves", _F, "05_training", "Fig. S10", "training losses and validation AP of config 3, fold 1",
     _MP + "plot_training_curves"),
    ("tableS7_hyperparameters", _T, "05_training", "Table S7", "hyperparameters of this profile and the paper's",
     "nucls_utils.model.train.hyperparameter_table"),
    # 06_evaluation
    ("fig6d_predictions", _F, "06_evaluation", "Fig. 6d", "predicted boundaries coloured by class on test FOVs",
     _MP + "plot_predictions"),
    ("figS11_confusion_main", _F, "06_evaluation", "Fig. S11", "confusion of the main classes", _MP + "plot_confusions"),
    ("figS11_confusion_super", _F, "06_evaluation", "Fig. S11", "confusion of the super-classes", _MP + "plot_confusions"),
    ("table1_corrected_singlerater", _T, "06_evaluation", "Table 1", "the NuCLS model on the corrected single-rater data",
     _RP + "table1"),
    ("table1_ptruth_E", _T, "06_evaluation", "Table 1", "the NuCLS model against the pathologists' truth", _RP + "table1"),
    ("nb06_paper_vs_run_table1", _T, "06_evaluation", "Table 1", "Table 1: paper vs this run",
     _RP + "table1_paper_vs_run"),
    ("tableS3_scale_factor", _T, "06_evaluation", "Table S3", "the scale factor's effect", _RP + "table_s3"),
    ("tableS4_superclass_accuracy", _T, "06_evaluation", "Table S4", "per-super-class accuracy", _RP + "table_s4"),
    ("tableS5_ablations", _T, "06_evaluation", "Table S5", "the architecture ablations (configs 1-6)", _RP + "table_s5"),
    ("tableS6_uncorrected_training", _T, "06_evaluation", "Table S6", "training on corrected vs uncorrected data",
     _RP + "table_s6"),
    ("nb06_vs_generator_truth", _T, "06_evaluation", "", "the models scored against the generator's truth",
     _RP + "vs_generator_truth", True),
    ("nb06_truth_ceiling", _T, "06_evaluation", "", "a perfect model scored against the corrected truth",
     _RP + "truth_ceiling", True),
    # 07_dtale
    ("fig7bg_embedding", _F, "07_dtale", "Figs. 7b, 7g", "the model's representations, hyperbolic UMAP",
     _DP + "plot_embedding_panels"),
    ("fig7d_simplified_tree", _F, "07_dtale", "Fig. 7d", "the regression tree, simplified", _DP + "plot_simplified_tree"),
    ("fig7ef_figS15_tree_overlay", _F, "07_dtale", "Figs. 7e-f, S15", "tree nodes over the embedding",
     _DP + "plot_tree_overlays"),
    ("figS14_lymphocyte_path", _F, "07_dtale", "Fig. S14", "the lymphocyte rule, step by step", _DP + "plot_step_by_step"),
    ("fig7_dtale_rules", _T, "07_dtale", "Fig. 7", "representative and discriminative rules of each class",
     _DT + "class_rules"),
    ("nb07_paper_vs_run", _T, "07_dtale", "", "DTALE: paper vs this run", _DT + "paper_vs_run"),
    ("nb07_rule_direction_checks", _T, "07_dtale", "", "do the rules point the way the generator drew the nuclei",
     _DT + "check_rule_directions", True),
    # 08_baselines
    ("nb08_supervision_ladder", _F, "08_baselines", "", "what each kind of label buys: the seeds' systems beside NuCLS",
     _BP + "plot_supervision_ladder"),
    ("nb08_cyclic_cycles", _F, "08_baselines", "", "Cyclic Learning's back end after each cycle",
     _BP + "plot_cyclic_cycles"),
    ("nb08_supervision_ladder", _T, "08_baselines", "", "the supervision ladder: label, effort, scores, training time",
     _BS + "ladder_table"),
    ("nb08_cyclic_cycles", _T, "08_baselines", "", "Cyclic Learning's scores per cycle", _BS + "run_cyclic"),
    ("nb08_tile_pseudo_labels", _T, "08_baselines", "", "the tile classifier's pseudo-labelling rounds (seed 002)",
     "nucls_utils.baselines.tile_classifier.fit_with_pseudo_labels"),
    ("nb08_seed_paper_vs_run", _T, "08_baselines", "", "the seeds' own reported numbers vs this run",
     _BS + "seed_paper_vs_run"),
    # 09_whole_slide
    ("nb09_slide_overlay", _F, "09_whole_slide", "", "the model's nuclei on a whole slide, and a region at full "
     "resolution with the traced outlines", _WP + "plot_slide_overlay"),
    ("nb09_density_heatmap", _F, "09_whole_slide", "", "nuclei per mm2 of tissue of each super-class over the slide",
     _WP + "plot_density_heatmap"),
    ("nb09_detection_vs_truth", _T, "09_whole_slide", "", "the whole-slide prediction against the slide's exact truth",
     "nucls_utils.wsi.evaluate.score_slide"),
    ("nb09_slide_summary", _T, "09_whole_slide", "", "nuclei per class and stromal TIL density: predicted vs truth",
     "nucls_utils.wsi.study.summary_table"),
    ("nb09_throughput", _T, "09_whole_slide", "", "seconds per stage of the whole-slide prediction",
     "nucls_utils.wsi.study.timing_table"),
]

#: Every figure and table, in the order the notebooks write them.
REGISTRY: tuple[Artifact, ...] = tuple(Artifact(*e) for e in _ENTRIES)


def artifact(name: str, kind: str | None = None) -> Artifact:
    """The registry entry of ``name`` (of ``kind`` when a figure and a table share the name)."""
    hits = [a for a in REGISTRY if a.name == name and (kind is None or a.kind == kind)]
    if not hits:
        raise KeyError(f"no figure or table called {name!r} in nucls_utils.figures.REGISTRY")
    if len(hits) > 1:
        raise KeyError(f"{name!r} is both a figure and a table: give kind='figure' or 'table'")
    return hits[0]


def names(kind: str, notebook: str | None = None) -> list[str]:
    """Names of the figures or tables (of one notebook)."""
    return [a.name for a in REGISTRY if a.kind == kind and (notebook is None or a.notebook == notebook)]


def figure_metadata(name: str, commit: str) -> dict[str, str]:
    """What a saved figure carries in its PNG / PDF metadata: its builder, notebook and the git commit."""
    try:
        a = artifact(name, "figure")
        notebook, builder, title = a.notebook, a.builder, f"{a.paper}: {a.caption}" if a.paper else a.caption
    except KeyError:  # a figure outside the registry (a test's): say so rather than fail the save
        notebook, builder, title = "unregistered", "unregistered", name
    return {"Title": title, "Subject": f"NuCLS study {name}; notebook {notebook}; builder {builder}",
            "Keywords": f"commit {commit}", "Creator": "nucls_utils"}


def save_figure(fig, name: str, figures_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``<figures_dir>/<name>.png`` and ``.pdf`` atomically; return both paths.

    Both files carry, in their metadata, the figure's registry entry (paper label, caption, notebook, builder) and
    the git commit of the code that drew it (PNG text chunks ``Title``, ``Description``, ``Source``; PDF ``Title``,
    ``Subject``, ``Keywords``). The PDF carries no creation date, so the same figure gives the same file."""
    from .config import git_commit
    from .io.atomic import atomic_path

    meta = figure_metadata(name, _commit(git_commit))
    per_format = {"png": {"Title": meta["Title"], "Description": meta["Subject"], "Source": meta["Keywords"]},
                  "pdf": {**meta, "CreationDate": None}}
    paths = []
    for ext in ("png", "pdf"):
        path = Path(figures_dir) / f"{name}.{ext}"
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, metadata=per_format[ext])
        paths.append(path)
    return paths[0], paths[1]


_COMMIT: list[str] = []


def _commit(lookup) -> str:
    """The git commit, asked once per process."""
    if not _COMMIT:
        _COMMIT.append(lookup())
    return _COMMIT[0]


# ---------------------------------------------------------------------------------------------------------------
# Drawing a figure, and drawing it again from its stored inputs
# ---------------------------------------------------------------------------------------------------------------

def builder_of(name: str):
    """The package function that draws the figure ``name``."""
    a = artifact(name, "figure")
    module, attr = a.builder.rsplit(".", 1)
    fn = getattr(importlib.import_module(module), attr, None)
    if not callable(fn):
        raise LookupError(f"figure {name!r}: its builder {a.builder} is not a function of the package")
    return fn


def inputs_dir(stage_dir: str | os.PathLike[str], name: str) -> Path:
    """Where a notebook's stage folder keeps the stored inputs of the figure ``name``."""
    return Path(stage_dir) / FIGURE_INPUTS / name


def _bind(name: str, fn, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    try:
        return inspect.signature(fn).bind(*args, **kwargs)
    except TypeError as exc:
        raise TypeError(f"figure {name!r}: the arguments do not fit its builder {fn.__module__}.{fn.__qualname__}: "
                        f"{exc}") from None


def draw(name: str, ctx: Any, *args: Any, **kwargs: Any) -> None:
    """Draw the figure ``name`` with its registered builder, store the builder's arguments in the notebook's stage
    folder (``ctx.stage_dir``) and save the PNG and PDF to ``ctx.figures_dir``. The figure stays open, so a
    notebook shows it once (returning it too would show it twice where ``draw`` ends a cell); ``plt.gcf()`` is it.

    ``ctx`` is the notebook's :class:`nucls_utils.config.RunContext` (anything with ``stage_dir`` and
    ``figures_dir``). The arguments are those of the builder, positional or by name."""
    from .io.bundle import save_bundle

    a = artifact(name, "figure")
    fn = builder_of(name)
    bound = _bind(name, fn, args, kwargs)
    save_bundle(inputs_dir(ctx.stage_dir, name), dict(bound.arguments),
                meta={"figure": name, "builder": a.builder, "notebook": a.notebook})
    fig = fn(*bound.args, **bound.kwargs)
    save_figure(fig, name, ctx.figures_dir)


def stored_inputs(name: str, out: str | os.PathLike[str] = REPO_ROOT, dataset: str | None = None) -> Path:
    """The folder holding the stored inputs of figure ``name`` in the run under ``out``."""
    a = artifact(name, "figure")
    found = sorted((Path(out) / "results").glob(f"*/{a.notebook}/{FIGURE_INPUTS}/{name}"))
    if dataset is not None:
        found = [p for p in found if p.parents[2].name == dataset]
    if not found:
        where = Path(out) / "results" / (dataset or "<dataset>") / a.notebook / FIGURE_INPUTS / name
        raise FileNotFoundError(f"figure {name!r}: no stored inputs at {where}; run notebook {a.notebook} first "
                                f"(./run_all.sh --out {out})")
    if len(found) > 1:
        raise ValueError(f"figure {name!r}: stored for several datasets ({', '.join(p.parents[2].name for p in found)});"
                         " say which with dataset= (--dataset)")
    return found[0]


def make(name: str, out: str | os.PathLike[str] = REPO_ROOT, dataset: str | None = None,
         figures_dir: str | os.PathLike[str] | None = None) -> tuple[Path, Path]:
    """Draw the figure ``name`` again from the inputs its notebook stored in the run under ``out`` (no notebook
    runs) and save it to ``figures_dir`` (default ``out/figures``); return the PNG and PDF paths."""
    import matplotlib.pyplot as plt

    from .io.bundle import load_bundle
    from .plots import set_style

    set_style()  # as every notebook does first
    folder = stored_inputs(name, out, dataset)
    fn = builder_of(name)
    arguments = load_bundle(folder)
    bound = inspect.BoundArguments(inspect.signature(fn), arguments)
    fig = fn(*bound.args, **bound.kwargs)
    try:
        return save_figure(fig, name, Path(figures_dir) if figures_dir else Path(out) / "figures")
    finally:
        plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The supplement
# ---------------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:14px}
figure{margin:0;border:1px solid #ddd;padding:8px;background:#fafafa}
figure img{width:100%;height:180px;object-fit:contain;background:#fff}
figcaption{font-size:.85em}figcaption code{font-size:.85em}
table{border-collapse:collapse;font-size:.9em}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left}
.missing{color:#a00}
"""

_CHECK = """
<script>
window.addEventListener('load', function () {
  var broken = Array.from(document.images).filter(function (i) { return !(i.complete && i.naturalWidth > 0); });
  document.body.setAttribute('data-images', String(document.images.length));
  document.body.setAttribute('data-broken-images', String(broken.length));
});
</script>
"""


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def write_supplement(out: str | os.PathLike[str], summary: dict | None = None) -> Path:
    """Write ``<out>/supplement/index.html`` for the run under ``out`` (figures/, tables/, supplement/).

    The page lists every registered figure written under ``figures/`` (thumbnail linking to the PNG and PDF, paper
    label, caption, notebook link, builder, commit), every registered table under ``tables/`` (Markdown and CSV
    links), each executed notebook's HTML, the run summary ``summary`` (``run_summary.json`` of ``run_all.sh``:
    profile, seed, data, seconds per notebook), and anything written that the registry does not know. All links
    are relative, so the folder can be moved or served as it is. Returns the page's path.
    """
    out = Path(out)
    sup = out / "supplement"
    sup.mkdir(parents=True, exist_ok=True)
    if summary is None and (sup / "run_summary.json").is_file():
        summary = json.loads((sup / "run_summary.json").read_text(encoding="utf-8"))
    summary = summary or {}
    commit = html.escape(str(summary.get("commit", "unknown")))
    e = html.escape
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>NuCLS study: supplement</title>"
             f"<style>{_CSS}</style></head><body>",
             "<h1>NuCLS study: supplement</h1>",
             f"<p>Profile <b>{e(str(summary.get('profile', '?')))}</b>, seed {e(str(summary.get('seed', '?')))}, "
             f"data {e(str(summary.get('data', '?')))}, commit <code>{commit}</code>.</p>"]
    times = summary.get("notebooks", {})
    steps = {k: v for k, v in times.items() if not (k[:2].isdigit() and k[2:3] == "_")}  # e.g. pretraining
    notebooks = sorted({a.notebook for a in REGISTRY} | (set(times) - set(steps)))
    parts.append("<h2>Notebooks</h2><table><tr><th>notebook</th><th>executed</th><th>wall time (s)</th></tr>")
    for nb in notebooks:
        page = sup / f"{nb}.html"
        link = f"<a href='{e(_rel(page, sup))}'>{e(nb)}</a>" if page.is_file() else f"<span class='missing'>{e(nb)}</span>"
        ipynb = f" (<a href='{e(nb)}.ipynb'>ipynb</a>)" if (sup / f"{nb}.ipynb").is_file() else ""
        parts.append(f"<tr><td>{link}{ipynb}</td><td>{'yes' if page.is_file() else 'no'}</td>"
                     f"<td>{e(str(times.get(nb, '')))}</td></tr>")
    parts.append("</table>")
    if steps:
        parts.append("<p>Before the notebooks: " + ", ".join(f"{e(k)} {e(str(v))} s" for k, v in steps.items()) + ".</p>")
    if "total_seconds" in summary:
        parts.append(f"<p>Whole run: {e(str(summary['total_seconds']))} s.</p>")

    parts.append("<h2>Figures</h2><div class='grid'>")
    known = set()
    for a in REGISTRY:
        if a.kind != "figure":
            continue
        png, pdf = out / "figures" / f"{a.name}.png", out / "figures" / f"{a.name}.pdf"
        known.add(png.name)
        if not png.is_file():
            continue
        nb_page = f"{a.notebook}.html"
        parts.append(
            f"<figure id='{e(a.name)}'><a href='{e(_rel(png, sup))}'><img src='{e(_rel(png, sup))}' alt='{e(a.name)}'>"
            f"</a><figcaption><b>{e(a.paper or 'study check')}</b> {e(a.caption)}<br><code>{e(a.name)}</code> "
            f"(<a href='{e(_rel(pdf, sup))}'>PDF</a>)<br>notebook <a href='{e(nb_page)}'>{e(a.notebook)}</a><br>"
            f"builder <code>{e(a.builder)}</code><br>commit <code>{commit}</code></figcaption></figure>")
    parts.append("</div>")

    parts.append("<h2>Tables</h2><table><tr><th>table</th><th>paper</th><th>what</th><th>notebook</th>"
                 "<th>builder</th></tr>")
    for a in REGISTRY:
        if a.kind != "table":
            continue
        md, csv = out / "tables" / f"{a.name}.md", out / "tables" / f"{a.name}.csv"
        known.add(csv.name)
        if not csv.is_file():
            continue
        md_link = f" (<a href='{e(_rel(md, sup))}'>md</a>)" if md.is_file() else ""
        parts.append(f"<tr><td><a href='{e(_rel(csv, sup))}'>{e(a.name)}</a>{md_link}</td><td>{e(a.paper)}</td>"
                     f"<td>{e(a.caption)}</td><td><a href='{e(a.notebook)}.html'>{e(a.notebook)}</a></td>"
                     f"<td><code>{e(a.builder)}</code></td></tr>")
    parts.append("</table>")
    unknown = sorted(p.name for sub, ext in (("figures", ".png"), ("tables", ".csv"))
                     for p in (out / sub).glob(f"*{ext}") if p.name not in known)
    if unknown:
        parts.append("<h2>Not in the registry</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in unknown) + "</ul>")
    parts.append(_CHECK + "</body></html>")
    page = sup / SUPPLEMENT_INDEX
    from .io.atomic import atomic_path

    with atomic_path(page) as tmp:
        tmp.write_text("\n".join(parts), encoding="utf-8")
    return page


def _main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m nucls_utils.figures", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    lst = sub.add_parser("list", help="print every figure and table: name -> builder -> notebook -> caption")
    lst.add_argument("--kind", choices=("figure", "table"))
    mk = sub.add_parser("make", help="draw figures again from the inputs their notebooks stored")
    mk.add_argument("names", nargs="*", help="figure names (see list); none with --all")
    mk.add_argument("--all", action="store_true", help="every figure whose inputs the run stored")
    mk.add_argument("--out", default=str(REPO_ROOT), help="the run's output folder (run_all.sh --out)")
    mk.add_argument("--dataset", help="the dataset's name, where the run holds several")
    mk.add_argument("--figures-dir", help="where to write (default OUT/figures)")
    sp = sub.add_parser("supplement", help="write OUT/supplement/index.html")
    sp.add_argument("out", help="the run's output folder (run_all.sh --out; default the repository)")
    args = ap.parse_args(argv)
    if args.command == "list":
        for a in REGISTRY:
            if args.kind in (None, a.kind):
                print(f"{a.kind:6} {a.name:36} -> {a.builder:58} -> {a.notebook:17} {a.paper}: {a.caption}")
        return 0
    if args.command == "make":
        wanted = list(args.names)
        if args.all:
            wanted += [n for n in names("figure") if n not in wanted
                       and list((Path(args.out) / "results").glob(f"*/*/{FIGURE_INPUTS}/{n}"))]
        if not wanted:
            ap.error("make: name a figure or give --all")
        for name in wanted:
            t0 = time.perf_counter()
            try:
                png, _ = make(name, args.out, args.dataset, args.figures_dir)
            except (KeyError, LookupError, FileNotFoundError, ValueError) as exc:
                print(f"{name}: {exc}", file=sys.stderr)
                return 1
            print(f"{name}: {png} + .pdf ({time.perf_counter() - t0:.1f} s)")
        return 0
    page = write_supplement(args.out)
    print(f"supplement: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
