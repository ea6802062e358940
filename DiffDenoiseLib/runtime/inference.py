"""Run trained networks over stacks of slices with bounded memory: tiles for large slices, and a fallback
to smaller batches, smaller tiles and then the CPU when a device runs out of memory."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from ..context import stack_context
from ..errors import DiffDenoiseError
from .devices import choose_precision
from .progress import CancelCheck, ProgressCallback, raise_if_cancelled, report

TILE_SIZE = 512  # slices larger than this on a side run in overlapping tiles of this size
TILE_MARGIN = 32  # context each tile drops at an inner seam: the output there is as far from a tile edge
MIN_TILE_SIZE = 128  # smallest tile the out-of-memory fallback tries before moving to the CPU
Chunk = TypeVar("Chunk")


class MemoryFallbackWarning(RuntimeWarning):
    """A device ran out of memory and the run continues with smaller batches or tiles, or on the CPU."""


def slices_per_call(device: torch.device, on_cpu: int = 2) -> int:
    """How many slices share one network call: 8 on a GPU; ``on_cpu`` on a CPU, where the work is cache-bound
    (2 for a forward pass, 1 for SRDS, whose pairs ride along)."""
    return 8 if device.type == "cuda" else on_cpu


def is_out_of_memory(error: BaseException) -> bool:
    """True for a device's out-of-memory error (CUDA, MPS) and for a failed CPU allocation."""
    return isinstance(error, torch.OutOfMemoryError | MemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def tile_spans(size: int, tile: int, margin: int = TILE_MARGIN) -> list[tuple[int, int, int, int]]:
    """Overlapping tiles covering ``size`` pixels: (start, stop) of each tile and the (keep_from, keep_to)
    part of the output it supplies. Kept parts tile the axis exactly; inner seams lie at least ``margin``
    pixels inside both neighbouring tiles."""
    if size <= tile:
        return [(0, size, 0, size)]
    starts = list(range(0, size - tile, tile - 2 * margin)) + [size - tile]
    seams = [(left + tile + right) // 2 for left, right in zip(starts, starts[1:], strict=False)]
    return [(start, start + tile, keep_from, keep_to)
            for start, keep_from, keep_to in zip(starts, [0, *seams], [*seams, size], strict=True)]


def tiled(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int,
          margin: int = TILE_MARGIN) -> torch.Tensor:
    """``forward`` (an image-to-image network on (N, C, H, W)) applied to overlapping ``tile``-sized tiles of
    ``x`` and stitched; equal to ``forward(x)`` for any network whose output sees at most ``margin`` pixels
    around each pixel. Slices no larger than ``tile`` go through whole."""
    rows, columns = tile_spans(x.shape[-2], tile, margin), tile_spans(x.shape[-1], tile, margin)
    if len(rows) == len(columns) == 1:
        return forward(x)
    output = None
    for top, bottom, keep_top, keep_bottom in rows:
        for left, right, keep_left, keep_right in columns:
            part = forward(x[..., top:bottom, left:right])
            if output is None:
                output = part.new_empty((*part.shape[:-2], *x.shape[-2:]))
            output[..., keep_top:keep_bottom, keep_left:keep_right] = \
                part[..., keep_top - top:keep_bottom - top, keep_left - left:keep_right - left]
    return output


@dataclass
class MemoryPlan:
    """Batch size, tile size and device of a run, shrunk step by step when the device runs out of memory."""

    device: torch.device
    batch_size: int = 2
    tile: int = TILE_SIZE
    min_tile: int = MIN_TILE_SIZE

    @classmethod
    def for_network(cls, network: nn.Module, device: torch.device, batch_size: int,
                    tile: int = TILE_SIZE) -> MemoryPlan:
        """A plan whose smallest tile still leaves ``network`` its minimum input size inside the margins."""
        return cls(device, batch_size, tile, max(MIN_TILE_SIZE, 2 * TILE_MARGIN + network.min_size))

    def shrink(self, error: BaseException) -> None:
        """Take the next fallback (batch of 1, half the tile, then the CPU) with a warning, or raise a clear
        error when none is left."""
        if self.batch_size > 1:
            change, self.batch_size = "one slice per batch", 1
        elif self.tile // 2 >= self.min_tile:
            self.tile //= 2
            change = f"tiles of {self.tile} px"
        elif self.device.type != "cpu":
            change, self.device = "the CPU (much slower)", torch.device("cpu")
        else:
            raise DiffDenoiseError(f"out of memory even with one slice in {self.tile}-px tiles on the CPU "
                                   f"({str(error).splitlines()[0][:120]}): free memory or use a machine with "
                                   "more") from None
        warnings.warn(f"out of memory; continuing with {change}", MemoryFallbackWarning, stacklevel=2)


def run_in_chunks(total: int, plan: MemoryPlan, run: Callable[[int, int], Chunk], stage: str,
                  progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> list[Chunk]:
    """``run(start, count)`` over items 0..total in chunks of ``plan.batch_size``; a chunk that runs out of
    memory is retried after :meth:`MemoryPlan.shrink`, so ``run`` must read the plan on every call."""
    results, start = [], 0
    while start < total:
        raise_if_cancelled(cancel, stage)
        count = min(plan.batch_size, total - start)
        try:
            results.append(run(start, count))
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as error:
            if not is_out_of_memory(error):
                raise
            plan.shrink(error)
            continue
        start += count
        report(progress, stage, start, total)
    return results


@torch.no_grad()
def predict_slices(network: nn.Module, slices: np.ndarray, device: torch.device, batch_size: int = 2,
                   mixed_precision: bool = True, progress: ProgressCallback | None = None,
                   cancel: CancelCheck | None = None, stage: str = "denoise", tile: int = TILE_SIZE,
                   context: int = 0, leading: np.ndarray | None = None) -> np.ndarray:
    """Apply ``network`` to (N, C, H, W) slices and return float32 (N, C_out, H, W) outputs; with ``context``
    > 0, to the context stacks of (N, 1, H, W) slices (``context`` neighbours per side, :mod:`.context`),
    built one batch at a time; ``leading`` (N, C', H, W) channels go in front of them (the BSN output for
    the distilled NAFNet).

    Slices larger than ``tile`` run in overlapping tiles, so memory stays bounded for any slice size. Out of
    memory, the run goes on with one slice per batch, then smaller tiles, then on the CPU (with a
    :class:`MemoryFallbackWarning`). Batches of 1-2 are fastest on CPUs (cache-bound); on a GPU use larger.
    """
    plan = MemoryPlan.for_network(network, device, batch_size, tile)
    def inputs(start: int, count: int) -> np.ndarray:
        stacks = stack_context(slices, context, range(start, start + count))
        return stacks if leading is None else np.concatenate([leading[start:start + count], stacks], axis=1)

    outputs = run_in_chunks(len(slices), plan, lambda start, count: _predict_batch(
        network, inputs(start, count), plan, mixed_precision), stage, progress, cancel)
    return np.concatenate(outputs, axis=0)


def _predict_batch(network: nn.Module, batch: np.ndarray, plan: MemoryPlan, mixed_precision: bool) -> np.ndarray:
    precision = choose_precision(plan.device, network, mixed_precision)
    network.eval().to(plan.device)
    memory_format = torch.channels_last if precision.channels_last else torch.contiguous_format
    network.to(memory_format=memory_format)
    inputs = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(plan.device)

    def forward(part: torch.Tensor) -> torch.Tensor:
        with precision.autocast(plan.device):
            return network(part.contiguous(memory_format=memory_format)).float()

    return tiled(forward, inputs, plan.tile).cpu().numpy()
