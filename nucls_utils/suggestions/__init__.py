"""Algorithmic suggestions: heuristic segmentation and region-based classes (the bootstrap)."""

from .heuristic import (
    LYMPHOCYTE_RICH_REGIONS,
    REGION_TO_CLASS,
    HeuristicParams,
    bootstrap_classes,
    bootstrap_suggestions,
    hematoxylin,
    instances_to_nuclei,
    segment_nuclei,
)

__all__ = ["LYMPHOCYTE_RICH_REGIONS", "REGION_TO_CLASS", "HeuristicParams", "bootstrap_classes",
           "bootstrap_suggestions", "hematoxylin", "instances_to_nuclei", "segment_nuclei"]
