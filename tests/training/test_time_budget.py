"""TimeBudget: a slow machine trains for fewer steps, with the LR steps moved, never cut short."""

import json
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir

import msrcnn.training.callbacks as callbacks_module
from msrcnn.app.train import train
from msrcnn.training import StepSchedule, TimeBudget
from msrcnn_testing import CONF, TINY


class FakeTrainer(SimpleNamespace):
    @property
    def max_steps(self):
        return self.fit_loop.epoch_loop.max_steps


def fake_run(monkeypatch, seconds_per_step, budget, max_steps=1000, steps=None):
    """Drives the callback with a clock that advances ``seconds_per_step`` per step."""
    clock = {"now": 0.0}
    monkeypatch.setattr(callbacks_module.time, "perf_counter", lambda: clock["now"])
    schedule = StepSchedule(
        max_steps,
        lr_step_epochs=[14, 17],
        schedule_epochs=18,
        warmup_steps=10,
        warmup_factor=0.001,
        lr_gamma=0.1,
    )
    module = SimpleNamespace(schedule=schedule)
    trainer = FakeTrainer(
        global_step=0,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=max_steps)),
        world_size=1,
        is_global_zero=True,
    )
    cb = TimeBudget(budget, calibrate_steps=20, check_every_n_steps=10)
    cb.on_train_start(trainer, module)
    while trainer.global_step < trainer.max_steps and (steps is None or trainer.global_step < steps):
        clock["now"] += seconds_per_step
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, module, None, None, 0)
    return cb, trainer, schedule, clock["now"]


def test_a_fast_machine_runs_the_fixed_plan(monkeypatch):
    cb, trainer, schedule, elapsed = fake_run(monkeypatch, seconds_per_step=0.1, budget=200.0)
    assert trainer.global_step == 1000 and cb.replans == []
    assert schedule.milestones == [778, 944]


def test_a_slow_machine_replans_and_completes_its_schedule(monkeypatch):
    cb, trainer, schedule, elapsed = fake_run(monkeypatch, seconds_per_step=0.5, budget=200.0)
    assert 380 <= trainer.global_step <= 400 and elapsed <= 200.0
    assert cb.planned_steps == trainer.global_step
    assert (
        cb.replans
        and cb.replans[0]["from"] == 1000
        and cb.replans[0]["seconds_per_step"] == pytest.approx(0.5)
    )
    # the LR steps sit at 14/18 and 17/18 of the run that actually happens, so the LR decays twice
    assert schedule.milestones == [round(14 / 18 * cb.planned_steps), round(17 / 18 * cb.planned_steps)]
    assert schedule(trainer.global_step - 1) == pytest.approx(0.01)


def test_a_resumed_run_keeps_its_plan(monkeypatch):
    cb, trainer, schedule, _ = fake_run(monkeypatch, seconds_per_step=0.5, budget=200.0, steps=100)
    state = cb.state_dict()
    resumed = TimeBudget(200.0)
    resumed.load_state_dict(state)
    again = FakeTrainer(
        global_step=100,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=1000)),
        world_size=1,
        is_global_zero=True,
    )
    resumed.on_train_start(again, SimpleNamespace(schedule=schedule))
    assert again.max_steps == cb.planned_steps < 1000 and resumed.initial_steps == 1000
    # a resume that asks for another length plans anew
    longer = FakeTrainer(
        global_step=100,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=1500)),
        world_size=1,
        is_global_zero=True,
    )
    other = TimeBudget(200.0)
    other.load_state_dict(state)
    other.on_train_start(longer, SimpleNamespace(schedule=schedule))
    assert longer.max_steps == 1500 and other.initial_steps == 1500 and other.replans == []


def test_budget_must_be_positive():
    with pytest.raises(ValueError, match="seconds"):
        TimeBudget(0)


def test_results_say_how_many_steps_ran_and_why(tmp_path, shapes_dir):
    """A budget too small for the configured steps: re-planned, the schedule completed, and said so."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *[o for o in TINY if not o.startswith("trainer.max_steps")],
                "trainer.max_steps=40",
                "callbacks.time_budget.seconds=0.001",
                "callbacks.time_budget.calibrate_steps=2",
                "callbacks.time_budget.check_every_n_steps=1",
                f"paths.data_dir={shapes_dir}",
                f"paths.output_dir={tmp_path}",
            ],
        )
    train(cfg)
    training = json.loads((tmp_path / "results.json").read_text())["training"]
    assert training["steps_configured"] == 40
    assert training["steps_run"] == training["steps_planned"] == 4  # re-planned at step 3, one more step
    assert training["schedule_completed"] is True
    assert training["stop_reason"].startswith("completed the planned 4 steps (re-planned from 40")
    assert training["replanned"][0]["at_step"] == 3
    # the LR steps moved with the plan (14/18 and 17/18 of 4 steps, not of 40), and the optimizer used them
    optim = cfg.optim
    moved = StepSchedule(
        4,
        lr_step_epochs=optim.lr_step_epochs,
        schedule_epochs=optim.schedule_epochs,
        warmup_steps=optim.warmup_steps,
        warmup_factor=optim.warmup_factor,
        lr_gamma=optim.lr_gamma,
    )
    assert training["lr_milestones"] == moved.milestones == [3, 4]
    assert training["final_lr_factor"] == pytest.approx(moved(3))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    (group, *_) = state["optimizer_states"][0]["param_groups"]
    assert group["lr"] == pytest.approx(group["initial_lr"] * moved(4))  # after the 4th step
    assert state["lr_schedulers"][0]["last_epoch"] == 4


def test_an_epoch_based_run_is_planned_in_steps():
    trainer = FakeTrainer(
        global_step=0,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=-1)),
        estimated_stepping_batches=500,
        world_size=1,
        is_global_zero=True,
    )
    cb = TimeBudget(100.0)
    cb.on_train_start(trainer, SimpleNamespace(schedule=None))
    assert trainer.max_steps == 500 and cb.initial_steps == 500
    trainer.fit_loop.epoch_loop.max_steps = -1
    trainer.estimated_stepping_batches = float("inf")
    with pytest.raises(ValueError, match="max_epochs"):
        TimeBudget(100.0).on_train_start(trainer, SimpleNamespace(schedule=None))


def test_ddp_ranks_replan_together(monkeypatch):
    """A rank that fits its budget still takes part in the reduction and adopts the slowest plan
    (a rank skipping the collective while another waits in it would hang the job)."""
    import torch

    clock = {"now": 0.0}
    monkeypatch.setattr(callbacks_module.time, "perf_counter", lambda: clock["now"])
    calls = []

    def reduce(tensor, reduce_op):  # the other rank is slow: it fits 300 steps and plans 290
        calls.append(reduce_op)
        assert tensor.device.type == "meta"  # the strategy's device (NCCL refuses CPU tensors)
        return torch.tensor([300.0, 290.0])

    trainer = FakeTrainer(
        global_step=0,
        fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=1000)),
        world_size=2,
        is_global_zero=True,
        strategy=SimpleNamespace(reduce=reduce, root_device=torch.device("meta")),
    )
    cb = TimeBudget(1000.0, calibrate_steps=20, check_every_n_steps=10)
    cb.on_train_start(trainer, SimpleNamespace(schedule=None))
    for _ in range(30):  # this rank: 0.1 s/step, far inside its budget
        clock["now"] += 0.1
        trainer.global_step += 1
        cb.on_train_batch_end(trainer, None, None, None, 0)
    assert calls == ["min"] and trainer.max_steps == 290 and cb.replans[0]["to"] == 290


def _gloo_rank(rank, port, seconds_per_step, results):
    """One of two real processes: TimeBudget's reduction through Lightning's DDP all-reduce (gloo)."""
    import torch
    import torch.distributed as dist
    from lightning.fabric.utilities.distributed import _sync_ddp_if_available

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        clock = {"now": 0.0}
        callbacks_module.time.perf_counter = lambda: clock["now"]
        strategy = SimpleNamespace(
            root_device=torch.device("cpu"),
            reduce=lambda tensor, reduce_op: _sync_ddp_if_available(tensor, reduce_op=reduce_op),
        )
        trainer = FakeTrainer(
            global_step=0,
            fit_loop=SimpleNamespace(epoch_loop=SimpleNamespace(max_steps=1000)),
            world_size=2,
            is_global_zero=rank == 0,
            strategy=strategy,
        )
        cb = TimeBudget(100.0, calibrate_steps=20, check_every_n_steps=10)
        cb.on_train_start(trainer, SimpleNamespace(schedule=None))
        for _ in range(30):
            clock["now"] += seconds_per_step
            trainer.global_step += 1
            cb.on_train_batch_end(trainer, None, None, None, 0)
        results[rank] = (trainer.max_steps, [r["to"] for r in cb.replans])
    finally:
        dist.destroy_process_group()


def test_ddp_reduce_with_two_real_gloo_processes():
    """Rank 0 fits its 1,000 steps in the budget, rank 1 (0.2 s/step) does not: both adopt rank 1's plan."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    context = mp.get_context("spawn")
    results = context.Manager().dict()
    procs = [context.Process(target=_gloo_rank, args=(r, port, (0.05, 0.2)[r], results)) for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    # rank 1 at 0.2 s/step after 30 steps (6 s): 94 s left = 470 more steps, planned 2% short
    expected = 30 + int(0.98 * 94.0 / 0.2)
    assert results[0] == results[1] == (expected, [expected])
