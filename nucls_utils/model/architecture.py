"""The NuCLS model: torchvision's Mask R-CNN, configured and subclassed (paper Fig. 6a-b, notes section 2f).

What differs from a stock :class:`torchvision.models.detection.MaskRCNN`, each behind a :class:`ModelConfig` switch
so that the ablations of Table S5 are configurations of one model:

* :class:`ScaleFactorTransform` resizes every image by a fixed factor (4 in the paper, jittered by +-10 % in
  training) instead of to a fixed short side, so nuclei keep their size at any input size; boxes and masks come
  back in input pixels.
* A ResNet-18 truncated after ``layer4`` (one map, stride 32) or ``layer3`` (stride 16; the cpu profile), no FPN.
* :class:`NucleusRoIHeads`: optional specialised classification convolutions (4 x 3x3, dilation and padding 1)
  whose ROI-aligned features feed the classifier only; class-agnostic box regression and masks; hybrid training
  (mask loss only for nuclei whose annotation is a boundary); the ambiguous class ignored by the classification
  loss; at inference a global NMS on objectness (the summed non-background probability) and a full class
  probability vector for every detection.

Masks are returned at the mask head's resolution (``mask_probs``, 28 x 28 in box coordinates) rather than pasted
into full-size images: :class:`~nucls_utils.model.detections.Detections` pastes them box-locally, so memory does not
grow with (detections x image area).
"""

from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import taxonomy as tx

__all__ = ["ModelConfig", "MODEL_CONFIGS", "build_model", "NucleusMaskRCNN", "NucleusRoIHeads",
           "ScaleFactorTransform", "model_class_names", "build_refiner_network", "class_agnostic_nms",
           "library_versions", "torch_seeded"]


#: Key of the classifier's own feature map in the backbone's output (``classifier_features='layer2'``).
_CLS_MAP = "cls"


def json_fields(d: dict) -> dict:
    """A config dict read back from JSON, with lists turned back into the tuples the frozen dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


def model_class_names(level: str) -> tuple[str, ...]:
    """Classes a model is trained on, label = index + 1; the last one (AMBIGUOUS) is the ignore label."""
    if level == "main":
        return tuple(tx.MAIN_CLASSES)
    if level == "super":
        return tuple(tx.SUPER_CLASSES)
    raise ValueError(f"level must be 'main' or 'super', not {level!r}")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of a NuCLS model. Defaults are the paper's final model (Table S5 config 3, Table S7).

    Sizes are in pixels of the *input* (0.2 microns per pixel) unless the name says otherwise; anchors are
    multiplied by ``scale_factor`` because they live on the resized image.
    """

    level: str = "main"  # classes trained on: 'main' (7 + AMBIGUOUS) or 'super' (4 + AMBIGUOUS)
    scale_factor: float = 4.0
    scale_jitter: float = 0.4  # training: sf + U(-jitter, +jitter)
    backbone_layer: str = "layer4"  # ResNet-18 truncated after this block: layer4 (stride 32) or layer3 (16)
    weights: str | None = "imagenet"  # 'imagenet' (when torchvision can load them), None, or a checkpoint path
    # with a synthetic-pretrained start (weights='pretrained:<key>'): also start the detection layers (trunk, neck,
    # RPN, box head and regression, mask branch; the classifier only with classifier_start) from the detector pretrained
    # with that trunk (:mod:`.pretrain`, cpu and smoke profiles); ignored with any other start
    detector_start: bool = False
    # with detector_start: also start the classifier (classification convolutions, its own head, its reduction,
    # cls_score) from the detector's when every one of its tensors matches the detector's in name and shape (the
    # final model at main-class level; configs 1/2/6 classify through other layers and start theirs afresh)
    classifier_start: bool = False
    anchor_sizes: tuple[float, ...] = (12.0, 24.0, 48.0)
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    rpn_pre_nms_top_n: int = 6000
    rpn_post_nms_top_n: int = 3000
    # proposals at inference (None: as in training); the cpu profile trains with 300 but keeps 1000 at test time
    rpn_pre_nms_top_n_test: int | None = None
    rpn_post_nms_top_n_test: int | None = None
    rpn_batch_size_per_image: int = 256
    roi_size: int = 14
    representation: int = 1024
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    mask_channels: int = 256
    neck_channels: int | None = None  # 1x1 conv to this width before the RPN and ROI heads (cpu profile)
    classification_convs: int = 4  # 0 = classify from the box head's features (configs 1, 2)
    # 'shared': the classifier reads its ROI features through the box head (the reference code); 'own': through a
    # box-head-shaped MLP of its own, which keeps training after the detection freeze (the shared one is frozen)
    classifier_head: str = "shared"
    # feature map the classification convolutions read: 'detector' (the map the RPN and box head read) or 'layer2'
    # (ResNet-18's layer2, twice the detector's resolution at layer3, four times at layer4; needs classification_convs)
    classifier_features: str = "detector"
    class_agnostic: bool = True  # False = per-class box regression and per-class NMS (config 1)
    nms_iou: float = 0.2
    score_threshold: float = 0.05
    detections_per_img: int = 300

    @property
    def classes(self) -> tuple[str, ...]:
        return model_class_names(self.level)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """Inverse of :meth:`to_dict` (JSON turns tuples into lists)."""
        return cls(**json_fields(d))

    def with_(self, **changes) -> ModelConfig:
        return replace(self, **changes)


#: Table S5's configurations on top of a base config (keys are the paper's config numbers).
MODEL_CONFIGS: dict[str, dict] = {
    "1": {"classification_convs": 0, "class_agnostic": False},  # near-vanilla Mask R-CNN, hybrid training
    "2": {"classification_convs": 0},  # class-agnostic boxes + global NMS on objectness
    "3": {},  # + classification convolutions: the final NuCLS model
    "6": {"classification_convs": 0, "level": "super"},  # config 2 trained on super-classes
}


# ---------------------------------------------------------------------------------------------------------------
# Transform: resize by a scale factor
# ---------------------------------------------------------------------------------------------------------------
def _generalized_transform():
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    return GeneralizedRCNNTransform


class ScaleFactorTransform(_generalized_transform()):
    """Normalise with ImageNet statistics, then resize every image by ``scale_factor`` (jittered in training).

    Replaces torchvision's resize-to-a-short-side: an image of any size keeps the physical scale of its nuclei.
    Target masks stay at input resolution; the ratio used is stored in the target as ``"scale"`` (``(sy, sx)``)
    so that mask targets can be cropped at input resolution.
    """

    def __init__(self, scale_factor: float, jitter: float = 0.0, size_divisible: int = 32):
        super().__init__(min_size=1, max_size=1, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225],
                         size_divisible=size_divisible)
        self.scale_factor = float(scale_factor)
        self.jitter = float(jitter)

    def resize(self, image: Tensor, target: dict[str, Tensor] | None = None):
        h, w = image.shape[-2:]
        sf = self.scale_factor
        if self.training and self.jitter > 0:
            sf = sf + (torch.rand(()).item() * 2.0 - 1.0) * self.jitter
        nh, nw = max(1, round(h * sf)), max(1, round(w * sf))
        if (nh, nw) != (h, w):
            image = F.interpolate(image[None], size=(nh, nw), mode="bilinear", align_corners=False)[0]
        if target is None:
            return image, target
        sy, sx = nh / h, nw / w
        target = dict(target)
        boxes = target["boxes"]
        target["boxes"] = boxes * boxes.new_tensor([sx, sy, sx, sy])
        target["scale"] = boxes.new_tensor([sy, sx])
        return image, target

    def postprocess(self, result, image_shapes, original_image_sizes):
        if self.training:
            return result
        for pred, (h, w), (oh, ow) in zip(result, image_shapes, original_image_sizes, strict=True):
            pred["boxes"] = pred["boxes"] * pred["boxes"].new_tensor([ow / w, oh / h, ow / w, oh / h])
        return result

    def __repr__(self) -> str:
        return f"{type(self).__name__}(scale_factor={self.scale_factor}, jitter={self.jitter})"


# ---------------------------------------------------------------------------------------------------------------
# ROI heads
# ---------------------------------------------------------------------------------------------------------------
def _roi_heads_base():
    from torchvision.models.detection.roi_heads import RoIHeads

    return RoIHeads


class NucleusRoIHeads(_roi_heads_base()):
    """torchvision's ROI heads with the NuCLS changes (see the module docstring).

    Parameters (beyond :class:`torchvision.models.detection.roi_heads.RoIHeads`)
    ----------
    classification_convs : nn.Module or None
        Applied to the whole feature map; the classifier reads ROI-aligned features of its output through the
        shared ``box_head``. ``None``: the classifier reads the box head's features directly.
    cls_score : nn.Linear
        ``representation -> num_classes + 1`` (background first).
    cls_head : nn.Module or None
        The classifier's own MLP over its ROI-aligned features; ``None``: the shared ``box_head``.
    cls_roi_pool : nn.Module or None
        ROI alignment of the classifier's own feature map (``features["cls"]``, read by the classification
        convolutions); ``None``: the classification convolutions read the detector's map(s).
    bbox_pred : nn.Linear
        ``representation -> 8`` (class-agnostic: background, foreground) or ``4 * (num_classes + 1)``.
    ignore_label : int
        Label excluded from the classification loss and zeroed in the output probabilities (AMBIGUOUS).
    global_nms : bool
        NMS on objectness over all classes (True) or torchvision's per-class NMS on class scores (False).
    """

    def __init__(self, *args, classification_convs: nn.Module | None, cls_score: nn.Linear, bbox_pred: nn.Linear,
                 ignore_label: int, class_agnostic: bool, global_nms: bool, cls_head: nn.Module | None = None,
                 cls_roi_pool: nn.Module | None = None, **kwargs):
        super().__init__(*args, box_predictor=None, **kwargs)
        self.classification_convs = classification_convs
        self.cls_head = cls_head
        self.cls_roi_pool = cls_roi_pool
        self.cls_score = cls_score
        self.bbox_pred = bbox_pred
        self.ignore_label = int(ignore_label)
        self.class_agnostic = bool(class_agnostic)
        self.global_nms = bool(global_nms)
        self.return_features = False  # set True to return the classifier's input features (DTALE)
        # per-label weights of the classification loss (None: unweighted, as the paper); a training choice set by
        # train_model, not part of the architecture or of the saved weights
        self.class_weights: Tensor | None = None

    def set_class_weights(self, weights) -> None:
        """Weight the classification loss per label (background first, then the classes); None: unweighted."""
        if weights is None:
            self.class_weights = None
            return
        w = torch.as_tensor(weights, dtype=torch.float32, device=self.cls_score.weight.device).ravel()
        n = self.cls_score.out_features
        if w.numel() != n:
            raise ValueError(f"class_weights needs {n} values (background + {n - 1} classes), got {w.numel()}")
        self.class_weights = w

    # -- features -------------------------------------------------------------------------------------------
    def _features(self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes):
        pooled = self.box_roi_pool(features, proposals, image_shapes)
        box_x = self.box_head(pooled)
        if self.classification_convs is None:
            return box_x, (box_x if self.cls_head is None else self.cls_head(pooled))
        if self.cls_roi_pool is None:
            cfeat = OrderedDict((k, self.classification_convs(v)) for k, v in features.items())
            cls_pooled = self.box_roi_pool(cfeat, proposals, image_shapes)
        else:  # the classifier's own, finer map
            cls_pooled = self.cls_roi_pool({_CLS_MAP: self.classification_convs(features[_CLS_MAP])}, proposals,
                                           image_shapes)
        cls_x = (self.cls_head or self.box_head)(cls_pooled)
        return box_x, cls_x

    def _deltas_for(self, deltas: Tensor, labels: Tensor) -> Tensor:
        """The 4 regression outputs of each row for its label (foreground column when class-agnostic)."""
        deltas = deltas.reshape(deltas.shape[0], deltas.shape[-1] // 4, 4)  # explicit: a batch may hold no row
        if self.class_agnostic:
            return deltas[:, 1]
        return deltas[torch.arange(deltas.shape[0], device=deltas.device), labels]

    # -- losses -------------------------------------------------------------------------------------------------
    def _detection_losses(self, logits: Tensor, deltas: Tensor, labels: Tensor, reg_targets: Tensor):
        weight = None if self.class_weights is None else self.class_weights.to(logits)
        cls_loss = F.cross_entropy(logits, labels, weight=weight, ignore_index=self.ignore_label) \
            if (labels != self.ignore_label).any() else logits.sum() * 0.0
        pos = torch.where(labels > 0)[0]
        box = self._deltas_for(deltas[pos], labels[pos])
        box_loss = F.smooth_l1_loss(box, reg_targets[pos], beta=1.0 / 9, reduction="sum") / max(labels.numel(), 1)
        return cls_loss, box_loss

    def _mask_loss(self, mask_logits: Tensor, proposals: list[Tensor], matched: list[Tensor],
                   targets: list[dict[str, Tensor]]) -> Tensor:
        """BCE of the mask logits against GT masks, over proposals matched to boundary-annotated nuclei only."""
        from torchvision.ops import roi_align

        m = mask_logits.shape[-1]
        rows, goal = [], []
        start = 0
        for props, idx, t in zip(proposals, matched, targets, strict=True):
            n = props.shape[0]
            if n and t["masks"].shape[0]:
                ismask = t.get("ismask")
                use = ismask[idx].bool() if ismask is not None else torch.ones(n, dtype=torch.bool, device=props.device)
                if use.any():
                    sel = torch.where(use)[0]
                    scale = t.get("scale", props.new_ones(2))
                    # proposals live on the resized image; GT masks at input resolution
                    boxes = props[sel] / scale[[1, 0, 1, 0]]
                    rois = torch.cat([idx[sel, None].to(boxes), boxes], dim=1)
                    goal.append(roi_align(t["masks"][:, None].to(boxes), rois, (m, m), 1.0, aligned=True)[:, 0])
                    rows.append(sel + start)
            start += n
        if not rows:
            return mask_logits.sum() * 0.0
        rows_t = torch.cat(rows)
        return F.binary_cross_entropy_with_logits(mask_logits[rows_t, 0], torch.cat(goal).clamp(0, 1))

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            proposals, matched, labels, reg_targets = self.select_training_samples(proposals, targets)
            box_x, cls_x = self._features(features, proposals, image_shapes)
            logits = self.cls_score(cls_x)
            deltas = self.bbox_pred(box_x)
            labels_cat = torch.cat(labels)
            cls_loss, box_loss = self._detection_losses(logits, deltas, labels_cat, torch.cat(reg_targets))
            losses = {"loss_classifier": cls_loss, "loss_box_reg": box_loss}
            pos_props, pos_matched = [], []
            for p, i, lab in zip(proposals, matched, labels, strict=True):
                pos = torch.where(lab > 0)[0]
                pos_props.append(p[pos])
                pos_matched.append(i[pos])
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, pos_props, image_shapes)))
            losses["loss_mask"] = self._mask_loss(mask_logits, pos_props, pos_matched, targets)
            return [], losses

        box_x, cls_x = self._features(features, proposals, image_shapes)
        logits = self.cls_score(cls_x)
        deltas = self.bbox_pred(box_x)
        result = self._postprocess(logits, deltas, cls_x, proposals, image_shapes)
        boxes = [r["boxes"] for r in result]
        if sum(b.shape[0] for b in boxes):
            mask_logits = self.mask_predictor(self.mask_head(self.mask_roi_pool(features, boxes, image_shapes)))
            for r, mp in zip(result, mask_logits.sigmoid()[:, 0].split([b.shape[0] for b in boxes]), strict=True):
                r["mask_probs"] = mp
        else:
            for r in result:
                r["mask_probs"] = boxes[0].new_zeros((0, 28, 28))
        return result, {}

    def _postprocess(self, logits: Tensor, deltas: Tensor, cls_x: Tensor, proposals: list[Tensor], image_shapes):
        from torchvision.ops import boxes as box_ops

        n_per = [p.shape[0] for p in proposals]
        prob = F.softmax(logits, -1)
        k = prob.shape[1]
        deltas = deltas.reshape(deltas.shape[0], -1)
        decoded = self.box_coder.decode(deltas, proposals).reshape(sum(n_per), -1, 4)  # (N, 2 or K, 4)
        out = []
        for prob_i, boxes_i, x_i, shape in zip(prob.split(n_per), decoded.split(n_per), cls_x.split(n_per), image_shapes, strict=True):
            boxes_i = box_ops.clip_boxes_to_image(boxes_i, shape)
            objectness = 1.0 - prob_i[:, 0]  # summed non-background probability, before AMBIGUOUS is zeroed
            cls = prob_i.clone()
            cls[:, 0] = 0.0
            cls[:, self.ignore_label] = 0.0
            keep_cols = [c for c in range(1, k) if c != self.ignore_label]
            if self.global_nms:
                box = boxes_i[:, 1] if self.class_agnostic else boxes_i[torch.arange(len(cls)), cls.argmax(1)]
                score, rows, label = objectness, torch.arange(len(cls), device=cls.device), cls.argmax(1)
            else:  # torchvision: every (proposal, class) pair is a candidate, NMS per class on its probability
                cols = torch.tensor(keep_cols, device=cls.device)
                rows = torch.arange(len(cls), device=cls.device)[:, None].expand(-1, len(cols)).reshape(-1)
                label = cols[None].expand(len(cls), -1).reshape(-1)
                score = cls[rows, label]
                box = boxes_i[rows, 1] if self.class_agnostic else boxes_i[rows, label]
            ok = torch.where(score > self.score_thresh)[0]
            ok = ok[box_ops.remove_small_boxes(box[ok], min_size=1e-2)]
            if self.global_nms:
                keep = box_ops.nms(box[ok], score[ok], self.nms_thresh)
            else:
                keep = box_ops.batched_nms(box[ok], score[ok], label[ok], self.nms_thresh)
            keep = ok[keep[: self.detections_per_img]]
            probs = cls[rows[keep]][:, keep_cols]
            probs = probs / probs.sum(1, keepdim=True).clamp_min(1e-12)
            r = {"boxes": box[keep], "scores": score[keep], "labels": label[keep], "probs": probs,
                 "objectness": objectness[rows[keep]]}
            if self.return_features:
                r["features"] = x_i[rows[keep]]
            out.append(r)
        return out


# ---------------------------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------------------------
def _maskrcnn_base():
    from torchvision.models.detection import MaskRCNN

    return MaskRCNN


class NucleusMaskRCNN(_maskrcnn_base()):
    """A :class:`torchvision.models.detection.MaskRCNN` whose transform and ROI heads are the NuCLS ones.

    Use :func:`build_model` to create one. ``model(images)`` in eval mode returns, per image, ``boxes`` (input
    pixels), ``scores`` (objectness), ``labels`` (1-based over :attr:`classes`), ``probs`` (one column per class
    except AMBIGUOUS, rows sum to 1) and ``mask_probs`` (28 x 28 per box). :meth:`predict` wraps this into
    :class:`~nucls_utils.model.detections.Detections`.
    """

    config: ModelConfig
    weights_source: str

    @property
    def classes(self) -> tuple[str, ...]:
        """Class of each probability column (the model's classes without AMBIGUOUS)."""
        return tuple(c for c in self.config.classes if c != tx.AMBIGUOUS)

    @torch.no_grad()
    def predict(self, rgb, *, return_features: bool = False):
        """Detections on one RGB image ``(H, W, 3) uint8`` of any size (see also :func:`predict_tiled`)."""
        from .detections import Detections

        was_training = self.training
        self.eval()
        self.roi_heads.return_features = return_features
        try:
            x = torch.tensor(np.asarray(rgb)[..., :3]).permute(2, 0, 1).float().div_(255.0)  # a copy: PIL arrays are read-only
            dev = next(self.parameters()).device
            out = self([x.to(dev)])[0]
        finally:
            self.roi_heads.return_features = False
            self.train(was_training)
        return Detections.from_model_output(out, self.classes)


def _load_imagenet_resnet18(warn: bool = True):
    """ImageNet ResNet-18 weights when torchvision can load them (cache or network), else ``None``."""
    from torchvision.models import ResNet18_Weights

    try:
        return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:  # offline, proxy, corrupt cache: train from scratch and say so
        if warn:
            warnings.warn(f"ImageNet ResNet-18 weights unavailable ({type(exc).__name__}: {exc}); "
                          "the backbone is trained from scratch", stacklevel=3)
        return None


def resnet18_start(weights: str | None, *, warn: bool = True) -> tuple[dict | None, str]:
    """``(state dict or None, what it is)`` of a ResNet-18 start, for the NuCLS model and the refiner alike.

    ``weights``: None / ``""`` / ``"none"`` (random), ``"imagenet"`` (``None`` with a warning when torchvision
    cannot load it), ``"pretrained:<key>"`` (a synthetic-pretrained trunk, :mod:`.pretrain`) or a weights file.
    """
    from .pretrain import TOKEN_PREFIX, weights_path

    if weights in (None, "", "none"):
        return None, "scratch"
    if weights == "imagenet":
        state = _load_imagenet_resnet18(warn=warn)
        return state, "imagenet" if state is not None else "scratch (ImageNet weights unavailable)"
    if weights.startswith(TOKEN_PREFIX):
        state = torch.load(weights_path(weights), map_location="cpu", weights_only=True)
        return state, f"synthetic-pretrained trunk {weights[len(TOKEN_PREFIX):]}"
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"backbone weights {path} do not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state), f"file {path}"


def _backbone(config: ModelConfig) -> tuple[nn.Module, int, str]:
    from torchvision.models import resnet18
    from torchvision.models._utils import IntermediateLayerGetter
    from torchvision.ops import FrozenBatchNorm2d

    state, source = resnet18_start(config.weights)
    # pretrained: frozen batch norm as torchvision does; from scratch: batch norm must learn its statistics
    body = resnet18(weights=None, norm_layer=FrozenBatchNorm2d if state is not None else nn.BatchNorm2d)
    if state is not None:
        missing, _ = body.load_state_dict(state, strict=True)
        if [m for m in missing if not m.startswith("fc.")]:
            raise ValueError(f"backbone weights from {source} lack {missing[:3]}...")
        for name, p in body.named_parameters():  # as torchvision: the stem and layer1 stay frozen
            if not name.startswith(("layer2", "layer3", "layer4")):
                p.requires_grad_(False)
    if config.backbone_layer not in ("layer3", "layer4"):
        raise ValueError(f"backbone_layer must be 'layer3' or 'layer4', not {config.backbone_layer!r}")
    channels = 512 if config.backbone_layer == "layer4" else 256
    layers = {config.backbone_layer: "0"}
    if config.classifier_features == "layer2":
        layers["layer2"] = _CLS_MAP
    backbone = IntermediateLayerGetter(body, return_layers=layers)
    if config.neck_channels:
        widths = {"0": channels, _CLS_MAP: 128} if _CLS_MAP in layers.values() else {"0": channels}
        backbone = _Neck(backbone, widths, config.neck_channels)
        channels = config.neck_channels
    backbone.out_channels = channels
    return backbone, channels, source


class _Neck(nn.Module):
    """The backbone followed by a 1x1 convolution (+ ReLU) to fewer channels, one per returned map.

    On a CPU, the backward pass of ROIAlign costs in proportion to the channels it pools and dominates a training
    step (about half of it at 256 channels); a narrower map for the RPN and ROI heads keeps the cpu profile fast.
    ``widths``: input channels of each map the body returns (``"0"``, the detector's; ``"cls"``, the classifier's).
    """

    def __init__(self, body: nn.Module, widths: dict[str, int], out_channels: int):
        super().__init__()
        self.body = body
        self.reduce = nn.Sequential(nn.Conv2d(widths["0"], out_channels, 1), nn.ReLU(inplace=True))
        # a second reduction only for the classifier's map (an absent one keeps older weight files loadable)
        self.reduce_cls = nn.Sequential(nn.Conv2d(widths[_CLS_MAP], out_channels, 1), nn.ReLU(inplace=True)) \
            if _CLS_MAP in widths else None

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return OrderedDict((k, (self.reduce if k == "0" else self.reduce_cls)(v)) for k, v in self.body(x).items())


def _rpn_base():
    from torchvision.models.detection.rpn import RegionProposalNetwork

    return RegionProposalNetwork


class DetectorMapRPN(_rpn_base()):
    """torchvision's RPN reading only the detector's map (``"0"``) when the backbone also returns the classifier's
    (``classifier_features='layer2'``); its parameters and state dict are the plain RPN's."""

    def forward(self, images, features, targets=None):
        return super().forward(images, OrderedDict((k, v) for k, v in features.items() if k != _CLS_MAP), targets)


def build_model(config: ModelConfig | None = None) -> NucleusMaskRCNN:
    """Create a NuCLS model for ``config`` (the paper's final model by default)."""
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    config = config or ModelConfig()
    classes = config.classes
    n_out = len(classes) + 1  # + background
    if config.classifier_features not in ("detector", "layer2"):
        raise ValueError(f"classifier_features must be 'detector' or 'layer2', not {config.classifier_features!r}")
    if config.classifier_features == "layer2" and not config.classification_convs:
        raise ValueError("classifier_features='layer2' needs classification_convs > 0 (they read that map)")
    backbone, ch, source = _backbone(config)
    sf = config.scale_factor
    anchors = AnchorGenerator(sizes=(tuple(a * sf for a in config.anchor_sizes),),
                              aspect_ratios=(tuple(config.aspect_ratios),))
    r = config.roi_size
    model = NucleusMaskRCNN(
        backbone, num_classes=None, rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(["0"], r, sampling_ratio=0),
        box_head=TwoMLPHead(ch * r * r, config.representation), box_predictor=nn.Identity(),
        mask_roi_pool=MultiScaleRoIAlign(["0"], 14, sampling_ratio=0),
        mask_head=MaskRCNNHeads(ch, (config.mask_channels,) * 4, 1),
        mask_predictor=MaskRCNNPredictor(config.mask_channels, config.mask_channels, 1),
        rpn_pre_nms_top_n_train=config.rpn_pre_nms_top_n,
        rpn_pre_nms_top_n_test=config.rpn_pre_nms_top_n_test or config.rpn_pre_nms_top_n,
        rpn_post_nms_top_n_train=config.rpn_post_nms_top_n,
        rpn_post_nms_top_n_test=config.rpn_post_nms_top_n_test or config.rpn_post_nms_top_n,
        rpn_batch_size_per_image=config.rpn_batch_size_per_image,
        box_batch_size_per_image=config.box_batch_size_per_image,
        box_positive_fraction=config.box_positive_fraction,
        box_detections_per_img=config.detections_per_img,
    )
    old = model.roi_heads
    cconv = None
    cls_roi_pool = None
    if config.classifier_features == "layer2":
        cls_roi_pool = MultiScaleRoIAlign([_CLS_MAP], r, sampling_ratio=0)
        model.rpn.__class__ = DetectorMapRPN
    if config.classification_convs:
        layers = []
        cls_in = 128 if config.classifier_features == "layer2" and not config.neck_channels else ch
        for i in range(config.classification_convs):
            conv = nn.Conv2d(cls_in if i == 0 else ch, ch, 3, stride=1, padding=1, dilation=1)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
            layers += [conv, nn.ReLU(inplace=True)]
        cconv = nn.Sequential(*layers)
    if config.classifier_head not in ("shared", "own"):
        raise ValueError(f"classifier_head must be 'shared' or 'own', not {config.classifier_head!r}")
    cls_head = TwoMLPHead(ch * r * r, config.representation) if config.classifier_head == "own" else None
    cls_score = nn.Linear(config.representation, n_out)
    bbox_pred = nn.Linear(config.representation, 8 if config.class_agnostic else 4 * n_out)
    nn.init.normal_(cls_score.weight, std=0.01)
    nn.init.normal_(bbox_pred.weight, std=0.001)
    nn.init.zeros_(cls_score.bias)
    nn.init.zeros_(bbox_pred.bias)
    model.roi_heads = NucleusRoIHeads(
        old.box_roi_pool, old.box_head,
        fg_iou_thresh=0.5, bg_iou_thresh=0.5, batch_size_per_image=config.box_batch_size_per_image,
        positive_fraction=config.box_positive_fraction, bbox_reg_weights=(10.0, 10.0, 5.0, 5.0),
        score_thresh=config.score_threshold, nms_thresh=config.nms_iou,
        detections_per_img=config.detections_per_img,
        mask_roi_pool=old.mask_roi_pool, mask_head=old.mask_head, mask_predictor=old.mask_predictor,
        classification_convs=cconv, cls_score=cls_score, bbox_pred=bbox_pred, cls_head=cls_head,
        cls_roi_pool=cls_roi_pool,
        ignore_label=classes.index(tx.AMBIGUOUS) + 1, class_agnostic=config.class_agnostic,
        global_nms=config.class_agnostic,
    )
    model.transform = ScaleFactorTransform(sf, config.scale_jitter)
    model.config = config
    model.weights_source = source
    from .pretrain import TOKEN_PREFIX

    if config.detector_start and isinstance(config.weights, str) and config.weights.startswith(TOKEN_PREFIX):
        loaded = load_detection_layers(model, config.weights, classifier=config.classifier_start)
        model.weights_source = f"{source} + pretrained detector ({loaded} tensors)"
    return model


#: Parameter-name prefixes of the detection layers a pretrained detector passes on; configs 1, 2 and 6 classify from
#: the shared box head, which is one of them (README, "Pretrained detector").
DETECTION_PREFIXES: tuple[str, ...] = ("backbone.", "rpn.", "roi_heads.box_head.", "roi_heads.bbox_pred.",
                                      "roi_heads.mask_head.", "roi_heads.mask_predictor.")
#: The classifier's own layers: passed on only with ``ModelConfig.classifier_start`` and an exact match.
CLASSIFIER_PREFIXES: tuple[str, ...] = ("backbone.reduce_cls.", "roi_heads.classification_convs.",
                                        "roi_heads.cls_head.", "roi_heads.cls_score.")


def load_detection_layers(model: NucleusMaskRCNN, token: str, *, classifier: bool = False) -> int:
    """Copy the detection layers of the detector pretrained with trunk ``token`` into ``model``; return how many
    tensors were copied. Tensors whose shape differs (config 1's per-class box regression) keep their fresh
    initialisation; a model that would receive no detection layer at all is an error.

    ``classifier=True``: also copy the classifier's layers (:data:`CLASSIFIER_PREFIXES`), all or none: only when the
    model's classifier tensors are exactly the detector's in name and shape (the detector is the profile's final
    model at main-class level, so configs without its classification path or at super-class level keep theirs)."""
    from .pretrain import detector_path

    state = torch.load(detector_path(token), map_location="cpu", weights_only=True)
    own = model.state_dict()
    take = {k: v for k, v in state.items() if k.startswith(DETECTION_PREFIXES)
            and not k.startswith(CLASSIFIER_PREFIXES) and k in own and own[k].shape == v.shape}
    if not any(k.startswith("rpn.") for k in take):
        raise ValueError(f"the pretrained detector of {token} does not fit this model (no RPN tensor matches)")
    if classifier:
        mine = {k: v.shape for k, v in own.items() if k.startswith(CLASSIFIER_PREFIXES)}
        theirs = {k: v.shape for k, v in state.items() if k.startswith(CLASSIFIER_PREFIXES)}
        if mine == theirs:
            take.update({k: state[k] for k in mine})
    model.load_state_dict(take, strict=False)
    return len(take)


# ---------------------------------------------------------------------------------------------------------------
# The suggestion refiner's network (notebook 02, :mod:`nucls_utils.suggestions.refine`): torchvision's detection
# classes are used here, in ``model/``, and nowhere else in the package.
# ---------------------------------------------------------------------------------------------------------------


def build_refiner_network(num_classes: int, channels: int = 64, weights: str | None = None) -> nn.Module:
    """The refiner's slim Mask R-CNN (see :func:`nucls_utils.suggestions.refine.build_refiner`, which seeds it).

    ResNet-18 with trainable batch norm up to ``layer3``, an FPN of ``channels`` channels on strides 4-16 plus a
    pooled level, anchors 12-96 px, box and mask heads of the same width; images are never resized.
    ``weights``: the ResNet-18's start (:func:`resnet18_start`; None: random). Initial weights come from torch's
    global generator.
    """
    from torchvision.models import resnet18
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    body = resnet18(weights=None, norm_layer=torch.nn.BatchNorm2d)
    if weights:
        state, source = resnet18_start(weights, warn=False)
        if state is None:
            raise RuntimeError(f"the refiner was asked to start from {weights!r} weights, but the start is {source}; "
                               "start from the synthetic-pretrained trunk instead")
        body.load_state_dict(state, strict=True)
    backbone = BackboneWithFPN(body, {"layer1": "0", "layer2": "1", "layer3": "2"}, [64, 128, 256], channels)
    anchors = AnchorGenerator(sizes=((12,), (24,), (48,), (96,)), aspect_ratios=((0.5, 1.0, 2.0),) * 4)
    return MaskRCNN(backbone, num_classes=None, rpn_anchor_generator=anchors, min_size=128, max_size=4096,
                    box_head=TwoMLPHead(channels * 7 * 7, 256), box_predictor=FastRCNNPredictor(256, num_classes),
                    mask_head=MaskRCNNHeads(channels, (channels,) * 4, 1),
                    mask_predictor=MaskRCNNPredictor(channels, channels, num_classes),
                    box_detections_per_img=300, box_score_thresh=0.0, rpn_pre_nms_top_n_train=600,
                    rpn_post_nms_top_n_train=300, rpn_pre_nms_top_n_test=2000, rpn_post_nms_top_n_test=1000,
                    box_batch_size_per_image=64, rpn_batch_size_per_image=128)


def class_agnostic_nms(boxes: Tensor, scores: Tensor, iou: float) -> Tensor:
    """Indices of the boxes kept by non-maximum suppression at ``iou`` over all classes, by decreasing score."""
    from torchvision.ops import nms

    return nms(boxes, scores, iou)


def library_versions() -> dict[str, str]:
    """The torch and torchvision versions (as the libraries report them), for cache keys of trained models."""
    import torchvision

    return {"torch": torch.__version__, "torchvision": torchvision.__version__}


@contextlib.contextmanager
def torch_seeded(seed: int):
    """Inside the block, torch's global random generators (the CPU's and every CUDA device's) start from ``seed``;
    after it they are back where the caller left them. Training runs in one of these blocks, so what it draws
    (weight initialisation, the scale jitter of :class:`ScaleFactorTransform`, torchvision's proposal samplers,
    which can only draw from the global generator) neither depends on nor changes the caller's random state; the
    training loop checkpoints and restores the state it draws from."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
