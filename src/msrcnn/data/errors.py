"""The data layer's error type and logger, shared by every module in ``msrcnn.data``."""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("msrcnn.data")

_WORKER_PREFIX = "Caught DataError in DataLoader worker"
_ORIGINAL = "DataError: "


class DataError(ValueError):
    """Broken or inconsistent input data.

    Raised at set-up (or when a file is first read) instead of skipping anything silently; the message
    always names the offending file and, where one is involved, the image or annotation id.

    A DataError raised in a DataLoader worker reaches the main process re-created by torch from
    ``"Caught DataError in DataLoader worker process N.\\nOriginal Traceback ...\\n...DataError: <message>"``;
    such a message is cut back to ``<message>`` here, and the worker's traceback is kept in
    :attr:`worker_traceback` (``None`` for errors raised in the main process).
    """

    def __init__(self, message: object = "") -> None:
        text = str(message)
        self.worker_traceback: str | None = None
        if text.startswith(_WORKER_PREFIX) and _ORIGINAL in text:
            self.worker_traceback = text
            text = text.rstrip().rpartition(_ORIGINAL)[2]
        super().__init__(text)
