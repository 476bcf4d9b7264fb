"""The server's logging: JSON lines on stderr, configured once per process, and the access log.

Every process of the server (supervisor, gRPC workers, granian's master and REST workers) calls
``configure_logging`` at its entry point; modules log through ``logging.getLogger(__name__)``.
Access lines go to the ``serving.access`` logger (written by
``serving.observability.observer``) and are already JSON, so they pass through unwrapped.
"""

from __future__ import annotations

import json
import logging
import os
import sys

ACCESS_LOGGER = "serving.access"
access_logger = logging.getLogger(ACCESS_LOGGER)


class JsonFormatter(logging.Formatter):
    """One JSON object per line (structured logs); access lines are already JSON."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.name == ACCESS_LOGGER:
            return message
        entry = {
            "level": record.levelname,
            "logger": record.name,
            "pid": os.getpid(),
            "message": message,
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(level: str) -> None:
    """Route every logger of this process to stderr as JSON lines at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
