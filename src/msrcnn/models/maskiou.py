"""The MaskIoU branch of Mask Scoring R-CNN: training targets, loss and head (paper Sec. 3.2).

Small pure functions over tensors, composed by :class:`msrcnn.models.roi_heads.MaskScoringRoIHeads`.
Everything here is vectorised over RoIs; the only Python loops run over images.
"""

from __future__ import annotations

import typing
from typing import Literal, TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import boxes as box_ops
from torchvision.ops import roi_align

InputDesign = Literal["concat", "multiply", "concat_all", "concat_highres"]
TrainTarget = Literal["target_class", "all_classes", "positive_classes"]
# positives: the paper's training samples (positive RoIs only); detections: also the background RoIs the box
# head scores highest, i.e. the false positives and part-boxes the head must score at test time.
TrainSamples = Literal["positives", "detections"]
# The valid choices, defined once (the config schema reads them from here).
INPUT_DESIGNS: tuple[str, ...] = typing.get_args(InputDesign)
TRAIN_TARGETS: tuple[str, ...] = typing.get_args(TrainTarget)
TRAIN_SAMPLES: tuple[str, ...] = typing.get_args(TrainSamples)

Scores = TypeVar("Scores")  # a Tensor or a NumPy array


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; expected one of {', '.join(choices)}")


def summed_area_table(masks: Tensor) -> Tensor:
    """Integral images of binary masks ``[G, H, W]`` -> ``[G, H + 1, W + 1]`` (int32, zero row/col first)."""
    sat = masks.to(torch.int32).cumsum(1, dtype=torch.int32).cumsum(2, dtype=torch.int32)
    return F.pad(sat, (1, 0, 1, 0))


def mask_area_in_boxes(sat: Tensor, boxes: Tensor, idx: Tensor) -> Tensor:
    """Exact number of pixels of mask ``idx[n]`` whose centre lies inside ``boxes[n]`` (xyxy).

    Pixel ``(r, c)`` covers ``[c, c + 1) x [r, r + 1)``; its centre is inside the box when
    ``x1 <= c + 0.5 <= x2``. ``sat`` comes from :func:`summed_area_table`.
    """
    h, w = sat.shape[1] - 1, sat.shape[2] - 1
    x1 = torch.ceil(boxes[:, 0] - 0.5).clamp(0, w).long()
    y1 = torch.ceil(boxes[:, 1] - 0.5).clamp(0, h).long()
    x2 = (torch.floor(boxes[:, 2] - 0.5) + 1).clamp(0, w).long()
    y2 = (torch.floor(boxes[:, 3] - 0.5) + 1).clamp(0, h).long()
    x2 = torch.maximum(x2, x1)
    y2 = torch.maximum(y2, y1)
    area = sat[idx, y2, x2] - sat[idx, y1, x2] - sat[idx, y2, x1] + sat[idx, y1, x1]
    return area.to(torch.float32)


def used_masks(idx: Tensor, num_masks: int) -> tuple[Tensor | slice, Tensor]:
    """``(used, remapped)``: the GT masks that ``idx`` refers to, and ``idx`` into ``gt_masks[used]``.

    An image can hold hundreds of instances while the RoI heads sample a few dozen positives, so the
    per-instance work (integral images, float copies for RoIAlign) is done on the matched ones only.
    When the image has no more instances than RoIs (COCO's usual case) it returns ``slice(None)`` and
    ``idx`` unchanged: no copy, and none of ``torch.unique``'s host sync on a GPU.
    """
    if num_masks <= idx.numel():
        return slice(None), idx
    return torch.unique(idx, return_inverse=True)


def crop_masks(gt_masks: Tensor, boxes: Tensor, idx: Tensor, size: int) -> Tensor:
    """RoIAlign crop of mask ``idx[n]`` inside ``boxes[n]`` at ``size x size``, binarised at 0.5."""
    rois = torch.cat([idx.to(boxes)[:, None], boxes], dim=1)
    crops = roi_align(gt_masks[:, None].to(boxes.dtype), rois, (size, size), spatial_scale=1.0)[:, 0]
    return crops >= 0.5


def mask_iou_targets_matched(mask_logits: Tensor, proposals: Tensor, gt_masks: Tensor, idx: Tensor) -> Tensor:
    """MaskIoU targets (paper Sec. 3.2, with the reference code's area ratio) where RoI ``n`` is matched to the GT mask ``gt_masks[idx[n]]``.

    Args:
        mask_logits: ``[N, M, M]`` predicted mask logits of the target class.
        proposals: ``[N, 4]`` RoI boxes (xyxy, pixels of the GT masks' frame).
        gt_masks: ``[G, H, W]`` binary full-image GT masks of one image.
        idx: ``[N]`` index into ``gt_masks`` for each RoI.

    Returns:
        ``[N]`` float32 IoU of the binarised prediction (probability > 0.5, i.e. logit > 0) with the
        *whole* GT instance: the part of the instance outside the proposal box counts in the union
        through the area ratio ``area(GT inside box) / area(GT)``. Detached.
    """
    with torch.no_grad():
        n, m = mask_logits.shape[0], mask_logits.shape[-1]
        if n == 0:
            return mask_logits.new_zeros((0,), dtype=torch.float32)
        proposals = proposals.float()
        used, idx = used_masks(idx, gt_masks.shape[0])
        gt_masks = gt_masks[used]
        pred = mask_logits > 0
        crop = crop_masks(gt_masks, proposals, idx, m)
        full_area = gt_masks.flatten(1).sum(1, dtype=torch.float32)[idx]
        inside_area = mask_area_in_boxes(summed_area_table(gt_masks), proposals, idx)
        ratio = (inside_area / full_area.clamp(min=1.0)).clamp(min=1e-10)
        gt_full = crop.sum((1, 2), dtype=torch.float32) / ratio
        inter = (pred & crop).sum((1, 2), dtype=torch.float32)
        union = pred.sum((1, 2), dtype=torch.float32) + gt_full - inter
        return inter / union.clamp(min=1.0)


def mask_iou_targets(mask_logits: Tensor, proposals: Tensor, gt_masks: Tensor) -> Tensor:
    """MaskIoU training targets (paper Sec. 3.2): the IoU of the binarised predicted mask with the whole GT instance.

    Args:
        mask_logits: ``[N, M, M]`` logits of the target class for each RoI.
        proposals: ``[N, 4]`` RoI boxes, xyxy in image coordinates.
        gt_masks: ``[N, H, W]`` the full-image binary GT mask matched to each RoI.

    Returns:
        ``[N]`` IoU between ``mask_logits > 0`` and the whole GT instance.
    """
    idx = torch.arange(mask_logits.shape[0], device=mask_logits.device)
    return mask_iou_targets_matched(mask_logits, proposals, gt_masks, idx)


def present_class_targets(
    mask_logits: Tensor,
    proposals: Tensor,
    gt_boxes: Tensor,
    gt_labels: Tensor,
    gt_masks: Tensor,
    matched_idxs: Tensor,
) -> tuple[Tensor, Tensor]:
    """MaskIoU targets for every class present in each RoI (paper Sec. 4.3, Table 5 variants 2 and 3).

    A class is *present* in a RoI when a GT instance of that class overlaps the RoI (box IoU > 0).
    For the matched GT class the instance is the matched one; for other present classes it is
    the instance of that class with the highest box IoU. Returns ``(targets, valid)``, both
    ``[N, C]``; ``valid`` marks the present classes.
    """
    n, num_classes = mask_logits.shape[0], mask_logits.shape[1]
    device = mask_logits.device
    targets = torch.zeros((n, num_classes), dtype=torch.float32, device=device)
    valid = torch.zeros((n, num_classes), dtype=torch.bool, device=device)
    if n == 0 or gt_boxes.numel() == 0:
        return targets, valid
    iou = box_ops.box_iou(proposals.float(), gt_boxes.float())  # [N, G]
    # Best instance of each class per RoI: one scatter over the (RoI, instance) grid.
    g = gt_boxes.shape[0]
    scores = iou.clone()
    scores[torch.arange(n, device=device), matched_idxs] = 2.0  # the matched instance wins its class
    best = torch.full((n, num_classes), -1.0, device=device)
    best.scatter_reduce_(1, gt_labels[None].expand(n, g), scores, reduce="amax")
    is_best = (scores == best.gather(1, gt_labels[None].expand(n, g))) & (iou > 0)
    is_best[torch.arange(n, device=device), matched_idxs] = True
    roi_idx, inst_idx = is_best.nonzero(as_tuple=True)
    # Ties between instances of one class: keep the first (unique over (roi, class)).
    cls = gt_labels[inst_idx]
    key = roi_idx * num_classes + cls
    order = torch.argsort(key, stable=True)
    key_sorted = key[order]
    first = torch.ones_like(key_sorted, dtype=torch.bool)
    first[1:] = key_sorted[1:] != key_sorted[:-1]
    sel = order[first]
    roi_idx, inst_idx, cls = roi_idx[sel], inst_idx[sel], cls[sel]
    values = mask_iou_targets_matched(mask_logits[roi_idx, cls], proposals[roi_idx], gt_masks, inst_idx)
    targets[roi_idx, cls] = values
    valid[roi_idx, cls] = True
    return targets, valid


def detection_like_negatives(class_logits: Tensor, labels: Tensor, count: int) -> tuple[Tensor, Tensor]:
    """The ``count`` background RoIs of one image that the box head scores highest, and their classes.

    Args:
        class_logits: ``[N, C]`` box-head logits of the image's sampled RoIs (background is class 0).
        labels: ``[N]`` their training labels (0: background, box IoU < 0.5 with every object).
        count: how many to return; at most the number of background RoIs (a host-side int: no sync).

    Returns:
        ``(index, classes)``, both ``[count]``: the RoIs ranked by their best foreground probability
        (the ones that would survive as detections at test time: false positives and boxes on part of an
        object) and the foreground class each would be detected as. No gradient.
    """
    with torch.no_grad():
        score, classes = class_logits.float().softmax(-1)[:, 1:].max(1)
        score = score.masked_fill(labels > 0, -1.0)
        index = score.topk(count).indices
        return index, classes[index] + 1


def best_instance_of_class(
    boxes: Tensor, classes: Tensor, gt_boxes: Tensor, gt_labels: Tensor
) -> tuple[Tensor, Tensor]:
    """For each box, the GT instance of its class that it overlaps most (box IoU), and whether there is one.

    Returns ``(idx, found)``, both ``[N]``; ``found`` is False where no instance of the box's class
    overlaps it (IoU > 0), and ``idx`` is then 0 (any index: the caller zeroes such targets).
    """
    n = boxes.shape[0]
    if gt_boxes.shape[0] == 0:
        zeros = torch.zeros((n,), dtype=torch.int64, device=boxes.device)
        return zeros, zeros.bool()
    iou = box_ops.box_iou(boxes.float(), gt_boxes.float())
    iou = iou.masked_fill(gt_labels[None, :] != classes[:, None], -1.0)
    best, idx = iou.max(1)
    return idx, best > 0


def negative_targets(
    mask_logits: Tensor, boxes: Tensor, classes: Tensor, gt_boxes: Tensor, gt_labels: Tensor, gt_masks: Tensor
) -> Tensor:
    """MaskIoU targets of RoIs that are not matched to an object (``samples=detections``).

    Each RoI is scored as a detection of ``classes[n]``: the target is the IoU of its binarised mask of
    that class (``mask_logits`` ``[N, M, M]``) with the *whole* GT instance of that class it overlaps most
    (the area ratio of :func:`mask_iou_targets_matched`: a box on part of an object gets the IoU with the
    whole object), 0 where it overlaps no instance of that class (a false positive). Detached.
    """
    idx, found = best_instance_of_class(boxes, classes, gt_boxes, gt_labels)
    if gt_masks.shape[0] == 0:
        return mask_logits.new_zeros((boxes.shape[0],), dtype=torch.float32)
    return mask_iou_targets_matched(mask_logits, boxes, gt_masks, idx) * found


def maskiou_loss(
    pred: Tensor,
    targets: Tensor,
    weights: Tensor,
    num_samples: int | Tensor,
    loss_weight: float,
) -> Tensor:
    """``loss_weight * sum(weights * 0.5 * (pred - target)^2) / num_samples`` (the L2 loss of paper Sec. 3.2).

    ``pred``, ``targets`` and ``weights`` are ``[N, C]``; ``weights`` selects the regressed outputs
    (one per sample for ``target_class``). Normalised by the number of training samples, so the
    variants that regress several outputs per RoI add their losses rather than averaging them away.
    """
    if pred.numel() == 0:
        return pred.sum() * 0.0
    per_entry = 0.5 * (pred.float() - targets) ** 2 * weights
    denom = torch.as_tensor(num_samples, dtype=torch.float32, device=pred.device).clamp(min=1.0)
    return loss_weight * per_entry.sum() / denom


def mask_scores(scores: Scores, mask_ious: Scores | None) -> Scores:
    """The mask score that ranks masks at inference (paper Sec. 3.2): class score x predicted MaskIoU,
    elementwise, in the inputs' dtype; the class scores themselves without MaskIoUs (a plain Mask
    R-CNN). Tensors or NumPy arrays: the model's outputs, and records read back from files."""
    return scores if mask_ious is None else scores * mask_ious


class MaskIoUHead(nn.Module):
    """Regresses the IoU of a predicted mask with its GT instance, one output per class (paper Sec. 3.2).

    Input designs (paper Table 4): ``concat`` (RoI feature ++ max-pooled target-class mask),
    ``multiply`` (feature * pooled mask), ``concat_all`` (feature ++ pooled masks of all classes),
    ``concat_highres`` (28x28 feature ++ 28x28 target-class mask, one more stride-2 conv).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        *,
        input: InputDesign,
        conv_channels: int,
        num_convs: int,
        fc_dim: int,
        roi_size: int = 14,
    ) -> None:
        super().__init__()
        _check_choice("input", input, INPUT_DESIGNS)
        if num_convs < 1:
            raise ValueError(f"num_convs={num_convs} must be >= 1")
        self.input = input
        self.num_classes = num_classes
        extra = {"concat": 1, "multiply": 0, "concat_all": num_classes, "concat_highres": 1}[input]
        strides = [1] * (num_convs - 1) + [2]
        if input == "concat_highres":
            strides = [2] + strides
        layers: list[nn.Module] = []
        channels = in_channels + extra
        for stride in strides:
            layers += [nn.Conv2d(channels, conv_channels, 3, stride=stride, padding=1), nn.ReLU(inplace=True)]
            channels = conv_channels
        self.convs = nn.Sequential(*layers)
        out_size = (roi_size + 1) // 2
        self.fc1 = nn.Linear(conv_channels * out_size * out_size, fc_dim)
        self.fc2 = nn.Linear(fc_dim, fc_dim)
        self.predictor = nn.Linear(fc_dim, num_classes)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialisation of the reference code: Kaiming convs, Kaiming-uniform FCs, small last FC."""
        for module in self.convs:
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
        for fc in (self.fc1, self.fc2):
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.predictor.weight, std=0.01)
        nn.init.zeros_(self.predictor.bias)

    @property
    def needs_highres_features(self) -> bool:
        return self.input == "concat_highres"

    def forward(self, features: Tensor, mask_logits: Tensor, labels: Tensor) -> Tensor:
        """Predicted MaskIoU ``[N, C]`` (unclamped) from RoI features and mask logits ``[N, C, M, M]``.

        ``labels`` ``[N]`` picks the target class (GT class in training, predicted class at test).
        """
        probs = mask_logits.sigmoid()
        if self.input == "concat_all":
            mask = probs
        else:
            mask = probs[torch.arange(probs.shape[0], device=probs.device), labels][:, None]
        if self.input != "concat_highres":
            mask = F.max_pool2d(mask, kernel_size=2, stride=2)
        mask = mask.to(features.dtype)
        x = features * mask if self.input == "multiply" else torch.cat([features, mask], dim=1)
        x = self.convs(x).flatten(1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.predictor(x)
