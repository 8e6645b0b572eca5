"""Soft-NMS against a plain, one-box-at-a-time Python reference (Detectron semantics)."""

from __future__ import annotations

import importlib
import math

import pytest
import torch
from torchvision.ops import box_iou

from msrcnn.ops import SOFT_NMS_METHODS, batched_soft_nms, soft_nms
from msrcnn.ops.soft_nms import IOU_THRESHOLD, SCORE_THRESHOLD, SIGMA

MODULE = importlib.import_module("msrcnn.ops.soft_nms")  # the attribute is shadowed by the function


def reference_soft_nms(
    boxes,
    scores,
    iou_threshold=IOU_THRESHOLD,
    sigma=SIGMA,
    score_threshold=SCORE_THRESHOLD,
    method="linear",
):
    """Textbook single-class Soft-NMS; returns {input index: new score}."""
    iou = box_iou(boxes, boxes).double().tolist()
    remaining = {i: float(s) for i, s in enumerate(scores.double().tolist()) if s >= score_threshold}
    kept = {}
    while remaining:
        m = max(remaining, key=remaining.get)
        kept[m] = remaining.pop(m)
        for b in list(remaining):
            overlap = iou[m][b]
            if method == "linear":
                weight = 1.0 - overlap if overlap > iou_threshold else 1.0
            else:
                weight = math.exp(-(overlap * overlap) / sigma)
            remaining[b] *= weight
            if remaining[b] < score_threshold:
                del remaining[b]
    return kept


def reference_batched(boxes, scores, idxs, **kwargs):
    """Reference per-class Soft-NMS by looping over classes."""
    kept = {}
    for c in idxs.unique().tolist():
        members = torch.nonzero(idxs == c).flatten()
        for local, score in reference_soft_nms(boxes[members], scores[members], **kwargs).items():
            kept[int(members[local])] = score
    return kept


def random_boxes(n: int, generator: torch.Generator, size: float = 200.0) -> torch.Tensor:
    """Random clustered boxes (so many overlap) in xyxy."""
    centers = torch.rand(max(n // 6, 1), 2, generator=generator) * size
    pick = torch.randint(0, centers.shape[0], (n,), generator=generator)
    xy = centers[pick] + torch.randn(n, 2, generator=generator) * 8
    wh = torch.rand(n, 2, generator=generator) * 60 + 4
    return torch.cat([xy, xy + wh], dim=1)


def assert_matches(keep, new_scores, expected):
    """Keep set equals the reference, scores agree to 1e-6, and keep is sorted by score."""
    assert keep.dtype == torch.int64
    assert keep.shape == new_scores.shape
    got = dict(zip(keep.tolist(), new_scores.double().tolist()))
    assert len(got) == keep.numel()
    assert set(got) == set(expected)
    for index, score in expected.items():
        assert got[index] == pytest.approx(score, abs=1e-6)
    assert torch.all(new_scores[:-1] >= new_scores[1:])


@pytest.mark.parametrize("score_threshold", [1e-3, 0.2])
@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
@pytest.mark.parametrize(("n", "num_classes"), [(1, 1), (7, 1), (60, 1), (150, 3), (300, 12), (400, 80)])
def test_matches_reference(method, n, num_classes, score_threshold):
    g = torch.Generator().manual_seed(n * 131 + num_classes)
    boxes = random_boxes(n, g)
    scores = torch.rand(n, generator=g, dtype=torch.float64).float()  # ties practically impossible
    idxs = torch.randint(0, num_classes, (n,), generator=g)
    kwargs = {"method": method, "iou_threshold": 0.3, "sigma": 0.5, "score_threshold": score_threshold}
    keep, new_scores = batched_soft_nms(boxes, scores, idxs, **kwargs)
    assert_matches(keep, new_scores, reference_batched(boxes, scores, idxs, **kwargs))


@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
def test_single_class_matches_reference_with_other_parameters(method):
    g = torch.Generator().manual_seed(7)
    boxes = random_boxes(120, g)
    scores = torch.rand(120, generator=g)
    kwargs = {"method": method, "iou_threshold": 0.5, "sigma": 0.2, "score_threshold": 0.05}
    keep, new_scores = soft_nms(boxes, scores, **kwargs)
    assert_matches(keep, new_scores, reference_soft_nms(boxes, scores, **kwargs))


def test_pair_budget_does_not_change_the_result(monkeypatch):
    """A tiny pair budget makes the vectorised path build the overlapping pairs one row at a time."""
    g = torch.Generator().manual_seed(3)
    boxes = random_boxes(200, g)
    scores = torch.rand(200, generator=g)
    idxs = torch.randint(0, 6, (200,), generator=g)
    expected = batched_soft_nms(boxes, scores, idxs)
    monkeypatch.setattr(MODULE, "_PAIR_BUDGET", {False: 1, True: 1})
    keep, new_scores = batched_soft_nms(boxes, scores, idxs)
    assert torch.equal(keep, expected[0])
    assert torch.equal(new_scores, expected[1])


@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
def test_classes_never_suppress_each_other(method):
    g = torch.Generator().manual_seed(0)
    boxes = random_boxes(50, g)
    scores = torch.rand(50, generator=g)
    # The same boxes twice, once per class: each copy must behave as if the other were absent.
    keep, new_scores = batched_soft_nms(
        torch.cat([boxes, boxes]),
        torch.cat([scores, scores]),
        torch.cat([torch.zeros(50, dtype=torch.int64), torch.full((50,), 5)]),
        method=method,
    )
    single_keep, single_scores = soft_nms(boxes, scores, method=method)
    expected = dict(zip(single_keep.tolist(), single_scores.tolist()))
    got = dict(zip(keep.tolist(), new_scores.tolist()))
    assert {k % 50 for k in got} == set(expected)
    assert len(got) == 2 * len(expected)
    for index, score in got.items():
        assert score == pytest.approx(expected[index % 50], abs=1e-7)


def test_hand_built_linear_case():
    # Two 10x10 boxes overlapping in a 10x(20/3) strip: IoU = (200/3) / (200 - 200/3) = 0.5.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 10.0 / 3.0, 10.0, 10.0 + 10.0 / 3.0]])
    assert box_iou(boxes[:1], boxes[1:]).item() == pytest.approx(0.5, abs=1e-6)
    keep, new_scores = soft_nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.3, method="linear")
    assert keep.tolist() == [0, 1]
    assert new_scores.tolist() == pytest.approx([0.9, 0.4], abs=1e-6)
    # Above the threshold nothing is rescaled.
    _, unchanged = soft_nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.6, method="linear")
    assert unchanged.tolist() == pytest.approx([0.9, 0.8], abs=1e-6)
    # Gaussian: exp(-0.25 / 0.5).
    _, gaussian = soft_nms(boxes, torch.tensor([0.9, 0.8]), sigma=0.5, method="gaussian")
    assert gaussian.tolist() == pytest.approx([0.9, 0.8 * math.exp(-0.5)], abs=1e-6)


def test_score_threshold_drops_boxes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.5], [50.0, 50.0, 60.0, 60.0]])
    scores = torch.tensor([0.9, 0.5, 0.0005])
    # IoU(0, 1) = 100 / 105 -> linear factor 1/21: 0.5 / 21 = 0.0238 survives 0.01, not 0.05.
    keep, new_scores = soft_nms(boxes, scores, score_threshold=0.01)
    assert keep.tolist() == [0, 1]  # box 2 starts below the threshold and is dropped
    assert new_scores[1].item() == pytest.approx(0.5 * (1 - 100 / 105), abs=1e-6)
    keep, _ = soft_nms(boxes, scores, score_threshold=0.05)
    assert keep.tolist() == [0]


def test_keep_ordered_by_new_score_not_input_score():
    # Box 1 (0.8) is pushed below box 2 (0.5) by the overlap with box 0.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 11.0], [40.0, 40.0, 50.0, 50.0]])
    keep, new_scores = soft_nms(boxes, torch.tensor([0.9, 0.8, 0.5]))
    assert keep.tolist() == [0, 2, 1]
    assert torch.all(new_scores[:-1] >= new_scores[1:])


def test_empty_input():
    for fn_args in [(), (torch.empty(0, dtype=torch.int64),)]:
        boxes, scores = torch.empty(0, 4), torch.empty(0)
        if fn_args:
            keep, new_scores = batched_soft_nms(boxes, scores, *fn_args)
        else:
            keep, new_scores = soft_nms(boxes, scores)
        assert keep.dtype == torch.int64 and keep.shape == (0,)
        assert new_scores.shape == (0,) and new_scores.dtype == scores.dtype


def test_all_below_threshold_returns_empty():
    keep, new_scores = soft_nms(torch.tensor([[0.0, 0.0, 1.0, 1.0]]), torch.tensor([SCORE_THRESHOLD / 2]))
    assert keep.numel() == 0 and new_scores.numel() == 0


def test_unknown_method_names_value_and_choices():
    with pytest.raises(ValueError, match=r"'hard'.*linear.*gaussian"):
        soft_nms(torch.zeros(1, 4), torch.ones(1), method="hard")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_scores(dtype):
    g = torch.Generator().manual_seed(11)
    boxes = random_boxes(80, g)
    scores = torch.rand(80, generator=g).to(dtype)
    idxs = torch.randint(0, 4, (80,), generator=g)
    keep, new_scores = batched_soft_nms(boxes.to(dtype), scores, idxs)
    assert new_scores.dtype == dtype
    # Computed in float32 from the same (rounded) inputs.
    keep32, scores32 = batched_soft_nms(boxes.to(dtype).float(), scores.float(), idxs)
    assert set(keep.tolist()) == set(keep32.tolist())
    expected = dict(zip(keep32.tolist(), scores32.tolist()))
    for index, score in zip(keep.tolist(), new_scores.float().tolist()):
        assert score == pytest.approx(expected[index], rel=1e-2, abs=1e-3)


def test_row_chunks_partition_rows_within_budget():
    pair_ends = [3, 5, 6, 6, 16, 17, 18]  # rows of 3, 2, 1, 0, 10, 1, 1 pairs
    chunks = MODULE._row_chunks(pair_ends, budget=6)
    assert chunks == [(0, 4), (4, 5), (5, 7)]  # the 10-pair row alone, over budget
    assert MODULE._row_chunks(pair_ends, budget=100) == [(0, 7)]
    assert MODULE._row_chunks([0, 0], budget=1) == [(0, 2)]


def test_ties_go_to_the_lower_index_and_order_equal_scores_by_index():
    # Boxes 0 and 2 are identical with equal scores: 0 is selected, 2 rescaled by 1 - IoU = 0 and
    # dropped. Boxes 1 and 3 do not overlap anything and share a score: ordered by index.
    boxes = torch.tensor([[0.0, 0.0, 10, 10], [50, 50, 60, 60], [0, 0, 10, 10], [80, 80, 90, 90]])
    keep, new_scores = soft_nms(boxes, torch.tensor([0.7, 0.5, 0.7, 0.5]))
    assert keep.tolist() == [0, 1, 3]
    assert new_scores.tolist() == pytest.approx([0.7, 0.5, 0.5])


@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
def test_exact_ties_match_reference(method):
    """Scores drawn from 5 values and duplicated boxes: ties everywhere, same result as the reference."""
    g = torch.Generator().manual_seed(21)
    boxes = random_boxes(150, g)
    boxes = torch.cat([boxes, boxes[:40]])
    scores = torch.tensor([0.2, 0.4, 0.6, 0.8, 1.0])[torch.randint(0, 5, (190,), generator=g)]
    idxs = torch.randint(0, 3, (190,), generator=g)
    kwargs = {"method": method, "iou_threshold": 0.3, "sigma": 0.5, "score_threshold": 1e-3}
    keep, new_scores = batched_soft_nms(boxes, scores, idxs, **kwargs)
    assert_matches(keep, new_scores, reference_batched(boxes, scores, idxs, **kwargs))


@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
def test_float64_inputs_match_reference(method):
    g = torch.Generator().manual_seed(5)
    boxes = random_boxes(200, g).double()
    scores = torch.rand(200, generator=g, dtype=torch.float64)
    idxs = torch.randint(0, 5, (200,), generator=g)
    keep, new_scores = batched_soft_nms(boxes, scores, idxs, method=method)
    assert new_scores.dtype == torch.float64
    assert_matches(keep, new_scores, reference_batched(boxes, scores, idxs, method=method))


def test_scores_carry_no_gradient():
    scores = torch.tensor([0.9, 0.8], requires_grad=True)
    boxes = torch.tensor([[0.0, 0.0, 10, 10], [0, 0, 10, 11]])
    _, new_scores = soft_nms(boxes, scores)
    assert not new_scores.requires_grad


@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
def test_skewed_class_sizes_match_reference(method):
    """Classes of 1 to 90 boxes: processed in several chunks, the same result as the reference."""
    g = torch.Generator().manual_seed(11)
    sizes = [90, 64, 40, 33, 17, 9, 6, 3, 2, 1, 1, 1]
    idxs = torch.cat([torch.full((n,), c * 7) for c, n in enumerate(sizes)])  # non-contiguous ids
    boxes = random_boxes(len(idxs), g)
    scores = torch.rand(len(idxs), generator=g, dtype=torch.float64).float()
    kwargs = {"method": method, "iou_threshold": 0.3, "sigma": 0.5, "score_threshold": 1e-3}
    keep, new_scores = batched_soft_nms(boxes, scores, idxs, **kwargs)
    assert_matches(keep, new_scores, reference_batched(boxes, scores, idxs, **kwargs))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
def test_cuda_matches_cpu(method):
    g = torch.Generator().manual_seed(9)
    boxes = random_boxes(500, g)
    scores = torch.rand(500, generator=g)
    idxs = torch.randint(0, 20, (500,), generator=g)
    keep, new_scores = batched_soft_nms(boxes, scores, idxs, method=method)
    keep_cuda, scores_cuda = batched_soft_nms(boxes.cuda(), scores.cuda(), idxs.cuda(), method=method)
    assert keep_cuda.is_cuda
    assert set(keep_cuda.cpu().tolist()) == set(keep.tolist())
    expected = dict(zip(keep.tolist(), new_scores.tolist()))
    for index, score in zip(keep_cuda.cpu().tolist(), scores_cuda.cpu().tolist()):
        assert score == pytest.approx(expected[index], abs=1e-5)


@pytest.mark.parametrize("method", SOFT_NMS_METHODS)
@pytest.mark.parametrize("num", [1000, 2000])
def test_benchmark_scale_inputs_match_reference(method, num):
    """The benchmark's clustered detections over 80 classes (an inference's Soft-NMS input)."""
    g = torch.Generator().manual_seed(num)
    centres = torch.rand(num // 40, 2, generator=g) * 800
    pick = torch.randint(0, num // 40, (num,), generator=g)
    xy = centres[pick] + torch.randn(num, 2, generator=g) * 15
    wh = 40 + torch.rand(num, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = 0.05 + 0.95 * torch.rand(num, generator=g)
    idxs = torch.randint(0, 80, (num,), generator=g)
    kwargs = {"method": method, "iou_threshold": 0.3, "sigma": 0.5, "score_threshold": 1e-3}
    keep, new_scores = batched_soft_nms(boxes, scores, idxs, **kwargs)
    assert_matches(keep, new_scores, reference_batched(boxes, scores, idxs, **kwargs))


def test_degenerate_boxes_nan_iou():
    """Empty boxes make 0/0 IoUs (NaN). Linear: a NaN IoU is not above the threshold, nothing is
    rescaled. Gaussian: the NaN factor makes the score NaN, and the box is dropped."""
    boxes = torch.tensor([[5.0, 5, 5, 5], [5, 5, 5, 5], [0, 0, 10, 10], [0, 0, 10, 0]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    keep, new_scores = soft_nms(boxes, scores, method="linear")
    assert keep.tolist() == [0, 1, 2, 3]
    assert torch.equal(new_scores, scores)
    keep, new_scores = soft_nms(boxes, scores, method="gaussian")
    assert keep.tolist() == [0, 2]  # 1 and 3 have a NaN IoU with 0, selected first; 2 overlaps none
    assert torch.equal(new_scores, torch.tensor([0.9, 0.7]))
