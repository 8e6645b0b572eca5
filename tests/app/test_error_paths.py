"""The applications' one-line errors, each run the way the scripts run their work (report_user_errors:
``error: <message>`` on stderr, exit status 2, no traceback): checkpoints, evaluation, configuration,
training and prediction. The data layer's are in tests/data/test_data_errors.py."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from msrcnn.app.builders import build_trainer
from msrcnn.app.errors import report_user_errors
from msrcnn.app.evaluate import evaluate
from msrcnn.app.predict import predict
from msrcnn.app.schemas import validate
from msrcnn.app.train import train
from msrcnn.config import to_plain
from msrcnn.data import SHAPES_CATEGORIES
from msrcnn.models import build_model, load_model, model_kwargs
from msrcnn.training import MaskScoringModule
from msrcnn_testing import CONF, TINY, user_error_line

NAMES = [name for _, name in SHAPES_CATEGORIES]
IDS = [i for i, _ in SHAPES_CATEGORIES]


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.fixture(scope="module")
def run_config(tmp_path_factory):
    out = tmp_path_factory.mktemp("cfg")
    return to_plain(validate(_compose("train", *TINY, f"paths.output_dir={out}")))


@pytest.fixture(scope="module")
def weights(run_config):
    torch.manual_seed(0)
    model = build_model(num_classes=len(NAMES) + 1, **model_kwargs(run_config))
    return {f"model.{k}": v for k, v in model.state_dict().items()}


def _save(path, state_dict, config):
    torch.save({"state_dict": state_dict, "hyper_parameters": {"config": config}}, path)
    return path


def _config(run_config, **changes):
    return {**run_config, "num_classes": len(NAMES) + 1, "class_names": NAMES, "category_ids": IDS, **changes}


def test_a_checkpoint_without_state_dict(tmp_path, run_config):
    path = tmp_path / "nostate.ckpt"
    torch.save({"hyper_parameters": {"config": _config(run_config)}, "epoch": 3}, path)
    line = user_error_line(load_model, path)
    assert line == f"error: {path} is not a checkpoint of msrcnn: it has no state_dict"


def test_a_checkpoint_with_no_model_weights(tmp_path, run_config):
    path = _save(tmp_path / "empty.ckpt", {"other.weight": torch.zeros(2)}, _config(run_config))
    line = user_error_line(load_model, path)
    assert line == f"error: {path} is not a checkpoint of msrcnn: its state_dict has no model.* weights"


def test_a_category_count_mismatch(tmp_path, run_config, weights):
    path = _save(tmp_path / "cats.ckpt", weights, _config(run_config, category_ids=IDS[:2]))
    line = user_error_line(load_model, path)
    assert line == f"error: the checkpoint records 2 category ids for {len(NAMES)} classes"


def test_evaluating_a_checkpoint_trained_on_other_classes(tmp_path, run_config, weights, shapes_dir):
    other = [f"class{i}" for i in range(len(NAMES))]
    path = _save(tmp_path / "other.ckpt", weights, _config(run_config, class_names=other))
    cfg = _compose(
        "evaluate",
        f"ckpt_path={path}",
        f"paths.output_dir={tmp_path / 'eval'}",
        f"paths.data_dir={shapes_dir}",
    )
    line = user_error_line(evaluate, cfg)
    assert line.startswith(
        f"error: the checkpoint {path} was trained on classes {other}, the dataset has {NAMES}"
    )
    assert not (tmp_path / "eval" / "results.json").exists()


def test_coco_data_without_its_root(tmp_path):
    tiny = [o for o in TINY if not o.startswith("data.synthetic")]
    cfg = _compose("train", *tiny, "data=coco", f"paths.output_dir={tmp_path}")
    line = user_error_line(train, cfg)
    assert line == "error: data=coco needs data.root=DIR (with annotations/ and train2017/, val2017/)"
    assert not (tmp_path / "checkpoints").exists()


def test_a_multirun_with_ddp_on_this_machine(tmp_path):
    from hydra.types import RunMode

    cfg = validate(
        _compose(
            "train",
            *TINY,
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            f"paths.output_dir={tmp_path}",
        )
    )
    hydra_cfg = OmegaConf.create({"hydra": {"mode": RunMode.MULTIRUN}})
    saved = HydraConfig.instance().cfg
    HydraConfig.instance().cfg = hydra_cfg
    try:
        line = user_error_line(build_trainer, cfg, False, [])
    finally:
        HydraConfig.instance().cfg = saved
    assert line.startswith("error: a multirun (-m) cannot start 2 DDP processes per job on this machine")


def test_a_non_finite_loss_ends_the_run_in_one_line():
    class Exploding(torch.nn.Module):
        def forward(self, images, targets):
            return {"loss_mask": torch.tensor(0.5), "loss_maskiou": torch.tensor(float("nan"))}

    module = MaskScoringModule(Exploding(), optim={"check_finite_every_n_steps": 1})
    line = user_error_line(module.training_step, ([torch.zeros(3, 8, 8)], [{}]), 0)
    assert line.startswith("error: ") and "step 0" in line and "loss_maskiou=nan" in line


def test_a_corrupt_image_given_to_predict(tmp_path, run_config, weights):
    path = _save(tmp_path / "last.ckpt", weights, _config(run_config))
    image = tmp_path / "broken.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    cfg = OmegaConf.create(
        {"ckpt_path": str(path), "input": str(image), "output_dir": str(tmp_path / "out"), "device": "cpu"}
    )
    # each unreadable image is listed as it is skipped, then one error line ends the run (exit 2)
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
        report_user_errors(predict)(cfg)
    lines = [line for line in stderr.getvalue().splitlines() if line.strip()]
    assert exit_.value.code == 2 and "Traceback" not in stderr.getvalue()
    assert lines[0] == f"skipped: {image}: cannot read image: cannot identify image file '{image}'"
    assert (
        len(lines) == 2
        and lines[1].startswith("error: 1 of 1 images could not be read")
        and str(image) in lines[1]
    )


def test_init_from_reads_weights_the_way_checkpoints_are_read(tmp_path, run_config, weights):
    """model.init_from takes an msrcnn checkpoint or a bare state dict (read_weights, the checkpoint
    reader's path); a damaged or empty file, or one that does not fit, is one line."""
    from msrcnn.app.builders import build_detector

    ckpt = _save(tmp_path / "run.ckpt", weights, _config(run_config))
    bare = tmp_path / "bare.pth"
    plain_weights = {k.removeprefix("model."): v for k, v in weights.items()}
    torch.save({k: v for k, v in plain_weights.items() if ".maskiou_head." not in k}, bare)
    config = {**run_config, "model": {**run_config["model"], "init_from": str(ckpt)}}
    model = build_detector(config, num_classes=len(NAMES) + 1)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in plain_weights.items())
    config["model"]["init_from"] = str(bare)  # a Mask R-CNN without the head: the head starts fresh
    build_detector(config, num_classes=len(NAMES) + 1)

    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(ckpt.read_bytes()[:1000])
    empty = _save(tmp_path / "empty.ckpt", {"other.x": torch.zeros(1)}, _config(run_config))
    for path, why in (
        (truncated, "is not a readable checkpoint (truncated or corrupt?)"),
        (empty, "holds no model weights"),
    ):
        config["model"]["init_from"] = str(path)
        line = user_error_line(build_detector, config, len(NAMES) + 1)
        assert line.startswith(f"error: {path} {why}"), line
    config["model"]["init_from"] = str(ckpt)
    line = user_error_line(build_detector, config, len(NAMES) + 2)  # one more class than the file
    assert line.startswith(f"error: {ckpt}: 8 tensors do not fit this model"), line


def test_train_only_maskiou_trains_the_heads_own_parameters(run_config, weights):
    from msrcnn.app.builders import build_detector

    model = build_detector(run_config, num_classes=len(NAMES) + 1)
    module = MaskScoringModule(model, run_config["optim"], train_only="maskiou")
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"roi_heads.maskiou_head.{n}" for n, _ in model.roi_heads.maskiou_head.named_parameters()
    }
    plain = build_detector({**run_config, "head": {"name": "none"}}, num_classes=len(NAMES) + 1)
    with pytest.raises(ValueError, match="needs a model with a MaskIoU head"):
        MaskScoringModule(plain, run_config["optim"], train_only="maskiou")
