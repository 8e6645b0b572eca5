"""Mixed precision without needless float32 copies: frozen BN keeps the activations' dtype, the RoI
heads cast the feature maps to float32 once, and TF32 is the apps' default on CUDA."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torchvision.ops import FrozenBatchNorm2d as TorchvisionFrozenBatchNorm2d

from model_testing import small_model
from msrcnn.app.float32_precision import set_float32_matmul_precision
from msrcnn.models.backbones import FrozenBatchNorm2d


def frozen_bn(channels=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    ours, theirs = FrozenBatchNorm2d(channels), TorchvisionFrozenBatchNorm2d(channels)
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = torch.rand(channels, generator=g) + 0.5
        getattr(ours, name).copy_(value)
        getattr(theirs, name).copy_(value)
    return ours, theirs


def test_frozen_bn_equals_torchvision_in_float32_and_keeps_bf16():
    ours, theirs = frozen_bn()
    x = torch.randn(2, 6, 5, 7)
    assert torch.equal(ours(x), theirs(x))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    low = x.to(torch.bfloat16)
    assert theirs(low).dtype == torch.float32  # torchvision's: a float32 copy of every activation map
    assert ours(low).dtype == torch.bfloat16
    assert torch.allclose(ours(low).float(), theirs(x), rtol=2e-2, atol=2e-2)


def test_pretrained_style_backbone_stays_in_bf16_under_autocast():
    model = small_model(backbone={"norm": "frozen_bn"}).eval()
    images = [torch.rand(3, 96, 96)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        features = model.backbone(model.transform(images)[0].tensors)
    assert all(f.dtype == torch.bfloat16 for f in features.values())


class _FeatureCasts(TorchDispatchMode):
    """Counts casts of the FPN's feature maps (recognised by their storage) to float32."""

    def __init__(self, storages):
        super().__init__()
        self.storages = storages
        self.casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if str(func) == "aten._to_copy.default" and kwargs.get("dtype") == torch.float32:
            if args[0].untyped_storage().data_ptr() in self.storages:
                self.casts += 1
        return func(*args, **kwargs)


def test_roi_heads_cast_each_feature_map_once_under_autocast():
    # concat_highres: three RoIAlign poolers (box, mask, MaskIoU) read the same maps
    model = small_model(head={"input": "concat_highres"}).eval()
    images = [torch.rand(3, 96, 96)]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        image_list, _ = model.transform(images)
        features = model.backbone(image_list.tensors)
        proposals, _ = model.rpn(image_list, features)
        counter = _FeatureCasts({f.untyped_storage().data_ptr() for f in features.values()})
        with counter:
            out, _ = model.roi_heads(features, proposals, image_list.image_sizes)
    assert len(out[0]["boxes"]) > 0
    assert counter.casts == len(features)


@pytest.fixture
def restore_precision():
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    yield
    torch.set_float32_matmul_precision(matmul)
    torch.backends.cudnn.allow_tf32 = cudnn


def test_float32_matmul_precision_sets_tf32_on_cuda(monkeypatch, restore_precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    set_float32_matmul_precision("high")
    assert torch.get_float32_matmul_precision() == "high" and torch.backends.cudnn.allow_tf32
    set_float32_matmul_precision("highest")
    assert torch.get_float32_matmul_precision() == "highest" and not torch.backends.cudnn.allow_tf32
    with pytest.raises(ValueError, match="highest, high, medium"):
        set_float32_matmul_precision("tf32")


def test_float32_matmul_precision_leaves_a_cpu_run_alone(monkeypatch, restore_precision):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.get_float32_matmul_precision()
    set_float32_matmul_precision("medium")
    assert torch.get_float32_matmul_precision() == before
