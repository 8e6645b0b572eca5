"""Instance masks kept as COCO RLE until they are needed, then decoded at the size the model takes.

A training image of 700 x 1100 px with 190 instances decodes to 146 MB of full-resolution masks, and
nearest-resizing them to a 160 px input costs more than the model's step. :class:`EncodedMasks` holds
the RLEs instead; :meth:`EncodedMasks.decode` with an output size evaluates each RLE only at the
pixels nearest-neighbour resizing would read, inside each mask's own bounding box, so the result is
bit for bit what ``F.interpolate(full_masks, size, mode="nearest")`` (torchvision's detection
transform) gives, at a cost proportional to the output size.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from msrcnn.ops.mask_crops import MaskCrops

__all__ = ["EncodedMasks", "nearest_source_indices", "rle_runs"]


@lru_cache(maxsize=256)
def _nearest_source_indices(in_size: int, out_size: int) -> np.ndarray:
    # float32 like the masks the model resizes: the kernel computes its scale in the input's precision,
    # and a float64 scale picks other rows at some boundaries. Indices stay exact in float32 below 2**24.
    ramp = torch.arange(in_size, dtype=torch.float32).view(1, 1, in_size)
    picked = F.interpolate(ramp, size=out_size, mode="nearest").view(-1)
    indices = picked.to(torch.int64).numpy()
    indices.flags.writeable = False
    return indices


def nearest_source_indices(in_size: int, out_size: int) -> np.ndarray:
    """The input index each of ``out_size`` outputs reads under torch's ``mode="nearest"`` resize.

    Computed by torch's own kernel on a float32 index ramp, so it cannot drift from what
    ``F.interpolate(float32_masks, size=...)`` (or ``scale_factor`` with ``recompute_scale_factor=True``,
    torchvision's detection transform) does.
    """
    return _nearest_source_indices(int(in_size), int(out_size))


def _segment_starts(segment_ids: np.ndarray) -> np.ndarray:
    """Index of the first element of the segment each element belongs to (ids sorted, contiguous)."""
    n = len(segment_ids)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    new = np.ones(n, dtype=bool)
    new[1:] = segment_ids[1:] != segment_ids[:-1]
    starts = np.flatnonzero(new)
    return np.repeat(starts, np.diff(np.append(starts, n)))


def _segmented_cumsum(values: np.ndarray, segment_ids: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at every change of ``segment_ids`` (contiguous segments)."""
    total = np.cumsum(values)
    starts = _segment_starts(segment_ids)
    return total - total[starts] + values[starts]


def rle_runs(counts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Run lengths of compressed COCO RLE strings, vectorised over all strings at once.

    Returns the runs of every string concatenated and the number of runs of each string. This is
    pycocotools' ``rleFrString``: 6-bit characters with a continuation bit, sign extension, and each
    run from the third on stored as a difference to the run two before it.
    """
    num = len(counts)
    lengths = np.fromiter((len(c) for c in counts), dtype=np.int64, count=num)
    if lengths.sum() == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(num, dtype=np.int64)
    chars = np.frombuffer(b"".join(counts), dtype=np.uint8).astype(np.int64) - 48
    value_end = np.flatnonzero((chars & 0x20) == 0)
    value_start = np.empty_like(value_end)
    value_start[0] = 0
    value_start[1:] = value_end[:-1] + 1
    nchar = value_end - value_start + 1
    shift = 5 * (np.arange(len(chars)) - np.repeat(value_start, nchar))
    raw = np.add.reduceat((chars & 0x1F) << shift, value_start)
    raw -= ((chars[value_end] & 0x10) != 0).astype(np.int64) << (5 * nchar)
    string_of_char = np.repeat(np.arange(num), lengths)
    string = string_of_char[value_end]
    per_string = np.bincount(string, minlength=num)
    first = np.cumsum(per_string) - per_string
    j = np.arange(len(raw)) - np.repeat(first, per_string)
    runs = raw.copy()
    for parity in (0, 1):  # run j += run j-2 for j >= 3: a cumulative sum along each parity from j = 1, 2
        chain = np.flatnonzero((j >= 1) & (j % 2 == parity))
        runs[chain] = _segmented_cumsum(raw[chain], string[chain])
    return runs, per_string


class EncodedMasks:
    """``N`` instance masks of one ``height x width`` image as compressed COCO RLEs.

    Passes through ``torchvision.transforms.v2`` untouched except by :class:`msrcnn.data.transforms.ResizeToInput`,
    which decodes it at the resized size; :meth:`decode` without a size gives the full-resolution masks.
    """

    def __init__(self, rles: Sequence[dict[str, Any]], height: int, width: int) -> None:
        self.rles = list(rles)
        self.height = int(height)
        self.width = int(width)

    def __len__(self) -> int:
        return len(self.rles)

    def __repr__(self) -> str:
        return f"EncodedMasks({len(self.rles)} masks, {self.height}x{self.width})"

    def area(self) -> torch.Tensor:
        """Foreground pixels of each mask at full resolution (float32, COCO's ``area`` of a mask)."""
        if not self.rles:
            return torch.zeros(0, dtype=torch.float32)
        return torch.from_numpy(mask_utils.area(self.rles).astype(np.float32))

    def decode(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 ``[N, H', W']`` masks: full resolution, or nearest-resized to ``size = (H', W')``."""
        out_h, out_w = (self.height, self.width) if size is None else (int(size[0]), int(size[1]))
        if not self.rles:
            return torch.zeros((0, out_h, out_w), dtype=torch.uint8)
        # At full size too: only each mask's box is visited, and the result is already [N, H, W]
        # (pycocotools' decode writes N full Fortran-order planes that would need a transposing copy).
        return torch.from_numpy(self._decode_sampled(out_h, out_w))

    def decode_crops(self, size: tuple[int, int]) -> MaskCrops:
        """The masks nearest-resized to ``size = (H', W')`` as :class:`~msrcnn.ops.mask_crops.MaskCrops`:
        each mask's window is the part of its bounding box the resize reads, so ``crops.dense()`` equals
        ``decode(size)`` bit for bit, while the crops hold a few hundred bytes per small instance."""
        out_h, out_w = int(size[0]), int(size[1])
        if not self.rles:
            return MaskCrops(torch.zeros(0, dtype=torch.uint8), torch.zeros((0, 4), dtype=torch.int64), size)
        windows, owner, r, c, bits = self._sampled(out_h, out_w)
        y0, x0, h, w = windows.T
        start = np.cumsum(h * w) - h * w
        values = np.zeros(int((h * w).sum()), dtype=np.uint8)
        values[start[owner] + (r - y0[owner]) * w[owner] + (c - x0[owner])] = bits
        return MaskCrops(torch.from_numpy(values), torch.from_numpy(windows), (out_h, out_w))

    def _decode_sampled(self, out_h: int, out_w: int) -> np.ndarray:
        out = np.zeros((len(self.rles), out_h, out_w), dtype=np.uint8)
        _, owner, r, c, bits = self._sampled(out_h, out_w)
        out.reshape(-1)[(owner * out_h + r) * out_w + c] = bits
        return out

    def _sampled(self, out_h: int, out_w: int) -> tuple[np.ndarray, ...]:
        """The output pixels the resize reads inside each mask's bounding box, and their values.

        Returns ``windows`` ``[N, 4]`` (first output row and column, rows, columns of each mask's
        window), then for every sampled pixel its mask, output row and column, and its bit."""
        height, width = self.height, self.width
        num = len(self.rles)
        rows = nearest_source_indices(height, out_h)
        cols = nearest_source_indices(width, out_w)
        runs, per_mask = rle_runs([_as_bytes(rle["counts"]) for rle in self.rles])
        mask_of_run = np.repeat(np.arange(num), per_mask)
        pixels = height * width
        # Column-major run ends, each mask offset by its index times the image size: one sorted array.
        ends = _segmented_cumsum(runs, mask_of_run) + mask_of_run * pixels
        first_end = np.cumsum(per_mask) - per_mask
        # Sampled rows/columns that fall inside each mask's own bounding box.
        x, y, w, h = mask_utils.toBbox(self.rles).astype(np.int64).T
        nonempty = (w > 0) & (h > 0)
        r_lo = np.searchsorted(rows, y, side="left")
        r_hi = np.searchsorted(rows, y + h - 1, side="right")
        c_lo = np.searchsorted(cols, x, side="left")
        c_hi = np.searchsorted(cols, x + w - 1, side="right")
        n_rows = np.where(nonempty, r_hi - r_lo, 0)
        n_cols = np.where(nonempty, c_hi - c_lo, 0)
        queries = n_rows * n_cols
        windows = np.stack([r_lo, c_lo, n_rows, n_cols], axis=1).astype(np.int64)
        windows[queries == 0] = 0
        total = int(queries.sum())
        mask = np.repeat(np.arange(num), queries)
        local = np.arange(total) - np.repeat(np.cumsum(queries) - queries, queries)
        rows_of_mask = n_rows[mask]
        r = r_lo[mask] + local % np.maximum(rows_of_mask, 1)
        c = c_lo[mask] + local // np.maximum(rows_of_mask, 1)
        position = cols[c] * height + rows[r] + mask * pixels
        inside = np.searchsorted(ends, position, side="right") - first_end[mask]
        return windows, mask, r, c, (inside & 1).astype(np.uint8)


def _as_bytes(counts: bytes | str) -> bytes:
    """Compressed RLE counts as bytes (pycocotools produces bytes, json files hold str)."""
    return counts.encode("ascii") if isinstance(counts, str) else counts
