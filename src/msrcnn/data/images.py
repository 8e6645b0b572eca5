"""Image decoding: any PIL-readable file becomes a float32 [3, H, W] tensor in [0, 1].

Real datasets mix grayscale, palette, RGBA, 16-bit and EXIF-rotated JPEG files; everything is
normalised here so the rest of the pipeline only ever sees 3-channel images whose size matches the
annotation file (COCO's width/height describe the displayed, i.e. EXIF-transposed, image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from msrcnn.data.errors import DataError

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I"})


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Convert a decoded PIL image of any mode to an ``uint8`` array of shape (H, W, 3)."""
    if img.mode in _SIXTEEN_BIT_MODES:
        # 16-bit (and 32-bit integer) grayscale: map the 0..65535 range onto 0..255.
        wide = np.asarray(img, dtype=np.float32)
        gray = np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        # Going through RGBA avoids PIL's warning about palette transparency; alpha is then dropped.
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")
    return np.array(img, dtype=np.uint8)


def read_image(path: str | Path, image_id: int, expected_hw: tuple[int, int] | None = None) -> torch.Tensor:
    """Read ``path`` as a float32 [3, H, W] tensor in [0, 1], EXIF orientation applied.

    ``expected_hw`` is the (height, width) the annotation file declares; a mismatch raises
    :class:`DataError` because boxes and masks would not line up with the pixels.
    """
    try:
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            array = _to_rgb_array(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image (image id {image_id}): {exc}") from exc
    height, width = array.shape[:2]
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        raise DataError(
            f"{path}: image id {image_id} is {width}x{height} (width x height) on disk but the "
            f"annotation file says {expected_hw[1]}x{expected_hw[0]}"
        )
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)
