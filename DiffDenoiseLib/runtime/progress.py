"""Progress reporting and cancellation shared by training and inference, and the progress bars of the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from tqdm import tqdm

from ..errors import Cancelled


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


class TqdmProgress:
    """Progress callback drawing one tqdm bar per stage on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=event.stage, unit="step", dynamic_ncols=True, leave=True)
        assert self.bar is not None
        self.bar.n = event.step
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
