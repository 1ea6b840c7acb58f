"""Simulated crowd: participants with planted reliability, and the annotation study (single- and multi-rater)."""

from .participants import GROUP_PRIORS, GroupPrior, Participant, make_roster, roster_frame
from .pipeline import write_annotation_study
from .study import (
    AMBIGUITY,
    EVALSETS,
    CorrectionPolicy,
    annotate_fov,
    apparent_classes,
    correct_annotations,
    multi_rater_study,
    single_rater_study,
)

__all__ = ["AMBIGUITY", "EVALSETS", "GROUP_PRIORS", "CorrectionPolicy", "GroupPrior", "Participant", "annotate_fov",
           "apparent_classes",
           "correct_annotations", "make_roster", "multi_rater_study", "roster_frame", "single_rater_study",
           "write_annotation_study"]
