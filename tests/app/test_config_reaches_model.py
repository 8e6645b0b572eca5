"""Every key of the model groups (``model``, ``head``, ``backbone``) reaches the built detector.

Each key is set to a value other than its default, the detector is built the way src/train.py builds it
(``build_detector``), and the value is read back from the module. The defaults are read back too, so a
key dropped on the way (the module then keeps its constructor's default) fails either way.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torchvision.models.detection.faster_rcnn import FastRCNNConvFCHead
from torchvision.ops.misc import FrozenBatchNorm2d

from msrcnn.app.builders import build_detector
from msrcnn.app.schemas import TRAINING_KEYS, BackboneConfig, HeadConfig, ModelConfig, validate
from msrcnn.config import to_plain
from msrcnn_testing import CONF


def _convs(seq):
    return [m for m in seq.modules() if isinstance(m, torch.nn.Conv2d)]


def _norm(seq):
    """The norm layers' kind in ``seq``: gn, frozen_bn, bn, or None."""
    for kind, cls in (
        ("gn", torch.nn.GroupNorm),
        ("frozen_bn", FrozenBatchNorm2d),
        ("bn", torch.nn.BatchNorm2d),
    ):
        if any(isinstance(m, cls) for m in seq.modules()):
            return kind
    return None


# key -> (a value other than the default, how to read it from the built detector)
MODEL = {
    "min_size": ([96, 128], lambda m: list(m.transform.min_size)),
    "max_size": (160, lambda m: m.transform.max_size),
    "box_head": ("conv", lambda m: "conv" if isinstance(m.roi_heads.box_head, FastRCNNConvFCHead) else "mlp"),
    "box_representation_size": (48, lambda m: m.roi_heads.box_predictor.cls_score.in_features),
    # the conv box head's (None with box_head=mlp)
    "box_conv_channels": (24, lambda m: next((c.out_channels for c in _convs(m.roi_heads.box_head)), None)),
    "box_num_convs": (2, lambda m: len(_convs(m.roi_heads.box_head)) or None),
    "mask_head_channels": (20, lambda m: _convs(m.roi_heads.mask_head)[0].out_channels),
    "mask_num_convs": (3, lambda m: len(_convs(m.roi_heads.mask_head))),
    "mask_head_norm": ("gn", lambda m: _norm(m.roi_heads.mask_head)),
    "rpn_conv_depth": (2, lambda m: len(_convs(m.rpn.head.conv))),
    "channels_last": (
        True,
        lambda m: (
            m.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
            and not m.backbone.body.conv1.weight.is_contiguous()
        ),
    ),
    "rpn_pre_nms_top_n_train": (300, lambda m: m.rpn._pre_nms_top_n["training"]),
    "rpn_post_nms_top_n_train": (200, lambda m: m.rpn._post_nms_top_n["training"]),
    "rpn_pre_nms_top_n_test": (150, lambda m: m.rpn._pre_nms_top_n["testing"]),
    "rpn_post_nms_top_n_test": (50, lambda m: m.rpn._post_nms_top_n["testing"]),
    "rpn_batch_size_per_image": (64, lambda m: m.rpn.fg_bg_sampler.batch_size_per_image),
    "box_batch_size_per_image": (64, lambda m: m.roi_heads.fg_bg_sampler.batch_size_per_image),
    "box_positive_fraction": (0.5, lambda m: m.roi_heads.fg_bg_sampler.positive_fraction),
    "box_score_thresh": (0.01, lambda m: m.roi_heads.score_thresh),
    "box_nms_thresh": (0.6, lambda m: m.roi_heads.nms_thresh),
    "box_detections_per_img": (50, lambda m: m.roi_heads.detections_per_img),
}
SOFT_NMS = {
    "enabled": True,
    "method": "gaussian",
    "iou_threshold": 0.4,
    "sigma": 0.6,
    "score_threshold": 0.001,
}
HEAD = {
    "input": ("concat_all", lambda m: m.roi_heads.maskiou_head.input),
    "target": ("all_classes", lambda m: m.roi_heads.maskiou_cfg.target),
    "samples": ("detections", lambda m: m.roi_heads.maskiou_cfg.samples),
    "tau": (0.25, lambda m: m.roi_heads.maskiou_cfg.tau),
    "loss_weight": (0.5, lambda m: m.roi_heads.maskiou_cfg.loss_weight),
    "conv_channels": (12, lambda m: _convs(m.roi_heads.maskiou_head.convs)[0].out_channels),
    "num_convs": (2, lambda m: len(_convs(m.roi_heads.maskiou_head.convs))),
    "fc_dim": (40, lambda m: m.roi_heads.maskiou_head.fc1.out_features),
    "detach_inputs": (True, lambda m: m.roi_heads.maskiou_cfg.detach_inputs),
}
BACKBONE = {
    "norm": (
        "frozen_bn",
        lambda m: "frozen_bn" if isinstance(m.backbone.body.bn1, FrozenBatchNorm2d) else "bn",
    ),
    "trainable_layers": (
        2,
        lambda m: sum(
            s.weight.requires_grad
            for s in (
                m.backbone.body.conv1,
                *(getattr(m.backbone.body, f"layer{i}")[0].conv1 for i in (1, 2, 3, 4)),
            )
        ),
    ),
    "returned_layers": (
        [2, 3, 4],
        lambda m: sorted(int(k.removeprefix("layer")) for k in m.backbone.body.return_layers),
    ),
    "fpn_channels": (32, lambda m: m.backbone.out_channels),
    "anchor_sizes": ([[16], [32], [64], [128]], lambda m: [list(s) for s in m.rpn.anchor_generator.sizes]),
    "aspect_ratios": ([1.0, 2.0], lambda m: list(m.rpn.anchor_generator.aspect_ratios[0])),
    "width": (16, lambda m: m.backbone.body.conv1.out_channels),
    "fpn_norm": ("gn", lambda m: _norm(m.backbone.fpn)),
}
NOT_ON_THE_MODULE = {
    "model": set(TRAINING_KEYS),  # the LightningModule's (train_only) and the builder's weights (init_from)
    "head": {"name"},  # the group's option: head=none builds no head (test_config)
    "backbone": {"name", "pretrained"},  # the architecture (test_backbones), weights from a file
}


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/x", *overrides])
    return to_plain(validate(cfg))


def _value(v):
    return list(v) if isinstance(v, tuple) else v


def test_the_tables_cover_every_key_of_the_model_groups():
    for group, schema, table in (
        ("model", ModelConfig, {**MODEL, "soft_nms": None}),
        ("head", HeadConfig, HEAD),
        ("backbone", BackboneConfig, BACKBONE),
    ):
        keys = {f.name for f in dataclasses.fields(schema)}
        assert keys == set(table) | NOT_ON_THE_MODULE[group], group


def _read(model) -> dict[str, dict]:
    heads = model.roi_heads
    return {
        "model": {k: _value(get(model)) for k, (_, get) in MODEL.items()},
        "soft_nms": {k: getattr(heads.soft_nms, k) for k in SOFT_NMS},
        "head": {k: _value(get(model)) for k, (_, get) in HEAD.items()},
        "backbone": {k: _value(get(model)) for k, (_, get) in BACKBONE.items()},
    }


def test_every_model_group_key_set_to_another_value_reaches_the_module():
    overrides = [f"model.{k}={v}" for k, (v, _) in MODEL.items()]
    overrides += [f"model.soft_nms.{k}={v}" for k, v in SOFT_NMS.items()]
    overrides += [f"head.{k}={v}" for k, (v, _) in HEAD.items()]
    overrides += [f"backbone.{k}={v}" for k, (v, _) in BACKBONE.items()]
    cfg = _compose(*(o.replace(" ", "") for o in overrides))
    defaults = {
        "model": OmegaConf.to_container(OmegaConf.structured(ModelConfig), enum_to_str=True),
        "head": OmegaConf.to_container(OmegaConf.structured(HeadConfig), enum_to_str=True),
        "backbone": OmegaConf.to_container(OmegaConf.structured(BackboneConfig), enum_to_str=True),
    }
    for group, table in (("model", MODEL), ("head", HEAD), ("backbone", BACKBONE)):
        for key, (value, _) in table.items():
            assert value != defaults[group][key], f"{group}.{key}: pick a value other than the default"
    assert all(v != defaults["model"]["soft_nms"][k] for k, v in SOFT_NMS.items())

    read = _read(build_detector(cfg, num_classes=3))
    for group, table in (("model", MODEL), ("head", HEAD), ("backbone", BACKBONE)):
        assert read[group] == {k: v for k, (v, _) in table.items()}, group
    assert read["soft_nms"] == SOFT_NMS


@pytest.mark.parametrize("backbone", ["r18_fpn"])
def test_the_default_config_builds_the_default_module(backbone):
    """The schema's defaults (and the resolved backbone defaults: norm bn, 5 trainable layers without
    pretrained weights) are what the module has: a key lost on the way would show a constructor's own."""
    read = _read(build_detector(_compose(f"backbone={backbone}"), num_classes=3))
    model = OmegaConf.to_container(OmegaConf.structured(ModelConfig), enum_to_str=True)
    assert read["model"] == {
        k: None if k in ("box_conv_channels", "box_num_convs") else _value(model[k])  # box_head=mlp
        for k in MODEL
    }
    assert read["soft_nms"] == {k: model["soft_nms"][k] for k in SOFT_NMS}
    head = OmegaConf.to_container(OmegaConf.structured(HeadConfig), enum_to_str=True)
    assert read["head"] == {k: head[k] for k in HEAD}
    backbone_defaults = OmegaConf.to_container(OmegaConf.structured(BackboneConfig), enum_to_str=True)
    expected = {k: backbone_defaults[k] for k in ("fpn_channels", "aspect_ratios", "width", "fpn_norm")}
    assert {k: read["backbone"][k] for k in expected} == expected
    assert read["backbone"]["norm"] == "bn" and read["backbone"]["trainable_layers"] == 5
