"""Typed schemas of the settings groups of ``conf/``: those that configure no model code (data, optim,
logger, callbacks, eval, paths, the demo's reference).

The groups that mirror a builder (backbone, head, model with its soft_nms, the predictor, the
Trainer) are derived from its signature in :mod:`msrcnn.app.schemas`, which also assembles each entry
point's config. :func:`msrcnn.config.validate` merges a composed config into a schema, so a misspelt
key or a value outside its choices fails before any work, with OmegaConf's message naming the key and
the valid choices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from omegaconf import MISSING


class Optimizer(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class DataName(str, Enum):
    coco = "coco"
    coco_format = "coco_format"
    shapes = "shapes"


class LoggerName(str, Enum):
    wandb = "wandb"
    csv = "csv"
    tensorboard = "tensorboard"
    none = "none"


@dataclass
class OptimConfig:
    name: Optimizer = Optimizer.sgd
    lr: float = 0.02  # for base_batch_size images per step; scaled linearly with the total batch
    base_batch_size: int = 16
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_steps: int = 500
    warmup_factor: float = 0.001
    lr_step_epochs: list[float] = field(default_factory=lambda: [14.0, 17.0])
    schedule_epochs: float = 18.0  # lr_step_epochs are scaled by trainer length / schedule_epochs
    lr_gamma: float = 0.1
    check_finite_every_n_steps: int = 1


@dataclass
class SplitConfig:
    ann_file: Optional[str] = None
    img_dir: Optional[str] = None


@dataclass
class ShapesConfig:
    num_train: int = 1000
    num_val: int = 200
    image_size: int = 160
    seed: int = 0
    max_objects: int = 9
    empty_fraction: float = 0.05


@dataclass
class AutoInputSizeConfig:
    """Keyword arguments of ``msrcnn.data.sizing.choose_input_size`` (input size from the data)."""

    small_object_px: float = 16.0
    small_object_quantile: float = 0.1
    min_short_side: int = 128
    max_short_side: int = 800


@dataclass
class DataConfig:
    name: DataName = DataName.shapes
    root: Optional[str] = None
    train: SplitConfig = field(default_factory=SplitConfig)
    val: SplitConfig = field(default_factory=SplitConfig)
    test: SplitConfig = field(default_factory=SplitConfig)
    synthetic: Optional[ShapesConfig] = None
    batch_size: int = 2
    eval_batch_size: int = 2
    num_workers: int = 2
    pin_memory: bool = True
    hflip_prob: float = 0.5
    # Short sides the workers resize training images to (default: the model's input size, model.min_size;
    # null where there is no model); their long-side cap is model.max_size, and their shuffle and
    # augmentation follow the run's seed.
    train_min_size: Optional[list[int]] = "${oc.select:model.min_size,null}"  # type: ignore[assignment]
    aspect_ratio_group_factor: int = 3
    auto_input_size: Optional[AutoInputSizeConfig] = None  # model.min_size/max_size from the training data


@dataclass
class LoggerConfig:
    name: LoggerName = LoggerName.wandb
    project: str = "msrcnn"
    group: Optional[str] = None  # null: the sweep (its Hydra sweep dir) in a -m sweep, else experiment_name
    tags: list[str] = field(default_factory=list)  # e.g. the paper table of a tableN_* sweep
    mode: str = "${oc.env:WANDB_MODE,offline}"  # wandb: offline unless the user set WANDB_MODE
    log_images: int = 4  # validation images with predicted masks per evaluation
    log_model: bool = False  # wandb, training: the final last.ckpt / best.ckpt as a model artifact
    id: Optional[str] = None  # wandb: add to this existing run (e.g. src/eval.py into its training run)


@dataclass
class TimeBudgetConfig:
    """``msrcnn.training.TimeBudget``: re-plans max_steps (and the LR steps) to fit ``seconds``."""

    seconds: Optional[float] = None  # null: no budget (the run is exactly trainer.max_steps)
    calibrate_steps: int = 50
    check_every_n_steps: int = 50


@dataclass
class CallbacksConfig:
    monitor: str = "val/segm_AP"
    save_last: bool = True
    last_every_n_steps: int = 500  # refresh last.ckpt every N optimizer steps (0: at epoch ends)
    save_best: bool = True
    lr_monitor: bool = True
    rich_progress: bool = True  # the progress bar (trainer.enable_progress_bar) with rich; false: tqdm
    step_logger: bool = True  # a plain-text progress line every trainer.log_every_n_steps steps
    save_on_signal: bool = True  # SIGTERM/SIGUSR1: save last.ckpt at the step reached, then stop
    slurm_requeue: bool = True  # under SLURM, SIGUSR1 also requeues the job (scontrol requeue) after the save
    time_budget: TimeBudgetConfig = field(default_factory=TimeBudgetConfig)


@dataclass
class EvalConfig:
    max_dets: int = 100
    after_fit: bool = True  # evaluate the final model on the val split and write results.json


@dataclass
class ReferencePointConfig:
    """A preset's results over seeds at one run length: ``[mean, sd]`` of each figure."""

    steps: int = MISSING  # training steps of the measured runs
    seeds: int = MISSING  # how many seeds the mean and sd are over
    mask_ap: list[float] = MISSING  # mask AP under the mask score (class x MaskIoU)
    gain: list[float] = MISSING  # mask AP gain of the mask score over the class score
    pearson: list[float] = MISSING  # MaskIoU Pearson r (predicted vs GT, top-100 per image)


@dataclass
class ReferenceConfig:
    """``msrcnn.app.reference.format_reference``: a preset's measured spread, which the training app
    places each run in (make train's last lines)."""

    source: str = MISSING  # where the numbers are published (shown to the user)
    points: list[ReferencePointConfig] = field(default_factory=list)  # one per measured run length


@dataclass
class PathsConfig:
    root_dir: str = MISSING
    data_dir: str = MISSING
    output_dir: str = MISSING


class Split(str, Enum):
    val = "val"
    test = "test"
