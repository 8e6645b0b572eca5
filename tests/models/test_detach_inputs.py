"""``head.detach_inputs``: the MaskIoU loss trains the MaskIoU head only, for every input design."""

import pytest

from model_testing import small_model, synthetic_batch
from msrcnn.models import INPUT_DESIGNS


@pytest.mark.parametrize("design", INPUT_DESIGNS)
@pytest.mark.parametrize("detach", [True, False])
def test_maskiou_loss_reaches_the_backbone_only_when_not_detached(design, detach):
    model = small_model(head={"input": design, "detach_inputs": detach}).train()
    images, targets = synthetic_batch(2)
    model(images, targets)["loss_maskiou"].backward()
    backbone = [p.grad for p in model.backbone.parameters() if p.requires_grad]
    reached = sum(int(g is not None and bool(g.abs().sum() > 0)) for g in backbone)
    head = [p.grad for p in model.roi_heads.maskiou_head.parameters()]
    assert all(g is not None for g in head) and any(bool(g.abs().sum() > 0) for g in head)
    if detach:
        assert reached == 0, f"{design}: the MaskIoU loss reached {reached} backbone parameters"
    else:
        assert reached > 0
