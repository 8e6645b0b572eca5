"""Backbone builders: every paper backbone builds and runs; weights load only from local files."""

import pytest
import torch
from torchvision.models import resnet18

from msrcnn.models import BACKBONES, build_backbone, build_model
from msrcnn.models.backbones import DeformableConv3x3, default_anchor_sizes, imagenet_checkpoint_path


@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_features(name):
    torch.manual_seed(0)
    spec = build_backbone(name, fpn_channels=32)
    feats = spec.body(torch.rand(1, 3, 64, 64))
    for key in spec.featmap_names:
        assert feats[key].shape[1] == spec.body.out_channels
    if name == "r18_fpn":  # the paper's R18: C4 and C5 only (+ the pooled level)
        assert list(feats) == ["0", "1", "pool"] and feats["0"].shape[-1] == 4
    if name.endswith("_c4"):
        assert spec.box_head is not None and spec.roi_output_size == 14
    if "dcn" in name:
        assert sum(isinstance(m, DeformableConv3x3) for m in spec.body.modules()) > 0


@pytest.mark.parametrize("name", ["r50_c4", "r50_dcn_fpn"])
def test_heavier_frameworks_train_one_step(name):
    torch.manual_seed(0)
    model = build_model(
        num_classes=3,
        backbone={"name": name, "fpn_channels": 16},
        head={"conv_channels": 16, "fc_dim": 32},
        mask_head_channels=16,
        min_size=64,
        max_size=64,
        box_batch_size_per_image=16,
    )
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 10:40, 20:50] = 1
    target = dict(boxes=torch.tensor([[20.0, 10, 50, 40]]), labels=torch.tensor([1]), masks=mask)
    losses = model.train()([torch.rand(3, 64, 64)], [target])
    assert torch.isfinite(sum(losses.values()))
    assert "loss_maskiou" in losses


def test_default_normalisation_is_trainable_from_scratch_and_frozen_over_weights(tmp_path):
    scratch = build_backbone("r18_fpn")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in scratch.body.modules())
    assert all(p.requires_grad for p in scratch.body.parameters())
    path = tmp_path / "r18.pth"
    torch.save(resnet18(weights=None).state_dict(), path)
    pretrained = build_backbone("r18_fpn", pretrained=str(path))
    from torchvision.ops import FrozenBatchNorm2d

    assert any(isinstance(m, FrozenBatchNorm2d) for m in pretrained.body.modules())
    assert not any(
        p.requires_grad for n, p in pretrained.body.body.named_parameters() if n.startswith("layer1")
    )
    assert all(p.requires_grad for n, p in pretrained.body.body.named_parameters() if n.startswith("layer4"))


def test_pretrained_weights_are_really_loaded(tmp_path):
    reference = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(reference.state_dict(), path)
    spec = build_backbone("r18_fpn", pretrained=str(path))
    assert torch.equal(spec.body.body.layer3[0].conv1.weight, reference.layer3[0].conv1.weight)


def test_missing_imagenet_weights_name_the_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        build_backbone("r50_fpn", pretrained="imagenet")
    assert str(imagenet_checkpoint_path(50)) in str(err.value)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        build_backbone("r18_fpn", pretrained=str(tmp_path / "nope.pth"))


def test_wrong_weights_file_is_refused(tmp_path):
    path = tmp_path / "bad.pth"
    torch.save({"layer9.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="does not match ResNet-18"):
        build_backbone("r18_fpn", pretrained=str(path))


def test_config_errors_name_the_value():
    with pytest.raises(ValueError, match="r34_fpn"):
        build_backbone("r34_fpn")
    with pytest.raises(ValueError, match="returned_layers"):
        build_backbone("r50_fpn", returned_layers=[4, 2])
    with pytest.raises(ValueError, match="anchor_sizes has 2 levels"):
        build_backbone("r50_fpn", anchor_sizes=[[32], [64]])


def test_default_anchor_sizes_have_equal_counts_per_level():
    assert default_anchor_sizes(5) == ((32,), (64,), (128,), (256,), (512,))
    three = default_anchor_sizes(3)
    assert len(three) == 3 and len({len(level) for level in three}) == 1 and three[0][0] == 32


def test_width_scales_every_stage():
    spec = build_backbone("r18_fpn", width=16, returned_layers=[1, 2, 3, 4], fpn_channels=8)
    body = spec.body.body
    assert body.conv1.out_channels == 16
    assert [body[f"layer{i}"][-1].conv2.out_channels for i in (1, 2, 3, 4)] == [16, 32, 64, 128]
    features = spec.body(torch.zeros(1, 3, 64, 64))
    assert [f.shape[1] for f in features.values()] == [8] * 5
    r50 = build_backbone("r50_fpn", width=16).body.body
    assert r50["layer4"][-1].conv3.out_channels == 16 * 8 * 4  # bottleneck expansion


def test_narrow_backbone_has_no_pretrained_weights():
    with pytest.raises(ValueError, match="backbone.width=32"):
        build_backbone("r18_fpn", width=32, pretrained="imagenet")


def test_a_damaged_imagenet_file_gets_the_checkpoint_reader_s_one_line(tmp_path, monkeypatch):
    from msrcnn.models import CheckpointError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = imagenet_checkpoint_path(18)
    path.parent.mkdir(parents=True)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, path)
    path.write_bytes(path.read_bytes()[:200])  # a download cut short
    with pytest.raises(CheckpointError) as err:
        build_backbone("r18_fpn", pretrained="imagenet")
    message = str(err.value)
    assert message.startswith(f"{path} is not a readable ResNet-18 weights file (truncated or corrupt?): ")
    assert "\n" not in message
