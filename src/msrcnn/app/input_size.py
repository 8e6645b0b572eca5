"""``data.auto_input_size``: the model's input size chosen from the training data at start."""

from __future__ import annotations

import logging

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
