"""torchvision's ``MultiScaleRoIAlign`` with one host sync per call on a GPU instead of one per level.

torchvision assigns each RoI to an FPN level, then for every level selects its RoIs with
``torch.where(levels == level)`` (a host sync each) and pools them. The GPU variant sorts the RoIs
by level, reads the per-level counts once, pools each level's contiguous slice and scatters the
results back: the same ``roi_align`` calls on the same RoIs, so the same output. The CPU runs
torchvision's forward. See :mod:`msrcnn.ops.gpu_paths`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign as _TorchvisionMultiScaleRoIAlign
from torchvision.ops import roi_align
from torchvision.ops.poolers import LevelMapper

from msrcnn.ops.gpu_paths import use_gpu_paths

__all__ = ["MultiScaleRoIAlign"]


def _rois(boxes: list[Tensor]) -> Tensor:
    """``[K, 5]`` RoIs ``(image index, x1, y1, x2, y2)`` of per-image box lists."""
    concat = torch.cat(boxes, dim=0)
    ids = torch.cat([torch.full_like(b[:, :1], i) for i, b in enumerate(boxes)], dim=0)
    return torch.cat([ids, concat], dim=1)


def _scale(feature: Tensor, image_size: tuple[int, int]) -> float:
    """The power of two nearest to feature height / image height (torchvision's ``_infer_scale``)."""
    return 2.0 ** round(math.log2(float(feature.shape[-2]) / float(image_size[0])))


class MultiScaleRoIAlign(_TorchvisionMultiScaleRoIAlign):
    """``torchvision.ops.MultiScaleRoIAlign`` (same arguments, no parameters, same outputs)."""

    @classmethod
    def from_pooler(cls, pooler: _TorchvisionMultiScaleRoIAlign) -> MultiScaleRoIAlign:
        """The same pooler (feature maps, output size, sampling ratio, canonical scale and level)."""
        return cls(
            list(pooler.featmap_names),
            pooler.output_size,
            pooler.sampling_ratio,
            canonical_scale=pooler.canonical_scale,
            canonical_level=pooler.canonical_level,
        )

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        features = [v for k, v in x.items() if k in self.featmap_names]
        if not use_gpu_paths(features[0].device):
            return super().forward(x, boxes, image_shapes)
        if self.scales is None or self.map_levels is None:
            largest = (max(s[0] for s in image_shapes), max(s[1] for s in image_shapes))
            self.scales = [_scale(f, largest) for f in features]
            self.map_levels = LevelMapper(
                int(-math.log2(self.scales[0])),
                int(-math.log2(self.scales[-1])),
                canonical_scale=self.canonical_scale,
                canonical_level=self.canonical_level,
            )
        rois = _rois(boxes)
        if len(features) == 1:
            return roi_align(features[0], rois, self.output_size, self.scales[0], self.sampling_ratio)
        levels = self.map_levels(boxes)
        order = torch.argsort(levels, stable=True)
        per_level = torch.zeros(len(features), dtype=torch.int64, device=levels.device)
        counts = per_level.index_add_(0, levels, torch.ones_like(levels)).tolist()  # the one host sync
        sorted_rois = rois.index_select(0, order)
        pooled, start = [], 0
        for feature, scale, count in zip(features, self.scales, counts):
            if count:
                part = sorted_rois[start : start + count]
                pooled.append(roi_align(feature, part, self.output_size, scale, self.sampling_ratio))
            start += count
        dtype = features[0].dtype
        result = torch.empty(
            (rois.shape[0], features[0].shape[1], *self.output_size), dtype=dtype, device=rois.device
        )
        if pooled:
            result[order] = torch.cat([p.to(dtype) for p in pooled])
        return result
