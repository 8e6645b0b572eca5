"""Mixed precision (autocast, bf16 / fp16) and channels_last, on the CPU."""

import pytest
import torch

from model_testing import small_model

OUTPUT_KEYS = ("boxes", "scores", "masks", "mask_ious", "mask_scores")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_autocast_training_step_gives_finite_float32_losses_and_gradients(batch, dtype):
    images, targets = batch
    model = small_model()
    model.train()
    with torch.autocast("cpu", dtype=dtype):
        losses = model(images, targets)
    assert "loss_maskiou" in losses
    for name, loss in losses.items():
        assert loss.dtype == torch.float32, name
        assert torch.isfinite(loss), name
    sum(losses.values()).backward()
    grads = [p.grad for p in model.roi_heads.maskiou_head.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def _proposal_dtypes(model, images):
    """The dtypes of the proposals the RoI heads receive, in an eval forward under bf16 autocast."""
    seen = []
    handle = model.roi_heads.register_forward_pre_hook(lambda m, args: seen.extend(p.dtype for p in args[1]))
    try:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            outputs = model(images)
    finally:
        handle.remove()
    return seen, outputs


def test_bf16_autocast_decodes_proposals_and_boxes_in_float32(batch):
    images, _ = batch
    model = small_model().eval()
    dtypes, outputs = _proposal_dtypes(model, images)
    assert dtypes and all(d == torch.float32 for d in dtypes)
    for out in outputs:
        for key in OUTPUT_KEYS:
            assert out[key].dtype == torch.float32, key
        assert torch.isfinite(out["boxes"]).all()
    # Without the hook on the RPN head, torchvision decodes the proposals in bfloat16.
    model.rpn.head._forward_hooks.clear()
    dtypes, _ = _proposal_dtypes(model, images)
    assert all(d == torch.bfloat16 for d in dtypes)


def test_bf16_autocast_roi_mask_output_is_float32(batch):
    images, _ = batch
    model = small_model().eval()
    with model.roi_mask_output(), torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        outputs = model(images)
    assert all(out["roi_masks"].dtype == torch.float32 for out in outputs)


def test_channels_last_gives_the_same_detections(batch):
    images, _ = batch
    model = small_model(box_score_thresh=0.0).eval()
    with torch.no_grad():
        expected = model(images)
        model = model.to(memory_format=torch.channels_last)
        got = model(images)
    for a, b in zip(expected, got):
        assert torch.equal(a["labels"], b["labels"])
        for key in OUTPUT_KEYS:
            torch.testing.assert_close(b[key], a[key], atol=1e-4, rtol=1e-4)
