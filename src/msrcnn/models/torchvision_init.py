"""Starting from torchvision's COCO-trained Mask R-CNN: ``model.init_from=torchvision:maskrcnn_resnet50_fpn``
(or ``..._v2``).

torchvision's detection weights (``torchvision.models.get_model_weights(name).DEFAULT``) are
downloaded by its weights API on first use and cached by torch hub (``$TORCH_HOME/hub/checkpoints``,
default ``~/.cache/torch``); an offline machine can put the file there by hand. Their classifier,
box regressor and mask predictor have 91 slots indexed by COCO category id (slot 0 the background,
10 unused ``N/A`` slots); a dataset's labels 1..K map onto the slots of its category ids, so COCO
and any subset of its categories (with COCO's ids and names) start from the trained detector. The
MaskIoU head, absent from a Mask R-CNN, keeps its fresh initialisation.

Nothing here needs Lightning or Hydra.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from msrcnn.models.checkpoint import CheckpointError, read_torch_file

log = logging.getLogger("msrcnn.models")

__all__ = [
    "PREFIX",
    "TORCHVISION_MODELS",
    "TorchvisionInitError",
    "coco_slots",
    "init_from_torchvision",
    "is_torchvision_source",
    "map_to_categories",
]

PREFIX = "torchvision:"

# The torchvision detectors whose architecture this project builds, with the config that builds it
# (checked against the model's state dict: a wrong width, depth or head fails on the first tensor).
TORCHVISION_MODELS: dict[str, str] = {
    "maskrcnn_resnet50_fpn": "backbone=r50_fpn with the default model group (experiment=coco_torchvision)",
    "maskrcnn_resnet50_fpn_v2": (
        "backbone=r50_fpn backbone.fpn_norm=bn model.box_head=conv model.rpn_conv_depth=2 "
        "model.mask_head_norm=bn (experiment=coco_torchvision_v2)"
    ),
}

# The per-class tensors of torchvision's MaskRCNN: name -> rows per class (the box regressor has 4).
PER_CLASS = {
    "roi_heads.box_predictor.cls_score.weight": 1,
    "roi_heads.box_predictor.cls_score.bias": 1,
    "roi_heads.box_predictor.bbox_pred.weight": 4,
    "roi_heads.box_predictor.bbox_pred.bias": 4,
    "roi_heads.mask_predictor.mask_fcn_logits.weight": 1,
    "roi_heads.mask_predictor.mask_fcn_logits.bias": 1,
}


class TorchvisionInitError(CheckpointError):
    """torchvision weights that cannot initialise this model or this dataset (one line)."""


def is_torchvision_source(init_from: str | os.PathLike | None) -> bool:
    """Whether ``model.init_from`` names torchvision weights (``torchvision:<model name>``)."""
    return isinstance(init_from, str) and init_from.startswith(PREFIX)


def _weights(name: str):
    """The DEFAULT weights enum entry of a supported torchvision detector (no download)."""
    if name not in TORCHVISION_MODELS:
        raise TorchvisionInitError(
            f"model.init_from={PREFIX}{name} is not a supported torchvision detector; "
            f"expected one of {', '.join(PREFIX + n for n in TORCHVISION_MODELS)}"
        )
    from torchvision.models import get_model_weights

    return get_model_weights(name).DEFAULT


def coco_slots(
    categories: Sequence[tuple[int, str]], coco_names: Sequence[str], source: str = "torchvision"
) -> list[int]:
    """The slot of each model label 0..K in a COCO-indexed head: ``[0, id_1, ..., id_K]``.

    Args:
        categories: ``(dataset category id, name)`` of labels 1..K.
        coco_names: the head's slot names (slot = COCO category id; ``N/A`` marks an unused slot).

    Raises:
        TorchvisionInitError: an id that is not a COCO category, or a name that is not COCO's for
            that id (a dataset whose ids are not COCO's); one line naming the first such category.
    """
    slots = [0]
    for cat_id, name in categories:
        cat_id = int(cat_id)
        valid = 1 <= cat_id < len(coco_names) and coco_names[cat_id] != "N/A"
        if not valid or str(name).strip().lower() != coco_names[cat_id].lower():
            expected = f"COCO's is {coco_names[cat_id]!r}" if valid else "COCO has no such category id"
            raise TorchvisionInitError(
                f"{source} weights need a dataset with COCO's category ids (COCO or a subset of it): "
                f"category id {cat_id} is named {name!r} here, {expected}"
            )
        slots.append(cat_id)
    return slots


def map_to_categories(state: dict[str, torch.Tensor], slots: Sequence[int]) -> dict[str, torch.Tensor]:
    """``state`` with its per-class tensors reduced to the rows of ``slots`` (label order)."""
    index = torch.as_tensor(list(slots), dtype=torch.long)
    out = dict(state)
    for key, rows in PER_CLASS.items():
        if key not in out:
            raise TorchvisionInitError(f"the torchvision weights have no {key}: not a Mask R-CNN state dict")
        tensor = out[key]
        per_class = tensor.reshape(tensor.shape[0] // rows, rows, *tensor.shape[1:])
        out[key] = per_class[index].reshape(len(index) * rows, *tensor.shape[1:]).clone()
    return out


def init_from_torchvision(
    model: nn.Module,
    init_from: str,
    categories: Sequence[tuple[int, str]] | None,
    weights_file: str | os.PathLike | None = None,
) -> None:
    """Loads torchvision's COCO weights ``init_from`` (``torchvision:<name>``) into ``model``.

    Args:
        model: a :class:`~msrcnn.models.MaskScoringRCNN` of the torchvision model's architecture.
        init_from: ``torchvision:maskrcnn_resnet50_fpn`` or ``torchvision:maskrcnn_resnet50_fpn_v2``.
        categories: ``(dataset category id, name)`` of the model's labels 1..K.
        weights_file: a local ``state_dict()`` of the torchvision model to use instead of the
            weights API's (cached) download.

    Everything but the MaskIoU head comes from torchvision; the per-class rows follow the
    dataset's COCO category ids (:func:`coco_slots`).
    """
    name = init_from[len(PREFIX) :]
    weights = _weights(name)
    if not categories:
        raise TorchvisionInitError(f"model.init_from={init_from} needs the dataset's categories")
    slots = coco_slots(categories, weights.meta["categories"], source=init_from)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)
    if weights_file is not None or cached.is_file():  # read as checkpoints are, with their one-line errors
        state = read_torch_file(weights_file or cached, what=f"{init_from} weights file")
    else:
        state = weights.get_state_dict(progress=True, check_hash=True)  # a download into torch hub's cache
    state = map_to_categories(state, slots)
    own = model.state_dict()
    for key, value in state.items():
        if key in own and own[key].shape != value.shape:
            raise TorchvisionInitError(
                f"model.init_from={init_from}: {key} is {tuple(value.shape)} in torchvision's weights but "
                f"{tuple(own[key].shape)} in this model; use {TORCHVISION_MODELS[name]}"
            )
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "maskiou" not in k and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise TorchvisionInitError(
            f"model.init_from={init_from} does not fit this model ({len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, e.g. {first}); use {TORCHVISION_MODELS[name]}"
        )
    log.info("initialised the detector from %s (%d classes mapped by COCO id)", init_from, len(slots) - 1)
