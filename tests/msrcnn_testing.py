"""Shared test helpers: repository paths, the tiny demo configuration, running the scripts as a user does.

Importable from every test module (``tests`` is on pytest's ``pythonpath``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def script_env(**extra: str) -> dict[str, str]:
    """The environment of a script run as a user runs it: this one without ``PYTHONPATH``, so that
    ``msrcnn`` comes from the installed package (``make install``: editable, from this checkout)."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    return {**env, **extra}


# The demo experiment shrunk to seconds: 64 px images, a handful of steps (experiment=smoke is the
# user's version of it, a complete run; these tests vary it and check its pieces).
TINY = [
    "experiment=demo",
    "logger=none",
    "data.synthetic.num_train=8",
    "data.synthetic.num_val=4",
    "data.synthetic.image_size=64",
    "data.num_workers=0",
    "data.batch_size=2",
    "data.eval_batch_size=2",
    "model.min_size=[64]",
    "model.max_size=64",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
    "trainer.enable_model_summary=false",
    "trainer.max_time=null",
]


def run_script(
    script: str, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python src/<script> args`` (or ``experiments/<script>`` when a folder is given) as a user runs it."""
    path = ROOT / script if "/" in script else ROOT / "src" / script
    full_env = {**script_env(HYDRA_FULL_ERROR="0"), **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(path), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{script} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


def user_error_line(fn, *args, **kwargs) -> str:
    """Runs ``fn`` as the scripts run their work (``report_user_errors``) and returns the one line it
    reported, after checking exit status 2, a single ``error: ...`` line on stderr and no traceback."""
    import contextlib
    import io

    import pytest

    from msrcnn.app.errors import report_user_errors

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
        report_user_errors(fn)(*args, **kwargs)
    text = stderr.getvalue()
    assert exit_.value.code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in text, text
    return lines[0]


def compose_tiny(output_dir: Path, shapes_dir: Path, *extra: str):
    """The train config of :data:`TINY` without its step count (``extra`` sets it), on the generated
    shapes in ``shapes_dir``, writing into ``output_dir``."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *[o for o in TINY if not o.startswith("trainer.max_steps")],
                *extra,
                f"paths.data_dir={shapes_dir}",
                f"paths.output_dir={output_dir}",
            ],
        )


def untrained_checkpoint(out_dir: Path, prepare=None) -> Path:
    """An untrained TINY model saved as src/train.py saves its checkpoints (``out_dir/last.ckpt``), for
    the tests of what reads checkpoints; ``prepare(model)`` may set weights before it is saved."""
    import torch
    from hydra import compose, initialize_config_dir

    from msrcnn.app.builders import build_detector
    from msrcnn.app.schemas import validate
    from msrcnn.config import to_plain
    from msrcnn.data import SHAPES_CATEGORIES

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.output_dir={out_dir}"])
    plain = to_plain(validate(cfg))
    torch.manual_seed(0)
    model = build_detector(plain, len(SHAPES_CATEGORIES) + 1)
    if prepare is not None:
        prepare(model)
    config = {
        **plain,
        "num_classes": len(SHAPES_CATEGORIES) + 1,
        "class_names": [name for _, name in SHAPES_CATEGORIES],
        "category_ids": [i for i, _ in SHAPES_CATEGORIES],
    }
    path = Path(out_dir) / "last.ckpt"
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "hyper_parameters": {"config": config}}, path)
    return path
