"""TensorRT's log through Python ``logging`` (logger ``torch2x.tensorrt``), with errors kept for messages."""
from __future__ import annotations

import logging
from contextlib import contextmanager
from collections.abc import Iterator

from .flavour import trt

_log = logging.getLogger("torch2x.tensorrt")
_LEVELS = {
    trt.ILogger.Severity.INTERNAL_ERROR: logging.CRITICAL,
    trt.ILogger.Severity.ERROR: logging.ERROR,
    trt.ILogger.Severity.WARNING: logging.WARNING,
    trt.ILogger.Severity.INFO: logging.INFO,
    trt.ILogger.Severity.VERBOSE: logging.DEBUG,
}


class Logger(trt.ILogger):
    """An ``ILogger`` that forwards to ``logging`` and remembers the errors of the current step."""

    def __init__(self):
        trt.ILogger.__init__(self)
        self.errors: list[str] = []
        self._captured: list[str] | None = None

    def log(self, severity, msg):  # called by TensorRT
        level = _LEVELS.get(severity, logging.INFO)
        if self._captured is not None:
            self._captured.append(msg)
            if level < logging.WARNING:  # the captured build log is the caller's to show
                return
        if level >= logging.ERROR:
            self.errors.append(msg)
        _log.log(level, "%s", msg)

    @contextmanager
    def capture(self) -> Iterator[list]:
        """Collect every message (VERBOSE included) into the yielded list while the block runs; messages
        below WARNING then go only there. Example::

            with LOGGER.capture() as lines:
                builder.build_serialized_network(network, config)
        """
        saved, self._captured = self._captured, []
        try:
            yield self._captured
        finally:
            self._captured = saved

    def take_errors(self) -> str:
        text = "; ".join(self.errors)
        self.errors.clear()
        return text


LOGGER = Logger()
