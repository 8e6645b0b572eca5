"""``head.samples=detections``: the MaskIoU head also trains on the RoIs it will score as false positives
and part-boxes at test time (beyond the paper; the paper's ``positives`` stays the default and exact)."""

import pytest
import torch

from model_testing import rect_mask, small_model, synthetic_batch
from msrcnn.models import TRAIN_SAMPLES
from msrcnn.models.maskiou import best_instance_of_class, detection_like_negatives, negative_targets

M = 28


def test_choices_defined_once_and_default_is_the_papers():
    assert TRAIN_SAMPLES == ("positives", "detections")
    assert small_model().roi_heads.maskiou_cfg.samples == "positives"
    with pytest.raises(ValueError, match="positives, detections"):
        small_model(head={"samples": "negatives"})


def test_negatives_are_the_background_rois_scored_highest():
    # 5 RoIs, 3 classes + background. RoI 0 is positive (label 2) and scores highest: never picked.
    logits = torch.tensor(
        [
            [0.0, 0.0, 9.0, 0.0],  # positive
            [0.0, 5.0, 0.0, 0.0],  # background, class 1 at high score
            [5.0, 0.0, 0.0, 0.0],  # background, confidently background
            [0.0, 0.0, 0.0, 3.0],  # background, class 3
            [1.0, 0.0, 0.0, 0.0],
        ]
    )
    labels = torch.tensor([2, 0, 0, 0, 0])
    index, classes = detection_like_negatives(logits, labels, 2)
    assert index.tolist() == [1, 3]
    assert classes.tolist() == [1, 3]  # the foreground class each would be detected as


def test_best_instance_is_of_the_detected_class():
    gt_boxes = torch.tensor([[0.0, 0, 50, 50], [10, 10, 60, 60]])
    gt_labels = torch.tensor([1, 2])
    boxes = torch.tensor([[10.0, 10, 60, 60], [10.0, 10, 60, 60], [200.0, 200, 220, 220]])
    idx, found = best_instance_of_class(boxes, torch.tensor([1, 2, 1]), gt_boxes, gt_labels)
    # box 0 sits on instance 1 exactly, but as class 1 it is scored against instance 0
    assert idx[:2].tolist() == [0, 1]
    assert found.tolist() == [True, True, False]
    empty_idx, empty_found = best_instance_of_class(
        boxes, torch.tensor([1, 2, 1]), gt_boxes[:0], gt_labels[:0]
    )
    assert not empty_found.any() and empty_idx.shape == (3,)


def test_negative_targets_part_box_false_positive_and_wrong_class():
    # object: rows 20..59, cols 30..89 of a 100x100 image (2,400 px), class 1
    gt_masks = rect_mask(100, 100, 20, 60, 30, 90)[None]
    gt_boxes, gt_labels = torch.tensor([[30.0, 20, 90, 60]]), torch.tensor([1])
    full = torch.full((4, M, M), 5.0)  # each mask fills its box
    boxes = torch.tensor(
        [
            [30.0, 20, 60, 60],  # the left half of the object: a part-box, whole-instance IoU 0.5
            [30.0, 20, 45, 60],  # a quarter: 0.25
            [0.0, 70, 20, 95],  # no object there: a false positive, 0
            [30.0, 20, 90, 60],  # on the object, but detected as class 2: 0
        ]
    )
    classes = torch.tensor([1, 1, 1, 2])
    values = negative_targets(full, boxes, classes, gt_boxes, gt_labels, gt_masks)
    assert torch.allclose(values, torch.tensor([0.5, 0.25, 0.0, 0.0]), atol=1e-6)
    # an image without objects: every target is 0
    none = negative_targets(full, boxes, classes, gt_boxes[:0], gt_labels[:0], gt_masks[:0])
    assert none.tolist() == [0.0] * 4


def test_positives_default_is_unchanged_by_the_option(batch):
    # the paper's samples: same loss as a model built without the key at all
    a = small_model().train()(*batch)["loss_maskiou"]
    b = small_model(head={"samples": "positives"}).train()(*batch)["loss_maskiou"]
    assert torch.equal(a, b)


def test_detections_trains_on_more_samples_with_detached_inputs(batch):
    torch.manual_seed(0)
    model = small_model(head={"samples": "detections"}).train()
    seen = []
    hook = model.roi_heads.maskiou_head.register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    torch.manual_seed(1)
    losses = model(*batch)
    hook.remove()
    paper = small_model().train()
    seen_paper = []
    paper.roi_heads.maskiou_head.register_forward_hook(lambda m, i, o: seen_paper.append(o.shape[0]))
    torch.manual_seed(1)
    paper(*batch)
    # one head call; the positives plus as many negatives per image (the sampler gives more negatives)
    assert len(seen) == 1 and seen[0] == 2 * seen_paper[0]
    assert torch.isfinite(losses["loss_maskiou"]) and losses["loss_maskiou"] > 0
    heads = model.roi_heads
    grads = torch.autograd.grad(
        losses["loss_maskiou"], list(heads.maskiou_head.parameters()), retain_graph=True
    )
    assert any(g.abs().sum() > 0 for g in grads)


def test_detections_negatives_pull_predictions_down(batch):
    # With empty predicted masks every positive target is 0 and left out (tau = 0): only the negatives
    # are regressed, towards 0, so a head predicting 1 everywhere has a positive loss; the paper's has none.
    def with_constant_head(samples):
        model = small_model(head={"samples": samples}).train()
        heads = model.roi_heads
        with torch.no_grad():
            heads.mask_predictor.mask_fcn_logits.weight.zero_()
            heads.mask_predictor.mask_fcn_logits.bias.fill_(-20.0)
            heads.maskiou_head.predictor.weight.zero_()
            heads.maskiou_head.predictor.bias.fill_(1.0)
        torch.manual_seed(1)
        return model(*batch)["loss_maskiou"].item()

    assert with_constant_head("positives") == 0.0
    assert with_constant_head("detections") == pytest.approx(0.5)  # 0.5 * (1 - 0)^2 averaged


def test_detections_with_every_input_design_and_target(batch):
    for head in ({"input": "concat_highres"}, {"input": "concat_all"}, {"target": "positive_classes"}):
        model = small_model(head={"samples": "detections", **head}).train()
        loss = model(*batch)["loss_maskiou"]
        assert torch.isfinite(loss) and loss > 0, head


def test_detections_image_without_objects_trains():
    images, targets = synthetic_batch()
    targets[0] = dict(
        boxes=torch.zeros(0, 4),
        labels=torch.zeros(0, dtype=torch.int64),
        masks=torch.zeros(0, 96, 96, dtype=torch.uint8),
    )
    losses = small_model(head={"samples": "detections"}).train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())
