"""msrcnn.models.load_model: one plain-torch way to get a trained model, and clear errors."""

import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from msrcnn.app.schemas import validate
from msrcnn.config import to_plain
from msrcnn.models import CheckpointError, MaskScoringRCNN, build_model, load_model, model_kwargs
from msrcnn.models.factory import checkpoint_categories
from msrcnn_testing import CONF, TINY

CLASS_NAMES = ["ellipse", "rectangle", "triangle"]
CATEGORY_IDS = [1, 4, 9]


def tiny_config(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.output_dir={tmp_path}", *overrides])
    return to_plain(validate(cfg))


def save_checkpoint(path, model, plain, **config):
    """Saved as src/train.py saves it: Lightning's layout, the run config in hyper_parameters."""
    full = {
        **plain,
        "num_classes": len(CLASS_NAMES) + 1,
        "class_names": CLASS_NAMES,
        "category_ids": CATEGORY_IDS,
        **config,
    }
    torch.save(
        {
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"config": full, "optim": full["optim"], "train_only": "all"},
            "pytorch-lightning_version": "2.4.0",
            "epoch": 0,
            "global_step": 2,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A TINY model (random weights) and its checkpoint; the config claims ImageNet weights."""
    out = tmp_path_factory.mktemp("ckpt")
    plain = tiny_config(out, "backbone.norm=frozen_bn", "backbone.trainable_layers=3")
    torch.manual_seed(0)
    model = build_model(num_classes=len(CLASS_NAMES) + 1, **model_kwargs(plain))
    plain["backbone"].update(pretrained="imagenet", norm=None, trainable_layers=None)  # as trained
    return model.eval(), save_checkpoint(out / "last.ckpt", model, plain)


def test_load_model_gives_the_trained_model_in_eval_mode_with_its_classes(trained):
    model, path = trained
    loaded = load_model(path, map_location="cpu")
    assert not loaded.training and loaded.has_maskiou
    assert loaded.class_names == CLASS_NAMES and loaded.category_ids == CATEGORY_IDS
    assert loaded.config["backbone"]["pretrained"] == "imagenet"  # not read: no weight files needed
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), name
    image = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = model([image])[0], loaded([image])[0]
    assert torch.equal(want["boxes"], got["boxes"]) and torch.equal(want["mask_ious"], got["mask_ious"])
    assert loaded.roi_heads.soft_nms.enabled == model.roi_heads.soft_nms.enabled  # as trained
    soft = load_model(path, soft_nms=True)
    hard = load_model(path, soft_nms=False)
    assert soft.roi_heads.soft_nms.enabled and not hard.roi_heads.soft_nms.enabled


def test_the_models_package_loads_a_checkpoint_without_lightning_or_hydra(trained):
    _, path = trained
    code = (
        "import sys\n"
        "from msrcnn.models import load_model\n"
        f"m = load_model({str(path)!r})\n"
        "bad = [n for n in ('lightning', 'hydra', 'omegaconf') if n in sys.modules]\n"
        "assert not bad, bad\n"
        "print(m.class_names)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ellipse" in proc.stdout


def test_module_load_from_checkpoint_rebuilds_the_model(trained):
    from msrcnn.training import MaskScoringModule

    model, path = trained
    module = MaskScoringModule.load_from_checkpoint(path, map_location="cpu")
    assert isinstance(module.model, MaskScoringRCNN)
    for (name, a), b in zip(model.state_dict().items(), module.model.state_dict().values()):
        assert torch.equal(a, b), name
    config = module.hparams["config"]
    assert config["class_names"] == CLASS_NAMES and module.optim == config["optim"]


def test_truncated_corrupt_and_foreign_files_get_one_line_naming_the_file(trained, tmp_path):
    _, path = trained
    data = path.read_bytes()
    cases = {
        "truncated.ckpt": (data[: len(data) // 2], "truncated or corrupt"),
        "empty.ckpt": (b"", "empty"),
        "garbage.ckpt": (b"\x00\x01not a checkpoint" * 50, "truncated or corrupt"),
    }
    for name, (content, _) in cases.items():
        (tmp_path / name).write_bytes(content)
    torch.save({"weight": torch.zeros(2)}, tmp_path / "state_dict.pth")
    cases["state_dict.pth"] = (None, "bare state dict of 1 tensors")
    torch.save(
        {"state_dict": {"model.x": torch.zeros(1)}, "hyper_parameters": {"lr": 0.1}}, tmp_path / "other.ckpt"
    )
    cases["other.ckpt"] = (None, "no hyper_parameters.config")
    torch.save({"optimizer": torch.optim.SGD([torch.zeros(1)], lr=0.1)}, tmp_path / "pickled.pt")
    cases["pickled.pt"] = (None, "holds Python objects (torch.optim.sgd.SGD)")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    cases["list.pt"] = (None, "holds a list")
    for name, (_, why) in cases.items():
        with pytest.raises(CheckpointError) as info:
            load_model(tmp_path / name)
        message = str(info.value)
        assert str(tmp_path / name) in message and why in message and "\n" not in message, message
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_model(tmp_path / "missing.ckpt")


def test_weights_that_do_not_fit_the_config_are_reported(trained, tmp_path):
    model, path = trained
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["config"]["num_classes"] = 7
    torch.save(ckpt, tmp_path / "wrong.ckpt")
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_model(tmp_path / "wrong.ckpt")


def test_categories_fall_back_to_the_annotation_file_then_to_label_order(tmp_path):
    import json

    ann = tmp_path / "val.json"
    ann.write_text(json.dumps({"categories": [{"id": 90, "name": "b"}, {"id": 3, "name": "a"}]}))
    config = {"class_names": ["a", "b"], "data": {"name": "coco_format", "val": {"ann_file": str(ann)}}}
    assert checkpoint_categories(config) == [(3, "a"), (90, "b")]
    assert checkpoint_categories({**config, "category_ids": [5, 6]}) == [(5, "a"), (6, "b")]
    assert checkpoint_categories({"class_names": ["a", "b"], "data": {"name": "coco_format"}}) == [
        (1, "a"),
        (2, "b"),
    ]


def test_a_checkpoint_written_before_the_renames_loads_and_its_config_validates(trained, tmp_path):
    """Checkpoints of issue 15's time store data.seed, data.max_size and callbacks.log_every_n_steps:
    they load, and their config reads under today's names (src/eval.py validates it)."""
    from msrcnn.app.schemas import Config
    from msrcnn.training import MaskScoringModule

    model, path = trained
    plain = torch.load(path, map_location="cpu", weights_only=True)["hyper_parameters"]["config"]
    old = {
        **plain,
        "data": {**plain["data"], "seed": 3, "max_size": plain["model"]["max_size"]},
        "callbacks": {k: v for k, v in plain["callbacks"].items() if k != "step_logger"}
        | {"log_every_n_steps": 0},
    }
    with pytest.raises(Exception, match="seed"):
        validate({k: v for k, v in old.items() if k in Config.__dataclass_fields__})
    old_path = save_checkpoint(tmp_path / "old.ckpt", model, old)
    loaded = load_model(old_path)
    assert "seed" not in loaded.config["data"] and "max_size" not in loaded.config["data"]
    assert loaded.config["callbacks"]["step_logger"] is False
    validate({k: v for k, v in loaded.config.items() if k in Config.__dataclass_fields__})
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    module = MaskScoringModule.load_from_checkpoint(old_path, map_location="cpu")
    assert "seed" not in module.hparams["config"]["data"]
