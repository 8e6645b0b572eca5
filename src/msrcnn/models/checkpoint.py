"""Reading msrcnn checkpoints with plain torch: the run's config, its weights, its categories.

A checkpoint of ``src/train.py`` is a Lightning checkpoint whose ``hyper_parameters["config"]`` is
the run's resolved configuration (the ``backbone``, ``head`` and ``model`` groups, plus
``num_classes``, ``class_names`` and ``category_ids`` of the training data) and whose
``state_dict`` holds the detector's weights under ``model.``. Nothing here needs Lightning or Hydra.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("msrcnn.models")

__all__ = [
    "CheckpointError",
    "checkpoint_categories",
    "model_kwargs",
    "model_of_config",
    "read_checkpoint",
    "read_torch_file",
    "read_weights",
    "upgrade_config",
]


class CheckpointError(ValueError):
    """A file that is not a readable checkpoint of this project (truncated, corrupt or foreign)."""


def read_torch_file(path: str | os.PathLike, map_location: Any = "cpu", what: str = "checkpoint") -> Any:
    """``torch.load(path, weights_only=True)``: the one reader of every weights file (checkpoints,
    ``model.init_from``, the ImageNet backbone, torchvision's COCO weights). A missing file, an empty,
    damaged or pickled one fail in one line naming the file and ``what`` it should be."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is not a readable {what}: the file is empty")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        text = str(err)
        if "Unsupported global" in text:
            name = text.split("Unsupported global: GLOBAL ", 1)[1].split()[0]
            if what == "checkpoint":
                raise CheckpointError(
                    f"{path} is not a checkpoint of msrcnn: it holds Python objects ({name}), not only tensors "
                    "and plain data as src/train.py's checkpoints do"
                ) from None
            raise CheckpointError(
                f"{path} is not a readable {what}: it holds Python objects ({name}), not only tensors"
            ) from None
        detail = text.rsplit("WeightsUnpickler error:", 1)[-1] if "WeightsUnpickler error:" in text else text
        detail = " ".join(detail.split()).split(". ")[0].rstrip(".")  # torch's first sentence
        raise CheckpointError(
            f"{path} is not a readable {what} (truncated or corrupt?): {type(err).__name__}: {detail[:160]}"
        ) from None


_load = read_torch_file


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint at ``path`` (``torch.load(weights_only=True)``), checked to be an msrcnn one, its
    config under today's names (:func:`upgrade_config`).

    Raises:
        FileNotFoundError: no file at ``path``.
        CheckpointError: a truncated or corrupt file, or a file that is not a checkpoint of
            ``src/train.py``; one line naming the file and what is wrong with it.
    """
    ckpt = _load(path, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path} is not a checkpoint of msrcnn: it holds a {type(ckpt).__name__}, not a dict"
        )
    if "state_dict" not in ckpt:
        if _is_state_dict(ckpt):
            raise CheckpointError(
                f"{path} is not a checkpoint of msrcnn: it is a bare state dict of {len(ckpt)} tensors "
                "(no config to rebuild the model from; model.init_from=PATH loads such weights)"
            )
        raise CheckpointError(f"{path} is not a checkpoint of msrcnn: it has no state_dict")
    config = (ckpt.get("hyper_parameters") or {}).get("config")
    if not isinstance(config, dict) or not config:
        raise CheckpointError(
            f"{path} is not a checkpoint of msrcnn: it has no hyper_parameters.config (the run's "
            "config that src/train.py stores)"
        )
    missing = [k for k in ("num_classes", "class_names", "backbone", "model") if k not in config]
    if missing:
        raise CheckpointError(f"{path} is not a checkpoint of msrcnn: its config lacks {', '.join(missing)}")
    if not any(k.startswith("model.") for k in ckpt["state_dict"]):
        raise CheckpointError(f"{path} is not a checkpoint of msrcnn: its state_dict has no model.* weights")
    ckpt["hyper_parameters"]["config"] = upgrade_config(config)
    return ckpt


# Keys of older checkpoints' configs that now have one name elsewhere: the key, where its value now comes from.
MERGED_KEYS = {
    ("data", "seed"): "seed (one seed per run)",
    ("data", "max_size"): "model.max_size (the workers resize to the model's input size)",
    ("callbacks", "log_every_n_steps"): "trainer.log_every_n_steps (callbacks.step_logger switches the line)",
}


def upgrade_config(config: dict[str, Any]) -> dict[str, Any]:
    """A run config of an older checkpoint under today's names (a copy; a current config is returned as is).

    ``data.seed`` and ``data.max_size`` are dropped (the run's ``seed`` and ``model.max_size`` are the
    single source of each); ``callbacks.log_every_n_steps`` becomes ``callbacks.step_logger``
    (``true`` unless it was 0), the line's cadence being ``trainer.log_every_n_steps``.
    """
    old = [(group, key) for group, key in MERGED_KEYS if key in (config.get(group) or {})]
    if not old:
        return config
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in config.items()}
    for group, key in old:
        value = config[group].pop(key)
        if (group, key) == ("callbacks", "log_every_n_steps"):
            config[group].setdefault("step_logger", bool(value))
        log.debug("checkpoint config: %s.%s=%s is now %s", group, key, value, MERGED_KEYS[group, key])
    return config


def model_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The detector's weights of a checkpoint (its ``model.*`` entries without the prefix)."""
    return {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Detector weights to start from (``model.init_from``): those of an msrcnn checkpoint, or a bare
    state dict such as torchvision's ``MaskRCNN.state_dict()``; read as :func:`read_checkpoint` reads."""
    obj = _load(path)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        weights = model_weights(obj)
        if not weights:
            raise CheckpointError(f"{path} holds no model weights: its state_dict has no model.* entries")
        return weights
    if _is_state_dict(obj):
        return obj
    raise CheckpointError(
        f"{path} holds no model weights: expected an msrcnn checkpoint or a state dict of tensors"
    )


def model_of_config(config: dict[str, Any]):
    """The (untrained) detector a checkpoint's run config describes, ``backbone.pretrained`` not read
    (the weights come from the checkpoint). The one way from a stored config to a model:
    :meth:`~msrcnn.models.MaskScoringRCNN.from_checkpoint` and ``MaskScoringModule`` use it.

    Raises:
        CheckpointError: the config does not describe a model this version can build.
    """
    from msrcnn.models.factory import build_model

    try:
        return build_model(num_classes=int(config["num_classes"]), **inference_kwargs(config))
    except (ValueError, TypeError, KeyError) as err:
        raise CheckpointError(f"cannot rebuild the model from its config: {err}") from None


# Keys of the ``model`` group read by the training app, not by the model's constructor.
TRAINING_KEYS = ("init_from", "train_only")


def model_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`~msrcnn.models.build_model` keyword arguments of a run config: the ``backbone`` and
    ``head`` groups as they are, the ``model`` group's keys as keyword arguments (all under their
    config names; ``num_classes`` not included). Keys missing from an older config are left to the
    constructors' defaults."""
    model = {k: v for k, v in config["model"].items() if k not in TRAINING_KEYS}
    return {"backbone": dict(config["backbone"]), "head": config.get("head") or {"name": "none"}, **model}


def inference_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`model_kwargs` for rebuilding a trained model: ``backbone.pretrained`` is not read
    again (the weights come from the checkpoint). A run config records the backbone's resolved
    ``norm`` and ``trainable_layers``; for an older one that left them null they are resolved from
    ``pretrained`` by :func:`~msrcnn.models.backbones.backbone_defaults`, so that the state dict fits."""
    from msrcnn.models.backbones import backbone_defaults

    kwargs = model_kwargs(config)
    backbone = kwargs["backbone"]
    backbone["norm"], backbone["trainable_layers"] = backbone_defaults(
        backbone.get("pretrained"), backbone.get("norm"), backbone.get("trainable_layers")
    )
    backbone["pretrained"] = None
    return kwargs


def checkpoint_categories(config: dict[str, Any]) -> list[tuple[int, str]]:
    """``(dataset category id, class name)`` per model label 1..K of a run config.

    From ``category_ids`` (what ``src/train.py`` records), else from the run's annotation file
    when it is still where training read it, else 1..K in label order with a warning.
    """
    names = [str(n) for n in config["class_names"]]
    if config.get("category_ids"):
        ids = [int(i) for i in config["category_ids"]]
        if len(ids) != len(names):
            raise CheckpointError(f"the checkpoint records {len(ids)} category ids for {len(names)} classes")
        return list(zip(ids, names))
    data = config.get("data") or {}
    candidates = []
    if data.get("name") == "coco" and data.get("root"):
        candidates.append(Path(data["root"]) / "annotations" / "instances_val2017.json")
    for split in ("val", "train"):
        if isinstance(data.get(split), dict) and data[split].get("ann_file"):
            candidates.append(Path(data[split]["ann_file"]))
    for ann_file in candidates:
        if ann_file.is_file():
            categories = sorted(json.loads(ann_file.read_text()).get("categories", []), key=lambda c: c["id"])
            if [str(c["name"]) for c in categories] == names:
                return [(int(c["id"]), str(c["name"])) for c in categories]
    log.warning(
        "the checkpoint does not record its category ids and its annotation file is not found: "
        "using 1..%d in label order",
        len(names),
    )
    return list(enumerate(names, start=1))
