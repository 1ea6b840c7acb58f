"""Algorithmic suggestions: heuristic segmentation and region classes (the bootstrap), the Mask R-CNN refinement,
their assessment (Table S2) and the stratified choice of FOVs to annotate."""

from .assess import (
    NO_CLASS,
    NO_PAIRS,
    carries_classes,
    fov_sampling_features,
    paper_vs_run,
    per_fov_scores,
    stratified_fov_sample,
    suggestion_table,
)
from .heuristic import (
    LYMPHOCYTE_RICH_REGIONS,
    REGION_TO_CLASS,
    HeuristicParams,
    bootstrap_classes,
    bootstrap_suggestions,
    hematoxylin,
    instances_to_nuclei,
    region_inherited,
    segment_nuclei,
)
from .refine import (
    CLASS_AGNOSTIC,
    REFINER_PROFILES,
    SUGGESTION_CLASSES,
    RefinerConfig,
    build_refiner,
    refine_fov,
    refiner_classes,
    train_refiner,
)
from .run import REFINER_CACHE_VERSION, RefinedDataset, bootstrap_dataset, refine_dataset, refiner_key

__all__ = ["CLASS_AGNOSTIC", "LYMPHOCYTE_RICH_REGIONS", "NO_CLASS", "NO_PAIRS", "REFINER_CACHE_VERSION", "REFINER_PROFILES",
           "REGION_TO_CLASS", "SUGGESTION_CLASSES", "HeuristicParams", "RefinedDataset", "RefinerConfig",
           "bootstrap_classes", "bootstrap_dataset", "carries_classes", "bootstrap_suggestions", "build_refiner", "fov_sampling_features",
           "hematoxylin", "instances_to_nuclei", "paper_vs_run", "per_fov_scores", "refine_dataset", "refine_fov", "refiner_classes",
           "refiner_key", "region_inherited", "segment_nuclei", "stratified_fov_sample", "suggestion_table",
           "train_refiner"]
