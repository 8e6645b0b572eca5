"""RoI heads of Mask Scoring R-CNN: torchvision's box and mask branches plus the MaskIoU branch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import (
    RoIHeads,
    fastrcnn_loss,
    maskrcnn_inference,
    maskrcnn_loss,
)
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import boxes as box_ops

from msrcnn.models.maskiou import (
    TRAIN_SAMPLES,
    TRAIN_TARGETS,
    InputDesign,
    MaskIoUHead,
    TrainSamples,
    TrainTarget,
    _check_choice,
    detection_like_negatives,
    mask_iou_targets_matched,
    mask_scores,
    maskiou_loss,
    negative_targets,
    present_class_targets,
    used_masks,
)
from msrcnn.ops import batched_soft_nms
from msrcnn.ops.gpu_paths import use_gpu_paths
from msrcnn.ops.nms import batched_nms
from msrcnn.ops.soft_nms import IOU_THRESHOLD, METHOD, SCORE_THRESHOLD, SIGMA, check_method


@dataclass(frozen=True)
class SoftNMSConfig:
    """Soft-NMS settings (the paper's test setting, paper Sec. 4.1; the config group ``model.soft_nms``); ``enabled=False`` keeps torchvision's hard NMS."""

    enabled: bool = False
    method: str = METHOD
    iou_threshold: float = IOU_THRESHOLD
    sigma: float = SIGMA
    score_threshold: float = SCORE_THRESHOLD

    def __post_init__(self) -> None:
        check_method(self.method)


@dataclass(frozen=True)
class MaskIoUConfig:
    """The MaskIoU head and its training (the config group ``head``, one field per key; paper Sec. 3.2).

    ``input`` (paper Table 4), ``conv_channels``, ``num_convs`` and ``fc_dim`` build the
    :class:`~msrcnn.models.maskiou.MaskIoUHead`; ``target`` (Table 5), ``tau`` (Table 6, strictly
    greater), ``loss_weight`` and ``detach_inputs`` set its training. ``samples`` (beyond the paper):
    ``positives`` trains on the positive RoIs as the paper does; ``detections`` adds, per image, as many
    background RoIs as it has positives, those the box head scores highest (the false positives and
    part-boxes the head must score at test time), each on the channel of the class it would be detected
    as, with the IoU of its mask with the whole instance of that class it overlaps most as the target (0
    where none; :func:`~msrcnn.models.maskiou.negative_targets`). Their inputs are always detached, ``tau``
    filters the positives only, and the loss is normalised by all samples.
    """

    input: InputDesign = "concat"
    target: TrainTarget = "target_class"
    samples: TrainSamples = "positives"
    tau: float = 0.0
    loss_weight: float = 1.0
    conv_channels: int = 256
    num_convs: int = 4
    fc_dim: int = 1024
    detach_inputs: bool = False

    def __post_init__(self) -> None:
        _check_choice("target", self.target, TRAIN_TARGETS)
        _check_choice("samples", self.samples, TRAIN_SAMPLES)
        if not 0.0 <= self.tau < 1.0:
            raise ValueError(f"tau={self.tau} must be in [0, 1)")


def positive_indices(labels: list[Tensor]) -> list[Tensor]:
    """Per image, the indices of its sampled RoIs with a foreground label (``torch.where(labels > 0)``).

    On a GPU (:mod:`msrcnn.ops.gpu_paths`) one ``nonzero`` over the batch and one read of the per-image
    counts, instead of a ``nonzero`` per image."""
    if len(labels) <= 2 or not use_gpu_paths(labels[0].device):  # <= 2 images: no fewer syncs batched
        return [torch.where(lab > 0)[0] for lab in labels]
    device = labels[0].device
    # per RoI of the batch: its image, and its index within the image (fill kernels, no copies)
    image_of = torch.cat([torch.full((lab.shape[0],), i, device=device) for i, lab in enumerate(labels)])
    local = torch.cat([torch.arange(lab.shape[0], device=device) for lab in labels])
    flat = torch.nonzero(torch.cat(labels) > 0).squeeze(1)
    image = image_of.index_select(0, flat)
    counts = torch.zeros(len(labels), dtype=torch.int64, device=device)
    counts = counts.index_add_(0, image, torch.ones_like(image)).tolist()
    return list(local.index_select(0, flat).split(counts))


def _float32_under_autocast(features: dict[str, Tensor]) -> dict[str, Tensor]:
    """Under autocast, the feature maps in float32, once for every RoIAlign of the heads.

    torchvision's ``roi_align`` has no bfloat16 kernel and its autocast wrapper casts the whole feature
    maps to float32 at every call (box, mask and high-resolution MaskIoU poolers, forward and backward);
    cast once, the wrapper has nothing left to cast."""
    first = next(iter(features.values()), None)
    if first is None or first.dtype == torch.float32 or not torch.is_autocast_enabled(first.device.type):
        return features
    return {name: value.float() for name, value in features.items()}


class MaskScoringRoIHeads(RoIHeads):
    """torchvision ``RoIHeads`` with a MaskIoU branch and optional Soft-NMS.

    Training adds ``loss_maskiou``. Inference adds ``mask_ious`` (predicted MaskIoU of the
    predicted class, clamped to [0, 1]) and ``mask_scores = scores * mask_ious`` to every output;
    ``boxes``, ``labels``, ``scores`` and ``masks`` keep torchvision's meaning. With
    ``maskiou_head=None`` it is a plain Mask R-CNN (still with optional Soft-NMS).
    """

    def __init__(
        self,
        *args,
        maskiou_head: MaskIoUHead | None = None,
        maskiou_roi_pool: MultiScaleRoIAlign | None = None,
        maskiou: MaskIoUConfig | None = None,
        soft_nms: SoftNMSConfig | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        if not self.has_mask():
            raise ValueError(
                "MaskScoringRoIHeads needs the mask branch (mask_roi_pool, mask_head, mask_predictor)"
            )
        if self.keypoint_predictor is not None:
            raise ValueError("MaskScoringRoIHeads does not support keypoint heads")
        if maskiou_head is not None and maskiou_head.needs_highres_features and maskiou_roi_pool is None:
            raise ValueError("input design 'concat_highres' needs maskiou_roi_pool (RoIAlign at 28x28)")
        self.maskiou_head = maskiou_head
        self.maskiou_roi_pool = maskiou_roi_pool
        self.maskiou_cfg = maskiou or MaskIoUConfig()
        self.soft_nms = soft_nms or SoftNMSConfig()

    @classmethod
    def from_roi_heads(cls, heads: RoIHeads, **kwargs) -> MaskScoringRoIHeads:
        """Builds the MaskIoU heads around the modules and settings of an existing ``RoIHeads``."""
        return cls(
            heads.box_roi_pool,
            heads.box_head,
            heads.box_predictor,
            heads.proposal_matcher.high_threshold,
            heads.proposal_matcher.low_threshold,
            heads.fg_bg_sampler.batch_size_per_image,
            heads.fg_bg_sampler.positive_fraction,
            heads.box_coder.weights,
            heads.score_thresh,
            heads.nms_thresh,
            heads.detections_per_img,
            mask_roi_pool=heads.mask_roi_pool,
            mask_head=heads.mask_head,
            mask_predictor=heads.mask_predictor,
            **kwargs,
        )

    # ------------------------------------------------------------------ inference
    # torchvision 0.2x RoIHeads.postprocess_detections, with batched Soft-NMS in place of NMS when enabled and,
    # on the GPU path, one nonzero for both filters and msrcnn.ops.nms.batched_nms (see msrcnn.ops.gpu_paths).
    def postprocess_detections(
        self,
        class_logits: Tensor,
        box_regression: Tensor,
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
    ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Per image: decoded, clipped boxes of every foreground class whose score exceeds ``score_thresh``
        and whose sides are at least 0.01 px, after per-class NMS (or Soft-NMS, whose rescaled scores are
        returned), the ``detections_per_img`` best by decreasing score."""
        num_classes = class_logits.shape[-1]
        boxes_per_image = [p.shape[0] for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals).split(boxes_per_image, 0)
        pred_scores = F.softmax(class_logits, -1).split(boxes_per_image, 0)
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, image_shape in zip(pred_boxes, pred_scores, image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, image_shape)
            labels = torch.arange(num_classes, device=boxes.device).view(1, -1).expand_as(scores)
            # every foreground class prediction is an instance of its own
            boxes, scores, labels = (
                boxes[:, 1:].reshape(-1, 4),
                scores[:, 1:].reshape(-1),
                labels[:, 1:].reshape(-1),
            )
            if use_gpu_paths(boxes.device):
                sides = boxes[:, 2:] - boxes[:, :2]
                keep = torch.nonzero((scores > self.score_thresh) & (sides >= 1e-2).all(dim=1)).squeeze(1)
            else:
                keep = torch.where(scores > self.score_thresh)[0]
                keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
            if self.soft_nms.enabled:
                keep, scores = batched_soft_nms(
                    boxes,
                    scores,
                    labels,
                    iou_threshold=self.soft_nms.iou_threshold,
                    sigma=self.soft_nms.sigma,
                    score_threshold=self.soft_nms.score_threshold,
                    method=self.soft_nms.method,
                )
                keep, scores = keep[: self.detections_per_img], scores[: self.detections_per_img]
            else:
                keep = batched_nms(boxes, scores, labels, self.nms_thresh)[: self.detections_per_img]
                scores = scores[keep]
            all_boxes.append(boxes[keep])
            all_scores.append(scores)
            all_labels.append(labels[keep])
        return all_boxes, all_scores, all_labels

    # ------------------------------------------------------------------ forward
    # torchvision 0.2x RoIHeads.forward, for the box and mask branches only, plus the MaskIoU branch.
    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        if targets is not None:
            for t in targets:
                if t["boxes"].dtype not in (torch.float, torch.double, torch.half, torch.bfloat16):
                    raise TypeError(f"target boxes must be of float type, got {t['boxes'].dtype}")
                if t["labels"].dtype != torch.int64:
                    raise TypeError(f"target labels must be of int64 type, got {t['labels'].dtype}")

        features = _float32_under_autocast(features)
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        # float32 under autocast: the regression is decoded into boxes (see MaskScoringRCNN)
        class_logits, box_regression = (t.float() for t in self.box_predictor(box_features))

        result: list[dict[str, Tensor]] = []
        losses: dict[str, Tensor] = {}
        if self.training:
            loss_classifier, loss_box_reg = fastrcnn_loss(
                class_logits, box_regression, labels, regression_targets
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            pos = positive_indices(labels)
            mask_proposals = [p[i] for p, i in zip(proposals, pos)]
            pos_matched_idxs = [m[i] for m, i in zip(matched_idxs, pos)]
        else:
            boxes, scores, det_labels = self.postprocess_detections(
                class_logits, box_regression, proposals, image_shapes
            )
            result = [
                {"boxes": b, "labels": lab, "scores": s} for b, lab, s in zip(boxes, det_labels, scores)
            ]
            mask_proposals = boxes

        roi_features = self.mask_roi_pool(features, mask_proposals, image_shapes)
        mask_logits = self.mask_predictor(self.mask_head(roi_features)).float()

        if self.training:
            # torchvision's mask loss copies every GT mask to float for its RoIAlign: give it the
            # matched ones only (a crowded image has hundreds of instances, a few dozen positives)
            used = [used_masks(i, len(t["masks"])) for t, i in zip(targets, pos_matched_idxs)]
            losses["loss_mask"] = maskrcnn_loss(
                mask_logits,
                mask_proposals,
                [t["masks"][u] for t, (u, _) in zip(targets, used)],
                [t["labels"][u] for t, (u, _) in zip(targets, used)],
                [i for _, i in used],
            )
            if self.maskiou_head is not None:
                negatives = None
                if self.maskiou_cfg.samples == "detections":
                    negatives = self._negative_samples(
                        features, class_logits, labels, proposals, pos, image_shapes, targets
                    )
                losses["loss_maskiou"] = self._maskiou_loss(
                    features,
                    roi_features,
                    mask_logits,
                    mask_proposals,
                    image_shapes,
                    targets,
                    pos_matched_idxs,
                    negatives,
                )
        else:
            det_labels = [r["labels"] for r in result]
            for mask_prob, r in zip(maskrcnn_inference(mask_logits, det_labels), result):
                r["masks"] = mask_prob
            if self.maskiou_head is not None:
                labels_cat = (
                    torch.cat(det_labels) if det_labels else mask_logits.new_zeros((0,), dtype=torch.long)
                )
                hr = self._highres_features(features, mask_proposals, image_shapes)
                pred = self.maskiou_head(roi_features if hr is None else hr, mask_logits, labels_cat).float()
                ious = pred[torch.arange(pred.shape[0], device=pred.device), labels_cat].clamp(0.0, 1.0)
                # lab.shape[0], not len(lab): a traced (ONNX) graph keeps the count dynamic
                for r, iou in zip(result, ious.split([lab.shape[0] for lab in det_labels])):
                    r["mask_ious"] = iou.to(r["scores"].dtype)
                    r["mask_scores"] = mask_scores(r["scores"], r["mask_ious"])
        return result, losses

    def _highres_features(self, features, proposals, image_shapes) -> Tensor | None:
        if self.maskiou_roi_pool is None or not self.maskiou_head.needs_highres_features:
            return None
        return self.maskiou_roi_pool(features, proposals, image_shapes)

    def _negative_samples(self, features, class_logits, labels, proposals, pos, image_shapes, targets):
        """``samples=detections``: the head's inputs, classes and targets for the background RoIs that the box
        head scores highest, as many per image as it has positives (no gradient: they train the head only).

        Returns ``(head_input, mask_logits, classes, targets)`` for all images, or None when there are none.
        """
        per_image = [lab.shape[0] for lab in labels]
        # host-side counts: the positives' shapes are known after positive_indices, no sync
        counts = [min(p.shape[0], n - p.shape[0]) for p, n in zip(pos, per_image)]
        if sum(counts) == 0:
            return None
        picked = [
            detection_like_negatives(logits, lab, k)
            for logits, lab, k in zip(class_logits.split(per_image), labels, counts)
        ]
        boxes = [p[i] for p, (i, _) in zip(proposals, picked)]
        with torch.no_grad():
            # A normalisation layer of the mask head in training mode normalises these RoIs with their
            # own statistics (and its running statistics see them, as they see detections at test time).
            roi_features = self.mask_roi_pool(features, boxes, image_shapes)
            mask_logits = self.mask_predictor(self.mask_head(roi_features)).float()
            hr = self._highres_features(features, boxes, image_shapes)
            head_input = roi_features if hr is None else hr
            classes = torch.cat([c for _, c in picked])
            class_masks = mask_logits[torch.arange(classes.shape[0], device=classes.device), classes]
            values = torch.cat(
                [
                    negative_targets(lg, b, c, t["boxes"], t["labels"], t["masks"])
                    for lg, b, (_, c), t in zip(class_masks.split(counts), boxes, picked, targets)
                ]
            )
        return head_input, mask_logits, classes, values

    def _maskiou_loss(
        self,
        features,
        roi_features,
        mask_logits,
        proposals,
        image_shapes,
        targets,
        matched_idxs,
        negatives=None,
    ):
        """MaskIoU targets for the positive RoIs, the tau filter and the L2 loss (paper Sec. 3.2; tau: Table 6),
        plus the ``samples=detections`` RoIs (``negatives``, from :meth:`_negative_samples`) when given."""
        cfg = self.maskiou_cfg
        gt_labels = torch.cat([t["labels"][i] for t, i in zip(targets, matched_idxs)])
        num_classes = mask_logits.shape[1]
        target_logits = mask_logits[torch.arange(gt_labels.shape[0], device=gt_labels.device), gt_labels]
        per_image = [len(p) for p in proposals]
        logits_split = target_logits.split(per_image)
        if cfg.target == "target_class":
            own = torch.cat(
                [
                    mask_iou_targets_matched(lg, p, t["masks"], i)
                    for lg, p, t, i in zip(logits_split, proposals, targets, matched_idxs)
                ]
            )
            targets_nc = torch.zeros((own.shape[0], num_classes), device=own.device)
            weights = torch.zeros_like(targets_nc)
            targets_nc[torch.arange(own.shape[0], device=own.device), gt_labels] = own
            weights[torch.arange(own.shape[0], device=own.device), gt_labels] = 1.0
        else:
            parts = [
                present_class_targets(lg, p, t["boxes"], t["labels"], t["masks"], i)
                for lg, p, t, i in zip(mask_logits.split(per_image), proposals, targets, matched_idxs)
            ]
            targets_nc = torch.cat([p[0] for p in parts])
            valid = torch.cat([p[1] for p in parts])
            own = targets_nc[torch.arange(targets_nc.shape[0], device=targets_nc.device), gt_labels]
            weights = torch.ones_like(targets_nc) if cfg.target == "all_classes" else valid.float()
        keep = (own > cfg.tau).float()[:, None]  # strictly: at tau = 0 a target of 0 is left out
        weights = weights * keep

        hr = self._highres_features(features, proposals, image_shapes)
        if cfg.detach_inputs:  # every input of the head: the loss trains the MaskIoU head only
            roi_features, mask_logits = roi_features.detach(), mask_logits.detach()
            hr = None if hr is None else hr.detach()
        head_input, num_samples = (roi_features if hr is None else hr), keep.sum()
        if negatives is not None:  # one head call for both kinds of samples
            neg_input, neg_logits, neg_classes, neg_values = negatives
            rows = torch.arange(neg_classes.shape[0], device=neg_classes.device)
            neg_targets = torch.zeros((rows.shape[0], num_classes), device=neg_values.device)
            neg_weights = torch.zeros_like(neg_targets)
            neg_targets[rows, neg_classes] = neg_values
            neg_weights[rows, neg_classes] = 1.0
            head_input = torch.cat([head_input, neg_input])
            mask_logits = torch.cat([mask_logits, neg_logits])
            gt_labels = torch.cat([gt_labels, neg_classes])
            targets_nc = torch.cat([targets_nc, neg_targets])
            weights = torch.cat([weights, neg_weights])
            num_samples = num_samples + rows.shape[0]
        pred = self.maskiou_head(head_input, mask_logits, gt_labels).float()
        return maskiou_loss(pred, targets_nc, weights, num_samples, cfg.loss_weight)
