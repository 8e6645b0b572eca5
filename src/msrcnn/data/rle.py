"""COCO RLEs of the data layer: segmentations encoded with pycocotools, compressed RLE strings validated.

:func:`encode_segmentations` turns checked polygons and RLEs into :class:`~msrcnn.data.masks.EncodedMasks`
(pycocotools encodes; the masks are decoded later at the size they are needed). :func:`rle_string_counts`
decodes a compressed RLE string in Python to check it at set-up: pycocotools' decoder does not
bounds-check, so a corrupt string would overrun its buffer instead of raising.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pycocotools import mask as mask_utils

from msrcnn.data.masks import EncodedMasks

__all__ = ["encode_segmentations", "rle_string_counts", "segmentation_to_rle"]


def rle_string_counts(counts: str) -> list[int]:
    """Decode COCO's compressed RLE string into run lengths (a port of pycocotools' ``rleFrString``).

    Used to validate compressed masks at set-up: pycocotools' decoder does not bounds-check, so a
    corrupt string would otherwise overrun its buffer instead of raising.
    """
    values: list[int] = []
    pos = 0
    while pos < len(counts):
        value, shift, more = 0, 0, True
        while more:
            if pos >= len(counts):
                raise ValueError("RLE string ends in the middle of a value")
            char = ord(counts[pos]) - 48
            if not 0 <= char < 64:
                raise ValueError(f"invalid character {counts[pos]!r} in RLE string")
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            pos += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(values) > 2:
            value += values[-2]
        values.append(value)
    return values


def segmentation_to_rle(segmentation: Any, height: int, width: int) -> dict[str, Any]:
    """One RLE for a validated segmentation: polygons are merged, uncompressed RLE is compressed."""
    if isinstance(segmentation, list):
        return mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    if isinstance(segmentation["counts"], list):
        return mask_utils.frPyObjects(segmentation, height, width)
    return segmentation


def encode_segmentations(segmentations: Sequence[Any], height: int, width: int) -> EncodedMasks:
    """Validated COCO segmentations as RLEs, decoded later at the size they are needed."""
    return EncodedMasks([segmentation_to_rle(seg, height, width) for seg in segmentations], height, width)
