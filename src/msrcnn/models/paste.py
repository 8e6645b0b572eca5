"""Pasting the 28x28 mask predictions into full-image masks, without torchvision's per-mask canvases.

torchvision's ``paste_masks_in_image`` allocates one zero ``H x W`` canvas per detection, pastes
the resized mask into it, then ``torch.stack``-s the canvases into the ``[N, 1, H, W]`` result:
the output is allocated, zeroed and written twice. At 100 detections and 800x1333 that is
0.4 GB of canvases plus the same again for the stack; on a CPU that memory traffic and the page
faults of the fresh allocations are what the paste costs (the bilinear resizes touch only the
box regions).

:func:`paste_masks_in_image` allocates the result once and writes each resized mask straight
into its box region. It does the same arithmetic as torchvision (same padding, same box
expansion and int64 truncation, the same ``F.interpolate`` call on the same box size, the same
clipping and slicing), so its output is bit-identical; only the memory traffic differs. The
loop over masks remains: it costs microseconds per mask, whereas a batched ``grid_sample``
paste (detectron2's ``_do_paste_mask``) evaluates every pixel of the image for every mask and
is 2-3x slower than torchvision's on a CPU. The box geometry reaches the host in one transfer
instead of several scalar reads per mask.

Measured at 100 masks, 800x1333 (``benchmarks/README.md``): 1.1-2x faster than torchvision's;
the rest is the page faults of the output, and with PyTorch's huge-page allocation
(``THP_MEM_ALLOC_ENABLE=1``) it is 3-3.6x faster.

:class:`FastPasteTransform` is torchvision's ``GeneralizedRCNNTransform`` with this paste in
``postprocess``; ``MaskScoringRCNN(..., fast_mask_paste=True)`` installs it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes, resize_keypoints

__all__ = ["FastPasteTransform", "paste_masks_in_image"]


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = 1
) -> Tensor:
    """Full-image masks ``[N, 1, H, W]`` from mask probabilities ``[N, 1, M, M]`` and boxes ``[N, 4]``.

    Drop-in replacement of ``torchvision.models.detection.roi_heads.paste_masks_in_image`` with
    the same outputs (bit for bit): each mask, padded by ``padding`` pixels, is resized
    bilinearly to its (equally expanded, integer) box and written into a zero image of size
    ``img_shape = (H, W)``; the parts of a box outside the image are cut off.
    """
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    if masks.shape[0] == 0:
        return masks.new_empty((0, 1, im_h, im_w))
    masks, scale = expand_masks(masks, padding=padding)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64)
    out = masks.new_zeros((masks.shape[0], 1, im_h, im_w))
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):  # the one host transfer of the geometry
        w = max(x1 - x0 + 1, 1)
        h = max(y1 - y0 + 1, 1)
        # torchvision's clipping and slicing, on Python ints (the same slice semantics)
        cx0, cx1 = max(x0, 0), min(x1 + 1, im_w)
        cy0, cy1 = max(y0, 0), min(y1 + 1, im_h)
        resized = F.interpolate(masks[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        out[i, 0, cy0:cy1, cx0:cx1] = resized[(cy0 - y0) : (cy1 - y0), (cx0 - x0) : (cx1 - x0)]
    return out


class FastPasteTransform(GeneralizedRCNNTransform):
    """``GeneralizedRCNNTransform`` whose ``postprocess`` pastes masks with :func:`paste_masks_in_image`.

    Pre-processing (normalisation, resizing, batching) is torchvision's, unchanged.
    """

    @classmethod
    def from_transform(cls, transform: GeneralizedRCNNTransform) -> FastPasteTransform:
        """The same transform (sizes, mean/std, divisibility) with the fast paste."""
        return cls(
            transform.min_size,
            transform.max_size,
            transform.image_mean,
            transform.image_std,
            size_divisible=transform.size_divisible,
            fixed_size=transform.fixed_size,
            _skip_resize=transform._skip_resize,
        )

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        if self.training:
            return result
        for pred, im_s, o_im_s in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], im_s, o_im_s)
            if "masks" in pred:
                pred["masks"] = paste_masks_in_image(pred["masks"], pred["boxes"], o_im_s)
            if "keypoints" in pred:
                pred["keypoints"] = resize_keypoints(pred["keypoints"], im_s, o_im_s)
        return result
