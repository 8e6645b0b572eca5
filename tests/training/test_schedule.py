"""The learning-rate schedule: warm-up, the paper's steps scaled to the run, LR scaling."""

import pytest

from msrcnn.training import lr_factor, milestone_steps, scaled_lr


def test_paper_steps_scale_to_the_run_length():
    assert milestone_steps([14, 17], 18, 1800) == [1400, 1700]
    assert milestone_steps([14, 17], 18, 90) == [70, 85]


def test_warmup_then_steps():
    kw = dict(warmup_steps=10, warmup_factor=0.001, milestones=[50, 80], gamma=0.1)
    assert lr_factor(0, **kw) == pytest.approx(0.001)
    assert lr_factor(5, **kw) == pytest.approx(0.001 * 0.5 + 0.5)
    assert lr_factor(10, **kw) == 1.0
    assert lr_factor(49, **kw) == 1.0
    assert lr_factor(50, **kw) == pytest.approx(0.1)
    assert lr_factor(80, **kw) == pytest.approx(0.01)


def test_linear_scaling_rule():
    assert scaled_lr(0.02, 16, 16) == 0.02
    assert scaled_lr(0.02, 16, 4) == pytest.approx(0.005)
    with pytest.raises(ValueError):
        scaled_lr(0.02, 16, 0)
