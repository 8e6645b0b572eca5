"""Builds a :class:`MaskScoringRCNN` from plain keyword arguments (what the Hydra config holds)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from msrcnn.models.backbones import build_backbone, norm_layer
from msrcnn.models.mask_scoring_rcnn import MaskScoringRCNN
from msrcnn.models.roi_heads import MaskIoUConfig

BOX_HEADS = ("mlp", "conv")


def build_model(
    *,
    num_classes: int,
    backbone: str | Mapping[str, Any] = "r18_fpn",
    head: MaskIoUConfig | Mapping[str, Any] | None = MaskIoUConfig(),  # noqa: B008 - frozen
    box_head: str = "mlp",
    box_representation_size: int = 1024,
    box_conv_channels: int = 256,
    box_num_convs: int = 4,
    mask_head_channels: int = 256,
    mask_num_convs: int = 4,
    mask_head_norm: str | None = None,
    rpn_conv_depth: int = 1,
    channels_last: bool = False,
    **kwargs,
) -> MaskScoringRCNN:
    """A Mask Scoring R-CNN of the config groups ``backbone``, ``head`` and ``model``, one argument each.

    ``num_classes`` counts the background. ``backbone`` is a backbone name or a mapping of
    :func:`~msrcnn.models.backbones.build_backbone`'s arguments (the config group ``backbone``:
    ``name``, ``pretrained``, ``norm``, ...). ``head`` is the MaskIoU head (the config group ``head``:
    :class:`~msrcnn.models.roi_heads.MaskIoUConfig`'s fields; ``name: none``, the group's other
    option, or ``None`` gives a plain Mask R-CNN). The other arguments are the ``model`` group's:
    ``box_head`` is ``mlp`` (torchvision's two FCs) or ``conv`` (``box_num_convs`` 3x3 convs with
    BatchNorm, then one FC); ``mask_head_norm`` adds a normalisation (``bn``/``frozen_bn``/``gn``)
    after each mask head conv and ``rpn_conv_depth`` sets the RPN head's 3x3 convs (torchvision's
    ``*_v2`` detectors: ``bn`` and 2; default none and 1); ``channels_last`` stores the convolution weights in NHWC order, which the
    convolutions then follow (faster on CPUs and on tensor-core GPUs); the remaining keyword arguments
    (``min_size``, ``max_size``, ``rpn_*``, ``box_*``, ``soft_nms``, ...) go to :class:`MaskScoringRCNN`
    and from there to torchvision's ``MaskRCNN``.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must count the background and at least one class")
    if box_head not in BOX_HEADS:
        raise ValueError(f"box_head={box_head!r} is not valid; expected one of {', '.join(BOX_HEADS)}")
    backbone_args = {"name": backbone} if isinstance(backbone, str) else dict(backbone)
    spec = build_backbone(**{k: getattr(v, "value", v) for k, v in backbone_args.items()})
    if isinstance(head, Mapping) and "name" in head:  # the config group's option: maskiou | none
        name = getattr(head["name"], "value", head["name"])
        head = None if name == "none" else {k: v for k, v in head.items() if k != "name"}
    channels = spec.body.out_channels
    anchors = AnchorGenerator(spec.anchor_sizes, (tuple(spec.aspect_ratios),) * len(spec.anchor_sizes))
    rpn_head = RPNHead(channels, anchors.num_anchors_per_location()[0], conv_depth=rpn_conv_depth)
    roi = spec.roi_output_size
    box_pool = MultiScaleRoIAlign(spec.featmap_names, output_size=roi, sampling_ratio=2)
    if spec.box_head is not None:
        box_module, rep = spec.box_head, spec.box_head_channels
    elif box_head == "mlp":
        box_module, rep = TwoMLPHead(channels * roi * roi, box_representation_size), box_representation_size
    else:
        box_module = FastRCNNConvFCHead(
            (channels, roi, roi),
            [box_conv_channels] * box_num_convs,
            [box_representation_size],
            nn.BatchNorm2d,
        )
        rep = box_representation_size
    mask_layers = [mask_head_channels] * mask_num_convs
    model = MaskScoringRCNN(
        spec.body,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=rpn_head,
        box_roi_pool=box_pool,
        box_head=box_module,
        box_predictor=FastRCNNPredictor(rep, num_classes),
        mask_roi_pool=MultiScaleRoIAlign(spec.featmap_names, output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(
            channels, mask_layers, 1, norm_layer=norm_layer(mask_head_norm) if mask_head_norm else None
        ),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes),
        head=head,
        **kwargs,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
