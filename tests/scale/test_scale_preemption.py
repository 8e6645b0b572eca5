"""Save at the signal, requeue once, resume by itself: SIGUSR1 / SIGTERM at a known step leave a
checkpoint of that step; under SLURM (simulated: its variables set, a stand-in ``scontrol`` first on
PATH that records its calls) the job is requeued exactly once, and the same job run again in the same
folder (``ckpt_path=auto``) ends bit-identical to an uninterrupted run."""

import os
import signal
import stat

import pytest
import torch

from msrcnn.app.errors import InterruptedRun
from msrcnn.app.train import train
from msrcnn.training import MaskScoringModule
from msrcnn.training.preemption import SaveOnSignal
from msrcnn_testing import compose_tiny

STEPS = 6


def _cfg(output_dir, shapes_dir, *extra):
    return compose_tiny(
        output_dir,
        shapes_dir,
        f"trainer.max_steps={STEPS}",
        "callbacks.last_every_n_steps=0",  # no periodic save between the epoch ends (4 steps)
        "eval.after_fit=false",
        *extra,
    )


def _signal_in_step(monkeypatch, signum, at_step):
    """Sends ``signum`` to this process from inside the training step that starts at ``at_step``."""
    step = MaskScoringModule.training_step

    def signalled_step(self, batch, batch_idx):
        if self.global_step == at_step:
            os.kill(os.getpid(), signum)
        return step(self, batch, batch_idx)

    monkeypatch.setattr(MaskScoringModule, "training_step", signalled_step)


def _ckpt(path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _assert_same_state(a, b):
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A simulated SLURM job 4242: its variables, and ``scontrol`` recording its calls in a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol_calls.txt"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(scontrol.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for key, value in {
        "SLURM_JOB_ID": "4242",
        "SLURM_JOB_NAME": "msrcnn",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_NNODES": "1",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
    }.items():
        monkeypatch.setenv(key, value)
    return calls


@pytest.mark.slow
def test_sigusr1_under_slurm_saves_the_step_requeues_once_and_resumes_exactly(
    tmp_path, shapes_dir, monkeypatch, slurm, caplog
):
    full = tmp_path / "full"
    train(_cfg(full, shapes_dir))  # the uninterrupted run (SLURM variables set too)
    assert not slurm.exists()

    run = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        _signal_in_step(mp, signal.SIGUSR1, at_step=2)  # mid-epoch, between the epoch-end saves
        with pytest.raises(InterruptedRun) as stopped:
            train(_cfg(run, shapes_dir))
    assert stopped.value.code == 128 + signal.SIGUSR1
    last = run / "checkpoints" / "last.ckpt"
    assert _ckpt(last)["global_step"] == 3  # the step the signal arrived in, completed
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]
    assert slurm.read_text().splitlines() == ["requeue 4242"]  # exactly one requeue, by one owner
    assert (
        f"training stopped by SIGUSR1 at step 3; checkpoint saved: {last}; SLURM job 4242 requeued"
        in caplog.text
    )
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL  # handlers restored after training

    train(_cfg(run, shapes_dir))  # the requeued job: the same command in the same folder
    assert slurm.read_text().splitlines() == ["requeue 4242"]
    _assert_same_state(_ckpt(last), _ckpt(full / "checkpoints" / "last.ckpt"))


@pytest.mark.slow
def test_sigterm_saves_the_step_and_does_not_requeue(tmp_path, shapes_dir, monkeypatch, slurm):
    run = tmp_path / "run"
    _signal_in_step(monkeypatch, signal.SIGTERM, at_step=1)
    with pytest.raises(InterruptedRun) as stopped:
        train(_cfg(run, shapes_dir))
    assert stopped.value.code == 128 + signal.SIGTERM
    assert _ckpt(run / "checkpoints" / "last.ckpt")["global_step"] == 2
    assert not slurm.exists()  # SIGTERM: SLURM's own pre-emption or scancel; nothing requeued here


def test_the_callback_waits_for_the_end_of_an_accumulated_step(tmp_path):
    saved = []

    class Trainer:
        world_size, is_global_zero, global_step = 1, True, 4

        def save_checkpoint(self, path):
            saved.append((path, self.global_step))

    trainer, callback = Trainer(), SaveOnSignal(tmp_path)
    callback.on_train_batch_start(trainer, None, None, 0)
    callback._note(signal.SIGTERM, None)
    callback.on_train_batch_end(trainer, None, None, None, 0)  # the step did not advance: accumulating
    assert saved == []
    callback.on_train_batch_start(trainer, None, None, 1)
    trainer.global_step = 5
    with pytest.raises(Exception, match="stopped by SIGTERM; checkpoint of step 5 saved"):
        callback.on_train_batch_end(trainer, None, None, None, 1)
    assert saved == [(tmp_path / "last.ckpt", 5)]


def test_a_run_resumed_in_its_folder_keeps_the_earlier_csv_metrics(tmp_path):
    from msrcnn.app.builders import _keep_previous_metrics

    csv_dir = tmp_path / "csv"
    csv_dir.mkdir()
    for part in ("step,loss\n0,1.0\n", "step,loss\n1,0.5\n"):
        (csv_dir / "metrics.csv").write_text(part)
        _keep_previous_metrics(csv_dir)  # what Lightning's CSV logger would delete is renamed first
    assert sorted(p.name for p in csv_dir.iterdir()) == ["metrics.1.csv", "metrics.2.csv"]
    assert (csv_dir / "metrics.2.csv").read_text() == "step,loss\n1,0.5\n"
