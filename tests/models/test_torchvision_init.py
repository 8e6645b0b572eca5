"""model.init_from=torchvision:maskrcnn_resnet50_fpn: torchvision's COCO Mask R-CNN mapped onto a dataset's
COCO category ids, the MaskIoU head fresh. A locally saved state_dict() of the same torchvision architecture
(random weights) stands in for the COCO weights: nothing is downloaded."""

import shutil
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torchvision.models import get_model_weights
from torchvision.models.detection import maskrcnn_resnet50_fpn, maskrcnn_resnet50_fpn_v2

from msrcnn.app.builders import build_detector
from msrcnn.app.schemas import validate
from msrcnn.config import to_plain
from msrcnn.data import SHAPES_CATEGORIES
from msrcnn.models import build_model
from msrcnn.models.torchvision_init import TorchvisionInitError, coco_slots, init_from_torchvision
from msrcnn_testing import CONF, TINY, run_script

NAME = "torchvision:maskrcnn_resnet50_fpn"
SUBSET = [(1, "person"), (3, "car"), (18, "dog"), (90, "toothbrush")]  # COCO ids, not contiguous
COCO_NAMES = get_model_weights("maskrcnn_resnet50_fpn").DEFAULT.meta["categories"]


# torchvision's builder and the msrcnn settings that build the same architecture
ARCHITECTURES = {
    "maskrcnn_resnet50_fpn": (maskrcnn_resnet50_fpn, {}, {}),
    "maskrcnn_resnet50_fpn_v2": (
        maskrcnn_resnet50_fpn_v2,
        {"fpn_norm": "bn"},
        {"box_head": "conv", "rpn_conv_depth": 2, "mask_head_norm": "bn"},
    ),
}


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def version(request):
    return request.param


@pytest.fixture(scope="module")
def torchvision_model(version):
    torch.manual_seed(0)
    model = ARCHITECTURES[version][0](weights=None, weights_backbone=None, num_classes=91).eval()
    with torch.no_grad():  # BN statistics that are not the identity, so that a wrong mapping shows
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def weights_file(torchvision_model, version, tmp_path_factory):
    path = tmp_path_factory.mktemp("tv") / f"{version}.pth"
    torch.save(torchvision_model.state_dict(), path)
    return path


def r50_model(num_classes: int, version: str = "maskrcnn_resnet50_fpn"):
    _, backbone, model = ARCHITECTURES[version]
    torch.manual_seed(1)
    backbone = {"name": "r50_fpn", "norm": "frozen_bn", **backbone}
    return build_model(num_classes=num_classes, backbone=backbone, head={}, **model).eval()


def test_every_tensor_but_the_maskiou_head_is_torchvision_s_with_classes_by_coco_id(
    torchvision_model, weights_file, version
):
    model = r50_model(len(SUBSET) + 1, version)
    fresh = {k: v.clone() for k, v in model.state_dict().items() if "maskiou" in k}
    init_from_torchvision(model, f"torchvision:{version}", SUBSET, weights_file=weights_file)
    own, theirs = model.state_dict(), torchvision_model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in fresh.items()) and fresh  # the MaskIoU head starts fresh
    per_class = [k for k in theirs if "box_predictor" in k or "mask_predictor" in k]
    for key in theirs:
        if key not in per_class and not key.endswith("num_batches_tracked"):
            assert torch.equal(own[key], theirs[key]), key
    slots = [0, 1, 3, 18, 90]
    x = torch.randn(6, 1024)
    feats = torch.randn(6, 256, 14, 14)
    with torch.no_grad():
        logits, deltas = model.roi_heads.box_predictor(x)
        tv_logits, tv_deltas = torchvision_model.roi_heads.box_predictor(x)
        masks = model.roi_heads.mask_predictor(feats)
        tv_masks = torchvision_model.roi_heads.mask_predictor(feats)
        image = torch.rand(1, 3, 64, 96)
        features, tv_features = model.backbone(image), torchvision_model.backbone(image)
    torch.testing.assert_close(logits, tv_logits[:, slots])
    torch.testing.assert_close(deltas.reshape(6, -1, 4), tv_deltas.reshape(6, 91, 4)[:, slots])
    torch.testing.assert_close(masks, tv_masks[:, slots])
    for level, expected in tv_features.items():  # frozen BN = torchvision's eval-mode BN (to rounding)
        scale = float(expected.abs().max())
        torch.testing.assert_close(features[level], expected, rtol=1e-3, atol=1e-4 * scale)


def test_the_weights_api_path_from_torch_hub_s_cache_in_the_training_builder(
    torchvision_model, weights_file, version, tmp_path, monkeypatch
):
    url = get_model_weights(version).DEFAULT.url
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    shutil.copy(weights_file, cache / Path(url).name)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(*args, **kwargs):
        raise AssertionError("a test must not download")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    experiment = {
        "maskrcnn_resnet50_fpn": "coco_torchvision",
        "maskrcnn_resnet50_fpn_v2": "coco_torchvision_v2",
    }
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        overrides = [f"experiment={experiment[version]}", "data.root=/data/coco", "logger=none"]
        cfg = validate(compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"]))
    assert cfg.model.init_from == f"torchvision:{version}"
    coco = [(i, n) for i, n in enumerate(COCO_NAMES) if n not in ("N/A", "__background__")]
    assert len(coco) == 80
    model = build_detector(to_plain(cfg), len(coco) + 1, coco)  # the preset builds torchvision's architecture
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(
        model.state_dict()[key], torchvision_model.state_dict()[key][[0, *(i for i, _ in coco)]]
    )


def test_refusals_are_one_line_and_name_the_cause(weights_file, version):
    with pytest.raises(
        TorchvisionInitError, match=r"category id 1 is named 'ellipse' here, COCO's is 'person'"
    ):
        coco_slots(SHAPES_CATEGORIES, COCO_NAMES, NAME)
    with pytest.raises(
        TorchvisionInitError, match="category id 12 is named 'street sign' here, COCO has no such"
    ):
        coco_slots([(12, "street sign")], COCO_NAMES, NAME)
    with pytest.raises(TorchvisionInitError, match="category id 91 .* COCO has no such category id"):
        coco_slots([(91, "x")], COCO_NAMES, NAME)
    assert coco_slots([(5, "Airplane ")], COCO_NAMES) == [0, 5]  # case and spaces do not matter
    with pytest.raises(TorchvisionInitError, match="not a supported torchvision detector; expected one of"):
        init_from_torchvision(
            r50_model(2), "torchvision:resnet50", [(1, "person")], weights_file=weights_file
        )
    other = next(v for v in ARCHITECTURES if v != version)  # these weights in the other architecture
    with pytest.raises(TorchvisionInitError, match=r"does not fit this model .*; use backbone=r50_fpn"):
        init_from_torchvision(
            r50_model(2, other), f"torchvision:{version}", [(1, "person")], weights_file=weights_file
        )
    small = build_model(num_classes=2, backbone="r18_fpn", head={})
    with pytest.raises(TorchvisionInitError, match=r"in this model; use backbone=r50_fpn"):
        init_from_torchvision(small, f"torchvision:{version}", [(1, "person")], weights_file=weights_file)


def test_train_script_refuses_a_dataset_whose_ids_are_not_coco_s(shapes_dir, tmp_path):
    proc = run_script(
        "train.py",
        *TINY,
        "backbone=r50_fpn",
        f"model.init_from={NAME}",
        f"paths.data_dir={shapes_dir}",
        f"hydra.run.dir={tmp_path}",
        check=False,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(
        "error: torchvision:maskrcnn_resnet50_fpn weights need a dataset with COCO's category ids"
    )


def test_the_readme_recipe_composes_and_builds_torchvisions_architecture(tmp_path):
    commands = (
        ["experiment=coco_torchvision", "data.root=/data/coco"],
        [
            "experiment=coco_torchvision",
            "data.root=/data/coco",
            "model.train_only=all",
            "trainer.max_epochs=2",
            "optim.schedule_epochs=2",
            "optim.lr_step_epochs=[1.5]",
        ],
    )
    for overrides in commands:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = validate(compose("train", overrides=[*overrides, f"paths.output_dir={tmp_path}"]))
        assert cfg.model.init_from == NAME and cfg.backbone.name.value == "r50_fpn"
    plain = to_plain(cfg)
    plain["model"]["init_from"] = None
    own = build_detector(plain, 91).state_dict()
    theirs = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()
    assert all(own[k].shape == v.shape for k, v in theirs.items() if not k.endswith("num_batches_tracked"))


def test_a_damaged_cached_weights_file_gets_the_checkpoint_reader_s_one_line(tmp_path, monkeypatch, version):
    from msrcnn.models import CheckpointError

    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    cached = cache / Path(get_model_weights(version).DEFAULT.url).name
    cached.write_bytes(b"PK\x03\x04 not a whole zip file")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(CheckpointError) as err:
        init_from_torchvision(r50_model(2, version), f"torchvision:{version}", [(1, "person")])
    message = str(err.value)
    assert message.startswith(f"{cached} is not a readable torchvision:{version} weights file (truncated or")
    assert "\n" not in message
