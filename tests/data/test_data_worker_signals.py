"""Data-loader workers leave SIGTERM / SIGUSR1 of the process group to the main process, yet a worker
left over when the main process exits does not keep it waiting."""

import subprocess
import sys
import time

import torch
from torch.utils.data import DataLoader

from msrcnn.data.datamodule import seed_worker


def _worker(loader):
    it = iter(loader)
    next(it)  # the worker has run its init
    (worker,) = it._workers
    return it, worker


def test_a_sigterm_or_sigusr1_of_the_process_group_is_left_to_the_main_process():
    loader = DataLoader(list(range(64)), batch_size=2, num_workers=1, worker_init_fn=seed_worker)
    it, worker = _worker(loader)
    # as `kill -TERM -- -<pgid>`, SLURM or `timeout` send it: from another process
    subprocess.run(["kill", "-TERM", str(worker.pid)], check=True)
    subprocess.run(["kill", "-USR1", str(worker.pid)], check=True)
    time.sleep(1.0)
    assert worker.is_alive()
    assert torch.equal(next(it), torch.tensor([2, 3]))  # and it still delivers
    del it


def test_an_interpreter_exiting_with_a_worker_left_over_does_not_hang(tmp_path):
    script = tmp_path / "leftover.py"
    script.write_text(
        "from torch.utils.data import DataLoader\n"
        "from msrcnn.data.datamodule import seed_worker\n"
        "loader = DataLoader(list(range(64)), batch_size=2, num_workers=1, worker_init_fn=seed_worker)\n"
        "it = iter(loader); next(it)\n"
        "import builtins; builtins.leftover = it  # never collected before the exit handlers run\n"
    )
    done = subprocess.run([sys.executable, str(script)], timeout=120, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
