"""COCO evaluation against plain pycocotools on a small hand-made dataset."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from pycocotools import mask as pmask
from pycocotools.coco import COCO as PyCOCO
from pycocotools.cocoeval import COCOeval as PyCOCOeval

from msrcnn.evaluation import (
    AP_KEYS,
    DetectionRecord,
    evaluate_records,
    gt_mask_ious,
    label_to_cat_id_from_coco,
    load_coco_gt,
    make_record,
    maskiou_pearson,
    to_coco_results,
)

CATEGORIES = [{"id": 1, "name": "person"}, {"id": 7, "name": "train"}, {"id": 90, "name": "toothbrush"}]
IMAGES = [
    {"id": 3, "height": 120, "width": 160, "file_name": "a.jpg"},
    {"id": 10, "height": 150, "width": 200, "file_name": "b.jpg"},
    {"id": 42, "height": 100, "width": 110, "file_name": "c.jpg"},
    {"id": 77, "height": 130, "width": 170, "file_name": "d.jpg"},
]
LABEL_TO_CAT = [0, 1, 7, 90]  # contiguous model label -> dataset category id

# pycocotools (the reference) warns about numpy 2's copy keyword; not our concern here.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:pycocotools")


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, starting with zeros)."""
    flat = mask.flatten(order="F").astype(np.int8)
    change = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    counts = np.diff(np.concatenate([[0], change])).tolist()
    assert sum(counts) == mask.size
    return {"size": list(mask.shape), "counts": counts}


def ellipse(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    """Binary ellipse inscribed in the xyxy box."""
    x0, y0, x1, y1 = box
    yy, xx = np.mgrid[:h, :w]
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    return (((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1).astype(np.uint8)


def make_gt_dataset(seed: int = 0) -> dict:
    """Four images, three non-contiguous categories, polygons + RLE (compressed and not) + crowd."""
    rng = np.random.default_rng(seed)
    anns = []
    sizes = [(14, 18), (22, 26), (40, 50), (60, 70), (120, 130)]  # small .. large
    for img in IMAGES:
        h, w = img["height"], img["width"]
        for j in range(5):
            bh, bw = sizes[(j + img["id"]) % len(sizes)]
            bh, bw = min(bh, h - 4), min(bw, w - 4)
            y0 = int(rng.integers(0, h - bh))
            x0 = int(rng.integers(0, w - bw))
            box = (x0, y0, x0 + bw, y0 + bh)
            kind = j % 3
            if kind == 0:  # polygon (a hexagon inside the box)
                cx, cy = x0 + bw / 2, y0 + bh / 2
                angles = np.linspace(0, 2 * np.pi, 7)[:-1] + rng.uniform(0, 0.5)
                poly = np.stack([cx + bw / 2 * np.cos(angles), cy + bh / 2 * np.sin(angles)], 1)
                segmentation = [poly.ravel().round(2).tolist()]
                rle = pmask.merge(pmask.frPyObjects(segmentation, h, w))
            elif kind == 1:  # compressed RLE
                m = np.asfortranarray(ellipse(h, w, box))
                rle = pmask.encode(m)
                segmentation = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            else:  # uncompressed RLE
                m = np.zeros((h, w), np.uint8)
                m[y0 : y0 + bh, x0 : x0 + bw] = 1
                m[y0 : y0 + bh // 2, x0 : x0 + bw // 3] = 0
                segmentation = uncompressed_rle(m)
                rle = pmask.frPyObjects(segmentation, h, w)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": CATEGORIES[int(rng.integers(0, 3))]["id"],
                    "segmentation": segmentation,
                    "area": float(pmask.area(rle)),
                    "bbox": pmask.toBbox(rle).tolist(),
                    "iscrowd": 0,
                }
            )
        # One crowd region per image (uncompressed RLE, as in COCO).
        m = np.zeros((h, w), np.uint8)
        m[h - 30 : h - 2, 2:40] = 1
        rle = pmask.frPyObjects(uncompressed_rle(m), h, w)
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": img["id"],
                "category_id": 7,
                "segmentation": uncompressed_rle(m),
                "area": float(pmask.area(rle)),
                "bbox": pmask.toBbox(rle).tolist(),
                "iscrowd": 1,
            }
        )
    return {"images": IMAGES, "categories": CATEGORIES, "annotations": anns}


@pytest.fixture(scope="module")
def gt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("coco") / "instances.json"
    path.write_text(json.dumps(make_gt_dataset()))
    return path


@pytest.fixture(scope="module")
def coco_gt(gt_file):
    return load_coco_gt(str(gt_file))


@pytest.fixture(scope="module")
def py_gt(gt_file):
    with contextlib.redirect_stdout(io.StringIO()):
        return PyCOCO(str(gt_file))


def gt_masks(py_gt: PyCOCO, image_id: int, crowd: bool = False) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Binary GT masks [G, H, W] and category ids of one image (crowd or non-crowd)."""
    anns = [a for a in py_gt.imgToAnns[image_id] if bool(a["iscrowd"]) == crowd]
    img = py_gt.imgs[image_id]
    masks = (
        np.stack([py_gt.annToMask(a) for a in anns]) if anns else np.zeros((0, img["height"], img["width"]))
    )
    return masks.astype(bool), np.array([a["category_id"] for a in anns], dtype=np.int64), anns


def synthetic_outputs(py_gt: PyCOCO, seed: int = 1) -> dict[int, dict[str, torch.Tensor]]:
    """Model outputs: perturbed GT masks/boxes, duplicates, class confusions, false positives."""
    rng = np.random.default_rng(seed)
    cat_to_label = {c: i for i, c in enumerate(LABEL_TO_CAT) if i > 0}
    outputs = {}
    for img in IMAGES:
        h, w = img["height"], img["width"]
        masks, cats, anns = gt_masks(py_gt, img["id"])
        det_masks, det_boxes, det_labels = [], [], []
        for m, c, ann in zip(masks, cats, anns):
            for _ in range(int(rng.integers(1, 3))):  # sometimes a duplicate
                shifted = np.roll(m, (int(rng.integers(-4, 5)), int(rng.integers(-4, 5))), axis=(0, 1))
                x, y, bw, bh = ann["bbox"]
                box = np.array([x, y, x + bw, y + bh]) + rng.normal(0, 2, 4)
                label = cat_to_label[int(c)] if rng.random() > 0.15 else int(rng.integers(1, 4))
                det_masks.append(shifted)
                det_boxes.append(box)
                det_labels.append(label)
        for _ in range(4):  # false positives, some on the crowd region (bottom-left)
            x0, y0 = int(rng.integers(0, w - 30)), int(rng.integers(0, h - 30))
            if rng.random() < 0.4:
                x0, y0 = 4, h - 28
            bw, bh = int(rng.integers(8, 28)), int(rng.integers(8, 26))
            m = np.zeros((h, w), bool)
            m[y0 : y0 + bh, x0 : x0 + bw] = True
            det_masks.append(m)
            det_boxes.append(np.array([x0, y0, x0 + bw, y0 + bh], float))
            det_labels.append(int(rng.integers(1, 4)))
        k = len(det_masks)
        probs = np.stack(det_masks).astype(np.float32) * 0.8 + rng.uniform(0, 0.2, (k, h, w)).astype(
            np.float32
        )
        outputs[img["id"]] = {
            "boxes": torch.tensor(np.stack(det_boxes), dtype=torch.float32),
            "labels": torch.tensor(det_labels, dtype=torch.int64),
            "scores": torch.tensor(rng.uniform(0.05, 1.0, k), dtype=torch.float32),
            # Some outside [0, 1]: make_record clamps them.
            "mask_ious": torch.tensor(rng.uniform(-0.1, 1.1, k), dtype=torch.float32),
            "masks": torch.from_numpy(probs)[:, None],
        }
        outputs[img["id"]]["mask_scores"] = outputs[img["id"]]["scores"] * outputs[img["id"]]["mask_ious"]
    return outputs


@pytest.fixture(scope="module")
def records(py_gt):
    return [make_record(out, image_id, LABEL_TO_CAT) for image_id, out in synthetic_outputs(py_gt).items()]


def brute_force_gt_ious(py_gt: PyCOCO, records: list[DetectionRecord]) -> list[np.ndarray]:
    """Per-pair numpy IoU with same-class non-crowd GT masks, max over GT."""
    out = []
    for r in records:
        gts, cats, _ = gt_masks(py_gt, r.image_id)
        dts = pmask.decode(r.rles).transpose(2, 0, 1).astype(bool) if len(r) else np.zeros((0, 1, 1), bool)
        best = np.zeros(len(r))
        for i in range(len(r)):
            for g in range(len(gts)):
                if cats[g] == r.labels[i]:
                    union = np.logical_or(dts[i], gts[g]).sum()
                    best[i] = max(best[i], np.logical_and(dts[i], gts[g]).sum() / union if union else 0.0)
        out.append(best)
    return out


def pycocotools_stats(py_gt: PyCOCO, results: list[dict], iou_type: str, img_ids: list[int]) -> list:
    """The six AP numbers from plain pycocotools, in percent (None for -1)."""
    with contextlib.redirect_stdout(io.StringIO()):
        dt = py_gt.loadRes(copy.deepcopy(results))
        evaluator = PyCOCOeval(py_gt, dt, iou_type)
        evaluator.params.imgIds = img_ids
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return [None if v < 0 else v * 100 for v in evaluator.stats[:6]]


def assert_stats_equal(ours: dict, reference: list) -> None:
    assert list(ours) == list(AP_KEYS)
    for key, ref in zip(AP_KEYS, reference):
        if ref is None:
            assert ours[key] is None, key
        else:
            assert ours[key] == pytest.approx(ref, abs=1e-6), key


@pytest.mark.parametrize("subset", [None, [10, 77]])
def test_matches_pycocotools(coco_gt, py_gt, records, subset):
    chosen = [r for r in records if subset is None or r.image_id in subset]
    img_ids = sorted(r.image_id for r in chosen)
    result = evaluate_records(coco_gt, chosen, ndigits=None)
    bbox, segm_mask = to_coco_results(chosen, score="mask")
    _, segm_cls = to_coco_results(chosen, score="cls")
    gt_ious = brute_force_gt_ious(py_gt, chosen)
    oracle = [r.scores * np.where(g > 0, g, r.mask_ious) for r, g in zip(chosen, gt_ious)]
    _, segm_oracle = to_coco_results(chosen, score=oracle)

    assert_stats_equal(result["bbox"], pycocotools_stats(py_gt, bbox, "bbox", img_ids))
    assert_stats_equal(result["segm"], pycocotools_stats(py_gt, segm_mask, "segm", img_ids))
    assert_stats_equal(result["segm_cls"], pycocotools_stats(py_gt, segm_cls, "segm", img_ids))
    assert_stats_equal(result["segm_oracle"], pycocotools_stats(py_gt, segm_oracle, "segm", img_ids))
    assert result["segm"] != result["segm_cls"]  # the rankings really differ on this data
    assert result["num_images"] == len(chosen)
    assert result["num_detections"] == sum(len(r) for r in chosen)
    pred = np.concatenate([r.mask_ious for r in chosen])
    assert result["maskiou_pearson"] == pytest.approx(
        np.corrcoef(pred, np.concatenate(gt_ious))[0, 1], abs=1e-12
    )


def test_default_rounding_and_json(coco_gt, records):
    result = evaluate_records(coco_gt, records, per_class=True)
    json.dumps(result)
    for key in ("bbox", "segm", "segm_cls", "segm_oracle"):
        for value in result[key].values():
            assert value is None or value == round(value, 3)


def test_gt_mask_ious_equal_brute_force(coco_gt, py_gt, records):
    ours = gt_mask_ious(coco_gt, records)
    reference = brute_force_gt_ious(py_gt, records)
    assert len(ours) == len(records)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a, b, atol=1e-9)
    assert any((a > 0).any() and (a == 0).any() for a in ours)  # matched and unmatched detections


def test_perfect_detections_give_ap_100(coco_gt, py_gt):
    records = []
    for img in IMAGES:
        masks, cats, anns = gt_masks(py_gt, img["id"])
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)])
        output = {
            "boxes": torch.tensor(boxes, dtype=torch.float64),
            "labels": torch.tensor([LABEL_TO_CAT.index(int(c)) for c in cats]),
            "scores": torch.linspace(1.0, 0.5, len(anns)),
            "mask_ious": torch.ones(len(anns)),
            "masks": torch.from_numpy(masks.astype(np.float32))[:, None],
        }
        records.append(make_record(output, img["id"], LABEL_TO_CAT))
    result = evaluate_records(coco_gt, records)
    for key in ("bbox", "segm", "segm_cls", "segm_oracle"):
        assert result[key] == {k: 100.0 for k in AP_KEYS}, key
    assert result["maskiou_pearson"] is None  # predicted MaskIoU is constant


def scoring_case(py_gt: PyCOCO) -> list[DetectionRecord]:
    """Per GT: a bad mask with a high class score and a good mask with a lower one.

    The predicted MaskIoU is informative (bad masks low) except for a few instances where
    it is inverted, which only the GT-MaskIoU oracle can fix.
    """
    records = []
    rng = np.random.default_rng(3)
    for img in IMAGES:
        masks, cats, anns = gt_masks(py_gt, img["id"])
        det_masks, labels, scores, ious = [], [], [], []
        for i, (m, c) in enumerate(zip(masks, cats)):
            ys, xs = np.nonzero(m)
            bad = m.copy()
            bad[:, : xs.min() + (xs.max() - xs.min() + 1) // 2] = False  # cut off half: GT IoU ~0.5
            inverted = i == 1
            det_masks += [bad, m]
            labels += [LABEL_TO_CAT.index(int(c))] * 2
            scores += [0.8 - 0.01 * i, 0.7 - 0.01 * i]
            ious += [0.95, 0.3] if inverted else [0.3, 0.95]
        h, w = masks.shape[1:]
        boxes = [pmask.toBbox(pmask.encode(np.asfortranarray(d.astype(np.uint8)))) for d in det_masks]
        output = {
            "boxes": torch.tensor([[x, y, x + bw, y + bh] for x, y, bw, bh in boxes]),
            "labels": torch.tensor(labels),
            "scores": torch.tensor(scores) + torch.from_numpy(rng.uniform(0, 1e-3, len(scores))).float(),
            "mask_ious": torch.tensor(ious),
            "masks": torch.from_numpy(np.stack(det_masks).astype(np.float32)).reshape(-1, 1, h, w),
        }
        records.append(make_record(output, img["id"], LABEL_TO_CAT))
    return records


def test_mask_scoring_beats_class_scoring_and_oracle_beats_both(coco_gt, py_gt):
    result = evaluate_records(coco_gt, scoring_case(py_gt), ndigits=None)
    assert result["segm"]["AP"] > result["segm_cls"]["AP"] + 1.0
    assert result["segm_oracle"]["AP"] > result["segm"]["AP"]
    assert result["segm_oracle"]["AP"] >= result["segm_cls"]["AP"]
    assert result["segm_oracle"]["AP75"] >= result["segm"]["AP75"] >= result["segm_cls"]["AP75"]


def test_plain_mask_rcnn_records(coco_gt, records):
    plain = [DetectionRecord(r.image_id, r.boxes, r.scores, r.labels, None, r.rles) for r in records]
    result = evaluate_records(coco_gt, plain)
    assert result["segm"] == result["segm_cls"]
    assert result["segm_oracle"] is None and result["maskiou_pearson"] is None
    assert result["segm_cls"] == evaluate_records(coco_gt, records)["segm_cls"]
    _, segm = to_coco_results(plain, score="mask")
    assert all(d["score"] == d["class_score"] and d["mask_iou"] is None for d in segm)


def test_iou_types_bbox_only_without_masks(coco_gt, records):
    boxes_only = [DetectionRecord(r.image_id, r.boxes, r.scores, r.labels) for r in records]
    result = evaluate_records(coco_gt, boxes_only, iou_types=("bbox",))
    assert result["bbox"] == evaluate_records(coco_gt, records)["bbox"]
    assert result["segm"] is None and result["segm_cls"] is None
    with pytest.raises(ValueError, match="iou_types"):
        evaluate_records(coco_gt, records, iou_types=("keypoints",))


def test_duplicate_and_unknown_image_ids_raise(coco_gt, records):
    with pytest.raises(ValueError, match=r"more than one record.*\[10\]"):
        evaluate_records(coco_gt, [records[0], records[1], records[1]])
    stray = DetectionRecord(
        12345, records[0].boxes, records[0].scores, records[0].labels, None, records[0].rles
    )
    with pytest.raises(ValueError, match=r"not in the ground truth.*12345"):
        evaluate_records(coco_gt, [records[0], stray])
    with pytest.raises(ValueError, match="no detection records"):
        evaluate_records(coco_gt, [])


def test_empty_detections(coco_gt):
    empty = {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "scores": torch.zeros(0),
        "mask_ious": torch.zeros(0),
        "masks": torch.zeros(0, 1, 120, 160),
    }
    records = [make_record(empty, img["id"], LABEL_TO_CAT) for img in IMAGES]
    result = evaluate_records(coco_gt, records)
    for key in ("bbox", "segm", "segm_cls", "segm_oracle"):
        assert result[key]["AP"] == 0.0 and result[key]["AP50"] == 0.0, key
    assert result["num_detections"] == 0 and result["maskiou_pearson"] is None
    assert to_coco_results(records) == ([], [])


def test_category_ids_mapped_back_to_dataset_ids(coco_gt, records):
    assert label_to_cat_id_from_coco(coco_gt) == LABEL_TO_CAT
    bbox, segm = to_coco_results(records)
    assert {d["category_id"] for d in bbox} == {d["category_id"] for d in segm} == {1, 7, 90}
    x, y, w, h = bbox[0]["bbox"]
    np.testing.assert_allclose([x, y, x + w, y + h], records[0].boxes[0], rtol=1e-6)
    json.dumps(bbox)
    json.dumps(segm)


def test_per_class_ap_consistent_with_overall(coco_gt, records):
    result = evaluate_records(coco_gt, records, per_class=True, ndigits=None)
    per_class = result["segm_per_class"]
    assert set(per_class) == {"person", "train", "toothbrush"}
    assert np.mean(list(per_class.values())) == pytest.approx(result["segm"]["AP"], abs=1e-9)


def test_maskiou_pearson_edge_cases():
    assert maskiou_pearson(np.array([0.5]), np.array([0.2])) is None
    assert maskiou_pearson(np.array([]), np.array([])) is None
    assert maskiou_pearson(np.array([0.3, 0.3, 0.3]), np.array([0.1, 0.5, 0.9])) is None
    assert maskiou_pearson(np.array([0.1, 0.4, 0.8]), np.array([0.2, 0.5, 0.7])) == pytest.approx(
        np.corrcoef([0.1, 0.4, 0.8], [0.2, 0.5, 0.7])[0, 1]
    )


def test_records_carrying_mask_areas_and_boxes_evaluate_the_same(coco_gt, records):
    """Records encoded from roi masks carry each mask's COCO area and box; the evaluation takes
    them instead of decoding every RLE, with the same result."""
    with_geometry = [
        dataclasses.replace(
            r, mask_areas=pmask.area(r.rles).astype(np.float64), mask_boxes=pmask.toBbox(r.rles)
        )
        for r in records
    ]
    plain = evaluate_records(coco_gt, records, ndigits=None)
    assert evaluate_records(coco_gt, with_geometry, ndigits=None) == plain
    # They are really used: with every area 0, every mask is "small".
    zero_areas = [dataclasses.replace(r, mask_areas=np.zeros(len(r))) for r in with_geometry]
    assert evaluate_records(coco_gt, zero_areas, ndigits=None)["segm"] != plain["segm"]


def test_score_correlations_all_and_found_objects():
    from types import SimpleNamespace

    from msrcnn.evaluation.coco_eval import score_correlations

    gt = [np.array([0.9, 0.8, 0.6, 0.0, 0.1]), np.array([0.7, 0.0])]
    # the class score separates found objects from junk but not good masks from poor ones;
    # the predicted MaskIoU orders the found objects' masks
    records = [
        SimpleNamespace(
            scores=np.array([0.9, 0.9, 0.9, 0.1, 0.1]), mask_ious=np.array([0.85, 0.75, 0.55, 0.5, 0.5])
        ),
        SimpleNamespace(scores=np.array([0.9, 0.1]), mask_ious=np.array([0.65, 0.5])),
    ]
    r = score_correlations(records, gt)
    target = np.concatenate(gt)
    assert r["maskiou_pearson"] == pytest.approx(
        np.corrcoef(np.concatenate([x.mask_ious for x in records]), target)[0, 1]
    )
    assert r["class_score_pearson"] == pytest.approx(
        np.corrcoef(np.concatenate([x.scores for x in records]), target)[0, 1]
    )
    assert r["maskiou_pearson_matched"] == pytest.approx(1.0)  # 0.85, 0.75, 0.55, 0.65 vs 0.9, 0.8, 0.6, 0.7
    assert r["class_score_pearson_matched"] is None  # constant class score: undefined
