"""Run a trained image-to-image network over a stack of slices, batch by batch, with progress and cancel."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .devices import choose_precision
from .progress import CancelCheck, ProgressCallback, raise_if_cancelled, report


@torch.no_grad()
def predict_slices(network: nn.Module, slices: np.ndarray, device: torch.device, batch_size: int = 2,
                   mixed_precision: bool = True, progress: ProgressCallback | None = None,
                   cancel: CancelCheck | None = None, stage: str = "denoise") -> np.ndarray:
    """Apply ``network`` to (N, C, H, W) slices and return float32 (N, C_out, H, W) outputs.

    Batches of 1-2 are fastest on CPUs (cache-bound); on a GPU use larger batches.
    """
    precision = choose_precision(device, mixed_precision)
    network.eval().to(device)
    if precision.channels_last:
        network.to(memory_format=torch.channels_last)
    outputs = []
    total = len(slices)
    for start in range(0, total, batch_size):
        raise_if_cancelled(cancel, stage)
        batch = torch.from_numpy(np.ascontiguousarray(slices[start:start + batch_size], dtype=np.float32))
        batch = batch.to(device)
        if precision.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            output = network(batch)
        outputs.append(output.float().cpu().numpy())
        report(progress, stage, min(start + batch_size, total), total)
    return np.concatenate(outputs, axis=0)
