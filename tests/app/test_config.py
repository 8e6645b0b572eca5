"""Every config composes and validates; bad keys and values fail before any work, naming the choices."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from msrcnn.config import ConfigError, validate
from msrcnn.config.schema import EvalAppConfig
from msrcnn_testing import CONF

GROUP_OPTIONS = {
    group: sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for group in (
        "backbone",
        "head",
        "model",
        "optim",
        "data",
        "trainer",
        "logger",
        "callbacks",
        "experiment",
    )
}


def compose_train(*overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/x", *overrides])
    return cfg


@pytest.mark.parametrize("group,option", [(g, o) for g, opts in GROUP_OPTIONS.items() for o in opts])
def test_every_group_option_composes_and_validates(group, option):
    cfg = validate(compose_train(f"{group}={option}"))
    if group == "data" and option != "shapes":
        assert cfg.data.name.value == option


def test_users_literal_command_line_composes():
    cfg = validate(compose_train("backbone=r18_fpn", "head.input=concat"))
    assert cfg.backbone.name.value == "r18_fpn" and cfg.head.input.value == "concat"


def test_misspelt_value_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        validate(compose_train("head.input=concatt"))
    assert "head.input" in str(err.value) and "concat_highres" in str(err.value)


def test_misspelt_key_in_a_config_file_fails():
    cfg = compose_train()
    OmegaConf.set_struct(cfg, False)
    cfg.model.box_heads = "conv"
    with pytest.raises(ConfigError, match="model.box_heads"):
        validate(cfg)


def test_misspelt_key_on_the_command_line_fails():
    with pytest.raises(Exception, match="inptu"):
        compose_train("head.inptu=concat")


def test_demo_experiment_can_swap_the_dataset():
    cfg = validate(compose_train("experiment=demo", "data=coco_format"))
    assert cfg.data.name.value == "coco_format"
    assert cfg.backbone.fpn_channels == 32  # the demo's small model stays


def test_head_none_is_plain_mask_rcnn():
    assert validate(compose_train("head=none")).head.name.value == "none"


def test_eval_config_composes():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "evaluate", overrides=["paths.output_dir=/tmp/x", "ckpt_path=a.ckpt", "data=coco_format"]
        )
    cfg = validate(cfg, EvalAppConfig)
    assert cfg.split.value == "val" and cfg.data.name.value == "coco_format"
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("evaluate", overrides=["paths.output_dir=/tmp/x", "ckpt_path=a.ckpt", "split=dev"])
    with pytest.raises(ConfigError, match="split"):
        validate(cfg, EvalAppConfig)


def test_trainer_accepts_every_lightning_trainer_argument_and_only_those():
    import dataclasses
    import inspect

    import lightning

    from msrcnn.app.builders import build_trainer
    from msrcnn.config.schema import TrainerConfig

    signature = set(inspect.signature(lightning.Trainer.__init__).parameters) - {"self"}
    fields = {f.name for f in dataclasses.fields(TrainerConfig)} - {"_target_"}
    assert fields == signature - {"logger", "callbacks", "plugins"}  # those three: built by other groups
    cfg = validate(
        compose_train(
            "trainer=cpu",
            "trainer.profiler=simple",
            "trainer.overfit_batches=2",
            "trainer.detect_anomaly=true",
            "trainer.min_steps=1",
        )
    )
    trainer = build_trainer(cfg, logger=False, callbacks=[])
    assert trainer.overfit_batches == 2 and type(trainer.profiler).__name__ == "SimpleProfiler"
    with pytest.raises(ConfigError, match="trainer.profilr"):
        validate(compose_train("+trainer.profilr=simple"))
    with pytest.raises(ConfigError, match="trainer.max_steps"):
        validate(compose_train("trainer.max_steps=many"))


def test_trainer_yaml_lists_every_trainer_argument():
    from msrcnn.config.trainer import trainer_arguments

    listed = set(OmegaConf.load(CONF / "trainer" / "cpu.yaml")) - {"_target_"}
    assert listed == set(trainer_arguments())  # so that trainer.<any argument>=... needs no '+'


@pytest.mark.parametrize("option", ["gpu", "ddp"])
def test_trainer_yamls_inherit_the_cpu_settings(option):
    base = validate(compose_train("trainer=cpu")).trainer
    other = validate(compose_train(f"trainer={option}")).trainer
    differ = {k for k in base if base[k] != other[k]}
    assert differ == (
        {"accelerator"} if option == "gpu" else {"accelerator", "devices", "strategy", "sync_batchnorm"}
    )


def test_backbone_yamls_differ_only_in_name():
    base = OmegaConf.to_container(validate(compose_train("backbone=r18_fpn")).backbone)
    for option in GROUP_OPTIONS["backbone"]:
        other = OmegaConf.to_container(validate(compose_train(f"backbone={option}")).backbone)
        assert {k for k in base if base[k] != other[k]} <= {"name"}, option


def test_the_schemas_choices_are_the_codes():
    from msrcnn.config import schema
    from msrcnn.models import BACKBONES, INPUT_DESIGNS, TRAIN_TARGETS
    from msrcnn.models.factory import BOX_HEADS
    from msrcnn.ops import SOFT_NMS_METHODS

    for enum, choices in (
        (schema.BackboneName, BACKBONES),
        (schema.InputDesign, INPUT_DESIGNS),
        (schema.TrainTarget, TRAIN_TARGETS),
        (schema.BoxHead, BOX_HEADS),
        (schema.SoftNMSMethod, SOFT_NMS_METHODS),
    ):
        assert tuple(e.value for e in enum) == tuple(choices)
