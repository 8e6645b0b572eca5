"""msrcnn.evaluation.plots: the figures shared by the W&B callback, the notebook and predict."""

import json

import numpy as np
import pytest
from faster_coco_eval.core import mask as mask_utils

from exp_helpers import record, square_masks
from msrcnn.evaluation.plots import (
    GalleryItem,
    decode_rle,
    detection_caption,
    draw_detections,
    figure_to_array,
    load_run_records,
    mask_gallery,
    maskiou_scatter,
    score_vs_maskiou,
    select_detections,
)


def test_decode_rle_round_trips_the_records_masks():
    masks = square_masks()
    rec = record()
    for k in range(3):
        assert np.array_equal(decode_rle(rec.rles[k]), masks[k, 0].numpy() > 0.5)


def test_selection_and_caption_rank_by_mask_score():
    rec = record()  # mask scores 0.81, 0.40, 0.03
    assert select_detections(rec).tolist() == [0, 1, 2]
    assert select_detections(rec, min_score=0.1).tolist() == [0, 1]
    assert select_detections(rec, min_score=0.9, min_instances=1).tolist() == [0]
    caption = detection_caption(rec, {3: "cat", 7: "dog"}, min_score=0.1)
    assert caption.splitlines() == [
        "#0 cat: cls 0.90  MaskIoU 0.90  mask 0.81",
        "#1 dog: cls 0.80  MaskIoU 0.50  mask 0.40",
    ]
    assert "MaskIoU" not in detection_caption(record(mask_ious=None))


@pytest.mark.parametrize("image", ["chw_float", "hwc_uint8"])
def test_draw_detections_renders_an_rgb_image(image):
    pixels = np.random.default_rng(0).random((3, 48, 48)).astype(np.float32)
    if image == "hwc_uint8":
        pixels = (pixels.transpose(1, 2, 0) * 255).astype(np.uint8)
    array = figure_to_array(draw_detections(pixels, record(), {3: "cat"}, title="x"))
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
    assert array.shape[0] >= 48 and array.std() > 0


def test_scatter_figures():
    rng = np.random.default_rng(0)
    gt = rng.random(50)
    pred = np.clip(gt + rng.normal(0, 0.1, 50), 0, 1)
    fig5 = maskiou_scatter(pred, gt)
    assert "Pearson r=" in fig5.axes[0].get_title()
    fig2 = score_vs_maskiou(rng.random(50), gt, pred * 0.9)
    assert len(fig2.axes) == 2 and len(score_vs_maskiou(rng.random(50), gt).axes) == 1
    assert figure_to_array(fig5).shape[2] == 3
    with pytest.raises(ValueError):
        maskiou_scatter(pred[:3], gt)


def test_gallery_crops_each_detection():
    rec = record()
    image = np.zeros((3, 48, 48), np.float32)
    items = [GalleryItem(image, rec.rles[k], rec.boxes[k], f"#{k}") for k in range(3)]
    fig = mask_gallery(items, ncols=2, title="best")
    assert len(fig.axes) == 4 and [ax.get_title() for ax in fig.axes[:3]] == ["#0", "#1", "#2"]
    assert figure_to_array(mask_gallery([])).ndim == 3


def test_load_run_records_reads_a_run_directory(tmp_path):
    rec = record(image_id=5)
    bbox = [
        {
            "image_id": 5,
            "category_id": int(c),
            "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
            "score": float(s),
        }
        for c, b, s in zip(rec.labels, rec.boxes, rec.scores)
    ]
    segm = [
        {
            "image_id": 5,
            "category_id": int(c),
            "segmentation": r,
            "score": float(s * i),
            "class_score": float(s),
            "mask_iou": float(i),
        }
        for c, r, s, i in zip(rec.labels, rec.rles, rec.scores, rec.mask_ious)
    ]
    data = tmp_path / "data"
    (data / "annotations").mkdir(parents=True)
    (data / "val").mkdir()
    ann = data / "annotations" / "instances_val.json"
    area = float(mask_utils.area(dict(rec.rles[0], counts=rec.rles[0]["counts"].encode())))
    ann.write_text(
        json.dumps(
            {
                "images": [{"id": 5, "file_name": "a.png", "width": 48, "height": 48}],
                "annotations": [
                    {
                        "id": 1,
                        "image_id": 5,
                        "category_id": 3,
                        "bbox": [4, 4, 16, 16],
                        "area": area,
                        "iscrowd": 0,
                        "segmentation": rec.rles[0],
                    }
                ],
                "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}],
            }
        )
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "detections_bbox.json").write_text(json.dumps(bbox))
    (run / "detections_segm.json").write_text(json.dumps(segm))
    (run / "results.json").write_text(json.dumps({"ann_file": str(ann), "segm": {"AP": 1.0}}))
    loaded = load_run_records(run)
    (got,) = loaded.records
    assert (
        got.image_id == 5 and np.allclose(got.boxes, rec.boxes) and np.allclose(got.mask_ious, rec.mask_ious)
    )
    assert np.allclose(got.scores, rec.scores) and got.labels.tolist() == [3, 7, 3]
    assert loaded.class_names == {3: "cat", 7: "dog"} and loaded.image_files == {5: data / "val" / "a.png"}
    with pytest.raises(FileNotFoundError, match="finished run"):
        load_run_records(tmp_path)
