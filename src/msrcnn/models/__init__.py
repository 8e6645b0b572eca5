"""Mask Scoring R-CNN as a plain ``torch.nn.Module`` (no Lightning, no Hydra): ``build_model(...)`` builds one
from keyword arguments, ``load_model(path)`` a trained one from a ``src/train.py`` checkpoint.

Importing it first checks the installed torchvision against the tested range
(:mod:`msrcnn.models.torchvision_ports`)."""

import msrcnn.models.torchvision_ports  # noqa: F401 - the torchvision version check, before any port is used
from msrcnn.models.backbones import BACKBONES, BackboneSpec, build_backbone
from msrcnn.models.checkpoint import CheckpointError, read_checkpoint
from msrcnn.models.factory import build_model, load_model, model_kwargs
from msrcnn.models.mask_scoring_rcnn import MaskScoringRCNN
from msrcnn.models.maskiou import (
    INPUT_DESIGNS,
    TRAIN_SAMPLES,
    TRAIN_TARGETS,
    MaskIoUHead,
    mask_iou_targets,
    maskiou_loss,
)
from msrcnn.models.roi_heads import MaskScoringRoIHeads

__all__ = [
    "BACKBONES",
    "INPUT_DESIGNS",
    "TRAIN_SAMPLES",
    "TRAIN_TARGETS",
    "BackboneSpec",
    "CheckpointError",
    "MaskIoUHead",
    "MaskScoringRCNN",
    "MaskScoringRoIHeads",
    "build_backbone",
    "build_model",
    "load_model",
    "mask_iou_targets",
    "maskiou_loss",
    "model_kwargs",
    "read_checkpoint",
]
