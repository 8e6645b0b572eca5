"""Save at the signal: SIGTERM or SIGUSR1 during training leaves a checkpoint of the step reached.

A cluster stops a job with a signal: SLURM sends SIGUSR1 ahead of the time limit (the launcher's
``signal_delay_s``) and SIGTERM at a pre-emption or ``scancel``; ``timeout``, Kubernetes and Docker send
SIGTERM, often to the whole process group. :class:`SaveOnSignal` owns both signals while training runs:
its handler only notes the signal; at the end of the current optimizer step (the same point where
``ModelCheckpoint`` saves ``last.ckpt``, so the resume is exact) every rank agrees that a signal was
seen, ``<run dir>/checkpoints/last.ckpt`` is written atomically, and the run stops with
:class:`StoppedBySignal` (the app says it in one line and exits with 128 + the signal's number).

Under SLURM (``SLURM_JOB_ID`` set) a SIGUSR1 also requeues the job once (``scontrol requeue``, from
global rank 0, after the save): the requeued job runs the same command in the same run folder and
``ckpt_path=auto`` resumes it from that ``last.ckpt``. This callback is the one owner of SIGUSR1: the
app gives Lightning a ``SLURMEnvironment(auto_requeue=False)`` and submitit's handler is replaced while
training runs (restored after). Data-loader workers ignore both signals
(:func:`msrcnn.data.datamodule.seed_worker`): they leave them to the main process.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import lightning as L
import torch

log = logging.getLogger("msrcnn.training")

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StoppedBySignal(Exception):
    """Training stopped at a signal after saving ``checkpoint`` at ``step`` (``requeued``: the SLURM job id)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, requeued: str | None) -> None:
        self.signum, self.step, self.checkpoint, self.requeued = signum, step, checkpoint, requeued
        name = signal.Signals(signum).name
        saved = f"checkpoint of step {step} saved: {checkpoint}" if checkpoint else f"at step {step}"
        super().__init__(
            f"stopped by {name}; {saved}" + (f"; SLURM job {requeued} requeued" if requeued else "")
        )


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes: ``<array job>_<task>`` in an array job, else ``SLURM_JOB_ID``."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{task}" if array_job and task else os.environ.get("SLURM_JOB_ID")
    return job if job and re.fullmatch(r"[0-9_]+", job) else None


def requeue_slurm_job(job_id: str) -> bool:
    """``scontrol requeue <job_id>``; whether it worked (a failure is logged, the checkpoint is there)."""
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        log.warning("could not requeue SLURM job %s (scontrol: %s); resubmit the same command", job_id, err)
        return False
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()[-1:] or [f"exit {result.returncode}"]
        log.warning(
            "could not requeue SLURM job %s (scontrol: %s); resubmit the same command", job_id, detail[0]
        )
        return False
    return True


class SaveOnSignal(L.Callback):
    """Writes ``<dirpath>/last.ckpt`` at the step where SIGTERM or SIGUSR1 arrived, then stops training
    (see the module docstring). ``requeue``: under SLURM, a SIGUSR1 requeues the job after the save."""

    def __init__(self, dirpath: str | os.PathLike, requeue: bool = True) -> None:
        self.dirpath = Path(dirpath)
        self.requeue = requeue
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._step_at_start = -1

    # ------------------------------------------------------------- handlers
    def _note(self, signum: int, frame: Any) -> None:
        if self.received is None or signum == signal.SIGUSR1:  # SIGUSR1 (requeue) wins over SIGTERM
            self.received = signum

    def _install(self) -> None:
        if self._previous:
            return
        try:
            self._previous = {s: signal.signal(s, self._note) for s in SIGNALS}
        except ValueError:  # not the main thread: signals stay with whoever had them
            self._previous = {}

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.received = None
        self._install()  # after Lightning's own handlers (registered when the trainer starts)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore()

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore()

    # ------------------------------------------------------------- the save
    def _agreed_signal(self, trainer: L.Trainer) -> int:
        """The signal any rank received (0: none). Several ranks: one all-reduce of a number per step,
        as Lightning's own SIGTERM check does; one process: no synchronisation at all."""
        received = self.received or 0
        if trainer.world_size <= 1:
            return received
        flag = torch.tensor([float(received)], device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._step_at_start = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        signum = self._agreed_signal(trainer)
        if not signum or trainer.global_step == self._step_at_start:
            return  # no signal, or within an accumulation of gradients: saved at the step's end
        step = int(trainer.global_step)
        path = self.dirpath / "last.ckpt"
        trainer.save_checkpoint(path)  # atomic (AtomicCheckpointIO); every rank takes part
        requeued = None
        if signum == signal.SIGUSR1 and self.requeue and trainer.is_global_zero:
            job = slurm_job_id()
            if job is not None and requeue_slurm_job(job):
                requeued = job
        raise StoppedBySignal(signum, step, path, requeued)
