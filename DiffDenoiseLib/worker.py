"""The ``diffdenoise`` CLI as a background worker process, and the line protocol it reports through.

With ``--machine-progress`` the CLI writes one JSON object per line on stdout for the caller to read:
``{"diffdenoise": "progress", "stage", "step", "total", "loss"}`` while it works, then exactly one
``{"diffdenoise": "result", "outputs": {name: path}}`` or ``{"diffdenoise": "error", "message", "exit_code"}``.
Any other line is plain log text. :class:`WorkerProcess` starts the CLI, collects its lines on a thread so
a GUI timer can poll them without blocking, and kills the process on cancel. Cheap to import (no torch):
the Slicer panel uses it before torch is installed.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

from .runtime.progress import ProgressEvent

PROTOCOL_KEY = "diffdenoise"


@dataclass(frozen=True)
class WorkerMessage:
    """One line from the worker: a progress event, the final result or error, or plain log text."""

    kind: Literal["progress", "result", "error", "log"]
    event: ProgressEvent | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    text: str = ""
    exit_code: int = 0


def _emit(stream: TextIO, message: dict) -> None:
    stream.write(json.dumps({PROTOCOL_KEY: message.pop("kind"), **message}) + "\n")
    stream.flush()


class JsonLinesProgress:
    """Progress callback writing protocol lines (for a parent process) instead of drawing bars."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def __call__(self, event: ProgressEvent) -> None:
        _emit(self.stream, {"kind": "progress", "stage": event.stage, "step": event.step, "total": event.total,
                            "loss": event.loss})

    def result(self, outputs: dict[str, str | os.PathLike]) -> None:
        """The final line of a successful run: every file it wrote, by name (``denoised``, ``residual``, ...)."""
        _emit(self.stream, {"kind": "result", "outputs": {name: str(path) for name, path in outputs.items()}})

    def error(self, message: str, exit_code: int) -> None:
        """The final line of a failed run."""
        _emit(self.stream, {"kind": "error", "message": message, "exit_code": exit_code})

    def close(self) -> None:
        """Nothing to close (the same interface as the progress bars)."""


def parse_line(line: str) -> WorkerMessage:
    """Parse one line of worker output; anything that is not a protocol object is log text."""
    text = line.rstrip("\n")
    try:
        data = json.loads(text)
    except ValueError:
        return WorkerMessage("log", text=text)
    kind = data.get(PROTOCOL_KEY) if isinstance(data, dict) else None
    if kind == "progress":
        return WorkerMessage("progress", event=ProgressEvent(str(data["stage"]), int(data["step"]),
                                                             int(data["total"]), data.get("loss")))
    if kind == "result":
        return WorkerMessage("result", outputs=dict(data["outputs"]))
    if kind == "error":
        return WorkerMessage("error", text=str(data["message"]), exit_code=int(data["exit_code"]))
    return WorkerMessage("log", text=text)


def default_python() -> str:
    """Slicer's ``PythonSlicer`` inside Slicer (the application binary cannot run scripts), else this Python."""
    return shutil.which("PythonSlicer") or sys.executable


class WorkerProcess:
    """``python -m DiffDenoiseLib.cli --machine-progress <arguments>`` in a child process.

    Call :meth:`messages` from a timer to get what it reported since the last call; :meth:`wait` blocks
    until it ends. :meth:`cancel` kills it (and anything it started).
    """

    def __init__(self, arguments: list[str], python: str | None = None) -> None:
        library_parent = str(Path(__file__).resolve().parents[1])  # bundled next to the Slicer module
        # UTF-8 both ways: on Windows the locale's code page cannot print every path or message
        environment = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONIOENCODING="utf-8",
                           PYTHONPATH=os.pathsep.join(filter(None, [library_parent, os.environ.get("PYTHONPATH")])))
        self.command = [python or default_python(), "-m", "DiffDenoiseLib.cli", "--machine-progress", *arguments]
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            encoding="utf-8", errors="replace", bufsize=1, env=environment,
            # POSIX: a process group of its own, so cancel reaches the launcher and the interpreter it starts;
            # Windows: no console window popping up for the run (and closing it would kill the run)
            start_new_session=os.name == "posix", creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.result: WorkerMessage | None = None  # the final result or error message, once seen
        self.cancelled = False

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self.process.stdout.close()

    def messages(self) -> list[WorkerMessage]:
        """Everything reported since the last call (never blocks)."""
        found = []
        while True:
            try:
                message = parse_line(self._lines.get_nowait())
            except queue.Empty:
                return found
            if message.kind in ("result", "error"):
                self.result = message
            found.append(message)

    @property
    def running(self) -> bool:
        """True until the process has exited and all of its output has been read."""
        return self.process.poll() is None or self._reader.is_alive() or not self._lines.empty()

    def wait(self, timeout: float | None = None) -> int:
        """Block until the process ends (its output is still there for :meth:`messages`); its exit code."""
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        return code

    def cancel(self, grace_seconds: float = 5.0) -> None:
        """Stop the worker and everything it started: terminate, then kill what is left after the grace."""
        self.cancelled = True
        if self._ended(0.0):
            return
        self._stop(force=False)
        if not self._ended(grace_seconds):
            self._stop(force=True)
            self._ended(grace_seconds)
        self._reader.join(grace_seconds)

    def _ended(self, timeout: float) -> bool:
        """Whether the worker and (POSIX) every other process of its group have exited, waiting up to
        ``timeout`` seconds: the launcher can end before the interpreter it started."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None and not self._group_alive():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _group_alive(self) -> bool:
        if os.name != "posix":
            return False  # taskkill /T has ended the tree, or reports what it could not end
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # a member that changed user: still there
            return True
        return True

    def _stop(self, force: bool) -> None:
        """End the worker's whole process tree: Slicer's ``PythonSlicer`` is a launcher whose child
        (``python-real``) does the work, and the run may have DataLoader or torch helper processes too."""
        with contextlib.suppress(ProcessLookupError):  # it may have ended in the meantime
            if os.name == "posix":
                os.killpg(self.process.pid, signal.SIGKILL if force else signal.SIGTERM)
            else:  # Windows: taskkill walks the tree from the launcher; a windowless process only ends by /F
                subprocess.run(["taskkill", "/F", "/T", "/PID", str(self.process.pid)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0),
                               check=False)
