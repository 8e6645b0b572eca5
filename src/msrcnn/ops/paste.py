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

Two variants (see :mod:`msrcnn.ops.gpu_paths`):

* CPU: a loop over masks that resizes each into its box only (microseconds per mask; the box
  geometry reaches the host in one transfer). Bit-identical to torchvision's. What remains is
  mostly the page faults of the output, which PyTorch's huge-page allocation
  (``THP_MEM_ALLOC_ENABLE=1``) removes.
* GPU: :func:`paste_masks_batched`, every mask at once with no host sync: torchvision's bilinear
  resize is separable, so each mask is first interpolated along x at every image column (``[N, M+2,
  W]``), then along y at every image row, with the kernel's own source indices and weights
  (``align_corners=False``) and zero weight outside the box. The products and sums are those of the
  kernel in its order; results agree with torchvision's to float32 rounding (tested: within 1e-6,
  binarised masks equal up to pixels at exactly the threshold). On a CPU it touches every image
  pixel of every mask and is slower than the loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.roi_heads import expand_boxes, expand_masks

from msrcnn.ops.gpu_paths import use_gpu_paths

__all__ = ["MaskCrop", "paste_masks_batched", "paste_masks_in_image", "resize_masks_into_boxes"]

# Image pixels x masks per chunk of the batched paste: bounds its temporaries (two of this many floats).
_PIXELS_PER_CHUNK = 1 << 26


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

    Drop-in replacement of ``torchvision.models.detection.roi_heads.paste_masks_in_image``: on a
    CPU bit for bit its output (see :func:`resize_masks_into_boxes`), on a GPU
    :func:`paste_masks_batched` (to float32 rounding, no host sync).
    """
    if use_gpu_paths(masks.device):
        return paste_masks_batched(masks, boxes, img_shape, padding)
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    out = masks.new_zeros((masks.shape[0], 1, im_h, im_w))
    for i, (y0, x0, values) in enumerate(resize_masks_into_boxes(masks, boxes, img_shape, padding)):
        out[i, 0, y0 : y0 + values.shape[0], x0 : x0 + values.shape[1]] = values
    return out


def _axis_weights(start: Tensor, length: Tensor, in_size: int, out_size: int) -> tuple[Tensor, ...]:
    """Source indices and weights of a bilinear resize (``align_corners=False``) of ``in_size`` samples to
    ``length[n]`` outputs placed at ``start[n]``, evaluated at the image positions ``0..out_size-1``.

    Returns ``(i0, i1, w0, w1)``, each ``[N, out_size]``: position ``p`` takes
    ``w0 * v[i0] + w1 * v[i1]`` of mask ``n``'s samples ``v``; both weights are 0 outside the box.
    The arithmetic is ATen's (``area_pixel_compute_scale`` / ``area_pixel_compute_source_index``) in float32.
    """
    local = torch.arange(out_size, device=start.device)[None, :] - start[:, None]
    inside = (local >= 0) & (local < length[:, None])
    scale = torch.full_like(length, in_size, dtype=torch.float32) / length.to(torch.float32)
    source = (scale[:, None] * (local.to(torch.float32) + 0.5) - 0.5).clamp_(min=0.0)
    i0 = source.to(torch.int64).clamp_(max=in_size - 1)
    i1 = (i0 + 1).clamp_(max=in_size - 1)
    w1 = (source - i0.to(torch.float32)).clamp_(0.0, 1.0)
    w0 = 1.0 - w1
    zero = torch.zeros((), dtype=torch.float32, device=start.device)
    return i0, i1, torch.where(inside, w0, zero), torch.where(inside, w1, zero)


def paste_masks_batched(masks: Tensor, boxes: Tensor, img_shape: tuple[int, int], padding: int = 1) -> Tensor:
    """torchvision's paste of ``[N, 1, M, M]`` mask probabilities into ``[N, 1, H, W]``, all masks at once.

    The same geometry as torchvision (padded mask, expanded integer box, clipping), the resize done
    separably at the image's pixels (see the module docstring). No host sync, no loop over masks;
    the work is proportional to ``N x H x W`` and runs in chunks of masks to bound the temporaries.
    """
    im_h, im_w = int(img_shape[0]), int(img_shape[1])
    n = masks.shape[0]
    out = torch.zeros((n, 1, im_h, im_w), dtype=masks.dtype, device=masks.device)
    if n == 0 or im_h == 0 or im_w == 0:
        return out
    padded, scale = expand_masks(masks, padding=padding)
    size = padded.shape[-1]
    box = expand_boxes(boxes, scale).to(dtype=torch.int64)
    width = (box[:, 2] - box[:, 0] + 1).clamp_(min=1)
    height = (box[:, 3] - box[:, 1] + 1).clamp_(min=1)
    xi0, xi1, xw0, xw1 = _axis_weights(box[:, 0], width, size, im_w)
    yi0, yi1, yw0, yw1 = _axis_weights(box[:, 1], height, size, im_h)
    values = padded[:, 0].to(torch.float32)  # [N, S, S]
    step = max(1, _PIXELS_PER_CHUNK // (im_h * im_w))
    for start in range(0, n, step):
        part = slice(start, start + step)
        v = values[part]
        k = v.shape[0]
        rows = torch.arange(k, device=v.device)[:, None]
        # along x at every image column: [k, S, W]
        gx0 = torch.gather(v, 2, xi0[part][:, None, :].expand(k, size, im_w))
        gx1 = torch.gather(v, 2, xi1[part][:, None, :].expand(k, size, im_w))
        cols = gx0.mul_(xw0[part][:, None, :]).add_(gx1.mul_(xw1[part][:, None, :]))
        # along y at every image row: [k, H, W]
        top = cols[rows, yi0[part]].mul_(yw0[part][:, :, None])
        bottom = cols[rows, yi1[part]].mul_(yw1[part][:, :, None])
        out[part, 0] = top.add_(bottom).to(out.dtype)
    return out
