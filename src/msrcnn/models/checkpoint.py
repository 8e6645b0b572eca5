"""Reading weights files with plain torch: msrcnn checkpoints (the run's config, under today's names, and
the detector's weights) and bare state dicts. File I/O only: turning a checkpoint's config into a model
is :mod:`msrcnn.models.factory`'s (``load_model``).

A checkpoint of ``src/train.py`` is a Lightning checkpoint whose ``hyper_parameters["config"]`` is
the run's resolved configuration (the ``backbone``, ``head`` and ``model`` groups, plus
``num_classes``, ``class_names`` and ``category_ids`` of the training data) and whose
``state_dict`` holds the detector's weights under ``model.``. Nothing here needs Lightning or Hydra.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("msrcnn.models")

__all__ = [
    "CheckpointError",
    "model_weights",
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
