"""MaskScoringRCNN: training losses, gradients, inference outputs and torchvision equivalence."""

import copy

import numpy as np
import pytest
import torch
from torchvision.models.detection import MaskRCNN

from model_testing import SMALL, rect_mask, small_model, synthetic_batch, torchvision_pair
from msrcnn.evaluation.records import make_record, top_detections
from msrcnn.models import INPUT_DESIGNS, TRAIN_TARGETS, MaskScoringRCNN, build_backbone
from msrcnn.models.maskiou import mask_scores

EXPECTED_LOSSES = {
    "loss_classifier",
    "loss_box_reg",
    "loss_mask",
    "loss_maskiou",
    "loss_objectness",
    "loss_rpn_box_reg",
}


def grads_from(loss, params):
    grads = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
    return [g for g in grads if g is not None and g.abs().sum() > 0]


@pytest.mark.parametrize("design", INPUT_DESIGNS)
def test_each_input_design_trains_and_reaches_mask_head(design, batch):
    model = small_model(head={"input": design}).train()
    losses = model(*batch)
    assert set(losses) == EXPECTED_LOSSES
    assert all(torch.isfinite(v) for v in losses.values())
    heads = model.roi_heads
    assert grads_from(losses["loss_maskiou"], list(heads.maskiou_head.parameters()))
    assert grads_from(losses["loss_maskiou"], list(heads.mask_head.parameters()))
    model.eval()
    with torch.no_grad():
        out = model(batch[0])
    assert out[0]["mask_ious"].shape == out[0]["scores"].shape


@pytest.mark.parametrize("target", TRAIN_TARGETS)
def test_each_training_target_trains(target, batch):
    model = small_model(head={"target": target}).train()
    losses = model(*batch)
    assert torch.isfinite(losses["loss_maskiou"]) and losses["loss_maskiou"] > 0
    assert grads_from(losses["loss_maskiou"], list(model.roi_heads.maskiou_head.parameters()))


def test_head_shapes_per_design():
    for design, channels in [
        ("concat", 17),
        ("multiply", 16),
        ("concat_all", 16 + 4),
        ("concat_highres", 17),
    ]:
        head = small_model(head={"input": design}).roi_heads.maskiou_head
        assert head.convs[0].in_channels == channels
        assert head.predictor.out_features == 4
    highres = small_model(head={"input": "concat_highres"}).roi_heads
    assert highres.maskiou_roi_pool.output_size == (28, 28)
    assert sum(isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2) for m in highres.maskiou_head.convs) == 2


def test_tau_filters_samples(batch):
    # untrained masks are poor: no target reaches 0.99, so nothing is regressed
    model = small_model(head={"tau": 0.99}).train()
    assert model(*batch)["loss_maskiou"].item() == 0.0


def test_tau_zero_leaves_out_zero_targets(batch):
    # Paper Table 6: the head trains on targets strictly above tau. Empty predicted masks (all logits
    # negative) have target 0 everywhere, so at tau = 0 nothing is regressed; with ">=" every
    # positive RoI would be pulled towards 0 and the loss would be positive.
    model = small_model(head={"tau": 0.0}).train()
    logits = model.roi_heads.mask_predictor.mask_fcn_logits
    with torch.no_grad():
        logits.weight.zero_()
        logits.bias.fill_(-20.0)
    assert model(*batch)["loss_maskiou"].item() == 0.0
    with torch.no_grad():
        logits.bias.fill_(20.0)  # full masks: targets > 0, so the same RoIs are regressed
    assert model(*batch)["loss_maskiou"].item() > 0.0


def test_loss_weight_scales_the_loss(batch):
    a = small_model(head={"loss_weight": 1.0}).train()(*batch)["loss_maskiou"]
    b = small_model(head={"loss_weight": 0.5}).train()(*batch)["loss_maskiou"]
    assert torch.allclose(b, 0.5 * a)


def test_detach_inputs_keeps_mask_head_out(batch):
    model = small_model(head={"detach_inputs": True}).train()
    losses = model(*batch)
    assert not grads_from(losses["loss_maskiou"], list(model.roi_heads.mask_head.parameters()))


def test_inference_outputs(batch):
    model = small_model().eval()
    with torch.no_grad():
        out = model(batch[0])
    for o in out:
        assert set(o) == {"boxes", "labels", "scores", "masks", "mask_ious", "mask_scores"}
        assert ((o["mask_ious"] >= 0) & (o["mask_ious"] <= 1)).all()
        assert torch.allclose(o["mask_scores"], o["scores"] * o["mask_ious"])
        assert len(o["boxes"]) <= 100


def test_the_mask_score_is_one_function_of_the_model_and_its_records(batch):
    """The model's ``mask_scores`` and a record's (rebuilt from ``scores`` and ``mask_ious``, as
    records read back from JSON are) are the same numbers, bit for bit."""
    model = small_model().eval()
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        out = model(batch[0])
    assert sum(len(o["scores"]) for o in out) > 0
    for o in out:
        assert torch.equal(o["mask_scores"], mask_scores(o["scores"], o["mask_ious"]))
        record = make_record(o, 1, list(range(model.roi_heads.box_predictor.cls_score.out_features)))
        order = top_detections(o["scores"], 100)
        assert np.array_equal(record.mask_scores, o["mask_scores"][order].numpy())
    scores = np.array([0.5, 0.25], dtype=np.float32)
    assert mask_scores(scores, None) is scores  # a plain Mask R-CNN: the class score


def test_batch_equals_single_images():
    # Same-size images (as aspect-ratio-grouped batches are). Images of different sizes are
    # zero-padded to a common size in a batch, and the normalisation layers turn that padding
    # into border features, in torchvision's MaskRCNN as much as here.
    images, _ = synthetic_batch(3, size=96)
    model = small_model(box_score_thresh=0.0).eval()
    with torch.no_grad():
        together = model(images)
        single = [model([img])[0] for img in images]
    for a, b in zip(together, single):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.allclose(a[key], b[key], atol=1e-5), key


def test_equals_torchvision_maskrcnn_with_same_weights():
    tv, ms = torchvision_pair()
    images, _ = synthetic_batch(2)
    with torch.no_grad():
        a, b = tv(images), ms(images)
    for x, y in zip(a, b):
        assert len(x["boxes"]) > 0
        for key in ("boxes", "labels", "scores", "masks"):
            assert torch.equal(x[key], y[key]), key


def test_soft_nms_changes_postprocessing_only(batch):
    hard = small_model(box_score_thresh=0.0).eval()
    soft = small_model(box_score_thresh=0.0, soft_nms=True)
    soft.load_state_dict(hard.state_dict())
    soft.eval()
    with torch.no_grad():
        a, b = hard(batch[0]), soft(batch[0])
    # Soft-NMS keeps at least as many boxes (it decays rather than removes) and never raises a score
    assert all(len(y["scores"]) >= min(len(x["scores"]), 100) for x, y in zip(a, b))
    assert all(y["scores"].max() <= x["scores"].max() + 1e-6 for x, y in zip(a, b))


def test_plain_mask_rcnn_mode(batch):
    model = small_model(head=None).train()
    assert "loss_maskiou" not in model(*batch)
    assert not model.has_maskiou
    model.eval()
    with torch.no_grad():
        assert "mask_ious" not in model(batch[0])[0]


def test_empty_targets_train(batch):
    images, targets = batch
    targets[0] = dict(
        boxes=torch.zeros(0, 4),
        labels=torch.zeros(0, dtype=torch.int64),
        masks=torch.zeros(0, 96, 96, dtype=torch.uint8),
    )
    losses = small_model().train()(images, targets)
    assert all(torch.isfinite(v) for v in losses.values())


def test_bad_options_fail_with_the_choices():
    with pytest.raises(ValueError, match="concat, multiply"):
        small_model(head={"input": "concatt"})
    with pytest.raises(ValueError, match="target_class"):
        small_model(head={"target": "gt"})
    with pytest.raises(ValueError, match="linear"):
        small_model(soft_nms={"method": "hard"})


def test_small_config_is_what_the_tests_use():
    assert SMALL["backbone"]["name"] == "r18_fpn"


def crowded_batch(num_objects: int = 40, size: int = 128, seed: int = 0):
    """One image with ``num_objects`` small squares of three classes on a grid (more objects than positives)."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(3, size, size, generator=g) * 0.2
    boxes, masks = [], []
    labels = torch.randint(1, 4, (num_objects,), generator=g)
    for n in range(num_objects):
        y0, x0 = 4 + 17 * (n // 7), 4 + 17 * (n % 7)
        masks.append(rect_mask(size, size, y0, y0 + 11, x0, x0 + 11))
        img[:, y0 : y0 + 11, x0 : x0 + 11] = 0.5 + 0.15 * labels[n]
        boxes.append([x0, y0, x0 + 11, y0 + 11])
    target = dict(boxes=torch.tensor(boxes, dtype=torch.float32), labels=labels, masks=torch.stack(masks))
    return [img], [target]


def test_crowded_image_mask_loss_equals_torchvision():
    """40 objects, 8 positive RoIs: the RoI heads hand the mask loss the matched masks and labels only
    (``used_masks``); the loss must equal torchvision's, which is given all of them."""
    torch.manual_seed(0)
    spec = build_backbone("r18_fpn", returned_layers=[1, 2, 3, 4], fpn_channels=16)
    kwargs = dict(min_size=128, max_size=128, box_batch_size_per_image=32, box_positive_fraction=0.25)
    tv = MaskRCNN(copy.deepcopy(spec.body), num_classes=4, **kwargs).train()
    ms = MaskScoringRCNN(
        copy.deepcopy(spec.body), num_classes=4, head={"conv_channels": 16}, **kwargs
    ).train()
    ms.load_state_dict(tv.state_dict(), strict=False)
    images, targets = crowded_batch()
    losses = {}
    for name, model in (("tv", tv), ("ms", ms)):
        torch.manual_seed(1)  # the same RPN and RoI sampling in both
        losses[name] = model(copy.deepcopy(images), copy.deepcopy(targets))
    assert torch.allclose(losses["ms"]["loss_mask"], losses["tv"]["loss_mask"], atol=1e-6)
    assert torch.allclose(losses["ms"]["loss_classifier"], losses["tv"]["loss_classifier"], atol=1e-6)
