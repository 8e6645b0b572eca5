"""The data layer's error type and logger, shared by every module in ``msrcnn.data``."""

from __future__ import annotations

import logging

LOGGER = logging.getLogger("msrcnn.data")


class DataError(ValueError):
    """Broken or inconsistent input data.

    Raised at set-up (or when a file is first read) instead of skipping anything silently; the message
    always names the offending file and, where one is involved, the image or annotation id.
    """
