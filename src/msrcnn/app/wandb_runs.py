"""W&B runs of the training and evaluation jobs: one run per job, sweeps included.

* :func:`job_identity`: a job's run name (its swept overrides in a ``-m`` sweep, e.g.
  ``head.input=multiply``), group (the sweep: its Hydra sweep dir, e.g.
  ``multirun/table4_input/2025-06-01_10-00-00``; when the sweep varies ``seed``, one group per
  configuration: the sweep dir and the other swept overrides, e.g.
  ``multirun/table4_input/2025-06-01_10-00-00 head.input=multiply``, so that W&B averages the seeds,
  whose ``seed`` is in each run's config; a single run: the experiment name) and the
  job's place (overrides, job number, run and sweep dirs), recorded in the run's config under ``job``.
* :func:`make_wandb_logger`: Lightning's ``WandbLogger`` writing inside the run directory, whose
  config is the job's resolved config (the module's hyperparameters, the same config nested under
  ``config``, are merged into it rather than logged a second time).
* :func:`wandb_job`: a decorator for ``train(cfg)`` / ``evaluate(cfg)``: the job's W&B run is
  finished when the job ends, with its exit status (1 when it raised), so the next job of a sweep
  starts a run of its own (Hydra's basic launcher runs the jobs in one process, and Lightning's
  ``WandbLogger`` reuses any run still open). With ``logger.log_model=true`` a successful training
  job first logs its checkpoints as a W&B model artifact.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("msrcnn.app")

MAX_GROUP_CHARS = 128  # W&B's limit on a group name
CHECKPOINT_FILES = ("last.ckpt", "best.ckpt")


# ------------------------------------------------------------------ naming and grouping
@dataclass
class JobIdentity:
    """What a job's W&B run is called and where it belongs."""

    name: str
    group: str | None
    job: dict[str, Any] = field(default_factory=dict)


def _hydra_config():
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def _override_key(override: str) -> str:
    """``+experiment@_global_=x`` -> ``experiment@_global_``; ``head.input=concat`` -> ``head.input``."""
    return override.partition("=")[0].lstrip("+~")


def _swept(overrides: list[str]) -> set[str]:
    """The keys (``@package`` included) of the sweep overrides among ``overrides`` (``a=1,2``...)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception:  # noqa: BLE001 - a name never fails a run: no swept keys, then
        return set()
    return {o.key_or_group + (f"@{o.package}" if o.package else "") for o in parsed if o.is_sweep_override()}


def sweep_keys(hc) -> set[str]:
    """The keys a job's sweep varies: its ``hydra.sweeper.params`` and the swept command-line overrides
    (``a=1,2``...), read from the sweep's ``multirun.yaml`` (written by Hydra's sweeper)."""
    from omegaconf import OmegaConf

    keys = {_override_key(str(k)) for k in (hc.sweeper.get("params") or {})}
    multirun_yaml = Path(str(hc.sweep.dir)) / "multirun.yaml"
    try:
        sweep_overrides = list(OmegaConf.load(multirun_yaml).hydra.overrides.task)
    except Exception:  # noqa: BLE001 - a launcher that writes no multirun.yaml: the command line
        sweep_overrides = [a for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    return keys | _swept(sweep_overrides)


def job_identity(experiment_name: str, group: str | None = None) -> JobIdentity:
    """The run name and group of the current job (see the module docstring)."""
    from hydra.types import RunMode

    hc = _hydra_config()
    if hc is None:
        return JobIdentity(name=experiment_name, group=group or experiment_name)
    overrides = [str(o) for o in hc.overrides.task]
    job = {"overrides": overrides, "run_dir": str(hc.runtime.output_dir)}
    if hc.mode != RunMode.MULTIRUN:
        return JobIdentity(name=experiment_name, group=group or experiment_name, job=job)
    sweep_dir = str(hc.sweep.dir)
    job |= {"num": int(hc.job.num), "sweep_dir": sweep_dir}
    keys = sweep_keys(hc)
    swept = [o for o in overrides if _override_key(o) in keys]
    name = " ".join(swept) or f"{experiment_name} #{job['num']}"
    if group is None and "seed" in keys:  # the seeds of one configuration: one group
        rest = " ".join(o for o in swept if _override_key(o) != "seed")
        if len(rest) > MAX_GROUP_CHARS - 10:  # too long to keep whole: its start, a digest of all
            digest = hashlib.sha1(f"{sweep_dir} {rest}".encode()).hexdigest()[:8]
            group = f"{rest[: MAX_GROUP_CHARS - 10]} #{digest}"
        else:  # the sweep dir shortened from its start, the overrides whole
            group = f"{sweep_dir} {rest}".rstrip()[-MAX_GROUP_CHARS:]
    return JobIdentity(name=name, group=group or sweep_dir[-MAX_GROUP_CHARS:], job=job)


# ------------------------------------------------------------------ the logger
def wandb_environment(run_dir: Path) -> None:
    """Points W&B's directories (runs, cache, config, data, artifacts) into the run directory."""
    wandb_dir = run_dir / "wandb"
    wandb_dir.mkdir(parents=True, exist_ok=True)
    for var, sub in (
        ("WANDB_DIR", ""),
        ("WANDB_CACHE_DIR", "cache"),
        ("WANDB_CONFIG_DIR", "config"),
        ("WANDB_DATA_DIR", "data"),
        ("WANDB_ARTIFACT_DIR", "artifacts"),
    ):
        os.environ[var] = str(run_dir if not sub else wandb_dir / sub)


def make_wandb_logger(
    run_dir: Path,
    *,
    project: str,
    name: str,
    group: str | None,
    tags: list[str],
    mode: str,
    config: dict[str, Any] | None,
    id: str | None = None,
    job_type: str = "train",
):
    """A ``WandbLogger`` writing into ``<run_dir>/wandb``; ``id`` resumes (adds to) that run."""
    from lightning.pytorch.loggers import WandbLogger

    class RunConfigWandbLogger(WandbLogger):
        """Merges the module's hyperparameters' ``config`` into the run's config instead of nesting it."""

        def log_hyperparams(self, params) -> None:
            params = vars(params) if not isinstance(params, dict) else params
            nested = params.get("config")
            super().log_hyperparams(nested if isinstance(nested, dict) and nested else params)

    finish_wandb_run(exit_code=0, reason="a new job starts")  # a run left open by an earlier job
    wandb_environment(run_dir)
    extra: dict[str, Any] = {"id": id, "resume": "allow"} if id else {}
    logger = RunConfigWandbLogger(
        project=project,
        group=group,
        tags=list(tags),
        name=name,
        save_dir=str(run_dir),
        mode=mode,
        config=config,
        job_type=job_type,
        **extra,
    )
    # Lightning always passes wandb's deprecated `anonymous` setting (None), and wandb then prints "The
    # anonymous setting has no effect" on every run: a line that is not the project's. Not passed at all.
    init_kwargs = getattr(logger, "_wandb_init", None)
    if isinstance(init_kwargs, dict) and init_kwargs.get("anonymous") is None:
        init_kwargs.pop("anonymous", None)
    return logger


# ------------------------------------------------------------------ the end of a job
def _active_run():
    wandb = sys.modules.get("wandb")  # never import wandb for a run that did not use it
    return getattr(wandb, "run", None) if wandb is not None else None


def finish_wandb_run(exit_code: int = 0, reason: str = "the job ended") -> bool:
    """Finishes the process's active W&B run, if any; True when there was one."""
    run = _active_run()
    if run is None:
        return False
    if exit_code == 0 and reason != "the job ended":
        log.warning("finishing the W&B run %s left open (%s)", run.id, reason)
    run.finish(exit_code=exit_code)
    # W&B keeps the settings it read at its first run (WANDB_CACHE_DIR, WANDB_DATA_DIR...): the
    # next job's run reads its own run directory's again
    sys.modules["wandb"].teardown()
    return True


def exit_code_of(err: BaseException) -> int:
    """The process exit status an exception stands for (W&B marks a run with a non-zero one failed)."""
    if isinstance(err, SystemExit):
        code = err.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(err, KeyboardInterrupt):
        return 130
    return 1


def log_model_artifact(run, checkpoint_dir: Path, metadata: dict[str, Any] | None = None):
    """Logs ``last.ckpt`` and ``best.ckpt`` (those present) as the model artifact ``model-<run id>``."""
    import wandb

    files = [checkpoint_dir / f for f in CHECKPOINT_FILES if (checkpoint_dir / f).is_file()]
    if not files:
        log.warning("logger.log_model: no checkpoint in %s to log", checkpoint_dir)
        return None
    artifact = wandb.Artifact(name=f"model-{run.id}", type="model", metadata=metadata or {})
    for path in files:
        artifact.add_file(str(path), name=path.name)
    run.log_artifact(artifact, aliases=["latest"])
    log.info("logged %s as the W&B artifact model-%s", ", ".join(p.name for p in files), run.id)
    return artifact


def _log_model(cfg) -> None:
    run = _active_run()
    if run is None or not cfg.logger.get("log_model"):
        return
    output_dir = Path(str(cfg.paths.output_dir))
    results_file = output_dir / "results.json"
    metadata: dict[str, Any] = {"run_dir": str(output_dir)}
    if results_file.is_file():
        from msrcnn.training.module import flatten_metrics

        metadata |= flatten_metrics(json.loads(results_file.read_text()))
    log_model_artifact(run, output_dir / "checkpoints", metadata)


def wandb_job(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorates ``fn(cfg)``: the W&B run it opened ends with it (see the module docstring)."""

    @functools.wraps(fn)
    def wrapper(cfg, *args: Any, **kwargs: Any) -> Any:
        try:
            result = fn(cfg, *args, **kwargs)
            _log_model(cfg)
        except BaseException as err:
            finish_wandb_run(exit_code_of(err))
            raise
        finish_wandb_run(0)
        return result

    return wrapper
