"""Typed schemas of the Hydra configuration under ``conf/``.

Every group of ``conf/`` has a dataclass here. :func:`validate` merges a composed config into
these schemas, so a misspelt key or a value outside its choices fails before any work, with
OmegaConf's message naming the key and the valid choices.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional

from omegaconf import MISSING

from msrcnn.config.trainer import TrainerConfig
from msrcnn.models.backbones import BACKBONES, NORMS
from msrcnn.models.factory import BOX_HEADS
from msrcnn.models.maskiou import INPUT_DESIGNS, TRAIN_SAMPLES, TRAIN_TARGETS
from msrcnn.models.roi_heads import MaskIoUConfig, SoftNMSConfig
from msrcnn.ops.soft_nms import SOFT_NMS_METHODS

BackboneName = Enum(
    "BackboneName", {name: name for name in BACKBONES}, type=str
)  # choices defined in the code


Norm = Enum("Norm", {name: name for name in NORMS}, type=str)  # choices defined in the code


class HeadName(str, Enum):
    maskiou = "maskiou"
    none = "none"


InputDesign = Enum(
    "InputDesign", {name: name for name in INPUT_DESIGNS}, type=str
)  # choices defined in the code


TrainTarget = Enum(
    "TrainTarget", {name: name for name in TRAIN_TARGETS}, type=str
)  # choices defined in the code


TrainSamples = Enum(
    "TrainSamples", {name: name for name in TRAIN_SAMPLES}, type=str
)  # choices defined in the code


BoxHead = Enum("BoxHead", {name: name for name in BOX_HEADS}, type=str)  # choices defined in the code


SoftNMSMethod = Enum(
    "SoftNMSMethod", {name: name for name in SOFT_NMS_METHODS}, type=str
)  # choices defined in the code


class Optimizer(str, Enum):
    sgd = "sgd"
    adamw = "adamw"


class TrainOnly(str, Enum):
    all = "all"
    maskiou = "maskiou"


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
class BackboneConfig:
    name: BackboneName = BackboneName.r18_fpn
    pretrained: Optional[str] = None  # null | imagenet | /path/to/state_dict.pth
    norm: Optional[Norm] = None  # default: frozen_bn over pretrained weights, else bn
    trainable_layers: Optional[int] = None
    returned_layers: Optional[list[int]] = None
    fpn_channels: int = 256
    anchor_sizes: Optional[list[list[int]]] = None
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    width: int = 64  # first-stage channels (the paper's ResNets: 64)
    fpn_norm: Optional[Norm] = None  # a norm after each FPN conv (torchvision's *_v2: bn); null: none


def _schema_of(code: type, name: str, enums: dict[str, type[Enum]], lead: list | None = None) -> type:
    """A schema with the fields and defaults of the dataclass ``code`` uses, choices as ``enums``: the
    defaults are stated once, in the code (``lead``: fields of the config group itself, first)."""
    hints = typing.get_type_hints(code)
    fields = list(lead or [])
    for f in dataclasses.fields(code):
        kind = enums.get(f.name, hints[f.name])
        default = kind(f.default) if f.name in enums else f.default
        fields.append((f.name, kind, field(default=default)))
    cls = dataclasses.make_dataclass(name, fields)
    cls.__module__ = __name__
    cls.__doc__ = (
        f"The config group of :class:`{code.__module__}.{code.__qualname__}` (its fields and defaults)."
    )
    return cls


HeadConfig = _schema_of(
    MaskIoUConfig,
    "HeadConfig",
    {"input": InputDesign, "target": TrainTarget, "samples": TrainSamples},
    lead=[("name", HeadName, field(default=HeadName.maskiou))],  # maskiou | none (no head)
)
SoftNMSGroupConfig = _schema_of(SoftNMSConfig, "SoftNMSGroupConfig", {"method": SoftNMSMethod})


@dataclass
class ModelConfig:
    min_size: list[int] = field(default_factory=lambda: [800])
    max_size: int = 1333
    box_head: BoxHead = BoxHead.mlp
    box_representation_size: int = 1024
    box_conv_channels: int = 256
    box_num_convs: int = 4
    mask_head_channels: int = 256
    mask_num_convs: int = 4
    mask_head_norm: Optional[Norm] = None  # a norm after each mask head conv (torchvision's *_v2: bn)
    rpn_conv_depth: int = 1  # 3x3 convs of the RPN head (torchvision's *_v2: 2)
    channels_last: bool = False  # NHWC convolution weights (faster on CPUs and tensor-core GPUs)
    rpn_pre_nms_top_n_train: int = 2000
    rpn_post_nms_top_n_train: int = 2000
    rpn_pre_nms_top_n_test: int = 1000
    rpn_post_nms_top_n_test: int = 1000
    rpn_batch_size_per_image: int = 256
    box_batch_size_per_image: int = 512
    box_positive_fraction: float = 0.25
    box_score_thresh: float = 0.05
    box_nms_thresh: float = 0.5
    box_detections_per_img: int = 100
    soft_nms: SoftNMSGroupConfig = field(default_factory=SoftNMSGroupConfig)
    init_from: Optional[str] = None  # torchvision:<name>, a MaskRCNN state dict or an msrcnn checkpoint
    train_only: TrainOnly = TrainOnly.all


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


@dataclass
class Config:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment_name: str = "default"
    seed: int = 0
    ckpt_path: Optional[str] = "auto"  # auto: resume from <run dir>/checkpoints/last.ckpt if there is one
    torch_threads: Optional[int] = None
    float32_matmul_precision: str = (
        "high"  # CUDA: high/medium = TF32 matmuls and convolutions; highest = none
    )
    reference: Optional[ReferenceConfig] = (
        None  # a preset's measured spread: the last lines place the run in it
    )


class Split(str, Enum):
    val = "val"
    test = "test"


@dataclass
class EvalAppConfig:
    """``src/eval.py``: the model and its settings come from the checkpoint."""

    ckpt_path: str = MISSING
    data: Optional[DataConfig] = None  # null: the dataset the checkpoint was trained on
    split: Split = Split.val
    max_dets: int = 100
    soft_nms: Optional[bool] = None  # null: as trained; true/false overrides model.soft_nms.enabled
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(name=LoggerName.none))
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment_name: str = "eval"
    seed: int = 0
    torch_threads: Optional[int] = None
    float32_matmul_precision: str = (
        "high"  # CUDA: high/medium = TF32 matmuls and convolutions; highest = none
    )


@dataclass
class ExportAppConfig:
    """``src/export.py``: a checkpoint as a deployable file (the model comes from the checkpoint)."""

    ckpt_path: str = MISSING
    format: str = "onnx"  # msrcnn.export.FORMATS: onnx (ONNX Runtime)
    output: Optional[str] = None  # null: the checkpoint's path with the format's suffix (last.onnx)
    opset: int = 17  # ONNX opset
    image: Optional[str] = None  # an image to trace on and to check the file with; null: a random one
    check: bool = True  # run the file with ONNX Runtime and compare it with the eager model


def register_schemas() -> None:
    """Registers the schemas that ``conf/`` groups compose onto (Hydra's ConfigStore): ``<group>/schema``
    for ``backbone``, ``callbacks``, ``eval``, ``head``, ``logger``, ``model``, ``optim``, ``paths`` and
    ``trainer`` (every ``lightning.Trainer`` argument at its default), so that their YAML holds only what an
    option changes and any key can be set on the command line. ``data`` is checked after composition (validate), so that a bad value in one job of a
    ``-m`` sweep fails that job only."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, node in (
        ("backbone", BackboneConfig),
        ("callbacks", CallbacksConfig),
        ("eval", EvalConfig),
        ("head", HeadConfig),
        ("logger", LoggerConfig),
        ("model", ModelConfig),
        ("optim", OptimConfig),
        ("paths", PathsConfig),
        ("trainer", TrainerConfig),
    ):
        store.store(group=group, name="schema", node=node)
