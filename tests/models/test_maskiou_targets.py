"""The MaskIoU training target (paper Sec. 3.2) on hand-built cases."""

import torch

from model_testing import rect_mask
from msrcnn.models import mask_iou_targets
from msrcnn.models.maskiou import mask_area_in_boxes, present_class_targets, summed_area_table

M = 28


def full_logits(value: float, n: int = 1) -> torch.Tensor:
    return torch.full((n, M, M), value)


def gt_object():
    # object occupies rows 20..59, cols 30..89 of a 100x100 image
    return rect_mask(100, 100, 20, 60, 30, 90)[None]


def test_perfect_mask_is_one():
    iou = mask_iou_targets(full_logits(5.0), torch.tensor([[30.0, 20, 90, 60]]), gt_object())
    assert iou.shape == (1,)
    assert abs(iou.item() - 1.0) < 1e-6


def test_object_half_outside_the_box_is_one_half():
    # the box covers the left half of the object: a mask filling the box covers half the instance
    iou = mask_iou_targets(full_logits(5.0), torch.tensor([[30.0, 20, 60, 60]]), gt_object())
    assert abs(iou.item() - 0.5) < 1e-6


def test_empty_prediction_is_zero():
    iou = mask_iou_targets(full_logits(-5.0), torch.tensor([[30.0, 20, 90, 60]]), gt_object())
    assert iou.item() == 0.0


def test_binarised_at_probability_half_not_logit_half():
    # logit 0.3 -> probability 0.57: foreground. The reference code's bug (logit > 0.5) says background.
    iou = mask_iou_targets(full_logits(0.3), torch.tensor([[30.0, 20, 90, 60]]), gt_object())
    assert abs(iou.item() - 1.0) < 1e-6
    assert mask_iou_targets(full_logits(-0.3), torch.tensor([[30.0, 20, 90, 60]]), gt_object()).item() == 0.0


def test_partial_prediction_inside_a_larger_box():
    # box twice as wide as the object; predict the left half of the box = exactly the object
    logits = torch.full((1, M, M), -5.0)
    logits[:, :, : M // 2] = 5.0
    iou = mask_iou_targets(logits, torch.tensor([[30.0, 20, 150, 60]]), gt_object())
    assert abs(iou.item() - 1.0) < 0.02


def test_vectorised_over_rois_matches_one_by_one():
    g = torch.Generator().manual_seed(0)
    n = 16
    masks = torch.stack([rect_mask(80, 90, 5 + i, 40 + 2 * i, 10 + i, 60 + i) for i in range(n)])
    boxes = torch.tensor([[8.0 + i, 3 + i, 55 + 2 * i, 50 + i] for i in range(n)])
    logits = torch.randn(n, M, M, generator=g)
    together = mask_iou_targets(logits, boxes, masks)
    single = torch.cat(
        [mask_iou_targets(logits[i : i + 1], boxes[i : i + 1], masks[i : i + 1]) for i in range(n)]
    )
    assert torch.allclose(together, single)
    assert ((together >= 0) & (together <= 1)).all()


def test_area_in_boxes_is_exact():
    masks = torch.randint(0, 2, (3, 40, 50), dtype=torch.uint8)
    boxes = torch.tensor([[3.2, 4.7, 20.1, 30.9], [0.0, 0.0, 50.0, 40.0], [10.0, 10.0, 10.2, 10.2]])
    idx = torch.tensor([0, 1, 2])
    got = mask_area_in_boxes(summed_area_table(masks), boxes, idx)
    cols = torch.arange(50) + 0.5
    rows = torch.arange(40) + 0.5
    for n in range(3):
        x1, y1, x2, y2 = boxes[n]
        inside = ((rows >= y1) & (rows <= y2))[:, None] & ((cols >= x1) & (cols <= x2))[None]
        assert got[n].item() == float((masks[n].bool() & inside).sum())


def test_present_classes_cover_overlapping_instances():
    # two instances of classes 1 and 2 overlap the RoI; class 3 is nowhere near
    masks = torch.stack(
        [
            rect_mask(100, 100, 20, 60, 20, 60),
            rect_mask(100, 100, 40, 80, 40, 80),
            rect_mask(100, 100, 85, 95, 85, 95),
        ]
    )
    gt_boxes = torch.tensor([[20.0, 20, 60, 60], [40.0, 40, 80, 80], [85.0, 85, 95, 95]])
    gt_labels = torch.tensor([1, 2, 3])
    proposals = torch.tensor([[20.0, 20, 60, 60]])
    logits = torch.full((1, 4, M, M), 5.0)
    targets, valid = present_class_targets(logits, proposals, gt_boxes, gt_labels, masks, torch.tensor([0]))
    assert valid.tolist() == [[False, True, True, False]]
    # RoIAlign crops (aligned=False, as torchvision's mask targets) lose a corner pixel here
    assert abs(targets[0, 1].item() - 1.0) < 0.01
    expected = mask_iou_targets(logits[:, 2], proposals, masks[1:2])
    assert torch.allclose(targets[0, 2], expected[0])
    assert targets[0, 3] == 0


def test_targets_and_mask_loss_use_only_the_matched_masks() -> None:
    """A crowded image: 60 GT instances, 7 positive RoIs matched to 4 of them. The targets and
    torchvision's mask loss computed on the matched masks (``used_masks``) equal those computed
    with every instance, and the per-instance work is done on 4 masks, not 60."""
    from torchvision.models.detection.roi_heads import maskrcnn_loss

    from msrcnn.models.maskiou import mask_iou_targets_matched, used_masks

    g = torch.Generator().manual_seed(0)
    masks = torch.rand((60, 48, 64), generator=g) > 0.6
    labels = torch.randint(1, 5, (60,), generator=g)
    idx = torch.tensor([41, 3, 41, 17, 3, 58, 17])
    boxes = torch.tensor([[4.0, 2, 30, 40], [0, 0, 63, 47], [10, 5, 20, 15], [33, 8, 60, 44]] * 2)[:7]
    logits = torch.randn((7, 5, 28, 28), generator=g)
    own = logits[torch.arange(7), labels[idx]]

    used, remapped = used_masks(idx, len(masks))
    assert used.tolist() == [3, 17, 41, 58]
    assert torch.equal(used[remapped], idx)
    everything, same = used_masks(idx, 7)  # no more instances than RoIs: all of them, no copy
    assert everything == slice(None) and same is idx
    expected = mask_iou_targets(own, boxes, masks[idx])  # one explicit mask per RoI
    assert torch.allclose(mask_iou_targets_matched(own, boxes, masks, idx), expected)

    full = maskrcnn_loss(logits, [boxes], [masks], [labels], [idx])
    subset = maskrcnn_loss(logits, [boxes], [masks[used]], [labels[used]], [remapped])
    assert torch.allclose(full, subset)
