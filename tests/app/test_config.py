"""Every config composes and validates; bad keys and values fail before any work, naming the choices."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from msrcnn.app.schemas import EvalAppConfig, validate
from msrcnn.config import ConfigError
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
    """Refused where the group is composed onto its schema (Hydra), and by validate() otherwise."""
    with pytest.raises(ConfigCompositionException) as err:
        compose_train("head.input=concatt")
    assert "head.input" in str(err.value.__cause__) and "concat_highres" in str(err.value.__cause__)
    plain = OmegaConf.to_container(compose_train())
    plain["head"]["input"] = "concatt"
    with pytest.raises(ConfigError) as err:
        validate(plain)
    assert "head.input" in str(err.value) and "concat_highres" in str(err.value)


def test_misspelt_key_in_a_config_file_fails():
    plain = OmegaConf.to_container(compose_train())  # as a YAML file outside the schema'd groups would give
    plain["model"]["box_heads"] = "conv"
    with pytest.raises(ConfigError, match="model.box_heads"):
        validate(plain)


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
    from msrcnn.app.schemas import TrainerConfig

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
    with pytest.raises(ConfigCompositionException, match="trainer.max_steps"):  # typed at composition
        compose_train("trainer.max_steps=many")


# Every config group but the presets (experiment) and Hydra's own: each has a schema.
# data: validated after composition, so that a bad value fails one job of a sweep, not the sweep.
SCHEMA_GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("experiment", "hydra", "data")
)


@pytest.mark.parametrize("group", SCHEMA_GROUPS)
def test_every_group_composes_onto_its_schema_and_states_only_what_it_changes(group):
    """Each option of a group builds on the group's ConfigStore schema (directly, or through another
    option of the group), and its YAML lists only keys whose value differs from the schema's default:
    each default is stated once, in the dataclass."""
    from hydra.core.config_store import ConfigStore

    schema = OmegaConf.structured(ConfigStore.instance().load(f"{group}/schema.yaml").node)
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    for option in options:
        own = OmegaConf.load(CONF / group / f"{option}.yaml")
        base = [d for d in own.get("defaults", []) if d != "_self_"]
        assert base and (base == ["schema"] or base[0] in options), (group, option, base)
        if base != ["schema"]:
            continue  # an option on top of another: it differs from that one (tests below)
        # name: the option's own, stated even where it is the schema's default
        for key in set(own) - {"defaults", "name"}:
            if OmegaConf.is_missing(own, key) or OmegaConf.is_interpolation(own, key):
                continue  # made mandatory, or taken from elsewhere
            assert OmegaConf.to_container(own)[key] != schema[key], (group, option, key)


def test_every_trainer_argument_can_be_set():
    """trainer/cpu.yaml lists only what it changes, and every Trainer argument can still be set without '+'."""
    from msrcnn.config.trainer import trainer_arguments

    overrides = ["trainer.overfit_batches=2", "trainer.min_steps=1", "trainer.detect_anomaly=true"]
    for option in ("cpu", "default", "gpu", "ddp"):
        trainer = validate(compose_train(f"trainer={option}", *overrides)).trainer
        assert set(trainer) - {"_target_"} == set(trainer_arguments())
    assert validate(compose_train("trainer.profiler=simple")).trainer.profiler == "simple"


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
    from msrcnn.app import schemas as schema
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


def _defaults(cls) -> dict:
    """A dataclass's fields and defaults, enums as their values (schema and code compare equal)."""
    return OmegaConf.to_container(OmegaConf.structured(cls), enum_to_str=True)


def test_each_model_groups_keys_are_the_arguments_of_what_it_builds():
    """Config mirrors code: the keys of backbone, head and model are the argument names (and defaults)
    of what they build, one name from YAML to constructor."""
    import dataclasses
    import inspect

    from torchvision.models.detection import MaskRCNN

    from msrcnn.app import schemas as schema
    from msrcnn.app.schemas import TRAINING_KEYS
    from msrcnn.models import MaskScoringRCNN, build_model
    from msrcnn.models.backbones import build_backbone
    from msrcnn.models.roi_heads import MaskIoUConfig, SoftNMSConfig

    head = _defaults(schema.HeadConfig)
    assert head.pop("name") == "maskiou"  # the group's option (head=none: no head)
    assert head == dataclasses.asdict(MaskIoUConfig())
    assert _defaults(schema.SoftNMSGroupConfig) == dataclasses.asdict(SoftNMSConfig())
    params = inspect.signature(build_backbone).parameters
    backbone = _defaults(schema.BackboneConfig)
    assert set(backbone) == set(params)
    for key, value in backbone.items():
        default = params[key].default
        if key != "name":
            assert value == (list(default) if isinstance(default, tuple) else default), key
    constructors = set()
    for fn in (build_model, MaskScoringRCNN.__init__, MaskRCNN.__init__):
        constructors |= set(inspect.signature(fn).parameters)
    model_keys = set(_defaults(schema.ModelConfig)) - set(TRAINING_KEYS)
    assert model_keys <= constructors, model_keys - constructors


def test_config_keys_reach_the_model_under_their_names(tmp_path):
    from msrcnn.app.builders import build_detector
    from msrcnn.config import to_plain

    cfg = validate(
        compose_train(
            "experiment=demo",
            "head.input=concat_all",
            "head.tau=0.25",
            "head.fc_dim=64",
            "model.soft_nms.enabled=true",
            "model.soft_nms.sigma=0.7",
            "model.max_size=200",
            "backbone.aspect_ratios=[1.0]",
        )
    )
    model = build_detector(to_plain(cfg), num_classes=3)
    heads = model.roi_heads
    assert heads.maskiou_head.input == "concat_all" and heads.maskiou_head.fc1.out_features == 64
    assert heads.maskiou_cfg.tau == 0.25 and heads.maskiou_cfg.input == "concat_all"
    assert heads.soft_nms.enabled and heads.soft_nms.sigma == 0.7
    assert model.transform.max_size == 200
    assert model.rpn.anchor_generator.aspect_ratios[0] == (1.0,)
    plain = build_detector(to_plain(validate(compose_train("experiment=demo", "head=none"))), num_classes=3)
    assert not plain.has_maskiou


@pytest.mark.parametrize(
    "old,now",
    [("data.seed=1", "seed"), ("data.max_size=100", "max_size"), ("callbacks.log_every_n_steps=5", "")],
)
def test_one_name_per_setting_the_merged_keys_are_refused(old, now):
    with pytest.raises(ConfigError, match=old.split("=")[0]):
        validate(compose_train(f"+{old}"))


def test_the_data_module_reads_the_runs_seed_and_the_models_max_size(tmp_path):
    from msrcnn.app.builders import build_callbacks, build_datamodule
    from msrcnn.training.callbacks import StepLogger

    cfg = validate(
        compose_train("experiment=demo", "seed=5", "model.max_size=200", "model.min_size=[96,128]")
    )
    module = build_datamodule(cfg)
    assert module.seed == 5 and module.max_size == 200 and module.train_min_size == [96, 128]
    assert any(isinstance(c, StepLogger) for c in build_callbacks(cfg, tmp_path, has_logger=False))
    cfg.callbacks.step_logger = False
    assert not any(isinstance(c, StepLogger) for c in build_callbacks(cfg, tmp_path, has_logger=False))


def test_the_progress_line_follows_trainer_log_every_n_steps(caplog):
    import logging
    from types import SimpleNamespace

    from msrcnn.training.callbacks import StepLogger

    trainer = SimpleNamespace(
        global_step=0,
        log_every_n_steps=3,
        is_global_zero=True,
        max_steps=9,
        estimated_stepping_batches=9,  # the planned steps (msrcnn.training.eta.planned_steps)
        callbacks=[],
        callback_metrics={},
    )
    logger = StepLogger()
    logger.on_train_start(trainer, None)
    with caplog.at_level(logging.INFO, logger="msrcnn.training"):
        for step in range(1, 10):
            trainer.global_step = step
            logger.on_train_batch_end(trainer, None, None, None, step)
    assert [r.getMessage().split()[1] for r in caplog.records] == ["3/9", "6/9", "9/9"]
