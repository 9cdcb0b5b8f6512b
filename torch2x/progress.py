"""Progress on the terminal: engine build phases (TensorRT's IProgressMonitor) and conversion over modules.

Shown only on an interactive stderr unless asked for; ``quiet=True`` (``--quiet``) silences it.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Optional, TextIO

from .flavour import trt


def wanted(show: Optional[bool], stream: TextIO = sys.stderr) -> bool:
    """``show`` when given, else whether ``stream`` is a terminal (CI logs stay clean)."""
    return bool(show) if show is not None else bool(getattr(stream, "isatty", lambda: False)())


class Line:
    """One status line rewritten in place with the elapsed time."""

    def __init__(self, title: str, stream: TextIO = sys.stderr):
        self.title, self.stream = title, stream
        self.started = time.perf_counter()
        self._lock = threading.Lock()
        self._width = 0

    def show(self, text: str) -> None:
        with self._lock:
            line = f"{self.title}: {text} [{time.perf_counter() - self.started:.1f} s]"
            self.stream.write("\r" + line.ljust(self._width))
            self._width = len(line)
            self.stream.flush()

    def done(self, text: str = "done") -> None:
        self.show(text)
        with self._lock:
            self.stream.write("\n")
            self.stream.flush()


class BuildProgress(trt.IProgressMonitor):
    """TensorRT's build phases as ``building engine: <phase> 3/10 [2.4 s]``.

    TensorRT calls it from several internal threads, so updates go through one lock.
    """

    def __init__(self, stream: TextIO = sys.stderr):
        trt.IProgressMonitor.__init__(self)
        self.line = Line("building engine", stream)
        self.steps: dict = {}
        self._lock = threading.Lock()

    def phase_start(self, phase_name, parent_phase, num_steps):
        with self._lock:
            self.steps[phase_name] = (0, max(1, int(num_steps)))
        self.line.show(f"{phase_name} 0/{num_steps}")

    def step_complete(self, phase_name, step):
        with self._lock:
            _, total = self.steps.get(phase_name, (0, 1))
            self.steps[phase_name] = (step + 1, total)
        self.line.show(f"{phase_name} {step + 1}/{total}")
        return True  # False would cancel the build

    def phase_finish(self, phase_name):
        with self._lock:
            self.steps.pop(phase_name, None)
            last = not self.steps
        if last:
            self.line.show(f"{phase_name} finished")


class ModuleProgress:
    """``converting: 7/12 modules`` over the top-level submodules of the traced model."""

    def __init__(self, total: int, stream: TextIO = sys.stderr):
        self.total, self.count = total, 0
        self.line = Line("converting", stream)

    def module_done(self, path: str) -> None:
        self.count += 1
        self.line.show(f"{self.count}/{self.total} modules ({path})")

    def close(self) -> None:
        self.line.done(f"{self.count}/{self.total} modules")
