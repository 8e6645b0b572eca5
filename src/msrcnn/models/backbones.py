"""Backbones of the paper's experiments: ResNet-{18,50,101} with FPN, C4 and deformable convs.

Each builder returns a :class:`BackboneSpec`: the feature extractor plus what the detector needs
to know about it (feature map names, default anchors and, for C4, the res5 box head).
ImageNet weights are read from torchvision's local cache only; nothing is downloaded.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops import DeformConv2d
from torchvision.ops import FrozenBatchNorm2d as _TorchvisionFrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from msrcnn.models.checkpoint import read_torch_file

log = logging.getLogger("msrcnn.models")

NORMS = ("bn", "frozen_bn", "gn")
BACKBONES = ("r18_fpn", "r50_fpn", "r101_fpn", "r50_c4", "r101_c4", "r50_dcn_fpn", "r101_dcn_fpn")
_DEPTHS = {"r18": 18, "r50": 50, "r101": 101}


@dataclass
class BackboneSpec:
    """A feature extractor and what the detector needs to know about it."""

    body: nn.Module  # has .out_channels
    featmap_names: list[str]  # maps the RoI heads pool from
    anchor_sizes: tuple[tuple[int, ...], ...]  # one tuple per RPN level
    aspect_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)  # of the anchors, the same on every level
    box_head: nn.Module | None = None  # C4 only: res5 + average pooling
    box_head_channels: int | None = None
    roi_output_size: int = 7  # box RoIAlign size (14 for C4, whose res5 halves it)


class DeformableConv3x3(DeformConv2d):
    """A 3x3 deformable convolution that predicts its own offsets (zero-initialised).

    Subclasses ``DeformConv2d`` so that ImageNet ``conv2.weight`` keys load unchanged.
    """

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__(
            conv.in_channels,
            conv.out_channels,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
        )
        kh, kw = conv.kernel_size
        self.conv_offset = nn.Conv2d(
            conv.in_channels,
            2 * kh * kw,
            kernel_size=conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
        )
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        with torch.no_grad():
            self.weight.copy_(conv.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(x, self.conv_offset(x))


class FrozenBatchNorm2d(_TorchvisionFrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` (same buffers, same float32 result) that keeps its input's dtype.

    torchvision's multiplies the activations by float32 statistics, so under bf16/fp16 autocast every
    frozen-BN layer of a pretrained backbone returns float32 and the next convolution casts it back: a
    float32 copy of every activation map, and two casts, per layer. Here the folded scale and bias are
    cast to the activations' dtype (a no-op in float32).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.weight * (self.running_var + self.eps).rsqrt()
        bias = self.bias - self.running_mean * scale
        return x * scale.to(x.dtype)[None, :, None, None] + bias.to(x.dtype)[None, :, None, None]


def norm_layer(name: str) -> Callable[[int], nn.Module]:
    """``bn`` (trainable BatchNorm), ``frozen_bn`` (over pretrained weights) or ``gn`` (32 groups)."""
    if name == "bn":
        return nn.BatchNorm2d
    if name == "frozen_bn":
        return FrozenBatchNorm2d
    if name == "gn":
        return lambda c: nn.GroupNorm(min(32, c), c)
    raise ValueError(f"backbone.norm={name!r} is not valid; expected one of {', '.join(NORMS)}")


def imagenet_checkpoint_path(depth: int) -> Path:
    """Where torchvision keeps the ImageNet ResNet-``depth`` weights (``$TORCH_HOME/hub/checkpoints``)."""
    weights = getattr(resnet, f"ResNet{depth}_Weights").IMAGENET1K_V1
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def load_pretrained(model: nn.Module, pretrained: str, depth: int) -> None:
    """Loads ImageNet weights (``"imagenet"``: torchvision's local cache) or a state-dict file."""
    path = imagenet_checkpoint_path(depth) if pretrained == "imagenet" else Path(pretrained)
    if not path.is_file():
        hint = (
            f"torchvision's ResNet-{depth} ImageNet file is expected at {path}; copy it there "
            "(nothing is downloaded at run time) or set backbone.pretrained=/path/to/weights.pth"
            if pretrained == "imagenet"
            else "backbone.pretrained must be 'imagenet', a path to a state dict, or null"
        )
        raise FileNotFoundError(f"backbone weights not found: {path}. {hint}")
    state = read_torch_file(path, what=f"ResNet-{depth} weights file")  # the checkpoints' reader and errors
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "conv_offset" not in k]
    unexpected = [k for k in unexpected if not k.startswith("fc.")]
    if missing or unexpected:
        raise ValueError(
            f"{path} does not match ResNet-{depth}: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}"
        )
    log.info("loaded backbone weights from %s", path)


def default_anchor_sizes(num_levels: int) -> tuple[tuple[int, ...], ...]:
    """COCO anchor sizes 32..512 spread over the RPN levels, the same number on each level."""
    if num_levels >= 5:
        return tuple((32 * 2**i,) for i in range(num_levels))
    per = math.ceil(5 / num_levels)
    sizes = [32.0 * 2**i for i in range(5)]
    while len(sizes) < per * num_levels:
        sizes.append(sizes[-1] * math.sqrt(2))
    return tuple(tuple(int(round(s)) for s in sizes[i * per : (i + 1) * per]) for i in range(num_levels))


def _stage(
    block: type[resnet.BasicBlock] | type[resnet.Bottleneck],
    inplanes: int,
    planes: int,
    blocks: int,
    stride: int,
    norm: Callable[[int], nn.Module],
) -> nn.Sequential:
    """One ResNet stage of ``blocks`` blocks of ``planes`` channels (``planes * expansion`` out)."""
    out = planes * block.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), norm(out))
    layers = [block(inplanes, planes, stride, downsample, norm_layer=norm)]
    layers += [block(out, planes, norm_layer=norm) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


def _set_width(model: resnet.ResNet, depth: int, width: int, norm: Callable[[int], nn.Module]) -> None:
    """Rebuilds the stem and the four stages with ``width, 2 width, 4 width, 8 width`` channels
    (torchvision's ResNets have width 64). Freshly initialised, as torchvision initialises them."""
    block = resnet.BasicBlock if depth < 50 else resnet.Bottleneck
    counts = {18: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}[depth]
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = norm(width)
    inplanes = width
    for i, (blocks, planes) in enumerate(zip(counts, (width, 2 * width, 4 * width, 8 * width))):
        setattr(model, f"layer{i + 1}", _stage(block, inplanes, planes, blocks, 1 if i == 0 else 2, norm))
        inplanes = planes * block.expansion
    model.fc = nn.Linear(inplanes, model.fc.out_features)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def _resnet(depth: int, norm: str, dcn: bool, width: int) -> nn.Module:
    model = getattr(resnet, f"resnet{depth}")(weights=None, norm_layer=norm_layer(norm))
    if width != 64:
        _set_width(model, depth, width, norm_layer(norm))
    if dcn:
        for stage in (model.layer2, model.layer3, model.layer4):  # c3-c5
            for block in stage:
                block.conv2 = DeformableConv3x3(block.conv2)
    return model


def _freeze(model: nn.Module, trainable_layers: int) -> None:
    """Keeps only the last ``trainable_layers`` of (layer4, layer3, layer2, layer1, conv1) trainable."""
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"backbone.trainable_layers={trainable_layers} must be in [0, 5]")
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        trainable.append("bn1")
    for name, param in model.named_parameters():
        if all(not name.startswith(layer) for layer in trainable):
            param.requires_grad_(False)


def backbone_defaults(
    pretrained: str | None, norm: str | None, trainable_layers: int | None
) -> tuple[str, int]:
    """``(norm, trainable_layers)`` with their defaults resolved, the one statement of the rule: over
    pretrained weights FrozenBN and 3 trainable stages (torchvision's), from scratch BN and all 5.
    The training app stores the resolved values in the run config, so a checkpoint rebuilds the
    same modules without reading ``pretrained`` again."""
    return (
        norm or ("frozen_bn" if pretrained else "bn"),
        (3 if pretrained else 5) if trainable_layers is None else trainable_layers,
    )


def build_backbone(
    name: str,
    *,
    pretrained: str | None = None,
    norm: str | None = None,
    trainable_layers: int | None = None,
    returned_layers: Sequence[int] | None = None,
    fpn_channels: int = 256,
    anchor_sizes: Sequence[Sequence[int]] | None = None,
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    width: int = 64,
    fpn_norm: str | None = None,
) -> BackboneSpec:
    """Builds one of :data:`BACKBONES`.

    Args:
        name: ``r18_fpn`` (the paper's ablation backbone: RPN and RoI features from C4 and C5 only),
            ``r50_fpn``/``r101_fpn`` (C2-C5), ``r50_c4``/``r101_c4`` (C4 features, res5 as the
            RoI box head), ``r50_dcn_fpn``/``r101_dcn_fpn`` (deformable 3x3 convs in c3-c5).
        pretrained: ``None`` (from scratch), ``"imagenet"`` (torchvision's local cache) or a path.
        norm: ``bn``/``frozen_bn``/``gn``; default FrozenBN over pretrained weights, else BN.
        trainable_layers: ResNet stages left trainable; default 3 when pretrained, else 5.
        returned_layers: FPN input stages (1 = C2 ... 4 = C5), overriding the backbone's default.
        fpn_channels: FPN width (the RoI feature channels).
        anchor_sizes: RPN anchor sizes per level (same count on each level).
        aspect_ratios: RPN anchor aspect ratios (height / width), the same on every level.
        width: channels of the first stage (the stages have ``width * (1, 2, 4, 8)``, times 4 for
            ResNet-50/101's bottlenecks); 64 is the paper's ResNets. A narrower ResNet trains from
            scratch only (no ImageNet weights exist for it); the CPU demo uses 32.
        fpn_norm: a normalisation after each FPN conv (``bn``/``frozen_bn``/``gn``; torchvision's
            ``*_v2`` detectors use BatchNorm); ``None``: none (convs with biases), torchvision's v1.
    """
    if name not in BACKBONES:
        raise ValueError(f"backbone={name!r} is not valid; expected one of {', '.join(BACKBONES)}")
    depth = _DEPTHS[name.split("_")[0]]
    norm, trainable_layers = backbone_defaults(pretrained, norm, trainable_layers)
    if width < 8:
        raise ValueError(f"backbone.width={width} must be at least 8")
    if pretrained and width != 64:
        raise ValueError(
            f"backbone.width={width} has no pretrained weights (backbone.pretrained={pretrained!r}); "
            "use width 64 or train from scratch (backbone.pretrained=null)"
        )
    model = _resnet(depth, norm, dcn="dcn" in name, width=width)
    if pretrained:
        load_pretrained(model, pretrained, depth)
    _freeze(model, trainable_layers)

    if name.endswith("_c4"):
        body = IntermediateLayerGetter(model, return_layers={"layer3": "0"})
        body.out_channels = model.layer3[-1].conv3.out_channels
        box_head = nn.Sequential(model.layer4, nn.AdaptiveAvgPool2d(1), nn.Flatten(1))
        sizes = anchor_sizes or ((32, 64, 128, 256, 512),)
        return BackboneSpec(
            body=body,
            featmap_names=["0"],
            anchor_sizes=_as_sizes(sizes),
            aspect_ratios=tuple(float(r) for r in aspect_ratios),
            box_head=box_head,
            box_head_channels=model.layer4[-1].conv3.out_channels,
            roi_output_size=14,
        )

    layers = list(returned_layers or ([3, 4] if name == "r18_fpn" else [1, 2, 3, 4]))
    if not layers or any(layer not in (1, 2, 3, 4) for layer in layers) or sorted(set(layers)) != layers:
        raise ValueError(f"backbone.returned_layers={layers} must be increasing stages from 1..4")
    stage_channels = [getattr(model, f"layer{i}")[-1] for i in (1, 2, 3, 4)]
    widths = [_block_out_channels(block) for block in stage_channels]
    body = BackboneWithFPN(
        model,
        return_layers={f"layer{k}": str(i) for i, k in enumerate(layers)},
        in_channels_list=[widths[k - 1] for k in layers],
        out_channels=fpn_channels,
        extra_blocks=LastLevelMaxPool(),
        norm_layer=norm_layer(fpn_norm) if fpn_norm else None,
    )
    featmap_names = [str(i) for i in range(len(layers))]
    sizes = anchor_sizes or default_anchor_sizes(len(layers) + 1)
    if len(sizes) != len(layers) + 1:
        raise ValueError(
            f"backbone.anchor_sizes has {len(sizes)} levels; this backbone has {len(layers) + 1} "
            f"(returned_layers={layers} plus the max-pooled level)"
        )
    return BackboneSpec(
        body=body,
        featmap_names=featmap_names,
        anchor_sizes=_as_sizes(sizes),
        aspect_ratios=tuple(float(r) for r in aspect_ratios),
    )


def _block_out_channels(block: nn.Module) -> int:
    last = block.conv3 if hasattr(block, "conv3") else block.conv2
    return last.out_channels


def _as_sizes(sizes: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    out = tuple(tuple(int(s) for s in level) for level in sizes)
    if len({len(level) for level in out}) != 1:
        raise ValueError(f"backbone.anchor_sizes={sizes}: every level needs the same number of sizes")
    return out


__all__ = [
    "BACKBONES",
    "BackboneSpec",
    "DeformableConv3x3",
    "build_backbone",
    "default_anchor_sizes",
    "imagenet_checkpoint_path",
]
