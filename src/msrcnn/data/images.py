"""Image decoding: any PIL-readable file becomes a float32 [3, H, W] tensor in [0, 1].

Real datasets mix grayscale, palette, RGBA, 16-bit and EXIF-rotated JPEG files; everything is
normalised here so the rest of the pipeline only ever sees 3-channel images whose size matches the
annotation file (COCO's width/height describe the displayed, i.e. EXIF-transposed, image).

* :func:`read_image`: the one decoder of image files (the datasets, and through
  :func:`to_image_tensor` ``msrcnn.Predictor``, ``src/predict.py`` and ``src/export.py``).
* :func:`to_image_tensor`: any image a user hands over (a file path, a PIL image, an array, a
  tensor) as the same tensor; files go through :func:`read_image`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from msrcnn.data.errors import DataError

__all__ = ["ImageInput", "read_image", "to_image_tensor"]

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

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


def _to_tensor(array: np.ndarray) -> torch.Tensor:
    """``uint8 [H, W, 3]`` -> ``float32 [3, H, W]`` in [0, 1]."""
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def read_image(
    path: str | os.PathLike,
    image_id: int | None = None,
    expected_hw: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Read ``path`` as a float32 [3, H, W] tensor in [0, 1], EXIF orientation applied.

    A file that is missing, unreadable or not an image raises :class:`DataError`
    (``<path>: cannot read image (image id <image_id>): <reason>``; ``image_id`` names the
    dataset's image, when there is one). ``expected_hw`` is the (height, width) the annotation file
    declares; a mismatch raises :class:`DataError` because boxes and masks would not line up with
    the pixels.
    """
    where = "" if image_id is None else f" (image id {image_id})"
    try:
        with Image.open(path) as img:
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            array = _to_rgb_array(img)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataError(f"{path}: cannot read image{where}: {exc}") from exc
    height, width = array.shape[:2]
    if expected_hw is not None and (height, width) != tuple(expected_hw):
        raise DataError(
            f"{path}: image id {image_id} is {width}x{height} (width x height) on disk but the "
            f"annotation file says {expected_hw[1]}x{expected_hw[0]}"
        )
    return _to_tensor(array)


def to_image_tensor(image: ImageInput) -> torch.Tensor:
    """``float32 [3, H, W]`` in [0, 1] of a file path (read by :func:`read_image`; a missing file
    raises ``FileNotFoundError``), a PIL image (any mode, as :func:`read_image` converts it), an
    ``HxWxC`` (or ``HxW``) uint8 array or a ``CxHxW`` tensor (float in [0, 1], or uint8); 1 or 4
    channels become RGB."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise FileNotFoundError(f"image not found: {path}")
        return read_image(path)
    if isinstance(image, Image.Image):
        return _to_tensor(_to_rgb_array(image))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise TypeError(f"a NumPy image must be uint8 HxWxC (or HxW), got dtype {image.dtype}")
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
            raise ValueError(f"a NumPy image must be HxWxC with C in 1, 3, 4, got shape {image.shape}")
        tensor = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1)
        return _three_channels(tensor.float().div_(255.0))
    if isinstance(image, torch.Tensor):
        if image.dim() != 3 or image.shape[0] not in (1, 3, 4):
            raise ValueError(
                f"a tensor image must be CxHxW with C in 1, 3, 4, got shape {tuple(image.shape)}"
            )
        if image.dtype == torch.uint8:
            image = image.float().div(255.0)
        elif not image.is_floating_point():
            raise TypeError(f"a tensor image must be float in [0, 1] or uint8, got {image.dtype}")
        return _three_channels(image.float())
    raise TypeError(
        f"cannot use a {type(image).__name__} as an image: give a file path, a PIL image, an HxWxC uint8 "
        "array or a CxHxW float tensor"
    )


def _three_channels(image: torch.Tensor) -> torch.Tensor:
    if image.shape[0] == 1:
        return image.expand(3, -1, -1)
    return image[:3]
