"""The run's ETA: the cost said once the step time is measured, the time left on every progress line, the
progress bar over the run's planned steps, and a word before a long CPU run (a stubbed clock, no timing)."""

import json
import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import msrcnn.training.eta as eta_module
from msrcnn.app.train import train
from msrcnn.training import TimeBudget
from msrcnn.training.eta import RunEta, format_duration
from msrcnn_testing import CONF, TINY


def test_format_duration():
    assert [format_duration(s) for s in (4.4, 59, 280, 300, 2820, 3600, 42840)] == [
        "4 s",
        "59 s",
        "4 min 40 s",
        "5 min",
        "47 min",
        "1 h",
        "11 h 54 min",
    ]


def _stub_clock(monkeypatch, seconds_per_call):
    """The ETA's clock advances ``seconds_per_call`` at each reading: once at the start of training and
    once per optimizer step (the tiny runs validate only after training), so a step takes that long."""
    clock = {"now": 0.0}

    def now():
        clock["now"] += seconds_per_call
        return clock["now"]

    monkeypatch.setattr(eta_module, "_now", now)


def _tiny_run(tmp_path, shapes_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *[o for o in TINY if not o.startswith("trainer.max_steps")],
                "trainer.max_steps=8",  # 4 batches an epoch: two epochs
                "trainer.log_every_n_steps=1",
                "callbacks.time_budget.seconds=null",  # the plan as configured (the budget reads the real clock)
                f"paths.data_dir={shapes_dir}",
                f"paths.output_dir={tmp_path}",
                *overrides,
            ],
        )
    train(cfg)
    return json.loads((tmp_path / "results.json").read_text())


def _lines(caplog):
    return [r.getMessage() for r in caplog.records if r.name == "msrcnn.training"]


def test_the_eta_line_and_the_time_left_on_every_step_line(tmp_path, shapes_dir, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="msrcnn.training")
    _stub_clock(monkeypatch, 10.0)  # 10 s a step: measured from step 1 (after the warm-up), said at step 3
    _tiny_run(tmp_path, shapes_dir)
    lines = _lines(caplog)
    eta = [i for i, line in enumerate(lines) if "steps planned" in line]
    assert len(eta) == 1
    assert lines[eta[0]] == (
        "8 steps planned at 10 s/step here: about 1 min 20 s of training, then the evaluation of 4 images at 64 px."
    )  # experiment=demo: no pointer to itself, and no word of a long run
    steps = {int(m[1]): line for line in lines if (m := re.match(r"step (\d+)/8 ", line))}
    assert sorted(steps) == list(range(1, 9))  # k of the planned 8 across the two epochs
    assert all("eta" not in steps[k] for k in (1, 2))  # before the step time is measured
    assert [steps[k].rsplit("  ", 1)[1] for k in range(3, 9)] == [
        f"eta {s} s" for s in (50, 40, 30, 20, 10, 0)
    ]
    assert not any(
        r.levelno >= logging.WARNING and "this run trains for" in r.getMessage() for r in caplog.records
    )


def test_a_long_cpu_run_gets_one_word_and_goes_on(tmp_path, shapes_dir, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="msrcnn.training")
    _stub_clock(monkeypatch, 1000.0)  # 8 steps of 1,000 s: 2 h 13 min
    results = _tiny_run(tmp_path, shapes_dir, "experiment_name=mine")
    lines = _lines(caplog)
    (eta,) = [line for line in lines if "steps planned" in line]
    assert eta.startswith("8 steps planned at 1,000 s/step here: about 2 h 13 min of training")
    assert eta.endswith("On a CPU, experiment=demo trains in about 7 min.")
    (word,) = [line for line in lines if line.startswith("this run trains for")]
    assert "about 2 h 13 min on this CPU and goes on as configured" in word
    assert all(
        alt in word for alt in ("experiment=demo", "experiment=smoke", "callbacks.time_budget.seconds=3600")
    )
    assert results["training"]["steps_run"] == 8  # never refused, never changed


@pytest.mark.parametrize("rich", [True, False])
def test_the_progress_bar_counts_the_runs_planned_steps(tmp_path, shapes_dir, monkeypatch, capsys, rich):
    _stub_clock(monkeypatch, 10.0)
    _tiny_run(
        tmp_path,
        shapes_dir,
        "trainer.enable_progress_bar=true",
        f"callbacks.rich_progress={str(rich).lower()}",
        "callbacks.step_logger=false",
    )
    out = capsys.readouterr().out
    if rich:
        assert re.search(r"Training +\S+ 8/8 .*eta: 0 s", out), out
    else:
        assert re.search(r"Training: 100%\S* *\| *8/8 steps \[.*eta=0 s", out), out
    assert "Epoch" not in out and "4/4" not in out  # not one epoch's batches


def _fake_trainer(max_steps, callbacks, step=0):
    return SimpleNamespace(
        global_step=step,
        max_steps=max_steps,
        estimated_stepping_batches=max_steps,
        callbacks=callbacks,
        is_global_zero=True,
        num_val_batches=[0],
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )


def test_the_eta_line_says_what_the_time_budget_will_make_of_the_plan(monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="msrcnn.training")
    clock = {"now": 0.0}
    monkeypatch.setattr(eta_module, "_now", lambda: clock["now"])
    eta = RunEta(min_steps=10, demo_hint=False)
    trainer = _fake_trainer(1000, [eta, TimeBudget(200.0)])
    eta.on_train_start(trainer, None)
    for _ in range(11):  # 0.5 s a step: 1,000 steps are 8 min 20 s, the budget 200 s
        clock["now"] += 0.5
        trainer.global_step += 1
        eta.on_train_batch_end(trainer, None, None, None, 0)
    fits = 11 + int(0.98 * (200.0 - 5.5) / 0.5)
    assert eta.announcement == (
        "1,000 steps planned at 0.5 s/step here: about 8 min 20 s of training; callbacks.time_budget.seconds=200"
        f" will re-plan it to about {fits} steps (3 min 20 s, the same LR schedule)."
    )
    assert eta.remaining(trainer) == pytest.approx(989 * 0.5)
    trainer.max_steps = trainer.estimated_stepping_batches = (
        fits  # the budget's re-plan: the time left follows
    )
    assert eta.remaining(trainer) == pytest.approx((fits - 11) * 0.5)


def test_validations_during_training_are_counted_and_timed(monkeypatch):
    """The bare command validates 200 images after each of its 18 epochs of 238 steps: the time left adds
    the validations still to come at the measured time of the last one, which the step time leaves out."""
    clock = {"now": 0.0}
    monkeypatch.setattr(eta_module, "_now", lambda: clock["now"])
    eta = RunEta(min_steps=10, demo_hint=False)
    trainer = _fake_trainer(18 * 238, [eta])
    trainer.num_val_batches, trainer.limit_val_batches = [50], 1.0
    trainer.num_training_batches = trainer.val_check_batch = 238
    trainer.check_val_every_n_epoch = 1
    trainer.state, trainer.sanity_checking = SimpleNamespace(fn="fit"), False
    assert eta_module.validations_between(trainer, 0, 18 * 238) == 18
    assert eta_module.validations_between(trainer, 238, 18 * 238) == 17
    eta.on_train_start(trainer, None)

    def steps(n):
        for _ in range(n):
            clock["now"] += 10.0
            trainer.global_step += 1
            eta.on_train_batch_end(trainer, None, None, None, 0)

    steps(11)
    assert (
        "4,284 steps planned at 10 s/step here" in eta.announcement
        and ", plus 18 validations during it" in eta.announcement
    )
    assert eta.remaining(trainer) == pytest.approx((4284 - 11) * 10.0)  # no validation timed yet
    steps(227)  # the end of epoch 1, then its validation: 300 s
    eta.on_validation_start(trainer, None)
    clock["now"] += 300.0
    eta.on_validation_end(trainer, None)
    steps(1)
    assert eta.seconds_per_step == pytest.approx(10.0)  # the validation is not a slow step
    assert eta.remaining(trainer) == pytest.approx((4284 - 239) * 10.0 + 17 * 300.0)


def test_the_first_lines_say_when_the_input_upscales_the_images():
    from msrcnn.app.input_size import describe_input_scale

    data = SimpleNamespace(train_dataset=SimpleNamespace(image_sizes=lambda: np.full((10, 2), 160)))
    paper = OmegaConf.create({"model": {"min_size": [800], "max_size": 1333}})
    assert describe_input_scale(paper, data) == (
        "input: the training images' median short side is 160 px and model.min_size=800: images are upscaled x5"
        " (x25 the pixels per step); to train at the data's own size: model.min_size=[160] model.max_size=160"
    )
    assert (
        describe_input_scale(OmegaConf.create({"model": {"min_size": [160], "max_size": 160}}), data) is None
    )
