"""Nothing lost: atomic checkpoint files, the "last good checkpoint" message, failed sweep jobs recorded."""

import json
import logging
import os
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from msrcnn.app import multirun
from msrcnn.app.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, InterruptedRun, report_last_checkpoint
from msrcnn.training import checkpoint_io
from msrcnn.training.checkpoint_io import AtomicCheckpointIO


def _leftovers(directory):
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_atomic_save_writes_a_loadable_file_with_normal_permissions(tmp_path):
    path = tmp_path / "checkpoints" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 7}, path)
    loaded = AtomicCheckpointIO().load_checkpoint(path)
    assert loaded["global_step"] == 7 and torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    assert _leftovers(path.parent) == []


def test_a_save_that_dies_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"global_step": 1}, path)
    before = path.read_bytes()

    def dying_save(obj, f):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # e.g. Ctrl-C or an OOM kill while writing

    monkeypatch.setattr(checkpoint_io.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path) == []


def test_remote_paths_go_through_lightning(monkeypatch):
    calls = []
    monkeypatch.setattr(checkpoint_io.TorchCheckpointIO, "save_checkpoint", lambda self, *a: calls.append(a))
    AtomicCheckpointIO().save_checkpoint({}, "s3://bucket/run/last.ckpt")
    assert calls and calls[0][1] == "s3://bucket/run/last.ckpt"


@pytest.mark.parametrize("has_checkpoint", [True, False])
def test_a_failure_names_the_last_good_checkpoint(tmp_path, caplog, has_checkpoint):
    if has_checkpoint:
        AtomicCheckpointIO().save_checkpoint({"global_step": 4}, tmp_path / "last.ckpt")
    with caplog.at_level(logging.ERROR, logger="msrcnn"), pytest.raises(RuntimeError, match="boom"):
        with report_last_checkpoint(tmp_path):
            raise RuntimeError("boom")
    if has_checkpoint:
        assert (
            f"training failed (RuntimeError); last good checkpoint: {tmp_path / 'last.ckpt'}" in caplog.text
        )
        assert f"ckpt_path={tmp_path / 'last.ckpt'}" in caplog.text
    else:
        assert "no checkpoint was written yet" in caplog.text


def test_sigterm_and_ctrl_c_end_with_their_exit_status(tmp_path, caplog):
    with caplog.at_level(logging.ERROR, logger="msrcnn"), pytest.raises(InterruptedRun) as stopped:
        with report_last_checkpoint(tmp_path):
            raise SIGTERMException()
    assert stopped.value.code == EXIT_TERMINATED and "stopped by SIGTERM" in caplog.text
    with pytest.raises(InterruptedRun) as interrupted:
        with report_last_checkpoint(tmp_path):
            try:
                raise KeyboardInterrupt
            except KeyboardInterrupt:
                raise SystemExit(1) from None  # what Lightning does after a graceful Ctrl-C shutdown
    assert interrupted.value.code == EXIT_INTERRUPTED


def _fake_hydra(monkeypatch, job_dir, num, overrides):
    hc = OmegaConf.create(
        {"runtime": {"output_dir": str(job_dir)}, "job": {"num": num}, "overrides": {"task": overrides}}
    )
    monkeypatch.setattr(multirun, "_hydra_config", lambda: hc)


def test_failed_jobs_are_recorded_and_summarised(tmp_path, monkeypatch, capsys):
    for num, err in ((0, ValueError("batch_size must be positive")), (2, SystemExit(2))):
        _fake_hydra(monkeypatch, tmp_path / str(num), num, ["logger=none", f"data.batch_size={num}"])
        if isinstance(err, SystemExit):
            try:
                try:
                    raise FileNotFoundError("model weights not found: w.pth")
                except FileNotFoundError:
                    raise err from None
            except SystemExit as exit_:
                multirun.record_failure(exit_)
        else:
            multirun.record_failure(err)
    record = json.loads((tmp_path / "2" / multirun.FAILED_FILE).read_text())
    assert record["error"] == "FileNotFoundError" and record["exit_code"] == 2 and record["job_num"] == 2
    assert "FileNotFoundError" in (tmp_path / "2" / multirun.ERROR_FILE).read_text()

    summary = multirun.MultirunSummary()
    config = OmegaConf.create(
        {
            "hydra": {
                "sweep": {"dir": str(tmp_path)},
                "overrides": {"task": ["logger=none", "data.batch_size=0,1,2"]},
            }
        }
    )
    summary.on_multirun_start(config=config)
    summary.num_jobs = 3
    with pytest.raises(SystemExit) as exit_:
        summary.on_multirun_end(config=config)
    assert exit_.value.code == 1
    err = capsys.readouterr().err
    assert "multirun: 2 of 3 jobs failed" in err
    assert "#0 data.batch_size=0: ValueError: batch_size must be positive" in err
    assert "#2 data.batch_size=2: FileNotFoundError" in err and "logger=none" not in err
    assert len(json.loads((tmp_path / "failures.json").read_text())) == 2


def test_a_sweep_without_failures_ends_normally(tmp_path):
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}, "overrides": {"task": []}}})
    multirun.MultirunSummary().on_multirun_end(config=config)


def test_swept_keys():
    assert multirun.swept_keys(["a=1,2", "b=3", "+c=choice(x,y)", "d=range(3)", "e=[1,2]", "f=g"]) == {
        "a",
        "c",
        "d",
    }


def test_capture_only_in_a_multirun_with_the_callback(monkeypatch):
    assert not multirun.capturing_failures()  # no Hydra at all
    from hydra.types import RunMode

    hc = SimpleNamespace(
        mode=RunMode.RUN, get=lambda key: {"s": {"_target_": "msrcnn.app.multirun.MultirunSummary"}}
    )
    monkeypatch.setattr(multirun, "_hydra_config", lambda: hc)
    assert not multirun.capturing_failures()
    hc.mode = RunMode.MULTIRUN
    assert multirun.capturing_failures()
    hc.get = lambda key: {}
    assert not multirun.capturing_failures()
