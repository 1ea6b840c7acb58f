"""Inter-rater analysis: box clustering into anchors, Dawid-Skene truth inference, agreement, accuracy, and the
NP-redundancy simulation (paper Figures 2-5, S3, S5, S7, S8, S16; notes sections 2a-2d).

Modules: :mod:`.clustering` (constrained complete-linkage clustering of boxes), :mod:`.anchors` (anchor tables shared
by all multi-rater sets), :mod:`.em` (batched Dawid-Skene), :mod:`.agreement` (Krippendorff alpha, Cohen kappa, MDS),
:mod:`.accuracy` (participants and NP-labels against the inferred truth), :mod:`.redundancy` (NPs per FOV
simulation).
"""

from .agreement import krippendorff_alpha, mds_of_kappa, pairwise_kappa, self_agreement
from .anchors import AnchorTable, anchor_truth_match, build_anchor_table, load_study_anchors
from .clustering import cluster_boxes, medoid
from .em import boundary_em, dawid_skene, fit_labels, group_posteriors, infer_labels, majority_vote
from .redundancy import simulate_redundancy

__all__ = ["AnchorTable", "anchor_truth_match", "boundary_em", "build_anchor_table", "cluster_boxes", "dawid_skene",
           "fit_labels", "group_posteriors", "infer_labels", "krippendorff_alpha", "load_study_anchors",
           "majority_vote", "mds_of_kappa", "medoid", "pairwise_kappa", "self_agreement", "simulate_redundancy"]
