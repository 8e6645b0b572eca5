"""COCO RLEs of detected masks, for evaluation and predictions.

* :func:`encode_masks`: image-size mask probabilities, binarised and encoded by the COCO library.
* :func:`encode_roi_masks`: the RLEs of the masks a model would paste into the image, computed from its
  box-local ``roi_masks`` without pasting (``mask_output="roi"``): each mask is resized into its box and
  the run lengths are read off the box region. Hand-written because it pays: 4.5 s instead of 21.2 s
  (pycocotools ``mask.encode`` of the pasted masks) and 84.3 s (from pasted masks) for 500 images of
  100 detections (benchmarks/README.md, evaluation), with exactly the same RLEs (tests/evaluation).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from faster_coco_eval.core import mask as mask_utils
from torch import Tensor

from msrcnn.ops.paste import MaskCrop, resize_masks_into_boxes

__all__ = ["encode_masks", "encode_roi_masks"]


def encode_masks(masks: Tensor, threshold: float = 0.5) -> list[dict]:
    """Binarise mask probabilities (``masks > threshold``) and RLE-encode them in one call.

    Args:
        masks: ``[K, 1, H, W]`` (or ``[K, H, W]``) probabilities, any device and float dtype
            (bool/uint8 masks work too).
        threshold: binarisation threshold; torchvision's reference evaluation uses ``> 0.5``.

    Returns:
        ``K`` compressed COCO RLEs ``{"size": [H, W], "counts": str}`` (JSON-serialisable).
    """
    if masks.dim() == 4:
        if masks.shape[1] != 1:
            raise ValueError(f"expected masks of shape [K, 1, H, W], got {tuple(masks.shape)}")
        masks = masks[:, 0]
    if masks.dim() != 3:
        raise ValueError(f"expected masks of shape [K, 1, H, W] or [K, H, W], got {tuple(masks.shape)}")
    if masks.shape[0] == 0:
        return []
    binary = masks > threshold
    # [K, W, H] C-contiguous is [H, W, K] Fortran-ordered, the layout the RLE encoder expects.
    k_w_h = binary.transpose(1, 2).contiguous().to(torch.uint8).cpu().numpy()
    rles = mask_utils.encode(k_w_h.transpose(2, 1, 0))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def encode_roi_masks(
    roi_masks: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    threshold: float = 0.5,
    padding: int = 1,
) -> list[dict]:
    """The RLEs of the pasted masks, straight from the box-local mask probabilities.

    Gives exactly ``encode_masks(paste_masks_in_image(roi_masks, boxes, image_size), threshold)``
    (torchvision's paste geometry, see :func:`msrcnn.ops.paste.resize_masks_into_boxes`) without
    building the ``[K, H, W]`` image-size masks: only the pixels inside the boxes are computed.
    They are binarised where they are (in NumPy for CPU masks, in torch on a GPU; one host
    transfer), and the runs of all masks are found in one vectorised NumPy pass.

    Args:
        roi_masks: ``[K, 1, M, M]`` mask probabilities in box coordinates (the model's ``roi_masks``).
        boxes: ``[K, 4]`` xyxy boxes in image pixels.
        image_size: ``(H, W)`` of the image.
        threshold: binarisation threshold (``probability > threshold``).
        padding: torchvision's paste padding (1).

    Returns:
        ``K`` compressed COCO RLEs ``{"size": [H, W], "counts": str}``.
    """
    return _encode_roi_masks(roi_masks, boxes, image_size, threshold, padding)[0]


def _encode_roi_masks(
    roi_masks: Tensor,
    boxes: Tensor,
    image_size: tuple[int, int],
    threshold: float = 0.5,
    padding: int = 1,
) -> tuple[list[dict], np.ndarray, np.ndarray]:
    """:func:`encode_roi_masks`, plus each mask's COCO area ``float64 [K]`` and box
    ``float64 [K, 4]`` ``[x, y, w, h]``: what ``mask.area`` / ``mask.toBbox`` give for its RLE,
    computed on the way from the runs (the evaluation then needs not parse the RLE strings)."""
    if roi_masks.dim() != 4 or roi_masks.shape[1] != 1:
        raise ValueError(f"expected roi_masks of shape [K, 1, M, M], got {tuple(roi_masks.shape)}")
    if boxes.shape != (roi_masks.shape[0], 4):
        raise ValueError(f"expected boxes of shape [{roi_masks.shape[0]}, 4], got {tuple(boxes.shape)}")
    height, width = int(image_size[0]), int(image_size[1])
    k = roi_masks.shape[0]
    if k == 0:
        return [], np.zeros(0), np.zeros((0, 4))
    crops = resize_masks_into_boxes(roi_masks, boxes, (height, width), padding)
    # Every crop column-major (COCO's order), binarised, each column preceded by one background
    # pixel and each crop followed by one: all masks in one host transfer.
    geometry = np.array([(c.y0, c.x0, c.values.shape[0], c.values.shape[1]) for c in crops], dtype=np.int64)
    sizes = geometry[:, 3] * (geometry[:, 2] + 1) + 1
    if roi_masks.device.type == "cpu" and roi_masks.dtype in _NUMPY_DTYPES:
        padded = _padded_crops_numpy(crops, sizes.tolist(), threshold)
    else:
        padded = _padded_crops_torch(crops, sizes.tolist(), threshold)
    runs, areas, mask_boxes = _runs_from_padded_crops(padded, geometry, height, width)
    rles = mask_utils.frPyObjects([{"counts": r, "size": [height, width]} for r in runs], height, width)
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return rles, areas, mask_boxes


# CPU masks of these dtypes are binarised in NumPy (on views of the tensors, no copy): a few NumPy
# calls per mask cost about a tenth of the few tensor operations (microseconds of dispatch each).
_NUMPY_DTYPES = (torch.float16, torch.float32, torch.float64)


def _padded_crops_numpy(crops: Sequence[MaskCrop], sizes: list[int], threshold: float) -> np.ndarray:
    """The padded crops (see :func:`_runs_from_padded_crops`) of CPU masks, binarised in NumPy: each
    value compared with the threshold in the mask's dtype, as torch compares with a Python scalar."""
    padded = np.zeros(sum(sizes), dtype=bool)
    start = 0
    for crop, size in zip(crops, sizes):
        values = crop.values.detach().numpy()
        h, w = values.shape
        columns = padded[start : start + w * (h + 1)].reshape(w, h + 1)
        np.greater(values.T, values.dtype.type(threshold), out=columns[:, 1:])
        start += size
    return padded


def _padded_crops_torch(crops: Sequence[MaskCrop], sizes: list[int], threshold: float) -> np.ndarray:
    """The padded crops binarised where the masks are (a GPU, or dtypes NumPy lacks), moved to the
    host in one transfer."""
    padded = crops[0].values.new_zeros(sum(sizes), dtype=torch.bool)
    start = 0
    for crop, size in zip(crops, sizes):
        h, w = crop.values.shape
        padded[start : start + w * (h + 1)].view(w, h + 1)[:, 1:] = (crop.values > threshold).t()
        start += size
    return padded.cpu().numpy()


def _runs_from_padded_crops(
    padded: np.ndarray, geometry: np.ndarray, height: int, width: int
) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """COCO run lengths (first run = background) of each mask from its padded crop pixels, with
    each mask's area and box ``[x, y, w, h]`` as ``mask.area`` / ``mask.toBbox`` give them.

    ``padded`` concatenates, per crop of ``geometry`` row ``(y0, x0, h, w)``, its ``w`` columns of
    ``1 + h`` pixels (a background pixel, then the column top to bottom) and one trailing
    background pixel. The value changes exactly where a padded pixel differs from the one before
    it: at a column pixel ``r`` the run boundary is that pixel's column-major image index; at a
    background pixel it is just below the previous column. Only the changes are located (a few
    per column); nothing is computed per pixel beyond the comparison.
    """
    k = len(geometry)
    y0, x0, h, w = geometry.T
    sizes = w * (h + 1) + 1  # padded pixels per crop
    starts = np.cumsum(sizes) - sizes
    idx = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    owner = np.searchsorted(starts, idx, side="right") - 1
    local = idx - starts[owner]
    col, row = np.divmod(local, h[owner] + 1)
    # row 0 is the background pixel above column `col`: the change is below column `col - 1`
    end_of_column = row == 0
    col = col - end_of_column
    row = np.where(end_of_column, h[owner], row - 1)
    pos = (x0[owner] + col) * height + y0[owner] + row
    # A column ending on the image's last row and the next column starting with foreground on its
    # first row change at the same position: both changes cancel (COCO runs are never empty).
    same = (pos[1:] == pos[:-1]) & (owner[1:] == owner[:-1])
    if same.any():
        keep = np.ones(len(pos), dtype=bool)
        keep[:-1] &= ~same
        keep[1:] &= ~same
        pos, owner = pos[keep], owner[keep]
    # Foreground up to the image's last pixel: no change at the end, the final run is foreground.
    area = height * width
    inside = pos < area
    pos, owner = pos[inside], owner[inside]
    # Run lengths: the distance to the previous change of the same mask (to 0 for its first one),
    # then the final background run of each mask; all masks at once, split per mask at the end.
    first = np.ones(len(pos), dtype=bool)
    first[1:] = owner[1:] != owner[:-1]
    lengths = (pos - np.where(first, 0, np.roll(pos, 1))).tolist()
    bounds = np.searchsorted(owner, np.arange(k + 1)).tolist()
    last = np.zeros(k, dtype=np.int64)
    has_changes = np.diff(bounds) > 0
    last[has_changes] = pos[np.asarray(bounds[1:])[has_changes] - 1]
    final = (area - last).tolist()
    runs = [lengths[bounds[j] : bounds[j + 1]] + [final[j]] for j in range(k)]
    areas, mask_boxes = _areas_and_boxes(pos, owner, np.asarray(bounds), height, width)
    return runs, areas, mask_boxes


def _areas_and_boxes(
    pos: np.ndarray, owner: np.ndarray, bounds: np.ndarray, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """COCO's ``mask.area`` and ``mask.toBbox`` of masks given by their sorted change positions.

    ``pos`` holds the column-major image indices where each mask's value changes (grouped by
    ``owner``; mask ``j`` at ``bounds[j]:bounds[j + 1]``), starting with background: foreground
    runs are ``[pos[2m], pos[2m + 1])``, the last one up to the image's end when the count is odd.
    ``toBbox`` takes the min / max column and row over the first and last pixel of every foreground
    run, and the whole image height when a run crosses a column: so does this. Empty masks get
    area 0 and box ``[0, 0, 0, 0]``.
    """
    k = len(bounds) - 1
    index = np.arange(len(pos)) - bounds[owner]  # position of each change within its mask
    is_start = index % 2 == 0
    closed = np.zeros(len(pos), dtype=bool)  # a start followed by an end in the same mask
    closed[:-1] = owner[1:] == owner[:-1]
    following = np.empty_like(pos)
    following[:-1] = pos[1:]
    first = pos[is_start]
    last = np.where(closed, following, height * width)[is_start] - 1  # the run's last pixel
    who = owner[is_start]
    areas = np.bincount(who, weights=last - first + 1, minlength=k).astype(np.float64)
    boxes = np.zeros((k, 4), dtype=np.float64)
    if not len(first):
        return areas, boxes
    x_first, y_first = np.divmod(first, height)
    x_last, y_last = np.divmod(last, height)
    crosses = x_last > x_first
    y_min = np.where(crosses, 0, y_first)  # y_first <= y_last within one column
    y_max = np.where(crosses, height - 1, y_last)
    runs = np.bincount(who, minlength=k)
    present = np.flatnonzero(runs)
    group_start = np.cumsum(runs)[present] - runs[present]
    group_end = np.cumsum(runs)[present] - 1
    # Runs are in image order within a mask: the first starts leftmost, the last ends rightmost.
    x0, x1 = x_first[group_start], x_last[group_end]
    y0, y1 = np.minimum.reduceat(y_min, group_start), np.maximum.reduceat(y_max, group_start)
    boxes[present] = np.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], axis=1)
    return areas, boxes
