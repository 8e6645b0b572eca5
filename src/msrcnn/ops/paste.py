"""Pasting 28x28 mask predictions into full-image masks, without torchvision's per-mask canvases.

torchvision's ``paste_masks_in_image`` allocates one zero ``H x W`` canvas per detection, pastes
the resized mask into it, then ``torch.stack``-s the canvases into the ``[N, 1, H, W]`` result:
the output is allocated, zeroed and written twice. At 100 detections and 800x1333 that is
0.4 GB of canvases plus the same again for the stack; on a CPU that memory traffic and the page
faults of the fresh allocations are what the paste costs (the bilinear resizes touch only the
box regions).

:func:`resize_masks_into_boxes` does torchvision's arithmetic (same padding, same box expansion
and int64 truncation, the same ``F.interpolate`` call on the same box size, the same clipping
and slicing) and returns, per mask, only the part of the resized mask that lies inside the
image, with its offset. :func:`paste_masks_in_image` writes those crops into one zero output, so
its output is bit-identical to torchvision's; only the memory traffic differs. The COCO
evaluation (``msrcnn.evaluation.encode_roi_masks``) RLE-encodes the same crops without ever
building the image-size masks.

The loop over masks remains: it costs microseconds per mask, whereas a batched ``grid_sample``
paste (detectron2's ``_do_paste_mask``) evaluates every pixel of the image for every mask and
is slower than torchvision's on a CPU. The box geometry reaches the host in one transfer
instead of several scalar reads per mask. What remains is mostly the page faults of the output,
which PyTorch's huge-page allocation (``THP_MEM_ALLOC_ENABLE=1``) removes; the timings against
torchvision's are in ``benchmarks/README.md`` (the paste section).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

__all__ = ["MaskCrop", "paste_masks_in_image", "resize_masks_into_boxes"]


class MaskCrop(NamedTuple):
    """The part of one resized mask that lies inside the image: ``values`` ``[h, w]`` at ``(y0, x0)``."""

    y0: int
    x0: int
    values: Tensor


def resize_masks_into_boxes(
    masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = 1
) -> list[MaskCrop]:
    """Each mask ``[N, 1, M, M]`` resized into its box ``[N, 4]`` and cut to the image ``(H, W)``.

    torchvision's paste geometry: the mask, padded by ``padding`` pixels, is resized bilinearly to
    its (equally expanded, integer) box; the parts outside the image are cut off (``values`` may be
    empty; for a box entirely outside the image, where torchvision's slicing raises an error, it is).
    Pasting ``values`` at ``(y0, x0)`` into a zero image gives torchvision's pasted mask.
    """
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    if masks.shape[0] == 0:
        return []
    masks, scale = expand_masks(masks, padding=padding)
    boxes = expand_boxes(boxes, scale).to(dtype=torch.int64)
    crops = []
    for i, (x0, y0, x1, y1) in enumerate(boxes.tolist()):  # the one host transfer of the geometry
        w = max(x1 - x0 + 1, 1)
        h = max(y1 - y0 + 1, 1)
        # torchvision's clipping and slicing, on Python ints (the same slice semantics)
        cx0, cx1 = max(x0, 0), min(x1 + 1, im_w)
        cy0, cy1 = max(y0, 0), min(y1 + 1, im_h)
        if cx1 <= cx0 or cy1 <= cy0:  # the box misses the image (torchvision's slicing would fail)
            crops.append(MaskCrop(min(cy0, im_h), min(cx0, im_w), masks.new_zeros((0, 0))))
            continue
        resized = F.interpolate(masks[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        crops.append(MaskCrop(cy0, cx0, resized[(cy0 - y0) : (cy1 - y0), (cx0 - x0) : (cx1 - x0)]))
    return crops


def paste_masks_in_image(
    masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = 1
) -> Tensor:
    """Full-image masks ``[N, 1, H, W]`` from mask probabilities ``[N, 1, M, M]`` and boxes ``[N, 4]``.

    Drop-in replacement of ``torchvision.models.detection.roi_heads.paste_masks_in_image`` with
    the same outputs (bit for bit): see :func:`resize_masks_into_boxes`.
    """
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    out = masks.new_zeros((masks.shape[0], 1, im_h, im_w))
    for i, (y0, x0, values) in enumerate(resize_masks_into_boxes(masks, boxes, img_shape, padding)):
        out[i, 0, y0 : y0 + values.shape[0], x0 : x0 + values.shape[1]] = values
    return out
