"""A ``-m`` sweep says its size at the start, ``job k of n`` first in each job's log and, after the first
job, the expected total."""

import re
import subprocess
import sys

from omegaconf import OmegaConf

from msrcnn.app.sweep_progress import count_jobs
from msrcnn_testing import ROOT, TINY, script_env

BASIC = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"


def _sweep_config(task, params=None, target=BASIC):
    return OmegaConf.create(
        {"hydra": {"sweeper": {"_target_": target, "params": params}, "overrides": {"task": task}}}
    )


def test_the_job_count_is_the_basic_sweepers():
    assert count_jobs(_sweep_config(["experiment=demo", "seed=0,1,2"])) == 3
    # the preset's hydra.sweeper.params times the command line's values (table4_input with 3 seeds: 12)
    assert (
        count_jobs(_sweep_config(["seed=0,1,2"], {"head.input": "concat,multiply,concat_all,concat_highres"}))
        == 12
    )
    assert count_jobs(_sweep_config(["seed=range(2)", "head.input=concat,multiply"])) == 4
    assert count_jobs(_sweep_config(["seed=0,1"], target="hydra_plugins.optuna.OptunaSweeper")) is None


def test_a_sweep_says_its_size_each_jobs_number_and_the_expected_total(tmp_path, shapes_dir):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "train.py"),
            "-m",
            *[o for o in TINY if not o.startswith("trainer.max_steps")],
            "trainer.max_steps=1",
            "eval.after_fit=false",
            f"paths.data_dir={shapes_dir}",
            f"hydra.sweep.dir={sweep}",
            "seed=0,1",
        ],
        cwd=ROOT,
        env=script_env(HYDRA_FULL_ERROR="0"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "multirun: 2 jobs\n" in out
    for k in (1, 2):  # each job's log file starts with its number of the sweep
        first = (sweep / str(k - 1) / "train.log").read_text().splitlines()[0]
        assert first.endswith(f"job {k} of 2: seed={k - 1}"), first
    assert re.search(
        r"multirun: job 1 of 2 took [\w ]+: the 2 jobs take about [\w ]+ in all \(about [\w ]+ left\)", out
    )
