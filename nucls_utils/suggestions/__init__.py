"""Algorithmic suggestions: heuristic segmentation and region classes (the bootstrap), the Mask R-CNN refinement,
their assessment (Table S2) and the stratified choice of FOVs to annotate."""

from .assess import fov_sampling_features, per_fov_scores, stratified_fov_sample, suggestion_table
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
    REFINER_PROFILES,
    SUGGESTION_CLASSES,
    RefinerConfig,
    build_refiner,
    refine_fov,
    train_refiner,
)
from .run import bootstrap_dataset, refine_dataset

__all__ = ["LYMPHOCYTE_RICH_REGIONS", "REFINER_PROFILES", "REGION_TO_CLASS", "SUGGESTION_CLASSES",
           "HeuristicParams", "RefinerConfig", "bootstrap_classes", "bootstrap_dataset", "refine_dataset", "bootstrap_suggestions", "build_refiner",
           "fov_sampling_features", "hematoxylin", "instances_to_nuclei", "per_fov_scores", "refine_fov",
           "region_inherited",           "segment_nuclei", "stratified_fov_sample", "suggestion_table", "train_refiner"]
