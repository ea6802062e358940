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
                cancel: CancelCheck | None = None, stage: str = "srds", antithetic: bool = True) -> SRDSResult:
    """Run one antithetic DDIM pair per start noise and average: ``start_noise`` is (pairs, N, C, H, W).

    All 2 x pairs trajectories of all N slices run batched, one network call per DDIM step; ``model`` receives
    a batch of 2 * pairs * N ordered +eps of every pair, then -eps, and must condition item i on slice
    ``i % N``. Returns (N, C, H, W) mean and uncertainty. Without ``antithetic`` (an ablation: what the -eps
    half of each pair buys), only the +eps trajectories run, and the uncertainty is their mean absolute
    deviation from their mean (zero for one trajectory).
    """
    pairs, *shape = start_noise.shape
    signs = 2 if antithetic else 1
    starts = torch.cat([start_noise, -start_noise]) if antithetic else start_noise
    samples = ddim_sample(model, starts.reshape(signs * pairs * shape[0], *shape[1:]), schedule, steps,
                          prediction=prediction, progress=progress, cancel=cancel,
                          stage=stage).reshape(signs, pairs, *shape)
    if not antithetic:
        mean = samples[0].mean(dim=0)
        return SRDSResult(mean=mean, uncertainty=(samples[0] - mean).abs().mean(dim=0))
    plus, minus = samples[0], samples[1]
    return SRDSResult(mean=((plus + minus) / 2).mean(dim=0), uncertainty=((plus - minus).abs() / 2).mean(dim=0))
