"""Turning a configuration into a :class:`MaskScoringRCNN`: :func:`build_model` from keyword arguments
(the config groups ``backbone``, ``head`` and ``model``), :func:`model_kwargs` from a run's config, and
:func:`load_model` from a ``src/train.py`` checkpoint (read by :mod:`msrcnn.models.checkpoint`).
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNN, MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import AnchorGenerator, RPNHead
from torchvision.ops import MultiScaleRoIAlign

from msrcnn.models.backbones import backbone_defaults, build_backbone, norm_layer
from msrcnn.models.checkpoint import CheckpointError, model_weights, read_checkpoint
from msrcnn.models.mask_scoring_rcnn import MaskScoringRCNN

log = logging.getLogger("msrcnn.models")

BOX_HEADS = ("mlp", "conv")

# torchvision ``MaskRCNN``'s keyword arguments that are keys of the config group ``model``; their
# defaults are torchvision's (read from its signature by :func:`model_arguments`).
DETECTOR_ARGUMENTS = (
    "min_size",
    "max_size",
    "rpn_pre_nms_top_n_train",
    "rpn_post_nms_top_n_train",
    "rpn_pre_nms_top_n_test",
    "rpn_post_nms_top_n_test",
    "rpn_batch_size_per_image",
    "box_batch_size_per_image",
    "box_positive_fraction",
    "box_score_thresh",
    "box_nms_thresh",
    "box_detections_per_img",
)


def build_model(
    *,
    num_classes: int,
    backbone: str | Mapping[str, Any] = "r18_fpn",
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
    ``name``, ``pretrained``, ``norm``, ...). ``head`` (a keyword argument of :class:`MaskScoringRCNN`)
    is the MaskIoU head: a :class:`~msrcnn.models.roi_heads.MaskIoUConfig` or a mapping of its fields
    (the config group ``head`` without its ``name``, see :func:`model_kwargs`), ``None`` for a plain
    Mask R-CNN. The other arguments are the ``model`` group's:
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
    spec = build_backbone(**backbone_args)
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
        **kwargs,
    )
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def model_arguments() -> dict[str, inspect.Parameter]:
    """The keys of the config group ``model`` that build the model, each the parameter it is (its
    default where it is declared): :func:`build_model`'s own, :class:`MaskScoringRCNN`'s ``soft_nms``
    and torchvision ``MaskRCNN``'s :data:`DETECTOR_ARGUMENTS`."""
    own = inspect.signature(build_model).parameters
    model = inspect.signature(MaskScoringRCNN.__init__).parameters
    torchvision = inspect.signature(MaskRCNN.__init__).parameters
    hints = typing.get_type_hints(build_model)
    arguments = {
        n: p.replace(annotation=hints[n])
        for n, p in own.items()
        if p.kind is p.KEYWORD_ONLY and n not in ("num_classes", "backbone")
    }
    arguments["soft_nms"] = model["soft_nms"]
    arguments.update((name, torchvision[name]) for name in DETECTOR_ARGUMENTS)
    return arguments


def model_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`build_model`'s keyword arguments of a run config (a plain dict, as ``src/train.py`` stores
    it): the ``backbone`` group as it is, the ``head`` group without its ``name`` (``name: none``: no
    head), the ``model`` group's keys that build the model (:func:`model_arguments`; the training app's
    keys such as ``init_from`` are not). ``num_classes`` is not included; keys missing from an older
    config are left to the defaults. The one conversion of a config into arguments."""
    head = dict(config.get("head") or {"name": "none"})
    name = head.pop("name", "maskiou")
    arguments = model_arguments()
    model = {k: v for k, v in config["model"].items() if k in arguments}
    return {"backbone": dict(config["backbone"]), "head": None if name == "none" else head, **model}


def inference_kwargs(config: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`model_kwargs` for rebuilding a trained model: ``backbone.pretrained`` is not read
    again (the weights come from the checkpoint). A run config records the backbone's resolved
    ``norm`` and ``trainable_layers``; for an older one that left them null they are resolved from
    ``pretrained`` by :func:`~msrcnn.models.backbones.backbone_defaults`, so that the state dict fits."""
    kwargs = model_kwargs(config)
    backbone = kwargs["backbone"]
    backbone["norm"], backbone["trainable_layers"] = backbone_defaults(
        backbone.get("pretrained"), backbone.get("norm"), backbone.get("trainable_layers")
    )
    backbone["pretrained"] = None
    return kwargs


def model_of_config(config: Mapping[str, Any]) -> MaskScoringRCNN:
    """The (untrained) detector a checkpoint's run config describes, ``backbone.pretrained`` not read
    (the weights come from the checkpoint). The one way from a stored config to a model:
    :func:`load_model` and ``MaskScoringModule`` use it.

    Raises:
        CheckpointError: the config does not describe a model this version can build.
    """
    try:
        return build_model(num_classes=int(config["num_classes"]), **inference_kwargs(config))
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"cannot rebuild the model from its config: {err}") from None


def load_model(
    path: str | os.PathLike,
    map_location: Any = "cpu",
    *,
    soft_nms: bool | None = None,
) -> MaskScoringRCNN:
    """The trained model of a ``src/train.py`` checkpoint, in eval mode.

    The model is rebuilt from the config stored in the checkpoint with plain Python (no
    Lightning, no Hydra) and gets the checkpoint's weights only: ``backbone.pretrained`` is
    not read again, so no pretrained-weight files are needed. It carries ``class_names``,
    ``category_ids`` (the dataset's ids of labels 1..K) and the run's ``config``.

    Args:
        path: the checkpoint (e.g. ``RUN/checkpoints/last.ckpt``).
        map_location: where the weights go (``torch.load``'s argument); the model is moved
            to the device of the weights.
        soft_nms: ``True``/``False`` switches Soft-NMS on/off; ``None`` keeps the trained setting.

    Raises:
        FileNotFoundError: no such file.
        msrcnn.models.CheckpointError: a truncated, corrupt or foreign file, or weights that
            do not fit the model its config describes.
    """
    ckpt = read_checkpoint(path, map_location=map_location)  # read -> config -> model
    config = ckpt["hyper_parameters"]["config"]
    try:
        model = model_of_config(config)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    weights = model_weights(ckpt)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise CheckpointError(
            f"{path}: its weights do not fit the model its config describes: {detail[:300]}"
        ) from None
    first = next(iter(weights.values()), None)
    if first is not None and first.device != torch.device("cpu"):
        model.to(first.device)
    if soft_nms is not None:
        model.roi_heads.soft_nms = dataclasses.replace(model.roi_heads.soft_nms, enabled=bool(soft_nms))
    categories = checkpoint_categories(config)
    model.category_ids = [cat_id for cat_id, _ in categories]
    model.class_names = [name for _, name in categories]
    model.config = config
    return model.eval()


def checkpoint_categories(config: Mapping[str, Any]) -> list[tuple[int, str]]:
    """``(dataset category id, class name)`` per model label 1..K of a run config.

    From ``category_ids`` (what ``src/train.py`` records), else from the run's annotation file
    when it is still where training read it, else 1..K in label order with a warning.
    """
    names = [str(n) for n in config["class_names"]]
    if config.get("category_ids"):
        ids = [int(i) for i in config["category_ids"]]
        if len(ids) != len(names):
            raise CheckpointError(f"the checkpoint records {len(ids)} category ids for {len(names)} classes")
        return list(zip(ids, names))
    data = config.get("data") or {}
    candidates = []
    if data.get("name") == "coco" and data.get("root"):
        candidates.append(Path(data["root"]) / "annotations" / "instances_val2017.json")
    for split in ("val", "train"):
        if isinstance(data.get(split), dict) and data[split].get("ann_file"):
            candidates.append(Path(data[split]["ann_file"]))
    for ann_file in candidates:
        if ann_file.is_file():
            categories = sorted(json.loads(ann_file.read_text()).get("categories", []), key=lambda c: c["id"])
            if [str(c["name"]) for c in categories] == names:
                return [(int(c["id"]), str(c["name"])) for c in categories]
    log.warning(
        "the checkpoint does not record its category ids and its annotation file is not found: "
        "using 1..%d in label order",
        len(names),
    )
    return list(enumerate(names, start=1))
