"""The entry points' configs: ``conf/``'s settings groups (:mod:`msrcnn.config.schema`) plus the groups
derived here from the code they build, and one schema per entry point (train, eval, predict, export).

A group that mirrors a builder takes its keys, types and defaults from the builder's signature or
dataclass (:func:`msrcnn.config.derive.schema_of`), so every default is stated once, in the code:

* ``backbone``: :func:`msrcnn.models.build_backbone`;
* ``head``: :class:`msrcnn.models.roi_heads.MaskIoUConfig`, plus ``name`` (the group's option);
* ``model``: :func:`msrcnn.models.factory.model_arguments` (``build_model``'s arguments, ``soft_nms``
  from :class:`msrcnn.models.roi_heads.SoftNMSConfig`, torchvision's detector arguments), plus the
  training app's :data:`TRAINING_KEYS`;
* ``trainer``: ``lightning.Trainer`` (:mod:`msrcnn.config.trainer`);
* ``src/predict.py``: :class:`msrcnn.Predictor` and the overlay drawing; ``src/export.py``:
  :func:`msrcnn.inference.export.export_onnx`.

Importing this module registers the schemas ``conf/`` composes onto with Hydra's ConfigStore
(:func:`register_schemas`). The config it validates is converted into the builders' arguments once,
here at the application's boundary (:func:`msrcnn.config.to_plain`, then
:func:`msrcnn.models.model_kwargs`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from msrcnn.config import derive
from msrcnn.config import validate as _validate
from msrcnn.config.schema import (
    CallbacksConfig,
    DataConfig,
    EvalConfig,
    LoggerConfig,
    LoggerName,
    OptimConfig,
    PathsConfig,
    ReferenceConfig,
    Split,
)
from msrcnn.config.trainer import TrainerConfig
from msrcnn.inference import Prediction, Predictor
from msrcnn.inference.export import export_onnx
from msrcnn.models import BACKBONES, build_backbone, build_model
from msrcnn.models.backbones import NORMS
from msrcnn.models.factory import BOX_HEADS, model_arguments
from msrcnn.models.maskiou import INPUT_DESIGNS, TRAIN_SAMPLES, TRAIN_TARGETS
from msrcnn.models.roi_heads import MaskIoUConfig, SoftNMSConfig
from msrcnn.ops.soft_nms import SOFT_NMS_METHODS
from msrcnn.training.module import TRAIN_ONLY, MaskScoringModule

HEAD_NAMES = ("maskiou", "none")  # conf/head/: the MaskIoU head, or none (a plain Mask R-CNN)

# The choices of the keys that have them, each read from the code that defines it.
BackboneName = derive.choices("BackboneName", BACKBONES)
Norm = derive.choices("Norm", NORMS)
HeadName = derive.choices("HeadName", HEAD_NAMES)
InputDesign = derive.choices("InputDesign", INPUT_DESIGNS)
TrainTarget = derive.choices("TrainTarget", TRAIN_TARGETS)
TrainSamples = derive.choices("TrainSamples", TRAIN_SAMPLES)
BoxHead = derive.choices("BoxHead", BOX_HEADS)
SoftNMSMethod = derive.choices("SoftNMSMethod", SOFT_NMS_METHODS)
TrainOnly = derive.choices("TrainOnly", TRAIN_ONLY)

BackboneConfig = derive.schema_of(
    "BackboneConfig",
    {  # name: build_backbone's required argument, defaulting to build_model's backbone
        **derive.parameters_of(build_backbone),
        "name": inspect.Parameter(
            "name",
            inspect.Parameter.KEYWORD_ONLY,
            default=inspect.signature(build_model).parameters["backbone"].default,
        ),
    },
    types_of={"name": BackboneName, "norm": Optional[Norm], "fpn_norm": Optional[Norm]},  # noqa: UP045
    doc="The config group ``backbone``: :func:`msrcnn.models.build_backbone`'s arguments and defaults.",
)

HeadConfig = derive.schema_of(
    "HeadConfig",
    derive.parameters_of(MaskIoUConfig),
    types_of={"input": InputDesign, "target": TrainTarget, "samples": TrainSamples},
    lead=[("name", HeadName, field(default=HeadName(HEAD_NAMES[0])))],
    doc="The config group ``head``: :class:`msrcnn.models.roi_heads.MaskIoUConfig`'s fields, and ``name``.",
)

SoftNMSGroupConfig = derive.schema_of(
    "SoftNMSGroupConfig",
    derive.parameters_of(SoftNMSConfig),
    types_of={"method": SoftNMSMethod},
    doc="``model.soft_nms``: :class:`msrcnn.models.roi_heads.SoftNMSConfig`'s fields and defaults.",
)

# Keys of the group ``model`` that the training app reads (not the model's constructor).
_train_only = inspect.signature(MaskScoringModule.__init__).parameters["train_only"]
_TRAINING_FIELDS = [
    ("init_from", Optional[str], field(default=None)),  # torchvision:<name>, a state dict or a checkpoint  # noqa: UP045
    ("train_only", TrainOnly, field(default=TrainOnly(_train_only.default))),
]
TRAINING_KEYS = tuple(name for name, _, _ in _TRAINING_FIELDS)

ModelConfig = derive.schema_of(
    "ModelConfig",
    model_arguments(),
    types_of={
        "box_head": BoxHead,
        "mask_head_norm": Optional[Norm],  # noqa: UP045
        "min_size": list[int],
        "soft_nms": SoftNMSGroupConfig,
    },
    lead=_TRAINING_FIELDS,
    doc="The config group ``model``: :func:`msrcnn.models.factory.model_arguments` and :data:`TRAINING_KEYS`.",
)


@dataclass
class Config:
    """``src/train.py``."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)  # type: ignore[valid-type]
    head: HeadConfig = field(default_factory=HeadConfig)  # type: ignore[valid-type]
    model: ModelConfig = field(default_factory=ModelConfig)  # type: ignore[valid-type]
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # type: ignore[valid-type]
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    callbacks: CallbacksConfig = field(default_factory=CallbacksConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment_name: str = "default"
    seed: int = 0
    ckpt_path: Optional[str] = "auto"  # auto: resume from <run dir>/checkpoints/last.ckpt if there is one  # noqa: UP045
    torch_threads: Optional[int] = None  # noqa: UP045
    float32_matmul_precision: str = (
        "high"  # CUDA: high/medium = TF32 matmuls and convolutions; highest = none
    )
    reference: ReferenceConfig | None = None  # a preset's measured spread: the last lines place the run in it  # noqa: UP045


@dataclass
class EvalAppConfig:
    """``src/eval.py``: the model and its settings come from the checkpoint."""

    ckpt_path: str = MISSING
    data: Optional[DataConfig] = None  # null: the dataset the checkpoint was trained on  # noqa: UP045
    split: Split = Split.val
    max_dets: int = 100
    soft_nms: Optional[bool] = None  # null: as trained; true/false overrides model.soft_nms.enabled  # noqa: UP045
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # type: ignore[valid-type]
    logger: LoggerConfig = field(default_factory=lambda: LoggerConfig(name=LoggerName.none))
    paths: PathsConfig = field(default_factory=PathsConfig)
    experiment_name: str = "eval"
    seed: int = 0
    torch_threads: Optional[int] = None  # noqa: UP045
    float32_matmul_precision: str = (
        "high"  # CUDA: high/medium = TF32 matmuls and convolutions; highest = none
    )


def _predictor_parameters() -> dict[str, inspect.Parameter]:
    """``Predictor``'s arguments (``precision`` and ``sort_by`` as strings: the app names their choices),
    then the overlay's: ``render_*`` are ``Prediction.draw``'s ``min_mask_score``, ``min_instances`` and
    ``max_instances``."""
    params = derive.parameters_of(Predictor)
    params["precision"] = params["precision"].replace(
        annotation=str, default=str(params["precision"].default)
    )
    draw = derive.parameters_of(Prediction.draw)
    for key, source in (
        ("render_min_score", "min_mask_score"),
        ("render_min_instances", "min_instances"),
        ("render_max_instances", "max_instances"),
    ):
        params[key] = draw[source].replace(name=key)
    return params


PredictConfig = derive.schema_of(
    "PredictConfig",
    _predictor_parameters(),
    types_of={"ckpt_path": str, "device": str},
    lead=[
        ("input", str, field(default=MISSING)),  # an image, a folder of images or a glob ('imgs/*.jpg')
        ("output_dir", str, field(default=MISSING)),  # conf/predict.yaml: outputs/predict/<date>
        ("render", bool, field(default=True)),  # write overlays/<image>.png
        ("torch_threads", Optional[int], field(default=None)),  # noqa: UP045
    ],
    doc="``src/predict.py``: :class:`msrcnn.Predictor`'s arguments, the input, the output and the overlays.",
)

_export = derive.parameters_of(export_onnx)
ExportAppConfig = derive.schema_of(
    "ExportAppConfig",
    {"opset": _export["opset"]},
    lead=[
        ("ckpt_path", str, field(default=MISSING)),
        ("format", str, field(default="onnx")),  # msrcnn.inference.export.FORMATS: onnx (ONNX Runtime)
        ("output", Optional[str], field(default=None)),  # null: the checkpoint's path, .onnx  # noqa: UP045
        ("image", Optional[str], field(default=None)),  # the image to trace and check with; null: random  # noqa: UP045
        ("check", bool, field(default=True)),  # run the file with ONNX Runtime, compare with the eager model
    ],
    doc="``src/export.py``: a checkpoint as a deployable file (the model comes from the checkpoint).",
)

# The groups that compose onto their schema (conf/<group>/*.yaml: defaults [schema, _self_]); data is
# checked after composition (validate), so that a bad value in one job of a -m sweep fails that job only.
GROUP_SCHEMAS = {
    "backbone": BackboneConfig,
    "callbacks": CallbacksConfig,
    "eval": EvalConfig,
    "head": HeadConfig,
    "logger": LoggerConfig,
    "model": ModelConfig,
    "optim": OptimConfig,
    "paths": PathsConfig,
    "trainer": TrainerConfig,
}
GROUPS = {*GROUP_SCHEMAS, "data"}

# The entry points: their config in conf/ and their schema.
APP_SCHEMAS = {
    "train": Config,
    "evaluate": EvalAppConfig,
    "predict": PredictConfig,
    "export": ExportAppConfig,
}


def validate(cfg: DictConfig | dict, schema: type = Config) -> DictConfig:
    """:func:`msrcnn.config.validate` against ``schema``, by default ``src/train.py``'s :class:`Config`."""
    return _validate(cfg, schema)


def _top_level(schema: type) -> dict:
    """A schema's own keys at their defaults, its groups left to the defaults list: the node an entry
    point's YAML composes first (``defaults: [<name>_schema, _self_, ...]``), checked by :func:`validate`
    once composed (a bad value in one job of a ``-m`` sweep then fails that job only)."""
    plain = OmegaConf.to_container(OmegaConf.structured(schema), enum_to_str=True)
    return {k: v for k, v in plain.items() if k not in GROUPS}


def register_schemas() -> None:
    """Registers with Hydra's ConfigStore what ``conf/`` composes onto: ``<group>/schema`` for each of
    :data:`GROUP_SCHEMAS` (``trainer``: every ``lightning.Trainer`` argument at its default), so that their
    YAML holds only what an option changes and any key can be set on the command line; and
    ``<entry point>_schema``, the top level of each entry point's config (conf/train.yaml, evaluate.yaml,
    predict.yaml, export.yaml)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, node in GROUP_SCHEMAS.items():
        store.store(group=group, name="schema", node=node)
    for name, schema in APP_SCHEMAS.items():
        store.store(name=f"{name}_schema", node=_top_level(schema))


register_schemas()
