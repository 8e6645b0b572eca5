"""Exact resume: a run stopped after k steps and resumed from last.ckpt repeats an uninterrupted run's losses."""

import csv
from types import SimpleNamespace

import pytest
import torch

from msrcnn.data import DetectionDataModule
from msrcnn.data.resumable import sample_seed
from msrcnn_testing import TINY, run_script

SYNTHETIC = {
    "num_train": 8,
    "num_val": 4,
    "image_size": 64,
    "seed": 0,
    "max_objects": 6,
    "empty_fraction": 0.05,
}


def _module(shapes_dir, **kwargs):
    args = dict(
        train=None,
        val=None,
        synthetic=SYNTHETIC,
        root=str(shapes_dir / "shapes"),
        num_workers=0,
        batch_size=2,
        hflip_prob=0.5,
        train_min_size=[48, 64],
        max_size=64,
    )
    module = DetectionDataModule(**{**args, **kwargs})
    module.setup("fit")
    return module


def _trainer(global_step, accumulate=1, limit=1.0):
    connector = SimpleNamespace(use_distributed_sampler=False)
    return SimpleNamespace(
        world_size=1,
        global_rank=0,
        _accelerator_connector=connector,
        global_step=global_step,
        accumulate_grad_batches=accumulate,
        limit_train_batches=limit,
    )


def _index_batches(loader):
    return [list(batch) for batch in loader._index_sampler]


def test_the_training_data_position_follows_the_optimizer_step(shapes_dir):
    module = _module(shapes_dir)
    module.trainer = _trainer(0)
    loader = module.train_dataloader()
    epoch0 = _index_batches(loader)
    assert len(epoch0) == len(loader) == 4
    assert epoch0 == [[(i, sample_seed(0, 0, i)) for i in batch] for batch in loader.batch_sampler]
    module.trainer = _trainer(4)
    epoch1 = _index_batches(loader)
    assert sorted(epoch1) != sorted(epoch0) and len(epoch1) == 4
    module.trainer = _trainer(2)  # stopped after 2 of 4 batches: the rest of epoch 0
    assert _index_batches(loader) == epoch0[2:]
    module.trainer = _trainer(5)
    assert _index_batches(loader) == epoch1[1:]
    module.trainer = _trainer(1, accumulate=2)  # 2 steps per epoch, 2 batches per step
    assert _index_batches(loader) == epoch0[2:]
    module.trainer = _trainer(2, limit=2)  # limit_train_batches=2: epochs of 2 batches
    assert _index_batches(loader) == epoch1


def test_a_checkpointed_position_is_used_before_lightning_restores_its_loops(shapes_dir):
    module = _module(shapes_dir)
    loader = module.train_dataloader()
    module.trainer = _trainer(0)
    epoch0 = _index_batches(loader)
    module.trainer = _trainer(4)
    epoch1 = _index_batches(loader)
    module.trainer = _trainer(6)
    saved = module.state_dict()
    assert saved["train_global_step"] == 6
    module.trainer = _trainer(
        0
    )  # Lightning may start the loader (estimated_stepping_batches) before its restore
    module.load_state_dict(saved)
    assert _index_batches(loader) == epoch1[2:]
    assert _index_batches(loader) == epoch0  # once only: then the trainer's step again


def test_augmentation_is_per_item_and_leaves_the_global_rng_alone(shapes_dir):
    def first_epoch(workers):
        module = _module(shapes_dir, num_workers=workers)
        module.trainer = _trainer(0)
        return [images for images, _ in module.train_dataloader()]

    state = torch.get_rng_state()
    plain = first_epoch(0)
    assert torch.equal(torch.get_rng_state(), state)
    with_workers = first_epoch(2)
    assert all(torch.equal(a, b) for x, y in zip(plain, with_workers) for a, b in zip(x, y))
    assert {min(image.shape[-2:]) for images in plain for image in images} == {48, 64}  # jitter still random


def _losses(run_dir):
    losses = {}
    with open(run_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            if row.get("train/loss"):
                losses[int(row["step"])] = float(row["train/loss"])
    return losses


@pytest.mark.slow
def test_resume_mid_epoch_repeats_the_uninterrupted_losses(tmp_path, shapes_dir):
    # 8 images in batches of 2: 4 steps per epoch; stop after step 2 (mid-epoch), resume to 6 (into epoch 2).
    # The LR steps sit at fractions of trainer.max_steps, so they are switched off here: a run resumed with
    # another max_steps would otherwise (by design) follow another schedule.
    common = [o for o in TINY if not o.startswith(("logger=", "trainer.max_steps"))]
    common += [
        "logger=csv",
        "trainer.log_every_n_steps=1",
        "eval.after_fit=false",
        "optim.lr_step_epochs=[]",
        f"paths.data_dir={shapes_dir}",
    ]
    full, part, resumed = tmp_path / "full", tmp_path / "part", tmp_path / "resumed"
    run_script("train.py", *common, "trainer.max_steps=6", f"hydra.run.dir={full}")
    run_script("train.py", *common, "trainer.max_steps=2", f"hydra.run.dir={part}")
    ckpt = part / "checkpoints" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"] == 2
    proc = run_script(
        "train.py", *common, "trainer.max_steps=6", f"ckpt_path={ckpt}", f"hydra.run.dir={resumed}"
    )
    assert "resuming the training data mid-epoch: epoch 0 from batch 2" in proc.stdout + proc.stderr

    uninterrupted, first, second = _losses(full), _losses(part), _losses(resumed)
    assert (
        sorted(uninterrupted) == list(range(6)) and sorted(first) == [0, 1] and sorted(second) == [2, 3, 4, 5]
    )
    for step in range(6):
        other = first.get(step, second.get(step))
        assert other == pytest.approx(uninterrupted[step], abs=1e-5), step


def _start(args, log_path):
    import subprocess
    import sys

    from msrcnn_testing import ROOT, script_env

    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "src" / "train.py"), *args],
        cwd=ROOT,
        env=script_env(HYDRA_FULL_ERROR="0"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group, as under SLURM, `timeout` or a container runtime
    )
    return proc, log


@pytest.mark.slow
def test_sigterm_to_the_process_group_saves_the_step_and_the_same_command_resumes_exactly(
    tmp_path, shapes_dir
):
    # data-loader workers running; SIGTERM to the whole group mid-epoch; then the same command again
    import os
    import re
    import signal
    import time

    common = [o for o in TINY if not o.startswith(("trainer.max_steps", "data.num_workers"))]
    common += [
        "data.num_workers=2",
        "trainer.max_steps=8",
        "trainer.log_every_n_steps=1",
        "callbacks.last_every_n_steps=0",  # last.ckpt at epoch ends only (every 4 steps)
        "eval.after_fit=false",
        f"paths.data_dir={shapes_dir}",
    ]
    full, run = tmp_path / "full", tmp_path / "run"
    run_script("train.py", *common, f"hydra.run.dir={full}")

    command = [*common, f"hydra.run.dir={run}"]
    proc, log = _start(command, tmp_path / "first.txt")
    try:
        deadline = time.monotonic() + 300
        while "step 5/8" not in (tmp_path / "first.txt").read_text():  # into the second epoch
            assert proc.poll() is None, (tmp_path / "first.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no step 5 after 300 s"
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGTERM)
        returncode = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    output = (tmp_path / "first.txt").read_text()
    assert returncode == 128 + signal.SIGTERM, output[-3000:]
    assert "Traceback" not in output and "DataLoader worker" not in output, output[-3000:]
    last = run / "checkpoints" / "last.ckpt"
    stopped = re.findall(r"training stopped by SIGTERM at step (\d+); checkpoint saved: (\S+);", output)
    assert len(stopped) == 1 and stopped[0][1] == str(last), output[-3000:]
    step = int(stopped[0][0])
    assert 5 <= step < 8 and torch.load(last, map_location="cpu", weights_only=True)["global_step"] == step

    second = run_script("train.py", *command)  # the same command: ckpt_path=auto resumes from last.ckpt
    assert f"resuming from {last} (step {step})" in second.stdout + second.stderr
    assert second.stderr.strip() == "", second.stderr[-3000:]
    a = torch.load(last, map_location="cpu", weights_only=True)
    b = torch.load(full / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert a["global_step"] == b["global_step"] == 8
    for key, value in b["state_dict"].items():
        assert torch.equal(a["state_dict"][key], value), key  # bit-identical to the uninterrupted run
