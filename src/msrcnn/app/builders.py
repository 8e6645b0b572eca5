"""Builds the run's objects (model, data, logger, callbacks, trainer) from a validated config."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from omegaconf import DictConfig, OmegaConf

from msrcnn.config import ConfigError
from msrcnn.data import DetectionDataModule, SplitSpec
from msrcnn.models import MaskScoringRCNN, build_model, model_kwargs
from msrcnn.models.checkpoint import CheckpointError, read_weights
from msrcnn.models.torchvision_init import init_from_torchvision, is_torchvision_source
from msrcnn.training.callbacks import StepLogger
from msrcnn.training.eta import RunEta, step_progress_bar
from msrcnn.training.preemption import SaveOnSignal
from msrcnn.training.time_budget import TimeBudget

log = logging.getLogger("msrcnn.app")


def build_detector(
    cfg: dict[str, Any], num_classes: int, categories: list[tuple[int, str]] | None = None
) -> MaskScoringRCNN:
    """The detector of a plain config dict; ``model.init_from`` weights loaded when set.

    ``categories``: ``(dataset category id, name)`` of labels 1..K, which ``torchvision:<name>``
    weights need (their classes are mapped by COCO category id).
    """
    model = build_model(num_classes=num_classes, **model_kwargs(cfg))
    init_from = cfg["model"].get("init_from")
    # --- torchvision:<name> (msrcnn.models.torchvision_init); any other value is a file path ---
    if is_torchvision_source(init_from):
        init_from_torchvision(model, init_from, categories)
    # --- end torchvision ---
    elif init_from:
        load_detector_weights(model, init_from)
    return model


def load_detector_weights(model: MaskScoringRCNN, path: str | os.PathLike) -> None:
    """Loads weights (:func:`~msrcnn.models.checkpoint.read_weights`) where only the model's own MaskIoU
    head may be missing (add-on mode on a Mask R-CNN)."""
    state = read_weights(path)
    own = model.state_dict()
    wrong_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if wrong_shape:
        k = wrong_shape[0]
        raise CheckpointError(
            f"{path}: {len(wrong_shape)} tensors do not fit this model, e.g. {k} {tuple(state[k].shape)} "
            f"vs {tuple(own[k].shape)} (different number of classes or widths?)"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    head = model.roi_heads.maskiou_head
    head_keys = {f"roi_heads.maskiou_head.{k}" for k in head.state_dict()} if head is not None else set()
    missing = [k for k in missing if k not in head_keys]
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    log.info("initialised the detector from %s", path)


def build_datamodule(cfg: DictConfig, train_required: bool = True) -> DetectionDataModule:
    """The data module of the ``data`` group (``coco``, ``coco_format`` or the synthetic ``shapes``)."""
    d = cfg.data
    common = dict(
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        num_workers=d.num_workers,
        pin_memory=d.pin_memory,
        hflip_prob=d.hflip_prob,
        train_min_size=None if d.train_min_size is None else list(d.train_min_size),
        max_size=cfg.model.max_size,  # one long-side cap, the model's
        aspect_ratio_group_factor=d.aspect_ratio_group_factor,
        seed=cfg.seed,  # one seed per run: shuffles, augmentation and the model's sampling
    )
    name = d.name.value
    if name == "coco":
        if OmegaConf.is_missing(d, "root") or not d.root:
            raise ConfigError("data=coco needs data.root=DIR (with annotations/ and train2017/, val2017/)")
        return DetectionDataModule.from_coco2017(d.root, **common)
    if name == "shapes":
        synthetic = OmegaConf.to_container(d.synthetic) if d.synthetic is not None else {}
        root = d.root or os.path.join(cfg.paths.data_dir, "shapes")
        return DetectionDataModule(train=None, val=None, synthetic=synthetic, root=root, **common)

    def split(name: str, required: bool) -> SplitSpec | None:
        node = d[name]
        values = {k: None if OmegaConf.is_missing(node, k) else node[k] for k in ("ann_file", "img_dir")}
        if not required and all(v is None for v in values.values()):
            return None
        missing = [f"data.{name}.{k}" for k, v in values.items() if v is None]
        if missing:
            raise ConfigError(
                f"data=coco_format needs {' and '.join(missing)} (a COCO json and its image folder)"
            )
        return SplitSpec(**values)

    return DetectionDataModule(
        train=split("train", required=train_required),
        val=split("val", required=True),
        test=split("test", required=False),
        **common,
    )


def check_logger(lg: DictConfig) -> None:
    """The W&B-only keys (``logger.id``, ``logger.log_model``) are refused with another logger."""
    name = lg.name.value
    if name != "wandb":
        for key in ("id", "log_model"):
            if lg.get(key):
                raise ConfigError(f"logger.{key}={lg[key]} needs logger=wandb (the logger is {name})")


def build_logger(cfg: DictConfig, output_dir: Path, config: dict[str, Any], job_type: str = "train"):
    """The experiment logger of the ``logger`` group, writing inside the run directory.

    W&B: one run per job (:mod:`msrcnn.app.wandb_runs`), named by the job's swept overrides in a
    ``-m`` sweep and grouped by sweep unless ``logger.group`` is set; its config is ``config`` plus
    the job's overrides and directories (``job``). ``logger.id`` adds to an existing run instead.
    """
    check_logger(cfg.logger)
    lg = cfg.logger
    name = lg.name.value
    if name == "none":
        return False
    if name == "csv":
        from lightning.pytorch.loggers import CSVLogger

        _keep_previous_metrics(output_dir / "csv")
        return CSVLogger(save_dir=str(output_dir), name="csv", version="")
    if name == "tensorboard":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=str(output_dir), name="tensorboard", version="")
    from msrcnn.app.wandb_runs import job_identity, make_wandb_logger

    identity = job_identity(cfg.experiment_name, lg.group)
    return make_wandb_logger(
        output_dir,
        project=lg.project,
        name=identity.name,
        group=identity.group,
        tags=list(lg.tags),
        mode=lg.mode,
        config={**config, "job": identity.job},
        id=lg.id,
        job_type=job_type,
    )


def _keep_previous_metrics(log_dir: Path) -> None:
    """A run resumed in its own folder keeps the metrics of its earlier part: Lightning's CSV logger
    deletes an existing ``metrics.csv``, so it is renamed ``metrics.1.csv`` (``.2``, ...) first."""
    current = log_dir / "metrics.csv"
    if not current.is_file():
        return
    n = 1
    while (log_dir / f"metrics.{n}.csv").exists():
        n += 1
    current.rename(log_dir / f"metrics.{n}.csv")
    log.info("the earlier metrics of this run folder are kept in %s", log_dir / f"metrics.{n}.csv")


def build_callbacks(
    cfg: DictConfig, output_dir: Path, has_logger: bool, evaluation: str | None = None
) -> list[L.Callback]:
    """The ``callbacks`` group's callbacks; ``evaluation`` (e.g. ``"200 images at 800 px"``) is what follows
    training, named in the run's ETA line (:class:`~msrcnn.training.eta.RunEta`)."""
    cb = cfg.callbacks
    checkpoints = str(output_dir / "checkpoints")
    callbacks: list[L.Callback] = []
    if cb.save_best:
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="best",
                monitor=cb.monitor,
                mode="max",
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    if cb.save_last:
        # last.ckpt every N optimizer steps (and at each epoch end when N is 0), independent of any
        # metric, so an interrupted run always has a recent checkpoint; train() also saves it at the end.
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                filename="last",
                monitor=None,
                save_top_k=1,
                every_n_train_steps=cb.last_every_n_steps or None,
                enable_version_counter=False,
            )
        )
    if cb.save_on_signal:  # SIGTERM / SIGUSR1: last.ckpt of the step reached, then stop (SLURM: requeue)
        callbacks.append(SaveOnSignal(checkpoints, requeue=cb.slurm_requeue))
    # the run's cost once the step time is known, and its time left on every progress line after it
    demo_hint = cfg.data.name.value == "shapes" and cfg.experiment_name not in ("demo", "smoke")
    callbacks.append(RunEta(evaluation=evaluation, demo_hint=demo_hint))
    if cb.step_logger:
        callbacks.append(StepLogger())
    if cb.time_budget.seconds is not None:
        callbacks.append(TimeBudget(**OmegaConf.to_container(cb.time_budget)))
    if cb.lr_monitor and has_logger:
        callbacks.append(LearningRateMonitor(logging_interval="step"))
    if cfg.trainer.enable_progress_bar:  # the run's steps of the planned total, not one epoch's batches
        callbacks.append(step_progress_bar(rich=cb.rich_progress))
    if has_logger and cfg.logger.name.value == "wandb":  # the APs, tables and figures (images: log_images)
        from msrcnn.training.media import WandbMedia

        callbacks.append(WandbMedia(log_images=cfg.logger.log_images))
    return callbacks


def build_trainer(cfg: DictConfig, logger, callbacks) -> L.Trainer:
    """The ``trainer`` group's Trainer, saving checkpoints atomically (temp file, fsync, rename).

    ``sync_batchnorm`` is a GPU feature (torch refuses SyncBatchNorm on CPU modules): on CPU runs,
    e.g. ``trainer=ddp trainer.accelerator=cpu``, it is switched off with a log line.
    """
    from msrcnn.training.checkpoint_io import AtomicCheckpointIO

    overrides: dict[str, Any] = {}
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    on_cpu = accelerator == "cpu" or (accelerator == "auto" and not torch.cuda.is_available())
    if cfg.trainer.get("sync_batchnorm") and on_cpu:
        log.info("trainer.sync_batchnorm=true needs GPUs; running on CPU without it")
        overrides["sync_batchnorm"] = False
    trainer = instantiate(
        cfg.trainer,
        logger=logger,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *_slurm_environment()],
        _convert_="all",
        **overrides,
    )
    _check_not_relaunched_in_local_sweep(trainer)
    return trainer


def _slurm_environment() -> list[Any]:
    """Under SLURM, Lightning's SLURM environment without its SIGUSR1 auto-requeue: the signal belongs to
    :class:`~msrcnn.training.preemption.SaveOnSignal` (one owner: one save, one requeue)."""
    from lightning.fabric.plugins.environments import SLURMEnvironment

    if not SLURMEnvironment.detect():
        return []
    return [SLURMEnvironment(auto_requeue=False)]


def _check_not_relaunched_in_local_sweep(trainer: L.Trainer) -> None:
    """Lightning starts DDP ranks by re-running the command line, ``-m`` and sweep values included:
    inside a local multirun every rank would run the whole sweep. Refused before any work."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    # Private in Lightning (its launchers are all underscore classes, with no public way to ask whether a
    # launcher re-runs the command line); this one is the launcher that does.
    from lightning.pytorch.strategies.launchers import _SubprocessScriptLauncher

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return
    launcher = getattr(trainer.strategy, "launcher", None)
    relaunches = isinstance(launcher, _SubprocessScriptLauncher) and launcher.num_processes > 1
    if relaunches and not trainer.strategy.cluster_environment.creates_processes_externally:
        raise ConfigError(
            f"a multirun (-m) cannot start {launcher.num_processes} DDP processes per job on this machine: Lightning "
            "re-runs the whole command for every rank. Run each configuration without -m, or use "
            "hydra/launcher=slurm (one SLURM task per device)"
        )
