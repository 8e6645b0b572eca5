"""torchvision's ``BoxCoder`` without host-to-device copies of constants.

torchvision builds small tensors from Python numbers on the device (``torch.tensor(0.5, device=...)``
when decoding, ``torch.as_tensor(weights, device=...)`` when encoding). Such a copy of Python data to
a GPU blocks until every queued kernel has finished (``cudaMemcpyAsync`` + ``cudaStreamSynchronize``).
Here the constants stay Python numbers, which PyTorch passes to the kernels as arguments: the same
float32 arithmetic (a Python float meets a float32 tensor as a float32 value), so the same boxes.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils

__all__ = ["BoxCoder"]


class BoxCoder(det_utils.BoxCoder):
    """``torchvision.models.detection._utils.BoxCoder`` (same arguments and results)."""

    @classmethod
    def from_box_coder(cls, coder: det_utils.BoxCoder) -> BoxCoder:
        return cls(coder.weights, coder.bbox_xform_clip)

    # torchvision 0.2x BoxCoder.encode_single / encode_boxes, with the weights as Python floats
    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        wx, wy, ww, wh = (float(w) for w in self.weights)
        ex_widths = proposals[:, 2:3] - proposals[:, 0:1]
        ex_heights = proposals[:, 3:4] - proposals[:, 1:2]
        ex_ctr_x = proposals[:, 0:1] + 0.5 * ex_widths
        ex_ctr_y = proposals[:, 1:2] + 0.5 * ex_heights
        gt_widths = reference_boxes[:, 2:3] - reference_boxes[:, 0:1]
        gt_heights = reference_boxes[:, 3:4] - reference_boxes[:, 1:2]
        gt_ctr_x = reference_boxes[:, 0:1] + 0.5 * gt_widths
        gt_ctr_y = reference_boxes[:, 1:2] + 0.5 * gt_heights
        return torch.cat(
            (
                wx * (gt_ctr_x - ex_ctr_x) / ex_widths,
                wy * (gt_ctr_y - ex_ctr_y) / ex_heights,
                ww * torch.log(gt_widths / ex_widths),
                wh * torch.log(gt_heights / ex_heights),
            ),
            dim=1,
        )

    # torchvision 0.2x BoxCoder.decode_single, with 0.5 as a Python float
    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0]
        heights = boxes[:, 3] - boxes[:, 1]
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = torch.clamp(rel_codes[:, 2::4] / ww, max=self.bbox_xform_clip)
        dh = torch.clamp(rel_codes[:, 3::4] / wh, max=self.bbox_xform_clip)
        pred_ctr_x = dx * widths[:, None] + ctr_x[:, None]
        pred_ctr_y = dy * heights[:, None] + ctr_y[:, None]
        c_to_c_w = 0.5 * (torch.exp(dw) * widths[:, None])
        c_to_c_h = 0.5 * (torch.exp(dh) * heights[:, None])
        pred = (pred_ctr_x - c_to_c_w, pred_ctr_y - c_to_c_h, pred_ctr_x + c_to_c_w, pred_ctr_y + c_to_c_h)
        return torch.stack(pred, dim=2).flatten(1)
