"""Nothing lost: a failure or SIGTERM mid-epoch keeps the last good checkpoint; a failing sweep job is one of many."""

import json
import logging
import re
import signal
import subprocess
import sys
import time

import pytest
import torch
from hydra import compose, initialize_config_dir

from msrcnn.app.train import train
from msrcnn.training import MaskScoringModule
from msrcnn_testing import CONF, ROOT, TINY, script_env

# 8 images in batches of 2: 4 steps per epoch; last.ckpt is refreshed at every epoch end.
LONG = [o for o in TINY if not o.startswith("trainer.max_steps")] + ["callbacks.last_every_n_steps=0"]


def _env():
    return script_env(HYDRA_FULL_ERROR="0")


def _assert_intact(checkpoints, step):
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.ckpt"]  # no temporary file
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == step and state["state_dict"]


@pytest.mark.slow
def test_an_exception_mid_epoch_keeps_the_last_checkpoint_and_says_where(
    tmp_path, shapes_dir, caplog, monkeypatch
):
    step = MaskScoringModule.training_step

    def failing_step(self, batch, batch_idx):
        if self.global_step == 5:  # in the second epoch, after the checkpoint of the first
            raise RuntimeError("simulated crash at step 5")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(MaskScoringModule, "training_step", failing_step)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *LONG,
                "trainer.max_steps=8",
                f"paths.data_dir={shapes_dir}",
                f"paths.output_dir={tmp_path}",
            ],
        )
    with (
        caplog.at_level(logging.ERROR, logger="msrcnn"),
        pytest.raises(RuntimeError, match="simulated crash"),
    ):
        train(cfg)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert f"training failed (RuntimeError); last good checkpoint: {last}" in caplog.text
    _assert_intact(tmp_path / "checkpoints", step=4)
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
def test_sigterm_saves_the_step_reached_and_names_the_checkpoint(tmp_path, shapes_dir):
    checkpoints = tmp_path / "checkpoints"
    log = (tmp_path / "output.txt").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            *LONG,
            "trainer.max_steps=10000",
            f"paths.data_dir={shapes_dir}",
            f"hydra.run.dir={tmp_path}",
        ],
        cwd=ROOT,
        env=_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 300
        while not (checkpoints / "last.ckpt").exists():  # appears complete: it is renamed into place
            assert proc.poll() is None, (tmp_path / "output.txt").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=300)
    finally:
        proc.kill()
        log.close()
    output = (tmp_path / "output.txt").read_text()
    assert returncode == 143, output[-3000:]
    found = re.findall(r"training stopped by SIGTERM at step (\d+); checkpoint saved: (\S+);", output)
    assert len(found) == 1 and found[0][1] == str(checkpoints / "last.ckpt"), output[-3000:]
    state = torch.load(checkpoints / "last.ckpt", map_location="cpu", weights_only=True)
    assert state["global_step"] == int(found[0][0]) > 4  # saved at the signal, not at the last epoch end
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")]
    assert not (tmp_path / "results.json").exists()  # no evaluation of a half-trained model


@pytest.mark.slow
def test_a_failing_sweep_job_does_not_stop_the_others(tmp_path, shapes_dir):
    # job 0: an invalid value (a user error, which used to abort the sweep); job 1: an exception in training;
    # job 2: fine. All three run; the failures are listed at the end and the exit status is 1.
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            *[o for o in TINY if not o.startswith("data.batch")],
            "trainer.fast_dev_run=true",
            f"paths.data_dir={shapes_dir}",
            f"hydra.sweep.dir={sweep}",
            "data.batch_size=abc,0,2",
        ],
        cwd=ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "multirun: 2 of 3 jobs failed" in proc.stderr
    assert "#0 data.batch_size=abc: ConfigError" in proc.stderr
    assert "#1 data.batch_size=0: ValueError: batch_size must be positive" in proc.stderr
    assert json.loads((sweep / "0" / "failed.json").read_text())["exit_code"] == 2
    assert "Traceback" in (sweep / "1" / "error.txt").read_text()
    assert json.loads((sweep / "2" / "results.json").read_text())["num_images"] == 2  # fast_dev_run: 1 batch
    assert not (sweep / "2" / "failed.json").exists()
    assert [r["job_num"] for r in json.loads((sweep / "failures.json").read_text())] == [0, 1]
