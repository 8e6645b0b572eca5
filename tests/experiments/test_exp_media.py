"""WandbMedia: validation images, Figures 2 and 5, the AP tables and the APs, logged to W&B."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from exp_helpers import record, tiny_wandb_run
from msrcnn.evaluation import load_coco_gt
from msrcnn.training.media import WandbMedia


class FakeLogger:
    def __init__(self):
        self.images, self.tables = {}, {}
        self.experiment = SimpleNamespace(summary={})

    def log_image(self, key, images, caption=None, **kwargs):
        self.images[key] = (images, caption)

    def log_table(self, key, columns, data, **kwargs):
        self.tables[key] = (columns, data)


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


def test_log_media_logs_images_figures_and_tables():
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
        "segm_cls": ap,
        "segm_oracle": ap,
        "maskiou_pearson": 0.7,
        "num_images": 1,
        "num_detections": 3,
        "segm_per_class": {"cat": 50.0, "dog": None},
    }
    logger = FakeLogger()
    WandbMedia(num_images=2).log_media(trainer, logger, results, evaluator)

    images, captions = logger.images["val/predictions"]
    assert len(images) == 1 and images[0].ndim == 3 and images[0].dtype == np.uint8
    assert "cat: cls 0.90  MaskIoU 0.90  mask 0.81" in captions[0]
    assert set(logger.images) == {"val/predictions", "val/fig5_maskiou", "val/fig2_score_vs_maskiou"}
    columns, rows = logger.tables["val/ap_table"]
    assert columns == ["ranking", "AP", "AP50", "AP75", "APs", "APm", "APl"] and len(rows) == 4
    assert logger.tables["val/per_class_AP"][1] == [["cat", 50.0], ["dog", None]]
    assert logger.experiment.summary["val/segm_AP"] == 50.0
    assert logger.experiment.summary["val/maskiou_pearson"] == 0.7


def test_plain_mask_rcnn_gets_no_maskiou_figures():
    rec = record(mask_ious=None)
    evaluator = SimpleNamespace(all_records=[rec], coco_gt=ground_truth(rec), has_annotations=True)
    trainer = SimpleNamespace(global_step=1, datamodule=None)
    logger = FakeLogger()
    WandbMedia().log_media(trainer, logger, {"segm": {"AP": 1.0}}, evaluator)
    assert not logger.images and "val/ap_table" in logger.tables


@pytest.mark.slow
def test_training_with_the_wandb_logger_writes_the_media(tmp_path_factory, shapes_dir):
    out = tiny_wandb_run(tmp_path_factory, shapes_dir)
    (run,) = (out / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    names = sorted(p.name for p in media.rglob("*") if p.is_file())
    for prefix, suffix in (
        ("predictions_", ".png"),
        ("fig5_maskiou_", ".png"),
        ("fig2_score_vs_maskiou_", ".png"),
        ("ap_table_", ".table.json"),
        ("per_class_AP_", ".table.json"),
    ):
        assert any(n.startswith(prefix) and n.endswith(suffix) for n in names), (prefix, names)
    assert len(list((media / "images" / "val").glob("predictions_*.png"))) == 4  # logger.log_images
    per_class = json.loads(next((media / "table" / "val").glob("per_class_AP_*.table.json")).read_text())
    assert per_class["columns"] == ["class", "segm_AP"] and len(per_class["data"]) == 6  # the 6 shapes
    (wandb_file,) = run.glob("run-*.wandb")
    history = Path(wandb_file).read_bytes()  # the offline run's records (protobuf: keys are plain bytes)
    for key in (
        b"val/segm_AP",
        b"val/segm_cls_AP",
        b"val/segm_oracle_AP",
        b"val/bbox_AP",
        b"val/maskiou_pearson",
        b"val/predictions",
        b"val/fig5_maskiou",
        b"val/fig2_score_vs_maskiou",
        b"val/per_class_AP",
    ):
        assert key in history, key
    assert "segm_per_class" in json.loads((out / "results.json").read_text())
