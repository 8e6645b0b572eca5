"""The input size chosen from the data, and the presets that use it."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from msrcnn.app.input_size import apply_auto_input_size
from msrcnn.data import DetectionDataModule, SplitSpec
from msrcnn.data.sizing import choose_input_size
from msrcnn.testing.crowded import generate_crowded

NUCLEI_IMAGES = np.array([[700, 1100]] * 32)


def test_small_objects_get_a_larger_input_within_the_budget() -> None:
    nuclei = np.random.default_rng(0).normal(20.0, 3.0, size=4000)  # ~20 px nuclei
    p10 = float(np.quantile(nuclei, 0.1))
    choice = choose_input_size(NUCLEI_IMAGES, nuclei, small_object_px=10, max_short_side=512)
    assert choice.min_size % 32 == 0 and choice.max_size % 32 == 0
    assert abs(choice.min_size - 700 * 10 / p10) <= 16  # the 10th percentile lands at ~10 px
    assert choice.max_size >= choice.min_size * 1100 / 700  # the median image keeps that short side
    assert not choice.capped
    capped = choose_input_size(NUCLEI_IMAGES, nuclei, small_object_px=16, max_short_side=320)
    assert capped.min_size == 320 and capped.capped
    report = "\n".join(capped.report())
    assert "median 700x1100" in report and "p50" in report and "warning" in report and "custom_gpu" in report


def test_large_objects_allow_a_smaller_input() -> None:
    choice = choose_input_size(NUCLEI_IMAGES, np.full(100, 300.0), small_object_px=16, min_short_side=128)
    assert choice.min_size == 128  # 300 px objects need no more than the minimum


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="no training images"):
        choose_input_size(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(ValueError, match="min_short_side"):
        choose_input_size(NUCLEI_IMAGES, np.ones(3), min_short_side=600, max_short_side=500)
    with pytest.raises(ValueError, match="quantile"):
        choose_input_size(NUCLEI_IMAGES, np.ones(3), small_object_quantile=2.0)


def test_apply_sets_the_model_and_the_workers_resize(tmp_path, capsys: pytest.CaptureFixture) -> None:
    ann_file, img_dir = generate_crowded(
        tmp_path, num_images=2, height=200, width=300, min_instances=20, max_instances=30, radius=(3.0, 5.0)
    )
    split = SplitSpec(str(ann_file), str(img_dir))
    module = DetectionDataModule(train=split, val=split, num_workers=0, train_min_size=[160], max_size=160)
    module.setup("fit")
    cfg = OmegaConf.create(
        {
            "model": {"min_size": [160], "max_size": 160},
            "data": {
                "train_min_size": "${model.min_size}",
                "auto_input_size": {
                    "small_object_px": 10,
                    "small_object_quantile": 0.1,
                    "min_short_side": 128,
                    "max_short_side": 512,
                },
            },
        }
    )
    choice = apply_auto_input_size(cfg, module)
    assert (
        choice is not None
        and list(cfg.model.min_size) == [choice.min_size]
        and cfg.model.max_size == choice.max_size
    )
    assert (
        choice.min_size > 160
        and module.train_min_size == [choice.min_size]
        and module.max_size == choice.max_size
    )
    image, target = module.train_dataset[0]
    assert min(image.shape[-2:]) == choice.min_size and target["masks"].shape[-2:] == image.shape[-2:]
    assert "input size from the data" in capsys.readouterr().out
    cfg.data.auto_input_size = None
    assert apply_auto_input_size(cfg, module) is None
