"""The NuCLS model (paper Fig. 6): architecture, data, training, inference on any image size, experiments.

* :mod:`.architecture` -- what differs from torchvision's Mask R-CNN, each behind a :class:`ModelConfig` switch;
* :mod:`.data` -- FOV samples, sampling weights, stain augmentation, Macenko normalisation, training crops;
* :mod:`.train` -- profiles (smoke / cpu / paper), the training loop with checkpoints, resume and the freeze;
* :mod:`.inference` -- tiled inference on large regions with bounded memory;
* :mod:`.classifier` -- the decoupled thumbnail classifier of Table S5 config 4;
* :mod:`.experiments`, :mod:`.study`, :mod:`.report` -- what notebooks 05 and 06 run, read and tabulate.
"""

from .architecture import MODEL_CONFIGS, ModelConfig, NucleusMaskRCNN, build_model, model_class_names
from .detections import Detections
from .inference import predict_fovs, predict_tiled

__all__ = ["MODEL_CONFIGS", "ModelConfig", "NucleusMaskRCNN", "build_model", "model_class_names", "Detections",
           "predict_tiled", "predict_fovs"]
