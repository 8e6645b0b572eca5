"""W&B media after every evaluation, in W&B's own types: predictions, detections, Figures 2 and 5,
the AP tables and the run summary.

The module logs every AP itself (``val/bbox_AP``, ``val/segm_AP``, ``val/segm_cls_AP``,
``val/segm_oracle_AP``, ``val/maskiou_pearson``, ...; see :func:`~msrcnn.training.module.flatten_metrics`).
This callback adds, on rank 0, to the run's :class:`~lightning.pytorch.loggers.WandbLogger`
(keys under ``prefix``, ``val/`` by default):

* ``predictions``: ``log_images`` validation images as ``wandb.Image`` s with the predicted masks as
  a mask overlay (``masks=``, class labels) and boxes (``boxes=``) carrying each detection's class,
  class score, predicted MaskIoU and mask score (W&B's image panel toggles classes and filters
  boxes by score);
* ``detections``: a ``wandb.Table`` with one row per detection (image id, class, class score,
  predicted MaskIoU, GT MaskIoU, mask score), at most ``max_table_rows`` rows (evenly spaced
  over the split's detections when there are more);
* ``fig5_maskiou``: paper Figure 5, predicted vs GT MaskIoU, a ``wandb.plot.scatter`` of that table;
* ``fig2_class_score_vs_maskiou`` and ``fig2_mask_score_vs_maskiou``: paper Figure 2, the two
  rankings' scores vs GT MaskIoU (scatter plots of the same table);
* ``ap_table``: box AP and mask AP under the three rankings (a ``wandb.Table``);
* ``per_class_AP``: mask AP per class when the evaluator computes it (``per_class=True``);
* in the run summary: every AP (the three rankings, box), ``mask_scoring_gain`` (MS R-CNN mask AP
  minus the class-score ranking's), its 95% bootstrap interval ``mask_scoring_gain_low`` /
  ``_high`` (and ``oracle_headroom_AP`` / ``_low`` / ``_high``, flattened from the results) and
  ``maskiou_pearson``.

GT MaskIoU needs annotations and masks; the MaskIoU columns and Figure 5 need a MaskIoU head.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np

from msrcnn.evaluation import AP_KEYS, gt_mask_ious
from msrcnn.evaluation.plots import decode_rle, image_to_array, select_detections
from msrcnn.models import maskiou
from msrcnn.training.module import flatten_metrics

log = logging.getLogger("msrcnn.training")

RANKINGS = (
    ("bbox", "box (class score)"),
    ("segm_cls", "mask, Mask R-CNN (class score)"),
    ("segm", "mask, MS R-CNN (class x MaskIoU)"),
    ("segm_oracle", "mask, oracle (class x GT MaskIoU)"),
)
DETECTION_COLUMNS = ["image_id", "class", "class_score", "predicted_maskiou", "gt_maskiou", "mask_score"]


def _wandb_logger(trainer: L.Trainer):
    from lightning.pytorch.loggers import WandbLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


def summary_metrics(results: dict[str, Any], prefix: str = "val/") -> dict[str, float]:
    """The run summary: every AP and the Pearson r (flattened) and the mask scoring gain."""
    summary = flatten_metrics(results, prefix)
    segm, segm_cls = (results.get(k) or {} for k in ("segm", "segm_cls"))
    if results.get("maskiou_pearson") is not None or results.get("segm_oracle"):  # a MaskIoU head
        if segm.get("AP") is not None and segm_cls.get("AP") is not None:
            summary[f"{prefix}mask_scoring_gain"] = float(segm["AP"]) - float(segm_cls["AP"])
    return summary


def detection_rows(
    records, gt: list[np.ndarray] | None, class_names: dict[int, str], max_rows: int
) -> list[list[Any]]:
    """One row per detection (:data:`DETECTION_COLUMNS`), at most ``max_rows`` evenly spaced ones."""
    if not records:
        return []
    sizes = [len(r) for r in records]
    image_ids = np.repeat([r.image_id for r in records], sizes)
    labels = np.concatenate([r.labels for r in records]).astype(np.int64)
    scores = np.concatenate([r.scores for r in records]).astype(np.float64)
    has_maskiou = all(r.mask_ious is not None for r in records)
    predicted = np.concatenate([r.mask_ious for r in records]).astype(np.float64) if has_maskiou else None
    mask_scores = maskiou.mask_scores(scores, predicted)
    gt_iou = np.concatenate(gt).astype(np.float64) if gt is not None else None
    keep = np.arange(len(scores))
    if len(keep) > max_rows:
        keep = np.unique(np.linspace(0, len(scores) - 1, max_rows).round().astype(np.int64))
    names = [class_names.get(int(c), str(int(c))) for c in labels[keep].tolist()]
    columns = [
        image_ids[keep].tolist(),
        names,
        np.round(scores[keep], 4).tolist(),
        np.round(predicted[keep], 4).tolist() if predicted is not None else [None] * len(keep),
        np.round(gt_iou[keep], 4).tolist() if gt_iou is not None else [None] * len(keep),
        np.round(mask_scores[keep], 4).tolist(),
    ]
    return [list(row) for row in zip(*columns)]


def prediction_overlays(
    size: tuple[int, int], record, class_index: dict[int, int], class_labels: dict[int, str], chosen
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``masks=`` and ``boxes=`` of a ``wandb.Image`` showing the ``chosen`` detections.

    The mask overlay is one class-id map (the best-scored instance wins where masks overlap);
    each box carries its class id, a caption and the class score, predicted MaskIoU and mask score.
    """
    height, width = size
    labels = [class_index.get(int(record.labels[i]), 0) for i in chosen]
    masks: dict[str, Any] = {}
    if record.rles is not None and len(chosen):
        stack = np.stack([decode_rle(record.rles[i]) for i in chosen])  # best mask score first
        if stack.shape[1:] == (height, width) and max(labels) < 256:  # 8-bit mask PNGs
            first = stack.argmax(axis=0)  # the best-scored instance covering each pixel
            label_map = np.where(stack.any(axis=0), np.asarray(labels)[first], 0).astype(np.uint8)
            masks["predictions"] = {"mask_data": label_map, "class_labels": class_labels}
    boxes = []
    for k, i in enumerate(chosen):
        x0, y0, x1, y1 = (float(v) for v in record.boxes[i])
        scores = {"class_score": float(record.scores[i]), "mask_score": float(record.mask_scores[i])}
        caption = f"{class_labels.get(labels[k], '?')} cls {scores['class_score']:.2f}"
        if record.mask_ious is not None:
            scores["maskiou"] = float(record.mask_ious[i])
            caption += f" MaskIoU {scores['maskiou']:.2f} mask {scores['mask_score']:.2f}"
        boxes.append(
            {
                "position": {"minX": x0, "minY": y0, "maxX": x1, "maxY": y1},
                "domain": "pixel",
                "class_id": labels[k],
                "box_caption": caption,
                "scores": scores,
            }
        )
    return masks, {"predictions": {"box_data": boxes, "class_labels": class_labels}}


def prediction_image(image, record, class_index: dict[int, int], class_labels: dict[int, str], chosen):
    """A ``wandb.Image`` of ``image`` with :func:`prediction_overlays`."""
    import wandb

    pixels = image_to_array(image)
    masks, boxes = prediction_overlays(pixels.shape[:2], record, class_index, class_labels, chosen)
    caption = f"image {record.image_id}: {len(chosen)} of {len(record)} detections"
    return wandb.Image(pixels, masks=masks or None, boxes=boxes, caption=caption)


class WandbMedia(L.Callback):
    """Logs evaluation media to the trainer's ``WandbLogger`` after each evaluation (no-op without one).

    Args:
        log_images: validation images drawn with their predictions (``logger.log_images``).
        max_instances: detections drawn per image (best mask score first).
        min_score: detections with a lower mask score are not drawn...
        min_instances: ...except the best ``min_instances`` of each image (early in training).
        max_table_rows: rows of the detections table (W&B logs at most 10000 per table).
        prefix: of the keys, ``val/`` (``src/eval.py`` on the test split: ``test/``).
    """

    def __init__(
        self,
        log_images: int = 4,
        max_instances: int = 10,
        min_score: float = 0.05,
        min_instances: int = 3,
        max_table_rows: int = 10000,
        prefix: str = "val/",
    ) -> None:
        self.log_images = int(log_images)
        self.max_instances = int(max_instances)
        self.min_score = float(min_score)
        self.min_instances = int(min_instances)
        self.max_table_rows = int(max_table_rows)
        self.prefix = prefix

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the module's on_validation_epoch_end (callbacks run before the module in that hook).
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        logger = _wandb_logger(trainer)
        results = getattr(pl_module, "last_results", None)
        evaluator = getattr(pl_module, "evaluator", None)
        if logger is None or not results or evaluator is None:
            return
        try:
            self.log_media(trainer, logger, results, evaluator)
        except Exception as err:  # noqa: BLE001 - media must never cost a training run
            log.warning("W&B media not logged: %s: %s", type(err).__name__, err)

    on_test_end = on_validation_end

    def log_media(self, trainer: L.Trainer, logger, results: dict[str, Any], evaluator) -> None:
        import wandb

        p = self.prefix
        logger.experiment.summary.update(summary_metrics(results, p))
        media: dict[str, Any] = {}
        rows = [
            [label, *[(results.get(key) or {}).get(m) for m in AP_KEYS]]
            for key, label in RANKINGS
            if results.get(key)
        ]
        if rows:
            media[f"{p}ap_table"] = wandb.Table(columns=["ranking", *AP_KEYS], data=rows)
        per_class = results.get("segm_per_class")
        if per_class:
            media[f"{p}per_class_AP"] = wandb.Table(
                columns=["class", "segm_AP"], data=[[name, ap] for name, ap in per_class.items()]
            )
        records = list(getattr(evaluator, "all_records", []) or [])
        if records:
            class_names = self._class_names(evaluator)
            if self.log_images > 0:
                images = self._prediction_images(trainer, records, class_names)
                if images:
                    media[f"{p}predictions"] = images
            media |= self._detections(records, evaluator, class_names)
        if media:
            logger.log_metrics(media, step=trainer.global_step)

    def _detections(self, records, evaluator, class_names: dict[int, str]) -> dict[str, Any]:
        import wandb

        p = self.prefix
        with_gt = evaluator.has_annotations and all(r.rles is not None for r in records)
        gt = gt_mask_ious(evaluator.coco_gt, records) if with_gt else None
        rows = detection_rows(records, gt, class_names, self.max_table_rows)
        if not rows:
            return {}
        table = wandb.Table(columns=DETECTION_COLUMNS, data=rows)
        out: dict[str, Any] = {f"{p}detections": table}
        if gt is None:
            return out
        out[f"{p}fig2_class_score_vs_maskiou"] = wandb.plot.scatter(
            table, "gt_maskiou", "class_score", title="Figure 2: class score vs GT MaskIoU"
        )
        if all(r.mask_ious is not None for r in records):
            out[f"{p}fig2_mask_score_vs_maskiou"] = wandb.plot.scatter(
                table, "gt_maskiou", "mask_score", title="Figure 2: mask score vs GT MaskIoU"
            )
            out[f"{p}fig5_maskiou"] = wandb.plot.scatter(
                table, "gt_maskiou", "predicted_maskiou", title="Figure 5: predicted vs GT MaskIoU"
            )
        return out

    @staticmethod
    def _class_names(evaluator) -> dict[int, str]:
        try:
            return {int(c["id"]): str(c["name"]) for c in evaluator.coco_gt.dataset.get("categories", [])}
        except Exception:  # noqa: BLE001 - names are cosmetic
            return {}

    def _prediction_images(self, trainer: L.Trainer, records, class_names: dict[int, str]) -> list:
        dataset = getattr(getattr(trainer, "datamodule", None), "val_dataset", None)
        if dataset is None:
            return []
        index_of = {int(image_id): k for k, image_id in enumerate(np.asarray(dataset.image_ids).tolist())}
        chosen = [r for r in records if len(r) and r.image_id in index_of][: self.log_images]
        # mask and box class ids: 1..N in the category order (W&B masks are 8-bit; 0 is background)
        ids = sorted(class_names) or sorted({int(c) for r in chosen for c in r.labels.tolist()})
        class_index = {cat_id: k + 1 for k, cat_id in enumerate(ids)}
        class_labels = {0: "background", **{k: class_names.get(c, str(c)) for c, k in class_index.items()}}
        images = []
        for record in chosen:
            image, _ = dataset[index_of[record.image_id]]
            shown = select_detections(record, self.max_instances, self.min_score, self.min_instances)
            images.append(prediction_image(image, record, class_index, class_labels, shown))
        return images
