"""Builds a :class:`MaskScoringRCNN` from plain keyword arguments (what the Hydra config holds)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from msrcnn.models.backbones import build_backbone
from msrcnn.models.mask_scoring_rcnn import MaskScoringRCNN

BOX_HEADS = ("mlp", "conv")


def build_model(
    *,
    num_classes: int,
    backbone: str = "r18_fpn",
    pretrained: str | None = None,
    norm: str | None = None,
    trainable_layers: int | None = None,
    returned_layers: Sequence[int] | None = None,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[Sequence[int]] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    width: int = 64,
    box_head: str = "mlp",
    box_representation_size: int = 1024,
    box_conv_channels: int = 256,
    box_num_convs: int = 4,
    mask_head_channels: int = 256,
    mask_num_convs: int = 4,
    channels_last: bool = False,
    **kwargs,
) -> MaskScoringRCNN:
    """A Mask Scoring R-CNN with the given backbone and widths.

    ``num_classes`` counts the background. ``box_head`` is ``mlp`` (torchvision's two FCs) or
    ``conv`` (``box_num_convs`` 3x3 convs with BatchNorm, then one FC). Remaining keyword
    arguments go to :class:`MaskScoringRCNN` (and from there to torchvision's ``MaskRCNN``).
    ``channels_last`` stores the convolution weights in NHWC order, which the convolutions then
    follow (faster on CPUs and on tensor-core GPUs).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes} must count the background and at least one class")
    if box_head not in BOX_HEADS:
        raise ValueError(f"box_head={box_head!r} is not valid; expected one of {', '.join(BOX_HEADS)}")
    spec = build_backbone(
        backbone,
        pretrained=pretrained,
        norm=norm,
        trainable_layers=trainable_layers,
        returned_layers=returned_layers,
        fpn_channels=fpn_channels,
        anchor_sizes=anchor_sizes,
        width=width,
    )
    channels = spec.body.out_channels
    anchors = AnchorGenerator(spec.anchor_sizes, (tuple(aspect_ratios),) * len(spec.anchor_sizes))
    rpn_head = RPNHead(channels, anchors.num_anchors_per_location()[0])
    roi = spec.roi_output_size
    box_pool = MultiScaleRoIAlign(spec.featmap_names, output_size=roi, sampling_ratio=2)
    if spec.box_head is not None:
        head, rep = spec.box_head, spec.box_head_channels
    elif box_head == "mlp":
        head, rep = TwoMLPHead(channels * roi * roi, box_representation_size), box_representation_size
    else:
        head = FastRCNNConvFCHead(
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
        box_head=head,
        box_predictor=FastRCNNPredictor(rep, num_classes),
        mask_roi_pool=MultiScaleRoIAlign(spec.featmap_names, output_size=14, sampling_ratio=2),
        mask_head=MaskRCNNHeads(channels, mask_layers, 1),
        mask_predictor=MaskRCNNPredictor(mask_layers[-1], mask_layers[-1], num_classes),
        **kwargs,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model
