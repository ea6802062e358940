"""Ancestral DDPM sampling (Ho et al. 2020) from an intermediate timestep down to 0, one network call per step."""

from __future__ import annotations

import torch

from ..runtime.progress import CancelCheck, ProgressCallback, raise_if_cancelled, report
from .ddim import DenoisingModel, Prediction, StepCallback, split_prediction
from .schedules import NoiseSchedule


@torch.no_grad()
def ddpm_sample(model: DenoisingModel, x_start: torch.Tensor, schedule: NoiseSchedule, start: int,
                prediction: Prediction = "x0", generator: torch.Generator | None = None,
                on_step: StepCallback | None = None, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None, stage: str = "ddpm") -> torch.Tensor:
    """Run the full reverse chain from ``x_start`` (x at timestep ``start``) to x_0: every step draws from the
    Gaussian posterior q(x_{t-1} | x_t, x_0) around the network's clean estimate. Fresh noise comes from
    ``generator`` (a CPU generator, so results do not depend on the device), the last step returns the
    clean estimate itself. ``on_step(t, x)`` sees the state after each step."""
    if not 0 <= start < schedule.steps:
        raise ValueError(f"DDPM start step {start} is outside the schedule's 0..{schedule.steps - 1}")
    betas = schedule.betas().to(x_start.device)
    abar = torch.cumprod(1 - betas, dim=0)
    x = x_start
    for index, t in enumerate(range(start, -1, -1)):
        raise_if_cancelled(cancel, stage)
        timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        output = model(x, timesteps).to(x.dtype)
        a_t = abar[t].to(x.dtype)
        x0, _ = split_prediction(output, x, a_t, prediction)
        if t == 0:
            x = x0
        else:
            a_prev, beta = abar[t - 1].to(x.dtype), betas[t].to(x.dtype)
            mean = (a_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - a_prev) * x) / (1 - a_t)
            variance = beta * (1 - a_prev) / (1 - a_t)
            noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
            x = mean + variance.sqrt() * noise
        if on_step is not None:
            on_step(t, x)
        report(progress, stage, index + 1, start + 1)
    return x
