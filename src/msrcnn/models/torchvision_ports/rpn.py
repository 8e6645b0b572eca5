"""torchvision's region proposal network with fewer host syncs on a GPU (same proposals).

* :class:`Matcher`: the low-quality matches (each GT box's best anchors) are written with a
  ``torch.where`` over a fixed-size mask instead of a ``nonzero`` of the IoU matrix: the same
  matches, no host sync, on every device.
* :class:`RegionProposalNetwork`: on a GPU (:mod:`msrcnn.ops.gpu_paths`) the proposals of every
  image are filtered together: one ``nonzero`` for the boxes left after the size and score filters,
  one batched NMS over (image, level) groups (:func:`msrcnn.ops.nms.batched_nms`), and one read of
  the number kept per image; torchvision does a ``nonzero`` for each filter, then one ``nms``
  (behind a ``nonzero``) per image and level. On the CPU torchvision's loop runs.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.rpn import RegionProposalNetwork as _TorchvisionRPN
from torchvision.ops import boxes as box_ops

from msrcnn.ops.gpu_paths import use_gpu_paths
from msrcnn.ops.nms import batched_nms

__all__ = ["Matcher", "RegionProposalNetwork"]


class Matcher(det_utils.Matcher):
    """torchvision's ``Matcher`` whose low-quality matches need no host sync."""

    def set_low_quality_matches_(
        self, matches: Tensor, all_matches: Tensor, match_quality_matrix: Tensor
    ) -> None:
        # Every prediction that is some GT box's best (ties included) gets its best GT: torchvision's
        # rule, written as a mask over the predictions instead of a list of (gt, prediction) pairs.
        highest_quality_foreach_gt = match_quality_matrix.max(dim=1).values
        is_best = (match_quality_matrix == highest_quality_foreach_gt[:, None]).any(dim=0)
        matches.copy_(torch.where(is_best, all_matches, matches))


class RegionProposalNetwork(_TorchvisionRPN):
    """torchvision's ``RegionProposalNetwork`` (same arguments, parameters and outputs)."""

    @classmethod
    def from_rpn(cls, rpn: _TorchvisionRPN) -> RegionProposalNetwork:
        """The same network: its anchor generator and head (the same modules), and every setting."""
        new = cls(
            rpn.anchor_generator,
            rpn.head,
            rpn.proposal_matcher.high_threshold,
            rpn.proposal_matcher.low_threshold,
            rpn.fg_bg_sampler.batch_size_per_image,
            rpn.fg_bg_sampler.positive_fraction,
            dict(rpn._pre_nms_top_n),
            dict(rpn._post_nms_top_n),
            rpn.nms_thresh,
            rpn.score_thresh,
        )
        new.min_size = rpn.min_size
        return new

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        matcher = self.proposal_matcher
        self.proposal_matcher = Matcher(
            matcher.high_threshold, matcher.low_threshold, allow_low_quality_matches=True
        )

    # torchvision 0.2x RegionProposalNetwork.filter_proposals, batched over images on the GPU path.
    def filter_proposals(
        self,
        proposals: Tensor,
        objectness: Tensor,
        image_shapes: list[tuple[int, int]],
        num_anchors_per_level: list[int],
    ) -> tuple[list[Tensor], list[Tensor]]:
        if not use_gpu_paths(proposals.device):
            return super().filter_proposals(proposals, objectness, image_shapes, num_anchors_per_level)
        num_images = proposals.shape[0]
        device = proposals.device
        objectness = objectness.detach().reshape(num_images, -1)
        levels = torch.cat(
            [
                torch.full((n,), idx, dtype=torch.int64, device=device)
                for idx, n in enumerate(num_anchors_per_level)
            ]
        )
        levels = levels.reshape(1, -1).expand_as(objectness)
        # the top pre_nms_top_n boxes of each level, as torchvision
        top_n_idx = self._get_top_n_idx(objectness, num_anchors_per_level)
        batch_idx = torch.arange(num_images, device=device)[:, None]
        scores = torch.sigmoid(objectness[batch_idx, top_n_idx])
        levels = levels[batch_idx, top_n_idx]
        boxes = torch.stack(
            [
                box_ops.clip_boxes_to_image(b, shape)
                for b, shape in zip(proposals[batch_idx, top_n_idx], image_shapes)
            ]
        )
        widths, heights = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        # torchvision's remove_small_boxes, then its score filter (>=)
        valid = (widths >= self.min_size) & (heights >= self.min_size) & (scores >= self.score_thresh)
        flat = torch.nonzero(valid.flatten()).squeeze(1)  # host sync 1
        image_of = flat // valid.shape[1]
        groups = image_of * len(num_anchors_per_level) + levels.flatten().index_select(0, flat)
        flat_boxes = boxes.reshape(-1, 4).index_select(0, flat)
        flat_scores = scores.flatten().index_select(0, flat)
        keep = batched_nms(flat_boxes, flat_scores, groups, self.nms_thresh)  # by decreasing score
        # per image, its kept boxes by decreasing score (a stable sort keeps the score order)
        keep = keep.index_select(0, torch.sort(image_of.index_select(0, keep), stable=True).indices)
        counts = torch.zeros(num_images, dtype=torch.int64, device=device)
        counts = counts.index_add_(
            0, image_of.index_select(0, keep), torch.ones_like(keep)
        ).tolist()  # host sync
        final_boxes, final_scores, start = [], [], 0
        top_n = self.post_nms_top_n()
        for count in counts:
            chosen = keep[start : start + min(count, top_n)]
            final_boxes.append(flat_boxes.index_select(0, chosen))
            final_scores.append(flat_scores.index_select(0, chosen))
            start += count
        return final_boxes, final_scores
