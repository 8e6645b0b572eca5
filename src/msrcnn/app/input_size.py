"""``data.auto_input_size``: the model's input size chosen from the training data at start."""

from __future__ import annotations

import logging

import numpy as np
from omegaconf import DictConfig, OmegaConf

from msrcnn.data import DetectionDataModule
from msrcnn.data.sizing import InputSizeChoice, choose_input_size

log = logging.getLogger("msrcnn.app")


def apply_auto_input_size(cfg: DictConfig, datamodule: DetectionDataModule) -> InputSizeChoice | None:
    """With ``data.auto_input_size`` set, measure the set-up training split, print what was measured and
    chosen, and set ``model.min_size`` / ``model.max_size`` (and the workers' resize) to it.

    ``data.train_min_size`` follows the model's unless set explicitly (scale jitter); the long-side cap is
    ``model.max_size``.
    """
    auto = cfg.data.get("auto_input_size")
    if not auto:
        return None
    dataset = datamodule.train_dataset
    choice = choose_input_size(dataset.image_sizes(), dataset.object_sizes(), **OmegaConf.to_container(auto))
    for line in choice.report():
        print(line, flush=True)
        log.debug(line)
    cfg.model.min_size = [choice.min_size]
    cfg.model.max_size = choice.max_size
    train_min_size = cfg.data.train_min_size
    datamodule.set_input_size(None if train_min_size is None else list(train_min_size), cfg.model.max_size)
    return choice


def describe_input_scale(cfg: DictConfig, datamodule: DetectionDataModule) -> str | None:
    """One line when the model's input (``model.min_size``) upscales the training images' median short
    side 1.5 times or more, e.g. the embedded 160 px shapes at the paper's COCO size of 800 px: the
    images carry no more detail, and each step computes on the larger area. None otherwise."""
    sizes = datamodule.train_dataset.image_sizes()
    if len(sizes) == 0:
        return None
    short = float(np.median(sizes.min(axis=1)))
    target = max(int(s) for s in cfg.model.min_size)
    scale = target / short if short > 0 else 1.0
    if scale < 1.5:
        return None
    return (
        f"input: the training images' median short side is {short:.0f} px and model.min_size={target}: "
        f"images are upscaled x{scale:.3g} (x{scale * scale:.3g} the pixels per step); to train at the data's own "
        f"size: model.min_size=[{round(short)}] model.max_size={round(short * _median_aspect(sizes))}"
    )


def _median_aspect(sizes: np.ndarray) -> float:
    return float(np.median(sizes.max(axis=1) / sizes.min(axis=1)))
