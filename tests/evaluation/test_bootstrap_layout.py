"""The fast path of the bootstrap's resampled AP: segment scans, float32, the recall thresholds' lookup."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from faster_coco_eval import COCO, COCOeval_faster
from test_bootstrap import _silent, coco_eval, random_bbox_case

from msrcnn.evaluation import bootstrap
from msrcnn.evaluation.bootstrap import collect_matches, multiplicities, resampled_ap


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_recall_thresholds_reached_as_coco_compares(dtype):
    """Every recall tp / gt (gt up to 300) reaches as many thresholds as COCO's float64 comparison,
    ties included (7 / 10 is below COCO's 0.7, 1 / 2 is not below its 0.5)."""
    rec_thrs = np.linspace(0.0, 1.0, 101)
    gt = np.repeat(np.arange(1, 301), np.arange(2, 302)).astype(dtype)
    tp = np.concatenate([np.arange(g + 1) for g in range(1, 301)]).astype(dtype)
    expected = np.searchsorted(rec_thrs, tp.astype(np.float64) / gt.astype(np.float64), side="right")
    ours = bootstrap._table_reached(tp.copy(), gt, bootstrap._reached_table(rec_thrs))
    assert ours.dtype == dtype
    assert np.array_equal(ours, expected)
    assert expected[(tp == 7) & (gt == 10)][0] == 70  # the tie COCO does not count


def test_long_segments_scanned_one_by_one(monkeypatch):
    """Segments longer than SCAN_ROWS (skewed data) are scanned one by one: the same AP."""
    gt, dets = random_bbox_case(3, num_images=40)
    evaluator = coco_eval(gt, dets)
    weights = multiplicities(40, 16, 0)
    matches = collect_matches(evaluator)
    rows = resampled_ap(matches, weights)
    monkeypatch.setattr(bootstrap, "SCAN_ROWS", 2)
    assert bootstrap._Layout(matches.tp_starts, matches.tp_img.size).tail  # really one by one
    assert resampled_ap(matches, weights) == pytest.approx(rows, abs=1e-12)
    ones = resampled_ap(collect_matches(evaluator), np.ones((1, 40), np.int64))
    assert ones == pytest.approx([evaluator.stats[0]], abs=1e-12)


def test_float32_is_float64_to_a_millionth():
    gt, dets = random_bbox_case(5, num_images=40)
    matches = collect_matches(coco_eval(gt, dets))
    weights = multiplicities(40, 64, 1)
    exact = resampled_ap(matches, weights)
    fast = resampled_ap(matches, weights, dtype=np.float32)
    assert np.ptp(exact) > 0.01 and fast.dtype == np.float64
    assert fast == pytest.approx(exact, abs=1e-6)


@pytest.mark.parametrize("rec_thrs", [np.linspace(0.0, 1.0, 11), np.array([0.0, 0.3, 0.35, 0.9, 1.0])])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_other_recall_thresholds(rec_thrs, dtype):
    """Evenly spaced thresholds other than COCO's 101 (the lookup) and uneven ones (float64 compares)."""
    gt, dets = random_bbox_case(2, num_images=20)
    coco_gt = COCO(copy.deepcopy(gt), print_function=_silent)
    evaluator = COCOeval_faster(
        coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox", print_function=_silent, separate_eval=True
    )
    evaluator.params.recThrs = rec_thrs
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    ones = resampled_ap(collect_matches(evaluator), np.ones((2, 20), np.int64), dtype=dtype)
    assert ones == pytest.approx([evaluator.stats[0]] * 2, abs=1e-12 if dtype == np.float64 else 1e-6)
