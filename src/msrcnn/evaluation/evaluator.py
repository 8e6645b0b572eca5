"""The evaluator the LightningModule feeds: collects per-image records, evaluates once per epoch.

Correct under DDP: each rank converts its own shard of images (the data module shards without
padding), the records are gathered, rank 0 evaluates, and every rank receives the same results.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from msrcnn.evaluation.coco_eval import evaluate_records, load_coco_gt, to_coco_results
from msrcnn.evaluation.io import write_json_atomic
from msrcnn.evaluation.records import DetectionRecord, make_record


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class CocoEvaluator:
    """COCO evaluation of a detector's outputs on one annotated split.

    Args:
        ann_file: the split's COCO annotation file (ground truth; image ids and category ids).
        label_to_cat_id: model label -> the file's category id (entry 0 = background).
        max_dets: detections kept per image.
        per_class: also compute per-category mask AP.
    """

    def __init__(
        self,
        ann_file: str | os.PathLike,
        label_to_cat_id: Sequence[int],
        max_dets: int = 100,
        per_class: bool = False,
    ) -> None:
        self.ann_file = Path(ann_file)
        self.label_to_cat_id = list(label_to_cat_id)
        self.max_dets = max_dets
        self.per_class = per_class
        self._coco_gt = None
        self.records: list[DetectionRecord] = []
        self.all_records: list[DetectionRecord] = []

    @property
    def coco_gt(self):
        if self._coco_gt is None:
            self._coco_gt = load_coco_gt(str(self.ann_file))
        return self._coco_gt

    @property
    def has_annotations(self) -> bool:
        return bool(self.coco_gt.dataset.get("annotations"))

    def reset(self) -> None:
        self.records = []
        self.all_records = []

    def update(self, outputs: list[dict[str, torch.Tensor]], targets: list[dict[str, torch.Tensor]]) -> None:
        for output, target in zip(outputs, targets):
            image_id = int(target["image_id"])
            self.records.append(make_record(output, image_id, self.label_to_cat_id, self.max_dets))

    def gather(self) -> list[DetectionRecord]:
        """All ranks' records on rank 0 (an empty list elsewhere), sorted by image id."""
        rank, world = _world()
        if world == 1:
            return sorted(self.records, key=lambda r: r.image_id)
        shards: list[Any] = [None] * world if rank == 0 else None
        dist.gather_object(self.records, shards, dst=0)
        if rank != 0:
            return []
        return sorted((r for shard in shards for r in shard), key=lambda r: r.image_id)

    def compute(self) -> dict[str, Any]:
        """Evaluates on rank 0 and broadcasts; on a split without annotations only counts images."""
        rank, world = _world()
        records = self.gather()
        results: dict[str, Any] | None = None
        if rank == 0:
            self.all_records = records
            if self.has_annotations:
                results = evaluate_records(self.coco_gt, records, per_class=self.per_class)
            else:
                results = {"num_images": len(records), "num_detections": sum(len(r) for r in records)}
        if world > 1:
            box = [results]
            dist.broadcast_object_list(box, src=0)
            results = box[0]
        return results

    def write_detections(self, directory: str | os.PathLike) -> tuple[Path, Path]:
        """``detections_bbox.json`` and ``detections_segm.json`` (COCO results format, atomic)."""
        bbox, segm = to_coco_results(self.all_records, score="mask")
        directory = Path(directory)
        return (
            write_json_atomic(directory / "detections_bbox.json", bbox),
            write_json_atomic(directory / "detections_segm.json", segm),
        )
