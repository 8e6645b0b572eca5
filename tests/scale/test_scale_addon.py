"""Add-on mode: only the MaskIoU head is trained on top of a frozen, already-trained Mask R-CNN."""

import pytest
import torch
from hydra import compose, initialize_config_dir

from msrcnn.app.builders import build_datamodule, build_detector
from msrcnn.app.train import prepare
from msrcnn.config import to_plain
from msrcnn.models import build_model, model_kwargs
from msrcnn_testing import CONF, TINY, run_script


def _config(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, *overrides])
    return prepare(cfg)[0]  # validated and seeded, as train() does


@pytest.mark.slow
def test_train_only_maskiou_on_a_torchvision_mask_rcnn(tmp_path, shapes_dir):
    # A randomly initialised Mask R-CNN with the demo's architecture and no MaskIoU head: its state dict has
    # torchvision's MaskRCNN keys. Its BN statistics are made non-trivial so that a change would show.
    cfg = _config(f"paths.data_dir={shapes_dir}", f"paths.output_dir={tmp_path / 'unused'}")
    kwargs = {**model_kwargs(to_plain(cfg)), "head": None}
    mask_rcnn = build_model(num_classes=7, **kwargs)  # 6 shapes + background
    with torch.no_grad():
        for module in mask_rcnn.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.9, 1.1)
    weights = mask_rcnn.state_dict()
    assert not any("maskiou" in k for k in weights)
    torch.save(weights, tmp_path / "mask_rcnn.pth")

    addon = [f"model.init_from={tmp_path / 'mask_rcnn.pth'}", "model.train_only=maskiou"]
    run = tmp_path / "run"
    run_script("train.py", *TINY, *addon, f"paths.data_dir={shapes_dir}", f"hydra.run.dir={run}")

    # The detector train() started from: the file's weights plus a seeded, freshly initialised MaskIoU head.
    cfg = _config(*addon, f"paths.data_dir={shapes_dir}", f"paths.output_dir={tmp_path / 'unused'}")
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    initial = build_detector(to_plain(cfg), datamodule.num_classes).state_dict()

    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    final = {k.removeprefix("model."): v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    assert (
        set(final)
        == set(initial)
        == set(weights) | {k for k in initial if k.startswith("roi_heads.maskiou_head.")}
    )
    changed = {k for k in final if not torch.equal(final[k], initial[k])}
    head = {k for k in initial if k.startswith("roi_heads.maskiou_head.")}
    assert changed == head  # every MaskIoU parameter moved, nothing else did
    for k in weights:  # bit-identical to the file, BN running statistics and counters included
        assert torch.equal(final[k], weights[k]), k
    # two small warm-up steps: the head moved a little from the same initialisation
    assert max(float((final[k] - initial[k]).abs().max()) for k in head) < 1e-3
    # and the optimizer only ever held the head's parameters
    assert len(ckpt["optimizer_states"][0]["state"]) == len(
        [k for k in head if not k.endswith("num_batches_tracked")]
    )
