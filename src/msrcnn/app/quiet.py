"""Every line a run prints is the project's: the third-party lines it replaces or that are untrue here
are dropped at their source, precisely (a message prefix per logger, a message per warning).

- Lightning's advertising ("💡 Tip: ... litlogger / litmodels") and its start/stop/restore chatter, which
  the app says itself (its ``device:``, ``training: N steps (...)`` and ``resuming from ...`` lines).
- Lightning's own ``_pytree`` module tripping torch's ``LeafSpec`` deprecation (Lightning's code, not
  the user's; nothing to act on).

The "dataloader is not resumable" warning is not filtered: the project's loader declares its state to
Lightning (:class:`msrcnn.data.resumable.ResumableLoader`), so Lightning sees that the resume is exact.
"""

from __future__ import annotations

import logging
import warnings

# logger name -> message prefixes of its records that are dropped
DROPPED_RECORDS: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": (
        "💡 Tip:",
        "GPU available:",
        "TPU available:",
        "HPU available:",
        "`Trainer.fit` stopped:",
        "Restoring states from the checkpoint path",
        "Restored all states from the checkpoint",
    ),
    "lightning.pytorch.trainer.connectors.checkpoint_connector": ("`weights_only` was not set",),
    "lightning.pytorch.trainer.connectors.signal_connector": ("Received SIGTERM", "Bypassing SIGTERM"),
}
# (message regex, module regex) of warnings that are dropped
DROPPED_WARNINGS: tuple[tuple[str, str], ...] = (
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\..*"),
)


# warnings of a fresh start that are untrue for a run resumed in its own folder (ckpt_path=auto)
RESUME_WARNINGS: tuple[str, ...] = (
    r"Checkpoint directory .* exists and is not empty",  # its last.ckpt is what the run resumes from
    r"Experiment logs directory .* exists and is not empty",  # the earlier metrics.csv is kept aside
)


class _DropPrefixes(logging.Filter):
    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefixes)


def quiet_third_party() -> None:
    """Installs the filters above (idempotent)."""
    for name, prefixes in DROPPED_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefixes) for f in logger.filters):
            logger.addFilter(_DropPrefixes(prefixes))
    for message, module in DROPPED_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=module)


def quiet_resume_in_place() -> None:
    """Drops :data:`RESUME_WARNINGS` (called when a run resumes from its own folder's checkpoint)."""
    for message in RESUME_WARNINGS:
        warnings.filterwarnings("ignore", message=message, module=r"lightning\..*")
