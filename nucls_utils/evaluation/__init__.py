"""The study's metrics, each defined once, by topic.

* :mod:`.matching`: box IOU, Hungarian matching, detection counts and their F1 (:func:`f1_from_counts`).
* :mod:`.detection`: COCO bounding-box AP (AP@.5, mAP@.5:.95).
* :mod:`.segmentation`: box-local masks, their overlap, IOU and DICE (:func:`dice_from_areas`).
* :mod:`.instances`: whole label images: pixel scores of the nuclei mask (:func:`pixel_scores`), the Aggregated
  Jaccard Index (:func:`aggregated_jaccard_index`) and panoptic quality (:func:`panoptic_quality`).
* :mod:`.classification`: MCC of a two-by-two table (:func:`mcc_from_counts`), pooled one-vs-rest
  (:func:`mcc_pooled_ovr`) and multi-class (:func:`mcc_multiclass`) MCC, confusion tables, PR / ROC curves,
  average precision, AUROC micro and the two macro variants (:func:`auroc_macro_curve`, the area under the mean
  curve; :func:`auroc_macro_mean`, the mean of the per-class areas), and the scores of matched nuclei per class
  level (:func:`classification_scores`).
* :mod:`.bootstrap`: percentile bootstrap intervals.
* :mod:`.table1`: one Table-1 row of a model on a test set (:func:`evaluate_model`).

Every name is importable from ``nucls_utils.evaluation`` itself; nothing here imports torch, torchvision or
HistomicsTK.
"""

from __future__ import annotations

from .bootstrap import BootstrapCI, bootstrap_ci
from .classification import (
    auroc_macro_curve,
    auroc_macro_mean,
    auroc_micro,
    average_precision,
    classification_scores,
    confusion_frame,
    mcc_from_counts,
    mcc_multiclass,
    mcc_pooled_ovr,
    one_vs_rest_counts,
    precision_recall_curve,
    roc_auc,
    roc_auc_micro_macro,
    roc_curve,
)
from .detection import COCO_IOU_THRESHOLDS, COCO_RECALL_LEVELS, coco_detection_ap
from .instances import (
    InstanceOverlaps,
    aggregated_jaccard_index,
    instance_overlaps,
    panoptic_quality,
    pixel_scores,
)
from .matching import DetectionCounts, box_iou, detection_counts, f1_from_counts, match_boxes
from .segmentation import dice_from_areas, local_mask_box, local_mask_overlap, segmentation_scores
from .table1 import ImagePrediction, ImageTruth, evaluate_model

__all__ = [
    "box_iou", "match_boxes", "f1_from_counts", "DetectionCounts", "detection_counts",
    "COCO_IOU_THRESHOLDS", "COCO_RECALL_LEVELS", "coco_detection_ap",
    "local_mask_box", "local_mask_overlap", "dice_from_areas", "segmentation_scores",
    "InstanceOverlaps", "instance_overlaps", "aggregated_jaccard_index", "panoptic_quality", "pixel_scores",
    "mcc_from_counts", "one_vs_rest_counts", "mcc_pooled_ovr", "mcc_multiclass", "confusion_frame",
    "precision_recall_curve", "average_precision", "roc_curve", "roc_auc", "roc_auc_micro_macro",
    "auroc_micro", "auroc_macro_curve", "auroc_macro_mean", "classification_scores",
    "BootstrapCI", "bootstrap_ci",
    "ImageTruth", "ImagePrediction", "evaluate_model",
]
