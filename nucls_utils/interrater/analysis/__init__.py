"""Everything notebooks 03 (agreement) and 04 (EM simulations) compute, as functions returning tidy DataFrames.

The building blocks live one level up (:mod:`nucls_utils.interrater.anchors` clustering into anchors,
:mod:`~nucls_utils.interrater.em` Dawid-Skene, :mod:`~nucls_utils.interrater.agreement` alpha/kappa,
:mod:`~nucls_utils.interrater.accuracy` participant and NP-label accuracy, :mod:`~nucls_utils.interrater.redundancy`
the NP-redundancy simulation); this package strings them together the way the paper's analyses do (notes sections 1
and 2a-2d), one module per topic, and every name is importable from the package itself:

* :mod:`.truth`: the multi-rater study read back, anchors, truth inference and the truth tables, class levels;
* :mod:`.accuracy`: participants' and the NP-label's accuracy (Figs 3a-c, 4e, S3, S7), ease of detection (Fig S8);
* :mod:`.agreement`: alpha, kappa, MDS, clicked suggestions (Figs 3d, 4b, 4d, 5a, 5c, 5d);
* :mod:`.boundaries`: algorithmic boundaries (Figs 4c, S5);
* :mod:`.clustering`: the clustering constraint and examples (Figs 2, 5b, S16);
* :mod:`.generator`: on the synthetic cohort, the inferred truth against the generator's;
* :mod:`.redundancy`: the NP-redundancy simulation (Fig 3e, notebook 04);
* :mod:`.paper_tables`: the "paper vs this run" tables.

Decisions the notes leave open, each documented where it is made:

* **Truth inference scope.** As in the reference code, Dawid-Skene EM runs per set and per group (Ps, NPs) only on
  anchors that at least two members of the group detected *in U-control* (``UNBIASED_n_matches_<who> >= 2``; the set's
  own count when a study has no U-control). ``undetected`` is a class, ``DidNotAnnotateFOV`` is missing, and anchors
  that no member of the group boxed in that set get a blank label.
* **P-truth.** An anchor is a real nucleus at class level L when its EM label of the Ps, grouped to L by summing the
  raw-class probabilities and re-taking the argmax (:func:`nucls_utils.interrater.em.group_posteriors`), is a class
  (not ``undetected``, not blank). Anchors whose P-truth is ``AMBIGUOUS`` at L are left out of the analyses at L
  (the reference's ``remap_classes_in_anchorsdf``).
* **Which anchors.** All set-level statistics use the primary clustering threshold, IOU 0.25 (the paper's choice);
  Fig 5 repeats the relevant ones at 0.5 and 0.75 and without the clustering constraint.
* **Each set its own truth.** Accuracy in a set (E, B-control, U-control) is measured against that set's P-truth,
  as the reference's per-set views do. On the synthetic cohort the generator's truth gives an unbiased second
  reference (:func:`truth_vs_generator`).

Truth tables (:class:`TruthTables`) are written to the stage folder of notebook 03 for notebooks 04 and 06:
``truth_<set>.csv`` (one row per anchor: geometry, detection counts, majority votes, EM probabilities and labels of
Ps and NPs at raw/main/super level, boundary-EM decision), ``labels_<set>.csv`` and ``clicks_<set>.csv``
(anchors x participants) and ``participants.csv``, with ``truth_tables.json`` describing them."""

from __future__ import annotations

from .accuracy import (
    accuracy_by_set,
    auroc_set_tests,
    detected_by_at_least,
    detection_tally,
    ease_of_detection,
    np_label_auroc_bootstrap,
    np_label_detection,
    np_label_detection_pooled,
    np_label_roc_table,
    paired_set_tests,
    participant_accuracy,
    pooled_confusion,
    tally_by_truth,
)
from .agreement import (
    alpha_table,
    anchor_counts,
    clicked_share_table,
    group_summary,
    kappa_group_tests,
    kappa_mds,
    kappa_pairs,
    self_agreement_table,
)
from .boundaries import (
    boundary_share_per_fov,
    boundary_table,
)
from .clustering import (
    clustering_example,
    constraint_effect,
    dendrogram_example,
)
from .generator import (
    generator_confusion,
    np_label_accuracy_vs_generator,
    np_label_roc_vs_generator,
    suggestion_effect,
    truth_vs_generator,
)
from .paper_tables import (
    agreement_paper_vs_run,
    paper_vs_run,
    redundancy_paper_vs_run,
)
from .redundancy import (
    hold_total_constant,
    plateau_k,
    redundancy_findings,
    redundancy_inputs,
    summarize_redundancy,
)
from .truth import (
    CLUSTERING_IOUS,
    EM_CLASSES,
    EVALSET_ALIASES,
    PRIMARY_IOU,
    STAGE,
    MultiraterStudy,
    TruthTables,
    anchor_tables,
    attach_generator_truth,
    build_truth_tables,
    final_anchors,
    group_labels,
    load_multirater_study,
    locate_multirater,
    members,
    np_label_frame,
    ptruth_composition,
    read_truth_tables,
    truth_series,
    write_truth_tables,
)

__all__ = [
    "CLUSTERING_IOUS", "PRIMARY_IOU", "EM_CLASSES", "EVALSET_ALIASES", "STAGE",
    "MultiraterStudy", "locate_multirater", "load_multirater_study", "anchor_tables",
    "TruthTables", "build_truth_tables", "write_truth_tables", "read_truth_tables", "attach_generator_truth",
    "group_labels", "truth_series", "np_label_frame", "final_anchors", "members", "ptruth_composition",
    "participant_accuracy", "accuracy_by_set", "paired_set_tests", "np_label_detection", "np_label_detection_pooled",
    "np_label_roc_table",
    "np_label_auroc_bootstrap", "auroc_set_tests",
    "alpha_table", "anchor_counts", "kappa_pairs", "kappa_group_tests", "kappa_mds", "self_agreement_table",
    "clicked_share_table", "group_summary",
    "boundary_table", "boundary_share_per_fov",
    "detection_tally", "ease_of_detection", "detected_by_at_least", "pooled_confusion", "tally_by_truth",
    "constraint_effect", "clustering_example", "dendrogram_example", "truth_vs_generator", "generator_confusion",
    "redundancy_inputs", "hold_total_constant", "summarize_redundancy", "plateau_k", "redundancy_findings",
    "np_label_roc_vs_generator", "np_label_accuracy_vs_generator", "suggestion_effect", "paper_vs_run", "agreement_paper_vs_run", "redundancy_paper_vs_run",
]
