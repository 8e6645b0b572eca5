"""WandbMedia: validation images, detections, Figures 2 and 5, the AP tables and the APs, in W&B's own types."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import wandb

from exp_helpers import record, tiny_wandb_run
from msrcnn.evaluation import load_coco_gt
from msrcnn.evaluation.plots import select_detections
from msrcnn.training.media import WandbMedia, detection_rows, prediction_overlays
from wandb_offline import read_offline_run


class FakeLogger:
    """What WandbMedia hands to Lightning's WandbLogger: ``log_metrics`` and the run summary."""

    def __init__(self):
        self.logged, self.steps = {}, []
        self.experiment = SimpleNamespace(summary={})

    def log_metrics(self, metrics, step=None):
        self.logged.update(metrics)
        self.steps.append(step)


# the detections table that the Figure 2 and 5 scatter plots are drawn from
DETECTION_COLUMNS = ["image_id", "class", "class_score", "predicted_maskiou", "gt_maskiou", "mask_score"]


def ground_truth(rec):
    return load_coco_gt(
        {
            "images": [{"id": rec.image_id, "file_name": "a.png", "width": 48, "height": 48}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": rec.image_id,
                    "category_id": 3,
                    "bbox": [4, 4, 16, 16],
                    "area": 256,
                    "iscrowd": 0,
                    "segmentation": rec.rles[0],
                }
            ],
            "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
        }
    )


def test_log_media_logs_wandb_images_tables_and_plots():
    rec = record(image_id=4)
    evaluator = SimpleNamespace(all_records=[rec], coco_gt=ground_truth(rec), has_annotations=True)
    dataset = type(
        "Dataset",
        (),
        {"image_ids": np.array([4]), "__getitem__": lambda self, i: (torch.rand(3, 48, 48), {})},
    )()
    trainer = SimpleNamespace(global_step=7, datamodule=SimpleNamespace(val_dataset=dataset))
    ap = {"AP": 50.0, "AP50": 60.0, "AP75": 40.0, "APs": None, "APm": 1.0, "APl": 2.0}
    results = {
        "bbox": ap,
        "segm": ap,
        "segm_cls": {**ap, "AP": 48.5},
        "segm_oracle": ap,
        "maskiou_pearson": 0.7,
        "num_images": 1,
        "num_detections": 3,
        "segm_per_class": {"cat": 50.0, "dog": None},
    }
    logger = FakeLogger()
    WandbMedia(log_images=2, min_score=0.0).log_media(trainer, logger, results, evaluator)
    logged = logger.logged
    assert logger.steps == [7]
    assert set(logged) == {
        f"val/{k}"
        for k in (
            "predictions",
            "detections",
            "fig2_class_score_vs_maskiou",
            "fig2_mask_score_vs_maskiou",
            "fig5_maskiou",
            "ap_table",
            "per_class_AP",
        )
    }

    # the predictions: wandb.Images with the masks as an overlay and the boxes with their scores
    (image,) = logged["val/predictions"]
    assert isinstance(image, wandb.Image) and image._masks and image._boxes
    class_labels = {0: "background", 1: "cat", 2: "dog"}
    chosen = select_detections(rec)
    masks, boxes = prediction_overlays((48, 48), rec, {3: 1, 7: 2}, class_labels, chosen)
    assert masks["predictions"]["class_labels"] == class_labels
    label_map = masks["predictions"]["mask_data"]
    assert label_map.shape == (48, 48) and set(np.unique(label_map)) == {0, 1, 2}
    assert label_map[10, 10] == 1 and label_map[30, 20] == 2 and label_map[40, 40] == 1
    box_data = boxes["predictions"]["box_data"]
    assert [b["class_id"] for b in box_data] == [1, 2, 1]  # best mask score first: 0.81, 0.40, 0.03
    assert box_data[0]["position"] == {"minX": 4.0, "minY": 4.0, "maxX": 20.0, "maxY": 20.0}
    assert box_data[0]["scores"] == pytest.approx({"class_score": 0.9, "maskiou": 0.9, "mask_score": 0.81})
    assert box_data[0]["box_caption"] == "cat cls 0.90 MaskIoU 0.90 mask 0.81"
    # overlapping masks: the better-scored instance is shown
    both = prediction_overlays((48, 48), rec, {3: 1, 7: 2}, class_labels, np.array([1, 0]))[0]
    assert both["predictions"]["mask_data"][10, 10] == 1

    # the detections table, which the Figure 2 and 5 scatter plots are drawn from
    table = logged["val/detections"]
    assert isinstance(table, wandb.Table)
    assert table.columns == DETECTION_COLUMNS
    rows = {row[1] + str(row[2]): row for row in table.data}
    assert rows["cat0.9"] == [4, "cat", 0.9, 0.9, 1.0, 0.81]  # the GT instance is detection 0's mask
    assert rows["dog0.8"][4] == 0.0 and rows["cat0.3"][4] == 0.0  # no GT of their class / no overlap
    fig5 = logged["val/fig5_maskiou"]
    assert fig5.table is table or fig5.table.data == table.data
    assert fig5.spec.fields == {"x": "gt_maskiou", "y": "predicted_maskiou"}
    assert logged["val/fig2_mask_score_vs_maskiou"].spec.fields == {"x": "gt_maskiou", "y": "mask_score"}

    ap_table = logged["val/ap_table"]
    assert (
        ap_table.columns == ["ranking", "AP", "AP50", "AP75", "APs", "APm", "APl"] and len(ap_table.data) == 4
    )
    assert logged["val/per_class_AP"].data == [["cat", 50.0], ["dog", None]]
    summary = logger.experiment.summary
    assert summary["val/segm_AP"] == 50.0 and summary["val/segm_cls_AP"] == 48.5
    assert summary["val/segm_oracle_AP"] == 50.0 and summary["val/maskiou_pearson"] == 0.7
    assert summary["val/mask_scoring_gain"] == pytest.approx(1.5)


def test_the_detections_table_is_capped_evenly():
    records = [record(image_id=i) for i in range(10)]  # 30 detections
    rows = detection_rows(records, None, {3: "cat", 7: "dog"}, max_rows=7)
    assert len(rows) == 7 and rows[0][0] == 0 and rows[-1][0] == 9  # first and last image kept
    assert all(row[4] is None for row in rows)  # no GT MaskIoU without annotations
    assert len(detection_rows(records, None, {}, max_rows=100)) == 30


def test_plain_mask_rcnn_gets_no_maskiou_figures():
    rec = record(mask_ious=None)
    evaluator = SimpleNamespace(all_records=[rec], coco_gt=ground_truth(rec), has_annotations=True)
    trainer = SimpleNamespace(global_step=1, datamodule=None)
    logger = FakeLogger()
    WandbMedia().log_media(trainer, logger, {"segm": {"AP": 1.0}, "segm_cls": {"AP": 1.0}}, evaluator)
    assert set(logger.logged) == {"val/ap_table", "val/detections", "val/fig2_class_score_vs_maskiou"}
    assert {row[3] for row in logger.logged["val/detections"].data} == {None}  # no predicted MaskIoU
    assert "val/mask_scoring_gain" not in logger.experiment.summary  # no MaskIoU head, no gain


@pytest.mark.slow
def test_training_with_the_wandb_logger_writes_the_media(tmp_path_factory, shapes_dir):
    out = tiny_wandb_run(tmp_path_factory, shapes_dir)
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    media = run_dir / "files" / "media"
    names = sorted(p.name for p in media.rglob("*") if p.is_file())
    for prefix, suffix in (
        ("predictions_", ".png"),
        ("detections_", ".table.json"),
        ("ap_table_", ".table.json"),
        ("per_class_AP_", ".table.json"),
    ):
        assert any(n.startswith(prefix) and n.endswith(suffix) for n in names), (prefix, names)
    assert len(list((media / "images" / "val").glob("predictions_*.png"))) == 4  # logger.log_images
    assert list((media / "images" / "mask").rglob("*.png"))  # the predicted masks' overlays (under val/)
    per_class = json.loads(next((media / "table" / "val").glob("per_class_AP_*.table.json")).read_text())
    assert per_class["columns"] == ["class", "segm_AP"] and len(per_class["data"]) == 6  # the 6 shapes
    detections = json.loads(next((media / "table" / "val").glob("detections_*.table.json")).read_text())
    assert detections["columns"] == DETECTION_COLUMNS
    run = read_offline_run(run_dir)
    results = json.loads((out / "results.json").read_text())
    assert "segm_per_class" in results
    for ranking in ("bbox", "segm", "segm_cls", "segm_oracle"):
        assert run.summary[f"val/{ranking}_AP"] == pytest.approx(results[ranking]["AP"])
    assert run.summary["val/maskiou_pearson"] == pytest.approx(results["maskiou_pearson"])
    assert run.summary["val/predictions"]["count"] == 4
    for figure in ("fig5_maskiou", "fig2_class_score_vs_maskiou", "fig2_mask_score_vs_maskiou"):
        assert f"val/{figure}_table" in run.summary, figure  # scatter plots of the detections table
