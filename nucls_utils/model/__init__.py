"""The NuCLS model (paper Fig. 6): architecture, data, training, inference on any image size, experiments.

See :mod:`.architecture` for what differs from torchvision's Mask R-CNN and :mod:`.train` for the schedules.
"""

from .architecture import MODEL_CONFIGS, ModelConfig, NucleusMaskRCNN, build_model, model_class_names
from .detections import Detections

__all__ = ["MODEL_CONFIGS", "ModelConfig", "NucleusMaskRCNN", "build_model", "model_class_names", "Detections"]
