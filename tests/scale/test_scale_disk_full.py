"""Nothing lost at a full disk: one line naming the cause, the file and the checkpoint to resume from;
the previous file whole and no temporary file left. ENOSPC is injected into the write (every machine),
and a real size-limited tmpfs is used where this machine lets the test mount one."""

import contextlib
import errno
import io
import json
import os
import subprocess
import uuid

import pytest
import torch

from msrcnn import atomic
from msrcnn.app.errors import report_user_errors
from msrcnn.app.faults import EXIT_DISK_FULL, report_disk_full
from msrcnn.app.train import train
from msrcnn.atomic import DiskFullError
from msrcnn.evaluation import write_json_atomic
from msrcnn.training.checkpoint_io import AtomicCheckpointIO
from msrcnn_testing import compose_tiny


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


@pytest.fixture
def disk_full_after(monkeypatch):
    """``disk_full_after(name, nbytes)``: writes to a temporary file of ``name`` fail with ENOSPC once
    ``nbytes`` are written, as on a full file system (the bytes before it reach the file)."""

    def install(name: str, nbytes: int = 0):
        real_fdopen = os.fdopen

        class FullDisk(io.RawIOBase):
            def __init__(self, fd):
                self.fd, self.left = fd, nbytes

            def writable(self):
                return True

            def write(self, data):
                if len(data) > self.left:
                    os.write(self.fd, bytes(data[: self.left]))
                    self.left = 0
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                self.left -= len(data)
                return os.write(self.fd, bytes(data))

            def fileno(self):
                return self.fd

            def close(self):
                if not self.closed:
                    os.close(self.fd)
                super().close()

        def fdopen(fd, mode="r", *args, **kwargs):
            target = os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
            if not target.startswith(f".{name}."):
                return real_fdopen(fd, mode, *args, **kwargs)
            raw = io.BufferedWriter(FullDisk(fd))
            return raw if "b" in mode else io.TextIOWrapper(raw, encoding=kwargs.get("encoding"))

        monkeypatch.setattr(atomic.os, "fdopen", fdopen)

    return install


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(tmp_path, disk_full_after):
    path = tmp_path / "last.ckpt"
    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"global_step": 1, "w": torch.zeros(1000)}, path)
    before = path.read_bytes()
    disk_full_after("last.ckpt", nbytes=3000)  # torch's zip writer fails mid-file
    with pytest.raises(DiskFullError) as err:
        io_.save_checkpoint({"global_step": 2, "w": torch.ones(100_000)}, path)
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(path)
    assert str(err.value) == f"no space left on device while writing {path}"
    assert path.read_bytes() == before and _names(tmp_path) == ["last.ckpt"]


def test_a_full_disk_during_results_json_is_one_line_naming_the_checkpoint(tmp_path, disk_full_after, capsys):
    (tmp_path / "checkpoints").mkdir()
    AtomicCheckpointIO().save_checkpoint({"global_step": 6}, tmp_path / "checkpoints" / "last.ckpt")
    results = tmp_path / "results.json"
    write_json_atomic(results, {"AP": 1.0})
    disk_full_after("results.json", nbytes=0)

    def job():
        with report_disk_full(tmp_path / "checkpoints"):
            write_json_atomic(results, {"AP": 2.0, "pad": "x" * 100_000})

    with pytest.raises(SystemExit) as exit_:
        report_user_errors(job)()
    assert exit_.value.code == EXIT_DISK_FULL
    err = capsys.readouterr().err
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert err.splitlines() == [
        f"error: no space left on device while writing {results}; free some space; "
        f"last good checkpoint: {last} (resume with ckpt_path={last})"
    ]
    assert json.loads(results.read_text()) == {"AP": 1.0}
    assert _names(tmp_path) == ["checkpoints", "results.json"]


def _run_to_one_line(cfg, capsys):
    with pytest.raises(SystemExit) as exit_:
        report_user_errors(train)(cfg)
    err = capsys.readouterr().err
    assert exit_.value.code == EXIT_DISK_FULL, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_training_at_a_full_disk_ends_in_one_line_and_resumes(tmp_path, shapes_dir, disk_full_after, capsys):
    # last.ckpt every step; the save of step 2 finds the disk full
    calls = {"n": 0}
    real = atomic.tempfile.mkstemp

    def mkstemp(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        if os.path.basename(name).startswith(".last.ckpt."):
            calls["n"] += 1
            if calls["n"] == 2:
                disk_full_after("last.ckpt", nbytes=1 << 20)
        return fd, name

    cfg = compose_tiny(tmp_path, shapes_dir, "trainer.max_steps=3", "callbacks.last_every_n_steps=1")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(atomic.tempfile, "mkstemp", mkstemp)
        line = _run_to_one_line(cfg, capsys)
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert line == (
        f"error: no space left on device while writing {last}; free some space; "
        f"last good checkpoint: {last} (resume with ckpt_path={last})"
    )
    assert _names(tmp_path / "checkpoints") == ["last.ckpt"]
    assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 1
    assert not (tmp_path / "results.json").exists()


@contextlib.contextmanager
def _small_tmpfs(base, size_bytes):
    mount_point = base / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(mount_point)],
        capture_output=True,
    )
    if done.returncode != 0:
        pytest.skip(
            "this machine does not let the test mount a tmpfs (ENOSPC is injected in the other tests)"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.slow
def test_a_real_full_file_system_room_for_one_checkpoint_not_two(tmp_path, shapes_dir, capsys):
    # measure one checkpoint, then train on a tmpfs with room for 1.5 of them: the second save fails
    probe = tmp_path / "probe"
    train(compose_tiny(probe, shapes_dir, "trainer.max_steps=1", "eval.after_fit=false"))
    size = (probe / "checkpoints" / "last.ckpt").stat().st_size
    with _small_tmpfs(tmp_path, int(size * 1.5)) as fs:
        run = fs / "run"
        cfg = compose_tiny(run, shapes_dir, "trainer.max_steps=3", "callbacks.last_every_n_steps=1")
        line = _run_to_one_line(cfg, capsys)
        last = run / "checkpoints" / "last.ckpt"
        assert line.startswith("error: no space left on device while writing ") and line.endswith(
            f"last good checkpoint: {last} (resume with ckpt_path={last})"
        ), line
        assert _names(run / "checkpoints") == ["last.ckpt"]
        assert torch.load(last, map_location="cpu", weights_only=True)["global_step"] == 1


def test_a_full_disk_under_the_log_file_is_one_warning_not_a_traceback_per_line(tmp_path, capsys):
    import logging

    from msrcnn.app.faults import guard_log_files

    logger = logging.getLogger(f"test-log-{uuid.uuid4().hex[:6]}")
    logger.propagate = False
    console = io.StringIO()
    logger.addHandler(logging.StreamHandler(console))
    handler = logging.FileHandler(tmp_path / "train.log")
    logger.addHandler(handler)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    handler.stream.write = full  # the log file's writes find the disk full
    guard_log_files(logger)
    logger.warning("first")
    logger.warning("second")
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"warning: no space left on device while writing the log {tmp_path / 'train.log'}; "
        "it stops here, the console goes on"
    ]
    assert handler not in logger.handlers and console.getvalue().splitlines() == ["first", "second"]
