"""The paired bootstrap over images of mask AP differences (msrcnn.evaluation.bootstrap)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from faster_coco_eval import COCO, COCOeval_faster
from faster_coco_eval.core import mask as fmask

from msrcnn.evaluation import DetectionRecord, evaluate_records
from msrcnn.evaluation.bootstrap import (
    collect_matches,
    multiplicities,
    paired_differences,
    resampled_ap,
    verdict,
)

SIZE = 128


def _silent(*args, **kwargs):
    pass


def _rle(mask: np.ndarray) -> dict:
    rle = fmask.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii") if isinstance(rle["counts"], bytes) else rle["counts"]
    return rle


def _grid_boxes(n: int) -> list[tuple[int, int, int, int]]:
    """``n`` non-overlapping 24x24 squares in a 128x128 image."""
    return [(8 + 30 * (j % 4), 8 + 30 * (j // 4), 32 + 30 * (j % 4), 32 + 30 * (j // 4)) for j in range(n)]


def scoring_set(num_images: int, per_image: int, informative) -> tuple[dict, list[DetectionRecord]]:
    """Ground truth squares; per object a half mask (mask IoU 0.5, class score higher) and the exact
    mask. Where ``informative(image, object)``, the predicted MaskIoU ranks the exact mask first
    (mask scoring gains there); elsewhere it is 1 for both (the class score's order)."""
    images, anns, records = [], [], []
    for i in range(num_images):
        images.append({"id": i + 1, "width": SIZE, "height": SIZE, "file_name": f"{i}.png"})
        boxes, scores, ious, rles = [], [], [], []
        for j, (x0, y0, x1, y1) in enumerate(_grid_boxes(per_image)):
            gt = np.zeros((SIZE, SIZE), bool)
            gt[y0:y1, x0:x1] = True
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": 1,
                    "segmentation": _rle(gt),
                    "area": float(gt.sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "iscrowd": 0,
                }
            )
            half = gt.copy()
            half[:, : (x0 + x1) // 2] = False
            good = informative(i, j)
            boxes += [[x0, y0, x1, y1]] * 2
            scores += [0.9 - 0.01 * j - 0.001 * i, 0.8 - 0.01 * j - 0.001 * i]
            ious += [0.3, 0.95] if good else [1.0, 1.0]
            rles += [_rle(half), _rle(gt)]
        records.append(
            DetectionRecord(
                image_id=i + 1,
                boxes=np.asarray(boxes, np.float32),
                scores=np.asarray(scores, np.float32),
                labels=np.ones(len(scores), np.int64),
                mask_ious=np.asarray(ious, np.float32),
                rles=rles,
            )
        )
    gt = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "square"}]}
    return gt, records


def random_bbox_case(seed: int, num_images: int = 6) -> tuple[dict, list[dict]]:
    """Boxes in three categories with crowd regions, misclassified and jittered detections."""
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(num_images):
        images.append({"id": 10 + i, "width": 200, "height": 200, "file_name": f"{i}.png"})
        for _ in range(int(rng.integers(0, 7))):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(8, 50, 2)
            cat = int(rng.choice([1, 2, 5]))
            crowd = int(rng.random() < 0.1)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 10 + i,
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": float(w * h),
                    "iscrowd": crowd,
                }
            )
            for _ in range(int(rng.integers(0, 4))):
                dets.append(
                    {
                        "image_id": 10 + i,
                        "category_id": cat if rng.random() < 0.8 else int(rng.choice([1, 2, 5])),
                        "bbox": [x + rng.normal(0, 4), y + rng.normal(0, 4), w * rng.uniform(0.7, 1.3), h],
                        "score": float(rng.random()),
                    }
                )
        for _ in range(int(rng.integers(0, 3))):  # background detections
            dets.append(
                {
                    "image_id": 10 + i,
                    "category_id": int(rng.choice([1, 2, 5])),
                    "bbox": [*rng.uniform(0, 150, 2).tolist(), 20.0, 20.0],
                    "score": float(rng.random()),
                }
            )
    categories = [{"id": c, "name": f"c{c}"} for c in (1, 2, 5)]
    return {"images": images, "annotations": anns, "categories": categories}, dets


def coco_eval(gt: dict, dets: list[dict]) -> COCOeval_faster:
    coco_gt = COCO(copy.deepcopy(gt), print_function=_silent)
    evaluator = COCOeval_faster(
        coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox", print_function=_silent, separate_eval=True
    )
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return evaluator


@pytest.mark.parametrize("seed", range(6))
def test_all_multiplicities_one_is_cocoeval(seed):
    gt, dets = random_bbox_case(seed)
    evaluator = coco_eval(gt, dets)
    matches = collect_matches(evaluator)
    ones = resampled_ap(matches, np.ones((3, len(gt["images"])), np.int64))
    if evaluator.stats[0] < 0:  # no ground truth at all
        assert np.isnan(ones).all()
    else:
        assert ones == pytest.approx([evaluator.stats[0]] * 3, abs=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_multiplicities_are_copies_of_images(seed):
    """A resample's AP is COCOeval's AP on the data set in which image i appears w_i times."""
    gt, dets = random_bbox_case(seed, num_images=5)
    matches = collect_matches(coco_eval(gt, dets))
    for weights in multiplicities(5, 4, seed):
        images, anns, copies = [], [], []
        for image, w in zip(gt["images"], weights):
            for c in range(w):
                new_id = 1000 * (c + 1) + image["id"]
                images.append({**image, "id": new_id})
                anns += [{**a, "image_id": new_id} for a in gt["annotations"] if a["image_id"] == image["id"]]
                copies += [{**d, "image_id": new_id} for d in dets if d["image_id"] == image["id"]]
        for k, a in enumerate(anns):
            a["id"] = k + 1
        reference = coco_eval({**gt, "images": images, "annotations": anns}, copies).stats[0]
        ours = resampled_ap(matches, weights[None])[0]
        if reference < 0:
            assert np.isnan(ours)
        else:
            assert ours == pytest.approx(reference, abs=1e-12)


def differences(records, gt, **kwargs):
    result = evaluate_records(
        COCO(copy.deepcopy(gt), print_function=_silent), records, iou_types=("segm",), **kwargs
    )
    return result


def test_known_gain_interval_excludes_zero():
    gt, records = scoring_set(12, 6, informative=lambda i, j: j % 2 == 0)
    result = differences(records, gt)
    gain = result["mask_scoring_gain"]
    assert gain["AP"] == pytest.approx(result["segm"]["AP"] - result["segm_cls"]["AP"], abs=2e-3)
    assert gain["AP"] > 5 and 0 < gain["low"] <= gain["AP"] <= gain["high"]
    assert gain["verdict"] == "helps"
    assert gain["bootstrap"] == {"level": 0.95, "num_images": 12, "resamples": 1000, "seed": 0}
    headroom = result["oracle_headroom"]  # the GT MaskIoU ranks every exact mask first
    assert headroom["AP"] == pytest.approx(result["segm_oracle"]["AP"] - result["segm"]["AP"], abs=2e-3)
    assert headroom["low"] > 0


def test_identical_rankings_give_exactly_zero():
    # a constant predicted MaskIoU: the mask score ranks as the class score does
    gt, records = scoring_set(8, 5, informative=lambda i, j: False)
    gain = differences(records, gt)["mask_scoring_gain"]
    assert (gain["AP"], gain["low"], gain["high"]) == (0.0, 0.0, 0.0)
    assert gain["verdict"] == "no clear difference"


def test_gain_from_one_image_gives_a_wide_interval():
    n = 12
    _, concentrated = scoring_set(n, n, informative=lambda i, j: i == 0)  # all the gain in image 0
    gt, spread = scoring_set(n, n, informative=lambda i, j: j == 0)  # one object per image
    a = differences(concentrated, gt)["mask_scoring_gain"]
    b = differences(spread, gt)["mask_scoring_gain"]
    assert a["AP"] > 0 and b["AP"] > 0
    assert a["low"] <= 0 < a["high"]  # one image's luck: cannot be told from no gain
    assert a["verdict"] == "no clear difference" and b["verdict"] == "helps"
    assert a["high"] - a["low"] > 2 * (b["high"] - b["low"])


def test_seeded_and_reproducible():
    gt, records = scoring_set(10, 4, informative=lambda i, j: (i + j) % 3 == 0)
    coco_gt = COCO(copy.deepcopy(gt), print_function=_silent)
    first = evaluate_records(coco_gt, records, iou_types=("segm",), seed=3, resamples=200)
    again = evaluate_records(coco_gt, records, iou_types=("segm",), seed=3, resamples=200)
    other = evaluate_records(coco_gt, records, iou_types=("segm",), seed=4, resamples=200)
    assert first["mask_scoring_gain"] == again["mask_scoring_gain"]
    assert first["mask_scoring_gain"]["bootstrap"]["seed"] == 3
    assert other["mask_scoring_gain"]["bootstrap"]["seed"] == 4
    assert (multiplicities(10, 5, 7) == multiplicities(10, 5, 7)).all()
    assert not (multiplicities(10, 5, 7) == multiplicities(10, 5, 8)).all()
    assert (multiplicities(10, 5, 7).sum(axis=1) == 10).all()


def test_threads_and_chunks_do_not_change_the_result():
    gt, dets = random_bbox_case(11, num_images=8)
    matches = collect_matches(coco_eval(gt, dets))
    weights = multiplicities(8, 64, 0)
    assert np.ptp(resampled_ap(matches, weights)) > 0  # the resamples really differ
    one = resampled_ap(matches, weights, workers=1)
    assert np.array_equal(one, resampled_ap(matches, weights, workers=4))
    assert np.array_equal(one[:5], resampled_ap(matches, weights[:5], workers=1))


def test_no_maskiou_head_no_differences():
    gt, records = scoring_set(3, 2, informative=lambda i, j: True)
    plain = [DetectionRecord(r.image_id, r.boxes, r.scores, r.labels, None, r.rles) for r in records]
    result = differences(plain, gt)
    assert result["mask_scoring_gain"] is None and result["oracle_headroom"] is None
    assert differences(records, gt, resamples=0)["mask_scoring_gain"] is None


def test_paired_differences_checks_against_cocoeval():
    gt, dets = random_bbox_case(2)
    evaluator = coco_eval(gt, dets)
    matches = {"a": collect_matches(evaluator)}
    with pytest.raises(RuntimeError, match="not COCOeval's"):
        paired_differences(matches, {"d": ("a", "a")}, stats_ap={"a": evaluator.stats[0] + 0.01})


@pytest.mark.parametrize(
    ("low", "high", "word"),
    [
        (0.1, 2.0, "helps"),
        (-2.0, -0.1, "hurts"),
        (-0.1, 2.0, "no clear difference"),
        (0.0, 0.0, "no clear difference"),
    ],
)
def test_verdict(low, high, word):
    assert verdict(low, high) == word


def test_wandb_summary_has_the_interval_as_flat_keys():
    from msrcnn.training.media import summary_metrics

    gt, records = scoring_set(6, 4, informative=lambda i, j: j == 0)
    result = differences(records, gt)
    summary = summary_metrics(result)
    gain = result["mask_scoring_gain"]
    assert (summary["val/mask_scoring_gain_low"], summary["val/mask_scoring_gain_high"]) == (
        gain["low"],
        gain["high"],
    )
    assert summary["val/mask_scoring_gain_AP"] == gain["AP"]
    assert summary["val/oracle_headroom_low"] == result["oracle_headroom"]["low"]
