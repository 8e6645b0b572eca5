"""W&B media after every evaluation: predictions on validation images, the paper's Figures 2 and 5,
the AP table and per-class AP.

The module logs every AP itself (``val/bbox_AP``, ``val/segm_AP``, ``val/segm_cls_AP``,
``val/segm_oracle_AP``, ``val/maskiou_pearson``, ...; see :func:`~msrcnn.training.module.flatten_metrics`).
This callback adds, on rank 0, to the run's :class:`~lightning.pytorch.loggers.WandbLogger`:

* ``val/predictions``: ``num_images`` validation images with the predicted masks, class score,
  predicted MaskIoU and mask score drawn, and listed in the caption;
* ``val/fig5_maskiou``: predicted vs GT MaskIoU (paper Figure 5), with the Pearson r;
* ``val/fig2_score_vs_maskiou``: class score and mask score vs GT MaskIoU (paper Figure 2);
* ``val/ap_table``: box AP and mask AP under the three rankings (a ``wandb.Table``);
* ``val/per_class_AP``: mask AP per class when the evaluator computes it (``per_class=True``);
* the final APs in the run summary.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import numpy as np

from msrcnn.evaluation import AP_KEYS, gt_mask_ious
from msrcnn.evaluation.plots import (
    detection_caption,
    draw_detections,
    figure_to_array,
    maskiou_scatter,
    score_vs_maskiou,
)
from msrcnn.training.module import flatten_metrics

log = logging.getLogger("msrcnn.training")

RANKINGS = (
    ("bbox", "box (class score)"),
    ("segm_cls", "mask, Mask R-CNN (class score)"),
    ("segm", "mask, MS R-CNN (class x MaskIoU)"),
    ("segm_oracle", "mask, oracle (class x GT MaskIoU)"),
)


def _wandb_logger(trainer: L.Trainer):
    from lightning.pytorch.loggers import WandbLogger

    return next((lg for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)


class WandbMedia(L.Callback):
    """Logs validation media to the trainer's ``WandbLogger`` after each evaluation (no-op without one).

    Args:
        num_images: validation images drawn with their predictions (``logger.log_images``).
        max_instances: detections drawn per image (best mask score first).
        min_score: detections with a lower mask score are not drawn...
        min_instances: ...except the best ``min_instances`` of each image (early in training).
    """

    def __init__(
        self, num_images: int = 4, max_instances: int = 10, min_score: float = 0.05, min_instances: int = 3
    ) -> None:
        self.num_images = int(num_images)
        self.max_instances = int(max_instances)
        self.min_score = float(min_score)
        self.min_instances = int(min_instances)

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

    def log_media(self, trainer: L.Trainer, logger, results: dict[str, Any], evaluator) -> None:
        records = list(getattr(evaluator, "all_records", []) or [])
        step = trainer.global_step
        summary = flatten_metrics(results)
        logger.experiment.summary.update(summary)
        rows = [
            [label, *[(results.get(key) or {}).get(m) for m in AP_KEYS]]
            for key, label in RANKINGS
            if results.get(key)
        ]
        if rows:
            logger.log_table(key="val/ap_table", columns=["ranking", *AP_KEYS], data=rows)
        per_class = results.get("segm_per_class")
        if per_class:
            logger.log_table(
                key="val/per_class_AP",
                columns=["class", "segm_AP"],
                data=[[name, ap] for name, ap in per_class.items()],
            )
        if not records:
            return
        class_names = self._class_names(evaluator)
        if self.num_images > 0:
            self._log_predictions(trainer, logger, records, class_names)
        if all(r.mask_ious is not None and r.rles is not None for r in records) and evaluator.has_annotations:
            gt = np.concatenate(gt_mask_ious(evaluator.coco_gt, records)) if records else np.zeros(0)
            predicted = np.concatenate([r.mask_ious for r in records])
            scores = np.concatenate([r.scores for r in records])
            mask_scores = np.concatenate([r.mask_scores for r in records])
            logger.log_image(
                key="val/fig5_maskiou",
                images=[figure_to_array(maskiou_scatter(predicted, gt))],
                caption=[f"step {step}: predicted vs GT MaskIoU (paper Figure 5)"],
            )
            logger.log_image(
                key="val/fig2_score_vs_maskiou",
                images=[figure_to_array(score_vs_maskiou(scores, gt, mask_scores))],
                caption=[f"step {step}: score vs GT MaskIoU (paper Figure 2)"],
            )

    @staticmethod
    def _class_names(evaluator) -> dict[int, str]:
        try:
            return {int(c["id"]): str(c["name"]) for c in evaluator.coco_gt.dataset.get("categories", [])}
        except Exception:  # noqa: BLE001 - names are cosmetic
            return {}

    def _log_predictions(self, trainer: L.Trainer, logger, records, class_names: dict[int, str]) -> None:
        dataset = getattr(getattr(trainer, "datamodule", None), "val_dataset", None)
        if dataset is None:
            return
        index_of = {int(image_id): k for k, image_id in enumerate(np.asarray(dataset.image_ids).tolist())}
        chosen = [r for r in records if len(r) and r.image_id in index_of][: self.num_images]
        images, captions = [], []
        for record in chosen:
            image, _ = dataset[index_of[record.image_id]]
            shown = (self.max_instances, self.min_score, self.min_instances)
            fig = draw_detections(image, record, class_names, *shown, title=f"image {record.image_id}")
            images.append(figure_to_array(fig))
            caption = detection_caption(record, class_names, *shown)
            captions.append(f"image {record.image_id}\n{caption}")
        if images:
            logger.log_image(key="val/predictions", images=images, caption=captions)
