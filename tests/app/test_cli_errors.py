"""Every CLI error of src/train.py, src/eval.py and src/predict.py is one line and exit status 2.

A missing mandatory value names the key and an example; a misspelt key names the closest valid keys
(difflib); an unknown group option lists the group's options; an override Hydra cannot parse says to
quote it. One subprocess per script checks the whole path as a user meets it; the other cases run the
same script in this process (runpy), which is seconds instead of a fresh interpreter each.
"""

from __future__ import annotations

import logging
import runpy
import sys

import pytest

from msrcnn_testing import ROOT, run_script

CASES = [
    # script, arguments, the expected one line
    ("eval.py", [], "error: missing mandatory value: ckpt_path (set it on the command line, e.g. ckpt_path="),
    (
        "predict.py",
        ["ckpt_path=x.ckpt"],
        "error: missing mandatory value: input (set it on the command line, e.g. input=",
    ),
    ("train.py", ["head.inptu=concat"], "error: unknown key 'head.inptu'; closest valid keys: head.input"),
    ("train.py", ["+head.inptu=concat"], "error: unknown key 'head.inptu'; closest valid keys: head.input"),
    (
        "train.py",
        ["trainer.max_stps=3"],
        "error: unknown key 'trainer.max_stps'; closest valid keys: trainer.max_steps",
    ),
    (
        "train.py",
        ["hydra.run.dri=x"],
        "error: unknown key 'hydra.run.dri'; closest valid keys: hydra.run.dir",
    ),
    ("eval.py", ["ckpt_path=x.ckpt", "spltt=val"], "error: unknown key 'spltt'; closest valid keys: split"),
    (
        "predict.py",
        ["ckpt_path=x.ckpt", "input=y", "devize=cpu"],
        "error: unknown key 'devize'; closest valid keys: device",
    ),
    (
        "eval.py",
        ["ckpt_path=x.ckpt", "+zzzz=1"],
        "error: unknown key 'zzzz'; valid keys at the top level: ckpt_path, data, split,",
    ),
    ("train.py", ["head=nne"], "error: head=nne: no such option; options of head: maskiou, none"),
    (
        "eval.py",
        ["ckpt_path=x.ckpt", "logger=nne"],
        "error: logger=nne: no such option; options of logger: csv, none, tensorboard, wandb",
    ),
    (
        "train.py",
        ["experiment=dmo"],
        "error: experiment=dmo: no such option; options of experiment: coco_torchvision,",
    ),
    ("predict.py", ["input=imgs/0[1-3].png"], "error: cannot parse the override 'input=imgs/0[1-3].png'"),
    (
        "train.py",
        ["trainer.max_steps=many"],
        "error: invalid configuration: trainer.max_steps: Value 'many' of type 'str' could not be converted to Integer",
    ),
    (
        "train.py",
        ["head=none", "head.input=concat_all"],
        "error: head.input=concat_all has no effect with head=none (a plain Mask R-CNN has no MaskIoU head)",
    ),
]


@pytest.fixture
def restored_logging():
    """The logging set-up as it was: a script run in-process lets Hydra configure logging, with handlers
    on this test's captured streams, which are closed after it."""
    loggers = [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]
    saved = {lg: (lg.handlers[:], lg.level, lg.propagate, lg.disabled) for lg in loggers}
    yield
    for lg in [
        logging.getLogger(),
        *(v for v in logging.Logger.manager.loggerDict.values() if isinstance(v, logging.Logger)),
    ]:
        handlers, level, propagate, disabled = saved.get(lg, ([], logging.NOTSET, True, False))
        lg.handlers[:] = handlers
        lg.setLevel(level)
        lg.propagate, lg.disabled = propagate, disabled


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize(
    "script,args",
    [
        ("eval.py", []),
        ("predict.py", ["ckpt_path=x.ckpt", "input=y", "devize=cpu"]),
        ("train.py", ["head=nne"]),
    ],
)
def test_each_script_reports_one_line_and_exit_2(script, args, tmp_path):
    expected = next(line for s, a, line in CASES if (s, a) == (script, args))
    out = [f"hydra.run.dir={tmp_path}"] if script != "predict.py" else [f"output_dir={tmp_path}"]
    proc = run_script(script, *args, *out, check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _one_line(proc.stderr).startswith(expected)


@pytest.mark.parametrize("script,args,expected", CASES, ids=[f"{s}-{' '.join(a)}" for s, a, _ in CASES])
def test_cli_error_is_one_line(script, args, expected, tmp_path, monkeypatch, capsys, restored_logging):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")  # run_cli sets both (restored after the test)
    monkeypatch.setenv("MSRCNN_FULL_ERROR", "0")
    out = f"output_dir={tmp_path}" if script == "predict.py" else f"hydra.run.dir={tmp_path}"
    argv = [str(ROOT / "src" / script), *args]
    if not any(a.startswith("hydra.") for a in args):
        argv.append(out)
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exit_:
        runpy.run_path(argv[0], run_name="__main__")
    captured = capsys.readouterr()
    assert exit_.value.code == 2, captured.err[-2000:]
    assert "Traceback" not in captured.out + captured.err
    assert _one_line(captured.err).startswith(expected)


def test_full_error_brings_hydras_exception_back(monkeypatch, restored_logging):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    monkeypatch.setenv("MSRCNN_FULL_ERROR", "1")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "src" / "train.py"), "head=nne"])
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException):
        runpy.run_path(str(ROOT / "src" / "train.py"), run_name="__main__")
