"""``MaskScoringRCNN``: torchvision's ``MaskRCNN`` with a MaskIoU branch (CVPR 2019)."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.ops import MultiScaleRoIAlign as _TorchvisionMultiScaleRoIAlign

from msrcnn.models.maskiou import MaskIoUHead
from msrcnn.models.roi_heads import MaskIoUConfig, MaskScoringRoIHeads, SoftNMSConfig
from msrcnn.models.torchvision_ports.box_coder import BoxCoder
from msrcnn.models.torchvision_ports.poolers import MultiScaleRoIAlign
from msrcnn.models.torchvision_ports.rpn import RegionProposalNetwork
from msrcnn.models.torchvision_ports.transform import MaskOutput, MaskScoringTransform


class MaskScoringRCNN(MaskRCNN):
    """Mask R-CNN whose masks are also ranked by a learned MaskIoU.

    Accepts every argument of :class:`torchvision.models.detection.MaskRCNN` plus:

    Args:
        head: the MaskIoU head, a :class:`~msrcnn.models.roi_heads.MaskIoUConfig` or a mapping of
            its fields (the config group ``head``: ``input``, ``target``, ``samples``, ``tau``, ``loss_weight``,
            ``conv_channels``, ``num_convs``, ``fc_dim``, ``detach_inputs``); ``None`` gives a plain
            Mask R-CNN that still supports Soft-NMS, the paper's baseline.
            ``input``: one of ``concat``, ``multiply``, ``concat_all``, ``concat_highres`` (paper
            Table 4); ``target``: one of ``target_class``, ``all_classes``, ``positive_classes``
            (paper Table 5); ``samples``: ``positives`` (the paper) or ``detections`` (also the
            background RoIs the box head scores highest, see ``MaskIoUConfig``); ``tau``: train only on RoIs whose target MaskIoU is greater than tau
            (paper Table 6; at tau = 0 a RoI whose target is exactly 0, e.g. an empty predicted mask,
            is left out); ``detach_inputs``: stop the MaskIoU loss from reaching the mask head and
            backbone (the reference code does not detach; default False).
        soft_nms: Soft-NMS in place of NMS, a :class:`~msrcnn.models.roi_heads.SoftNMSConfig` or a
            mapping of its fields (the config group ``model.soft_nms``: ``enabled``, ``method``
            ``linear``/``gaussian``, ``iou_threshold`` (Nt), ``sigma``, ``score_threshold``);
            ``True``/``False`` switches it on with the default values / off; ``None``: ``SoftNMSConfig()``.
        fast_mask_paste: paste the masks into the image with :func:`msrcnn.ops.paste.paste_masks_in_image`
            (default True): on a CPU one output allocation instead of a canvas per detection, the same
            masks bit for bit; on a GPU all masks at once with no host sync (to float32 rounding).
            False: torchvision's paste, which reads each box's corners on the host (8 syncs a mask).
        mask_output: ``"image"`` (default, torchvision's ``masks`` ``[K, 1, H, W]`` pasted into the
            image) or ``"roi"`` (``roi_masks`` ``[K, 1, 28, 28]`` in box coordinates plus ``image_size``,
            no paste: what the COCO evaluation needs). Settable later (``model.mask_output = "roi"``,
            or ``with model.roi_mask_output(): ...``); see :mod:`msrcnn.models.torchvision_ports.transform`.

    Mixed precision (``torch.autocast``, bf16 or fp16): the convolutions and FCs run in the low
    precision, but every head output that becomes a box, score, mask or MaskIoU is cast to float32
    first. torchvision's box decoding casts the anchors / proposals to the regression's dtype, so
    under bfloat16 its proposals and boxes would be rounded to 8 significant bits (steps of 4 px
    beyond 512 px); here the RPN head's outputs (a forward hook on ``rpn.head``) and the box,
    mask and MaskIoU predictions are float32, so the outputs are float32 under autocast too.

    The MaskIoU parameters live under ``roi_heads.maskiou_head`` (and ``roi_heads.maskiou_roi_pool``
    has none), so a torchvision ``MaskRCNN`` state dict loads with ``strict=False`` with only
    those keys missing. Training returns torchvision's losses plus ``loss_maskiou``; inference
    adds ``mask_ious`` and ``mask_scores`` to each output dict.
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int | None = None,
        *,
        head: MaskIoUConfig | Mapping[str, Any] | None = MaskIoUConfig(),  # noqa: B008 - frozen
        soft_nms: SoftNMSConfig | Mapping[str, Any] | bool | None = None,
        fast_mask_paste: bool = True,
        mask_output: MaskOutput = "image",
        **kwargs,
    ) -> None:
        super().__init__(backbone, num_classes=num_classes, **kwargs)
        # Set by msrcnn.models.load_model: the names and dataset category ids of labels 1..K, the run's config.
        self.class_names: list[str] | None = None
        self.category_ids: list[int] | None = None
        self.config: dict[str, Any] | None = None
        # torchvision's RPN and RoIAlign poolers with fewer host syncs on a GPU (msrcnn.ops.gpu_paths)
        self.rpn = RegionProposalNetwork.from_rpn(self.rpn)
        self.rpn.box_coder = BoxCoder.from_box_coder(self.rpn.box_coder)
        self.rpn.head.register_forward_hook(_float32_rpn_outputs)
        self.transform = MaskScoringTransform.from_transform(
            self.transform, fast_paste=fast_mask_paste, mask_output=mask_output
        )
        heads = self.roi_heads
        heads.box_roi_pool = _sync_light_pooler(heads.box_roi_pool)
        heads.mask_roi_pool = _sync_light_pooler(heads.mask_roi_pool)
        mask_pool: MultiScaleRoIAlign = heads.mask_roi_pool
        roi_size = _as_int(mask_pool.output_size)
        maskiou = _as_config(MaskIoUConfig, head, "head")
        soft_nms_config = _as_config(SoftNMSConfig, soft_nms, "soft_nms")
        maskiou_head = None
        highres_pool = None
        if maskiou is not None:
            maskiou_head = MaskIoUHead(
                in_channels=_roi_channels(heads, backbone),
                num_classes=_mask_predictor_classes(heads.mask_predictor),
                input=maskiou.input,
                conv_channels=maskiou.conv_channels,
                num_convs=maskiou.num_convs,
                fc_dim=maskiou.fc_dim,
                roi_size=roi_size,
            )
            if maskiou_head.needs_highres_features:
                highres_pool = MultiScaleRoIAlign(
                    featmap_names=mask_pool.featmap_names,
                    output_size=2 * roi_size,
                    sampling_ratio=mask_pool.sampling_ratio,
                )
        self.roi_heads = MaskScoringRoIHeads.from_roi_heads(
            heads,
            maskiou_head=maskiou_head,
            maskiou_roi_pool=highres_pool,
            maskiou=maskiou,
            soft_nms=soft_nms_config,
        )
        self.roi_heads.box_coder = BoxCoder.from_box_coder(self.roi_heads.box_coder)

    # torchvision 0.2x GeneralizedRCNN.forward, with one check of the target boxes for the whole batch
    # (torchvision checks each image's, a host sync per image on a GPU)
    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        """Training (``targets`` given): the losses; inference: one output dict per image (see the class)."""
        if self.training:
            if targets is None:
                raise ValueError("targets should not be None in training mode")
            for target in targets:
                boxes = target["boxes"]
                if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[-1] != 4:
                    shape = tuple(boxes.shape) if isinstance(boxes, Tensor) else type(boxes).__name__
                    raise ValueError(f"Expected target boxes to be a tensor of shape [N, 4], got {shape}.")
        original_image_sizes: list[tuple[int, int]] = []
        for img in images:
            size = img.shape[-2:]
            if len(size) != 2:
                raise ValueError(
                    f"expecting the last two dimensions of the Tensor to be H and W, got {img.shape}"
                )
            original_image_sizes.append((size[0], size[1]))
        images, targets = self.transform(images, targets)
        if targets is not None:
            _check_box_sides(targets)
        features = self.backbone(images.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, proposal_losses = self.rpn(images, features, targets)
        detections, detector_losses = self.roi_heads(features, proposals, images.image_sizes, targets)
        detections = self.transform.postprocess(detections, images.image_sizes, original_image_sizes)
        if self.training:
            return {**detector_losses, **proposal_losses}
        return detections

    @property
    def mask_output(self) -> MaskOutput:
        """``"image"``: pasted ``masks``; ``"roi"``: box-local ``roi_masks`` (see :mod:`msrcnn.models.torchvision_ports.transform`)."""
        return self.transform.mask_output

    @mask_output.setter
    def mask_output(self, value: MaskOutput) -> None:
        self.transform.mask_output = value

    @contextmanager
    def roi_mask_output(self) -> Iterator[None]:
        """Within the block the model returns box-local ``roi_masks`` (no paste); restored after."""
        previous = self.mask_output
        self.mask_output = "roi"
        try:
            yield
        finally:
            self.mask_output = previous

    @property
    def has_maskiou(self) -> bool:
        return self.roi_heads.maskiou_head is not None


def _as_config(cls: type, value: Any, name: str) -> Any:
    """``value`` as a ``cls`` dataclass: given as one, or as a mapping of its fields (a config group),
    or a bool (``enabled``, for Soft-NMS); ``None`` stays ``None``. Unknown fields are refused."""
    if value is None or isinstance(value, cls):
        return value
    if isinstance(value, bool) and "enabled" in {f.name for f in dataclasses.fields(cls)}:
        return cls(enabled=value)
    if isinstance(value, Mapping):
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - fields)
        if unknown:
            raise ValueError(
                f"{name}: unknown key(s) {', '.join(unknown)}; expected some of {', '.join(f.name for f in dataclasses.fields(cls))}"
            )
        return cls(**value)
    raise TypeError(f"{name} must be a {cls.__name__} or a mapping of its fields, got {value!r}")


def _as_int(size) -> int:
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise ValueError(f"mask RoIAlign output must be square, got {size}")
        return int(size[0])
    return int(size)


def _mask_predictor_classes(predictor: nn.Module) -> int:
    """Number of per-class outputs of the mask predictor (its last conv's channels)."""
    convs = [m for m in predictor.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("cannot infer the number of classes: the mask predictor has no Conv2d")
    return convs[-1].out_channels


def _roi_channels(heads, backbone: nn.Module) -> int:
    """Channels of the mask RoI feature: the first conv of the mask head, else the backbone's."""
    for module in heads.mask_head.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return backbone.out_channels


def _check_box_sides(targets: list[dict[str, Tensor]]) -> None:
    """torchvision's check that every target box has positive width and height, for the batch at once."""
    boxes = torch.cat([t["boxes"] for t in targets]) if targets else None
    if boxes is None or not bool((boxes[:, 2:] <= boxes[:, :2]).any()):  # the one host sync
        return
    for index, target in enumerate(targets):
        bad = (target["boxes"][:, 2:] <= target["boxes"][:, :2]).any(dim=1)
        if bool(bad.any()):
            box = target["boxes"][torch.where(bad)[0][0]].tolist()
            raise ValueError(
                "All bounding boxes should have positive height and width."
                f" Found invalid box {box} for target at index {index}."
            )


def _sync_light_pooler(pooler: nn.Module) -> nn.Module:
    """torchvision's ``MultiScaleRoIAlign`` as
    :class:`msrcnn.models.torchvision_ports.poolers.MultiScaleRoIAlign` (same outputs, one host sync
    per call on a GPU); any other pooler is kept as given."""
    if type(pooler) is _TorchvisionMultiScaleRoIAlign:
        return MultiScaleRoIAlign.from_pooler(pooler)
    return pooler


def _float32_rpn_outputs(module: nn.Module, args: tuple, output: tuple) -> tuple:
    """Forward hook on the RPN head: objectness and box deltas in float32, so that torchvision
    decodes the proposals in float32 under autocast (a no-op without autocast)."""
    objectness, deltas = output
    return [o.float() for o in objectness], [d.float() for d in deltas]
