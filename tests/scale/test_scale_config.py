"""Scaling-out configuration: the SLURM launcher, the sweep callback, DDP trainers, the LR scaling rule."""

from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.strategies import DDPStrategy
from omegaconf import OmegaConf

from msrcnn.app.builders import build_trainer
from msrcnn.app.schemas import validate
from msrcnn.config import ConfigError
from msrcnn.training import MaskScoringModule
from msrcnn.training.checkpoint_io import AtomicCheckpointIO
from msrcnn_testing import CONF, TINY

SLURM_TARGET = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"


def _compose(*overrides, hydra=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=hydra)


def test_slurm_launcher_config_resolves_and_instantiates():
    cfg = _compose(
        "hydra/launcher=slurm",
        "trainer=ddp",
        "trainer.devices=4",
        "trainer.num_nodes=2",
        "hydra.launcher.partition=gpu",
        "experiment_name=sweep",
        hydra=True,
    )
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == SLURM_TARGET
    assert launcher["partition"] == "gpu"
    # one SLURM task per device, as Lightning's SLURM environment expects
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 4 and launcher["nodes"] == 2
    assert launcher["timeout_min"] > 0 and launcher["cpus_per_task"] > 0
    assert launcher["submitit_folder"].startswith("multirun/sweep/")
    # every field is one the plugin's schema knows, and the launcher can be built from it
    plugin = instantiate(cfg.hydra.launcher)
    assert type(plugin).__name__ == "SlurmLauncher"
    assert plugin.params["partition"] == "gpu" and plugin.params["tasks_per_node"] == 4


def test_slurm_launcher_defaults_follow_the_trainer():
    cfg = _compose("hydra/launcher=slurm", hydra=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)
    assert launcher["_target_"] == SLURM_TARGET and launcher["partition"] is None
    assert launcher["tasks_per_node"] == launcher["gpus_per_node"] == 1


def test_sweeps_report_failures_through_the_callback():
    cfg = _compose(hydra=True)
    targets = [cb["_target_"] for cb in cfg.hydra.callbacks.values()]
    assert "msrcnn.app.multirun.MultirunSummary" in targets


def test_ddp_trainer_on_cpu_uses_gloo_without_sync_batchnorm():
    cfg = validate(
        _compose(
            *TINY,
            "trainer=ddp",
            "trainer.devices=2",
            "trainer.accelerator=cpu",
            "paths.output_dir=/tmp/unused",
        )
    )
    assert cfg.trainer.sync_batchnorm  # the GPU default of trainer=ddp
    trainer = build_trainer(cfg, logger=False, callbacks=[])
    assert isinstance(trainer.strategy, DDPStrategy)
    assert trainer.strategy._get_process_group_backend() == "gloo"
    assert trainer.world_size == 2 and trainer.strategy._layer_sync is None  # no SyncBatchNorm on CPU
    assert not trainer._accelerator_connector.use_distributed_sampler  # the data module shards itself
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)


def test_ddp_inside_a_local_multirun_is_refused():
    cfg = _compose(
        *TINY,
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "hydra.mode=MULTIRUN",
        "paths.output_dir=/tmp/unused",
        hydra=True,
    )
    HydraConfig.instance().set_config(cfg)
    try:
        with pytest.raises(ConfigError, match="re-runs the whole command"):
            build_trainer(
                validate({k: v for k, v in cfg.items() if k != "hydra"}), logger=False, callbacks=[]
            )
    finally:
        HydraConfig.instance().cfg = None


@pytest.mark.parametrize(("world_size", "accumulate", "expected"), [(1, 1, 2), (2, 1, 4), (8, 2, 32)])
def test_lr_scales_with_the_total_batch(world_size, accumulate, expected):
    optim = {
        "name": "sgd",
        "lr": 0.02,
        "base_batch_size": 16,
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_steps": 0,
        "warmup_factor": 1.0,
        "lr_step_epochs": [],
        "schedule_epochs": 18.0,
        "lr_gamma": 0.1,
    }
    module = MaskScoringModule(torch.nn.Linear(2, 2), optim)
    module._trainer = SimpleNamespace(
        datamodule=SimpleNamespace(batch_size=2),
        world_size=world_size,
        accumulate_grad_batches=accumulate,
        estimated_stepping_batches=100,
    )
    assert module._total_batch_size() == expected
    optimizer = module.configure_optimizers()["optimizer"]
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.02 * expected / 16)
