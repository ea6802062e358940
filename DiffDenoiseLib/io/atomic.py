"""Atomic writes: outputs are made under a temporary name beside the target and moved into place only when
complete, so a failed or cancelled run never leaves a partial output and never replaces what it may not."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import InputError
from .dicom import is_replaceable_series


@contextlib.contextmanager
def atomic_target(path: Path, overwrite: bool = False, replaceable: frozenset[str] = frozenset(),
                  on_placed: Callable[[], object] | None = None) -> Iterator[Path]:
    """Yield a path inside a hidden temporary folder next to ``path``; move the results into place on success.

    Nothing that exists is replaced unless ``overwrite`` is set (or its name is in ``replaceable``), and even
    then a folder only when it holds nothing but a DICOM series DiffDenoise wrote (:func:`is_replaceable_series`).
    Multi-file outputs (NHDR/MHD header + data, PNG + JSON sidecar) move data first and the header last.
    ``on_placed()`` runs as soon as everything is in place, with Ctrl-C and SIGTERM still held, so a caller's
    record of what was written can never miss a file an interrupt left behind.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield staging / path.name
        produced = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        for item in produced:  # every check first: a refusal leaves nothing half-moved
            _check_replaceable(path.parent / item.name, item.is_dir(), overwrite or item.name in replaceable)
        with signals_held():  # Ctrl-C or SIGTERM between two moves would leave an image without its sidecar
            for item in produced:
                destination = path.parent / item.name
                if item.is_dir() and destination.is_dir():  # an old series: moved aside, deleted with the staging
                    os.replace(destination, staging / ".replaced")
                move_into_place(item, destination, overwrite or item.is_dir() or item.name in replaceable)
            if on_placed is not None:
                on_placed()
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_into_place(source: Path, destination: Path, overwrite: bool) -> None:
    """Rename a finished file to its final name. Without ``overwrite`` the move cannot replace a file that
    another run put there meanwhile: a hard link is created (atomic, fails if the name exists), then the
    temporary name is removed; where the disk has no hard links, a check before the rename."""
    if overwrite:
        os.replace(source, destination)
        return
    try:
        os.link(source, destination)
    except FileExistsError:
        raise InputError(f"{destination} appeared while this run worked (another run writing the same path?): "
                         "it was left as it is; choose a new output name") from None
    except OSError:  # no hard links on this file system (FAT, some network shares)
        if os.path.lexists(destination):
            raise InputError(f"{destination} appeared while this run worked: it was left as it is") from None
        os.replace(source, destination)
        return
    source.unlink()


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM for a few renames: one that arrives meanwhile is delivered when they are done.

    The handlers are swapped, not the signal mask: Python runs handlers on the main thread, whichever thread the
    process took the signal on, while a mask set on the main thread leaves the signal to any other thread (torch's
    workers, tqdm's monitor), whose handler would then interrupt the main thread in the middle of the moves. A
    no-op off the main thread (only it may set handlers); a handler not set from Python is left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    held = [signum for signum, handler in previous.items() if handler is not None]
    for signum in held:
        signal.signal(signum, lambda signum, frame: arrived.append(signum))
    try:
        yield
    finally:
        for signum in held:
            signal.signal(signum, previous[signum])
        for signum in dict.fromkeys(arrived):  # each once, in the order they came
            signal.raise_signal(signum)


def _check_replaceable(destination: Path, is_series: bool, overwrite: bool) -> None:
    if not os.path.lexists(destination) or (is_series and destination.is_dir() and not any(destination.iterdir())):
        return  # nothing there, or an empty folder: nothing to lose
    if not overwrite:
        raise InputError(f"{destination} already exists (it appeared while this run worked): nothing was "
                         "replaced; choose a new output name, or pass --overwrite")
    if destination.is_dir() != is_series or (is_series and not is_replaceable_series(destination)):
        raise InputError(f"{destination} exists and is not a {'DICOM series folder' if is_series else 'file'}: "
                         "it was left as it is; choose a new output name")
