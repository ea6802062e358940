"""Progress reporting and cancellation shared by training and inference."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import Cancelled


@dataclass(frozen=True)
class ProgressEvent:
    """One progress report: ``step`` of ``total`` in ``stage`` (e.g. "train bsn", "denoise")."""

    stage: str
    step: int
    total: int
    loss: float | None = None


ProgressCallback = Callable[[ProgressEvent], None]
CancelCheck = Callable[[], bool]


def report(progress: ProgressCallback | None, stage: str, step: int, total: int, loss: float | None = None) -> None:
    if progress is not None:
        progress(ProgressEvent(stage, step, total, loss))


def raise_if_cancelled(cancel: CancelCheck | None, stage: str) -> None:
    if cancel is not None and cancel():
        raise Cancelled(f"cancelled during {stage}")
