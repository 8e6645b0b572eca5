"""The detector's input size chosen from the data: image sizes and the distribution of object sizes.

A fixed input size cannot suit every dataset: 160 px is right for the 160 px shapes, but turns 20 px
nuclei of a 700 x 1100 microscopy image into 3 px ones. :func:`choose_input_size` picks the short side
that brings the small objects (the ``small_object_quantile`` of ``sqrt(box area)``) to about
``small_object_px`` at the input, within ``[min_short_side, max_short_side]`` (the compute budget),
and a long-side cap that fits most images' aspect ratio. :meth:`InputSizeChoice.report` says what was
measured and chosen, and warns when the budget leaves small objects too small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["InputSizeChoice", "choose_input_size"]

_PERCENTILES = (5, 25, 50, 75, 95)


@dataclass(frozen=True)
class InputSizeChoice:
    """The chosen ``min_size`` / ``max_size`` and the statistics they came from."""

    min_size: int
    max_size: int
    images: int
    median_height: float
    median_width: float
    object_percentiles: dict[int, float]  # percentile -> sqrt(box area) in original pixels
    small_object: float  # the small_object_quantile's size, original pixels
    scale: float  # input / original for the median image
    small_object_px: float
    capped: bool  # the budget kept the small objects below small_object_px

    def report(self) -> list[str]:
        """Human-readable lines: printed when a run starts."""
        sizes = ", ".join(f"p{p} {v:.1f}" for p, v in self.object_percentiles.items())
        at_input = ", ".join(f"p{p} {v * self.scale:.1f}" for p, v in self.object_percentiles.items())
        lines = [
            f"input size from the data: {self.images} training images, median {self.median_height:.0f}x"
            f"{self.median_width:.0f} px (height x width)",
            f"  object size sqrt(box area) in px: {sizes}" if self.object_percentiles else "  no objects",
            f"  chosen: model.min_size=[{self.min_size}] model.max_size={self.max_size} "
            f"(x{self.scale:.3g} for the median image); objects at the input: {at_input}",
        ]
        if self.capped:
            lines.append(
                f"  warning: the short-side budget keeps small objects at {self.small_object * self.scale:.1f} px, "
                f"under the {self.small_object_px:g} px aimed at; raise data.auto_input_size.max_short_side "
                "(slower steps) or train on a GPU (experiment=custom_gpu)"
            )
        return lines


def choose_input_size(
    image_sizes: np.ndarray,
    object_sizes: np.ndarray,
    *,
    small_object_px: float = 16.0,
    small_object_quantile: float = 0.1,
    min_short_side: int = 128,
    max_short_side: int = 800,
    size_divisor: int = 32,
) -> InputSizeChoice:
    """Pick the input size for ``image_sizes`` (``[N, 2]`` heights, widths) and ``object_sizes``
    (``sqrt(box area)`` of every training instance, original pixels).

    The short side brings the median image's ``small_object_quantile`` object to ``small_object_px``,
    rounded to ``size_divisor`` and clipped to ``[min_short_side, max_short_side]``; ``max_size`` lets
    90 % of the images keep that short side (their long/short ratio), rounded up to ``size_divisor``.
    """
    sizes = np.asarray(image_sizes, dtype=np.float64).reshape(-1, 2)
    objects = np.asarray(object_sizes, dtype=np.float64).reshape(-1)
    if len(sizes) == 0:
        raise ValueError("no training images to choose an input size from")
    if not 0.0 <= small_object_quantile <= 1.0:
        raise ValueError(f"small_object_quantile must be in [0, 1], got {small_object_quantile}")
    if not 0 < min_short_side <= max_short_side:
        raise ValueError(f"need 0 < min_short_side <= max_short_side, got {min_short_side}, {max_short_side}")
    if small_object_px <= 0 or size_divisor <= 0:
        raise ValueError(
            f"small_object_px and size_divisor must be positive, got {small_object_px}, {size_divisor}"
        )
    short = sizes.min(axis=1)
    long = sizes.max(axis=1)
    median_short = float(np.median(short))
    small = float(np.quantile(objects, small_object_quantile)) if objects.size else median_short
    wanted = median_short * small_object_px / small
    short_side = int(round(wanted / size_divisor)) * size_divisor
    short_side = int(min(max(short_side, min_short_side), max_short_side))
    aspect = float(np.quantile(long / short, 0.9))
    max_size = int(math.ceil(short_side * aspect / size_divisor)) * size_divisor
    median_h, median_w = (float(v) for v in np.median(sizes, axis=0))
    median_long = float(np.median(long))
    scale = min(short_side / median_short, max_size / median_long)
    percentiles = (
        {p: float(v) for p, v in zip(_PERCENTILES, np.percentile(objects, _PERCENTILES))}
        if objects.size
        else {}
    )
    return InputSizeChoice(
        min_size=short_side,
        max_size=max_size,
        images=len(sizes),
        median_height=median_h,
        median_width=median_w,
        object_percentiles=percentiles,
        small_object=small,
        scale=scale,
        small_object_px=float(small_object_px),
        capped=bool(objects.size) and small * scale < 0.8 * small_object_px,
    )
