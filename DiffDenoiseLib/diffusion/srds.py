"""Stabilised reverse diffusion sampling (SRDS, DiffDenoise): antithetic DDIM pairs, averaged.

Each pair runs deterministic DDIM from x_T = +eps and from x_T = -eps. Errors of the learned score that are
odd in the start noise cancel in the pair's average; the half-difference of a pair measures how much the
result depends on the start noise, a free per-pixel uncertainty map.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..runtime.progress import CancelCheck, ProgressCallback
from .ddim import DenoisingModel, Prediction, ddim_sample
from .schedules import NoiseSchedule


@dataclass
class SRDSResult:
    """SRDS output for a batch of slices: the pair average and the mean absolute pair half-difference."""

    mean: torch.Tensor
    uncertainty: torch.Tensor


def srds_sample(model: DenoisingModel, start_noise: torch.Tensor, schedule: NoiseSchedule, steps: int,
                prediction: Prediction = "epsilon", progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None, stage: str = "srds") -> SRDSResult:
    """Run one antithetic DDIM pair per start noise and average: ``start_noise`` is (pairs, N, C, H, W).

    All 2 x pairs trajectories of all N slices run batched, one network call per DDIM step; ``model`` receives
    a batch of 2 * pairs * N ordered +eps of every pair, then -eps, and must condition item i on slice
    ``i % N``. Returns (N, C, H, W) mean and uncertainty.
    """
    pairs, *shape = start_noise.shape
    starts = torch.cat([start_noise, -start_noise]).reshape(2 * pairs * shape[0], *shape[1:])
    samples = ddim_sample(model, starts, schedule, steps, prediction=prediction, progress=progress,
                          cancel=cancel, stage=stage).reshape(2, pairs, *shape)
    plus, minus = samples[0], samples[1]
    return SRDSResult(mean=((plus + minus) / 2).mean(dim=0), uncertainty=((plus - minus).abs() / 2).mean(dim=0))
