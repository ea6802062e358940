"""Deterministic DDIM sampling (Song et al. 2021, eta = 0): the start point is the only randomness."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from ..runtime.progress import CancelCheck, ProgressCallback, raise_if_cancelled, report
from .schedules import NoiseSchedule

# model(x_t, timesteps (N,)) -> the network's prediction for x_t (noise or clean image, see ``prediction``)
DenoisingModel = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# what the network predicts: the added noise (DDPM), the clean x_0, or the velocity v = sqrt(abar) eps -
# sqrt(1 - abar) x_0 (Salimans & Ho 2022, https://arxiv.org/abs/2202.00512): v keeps both estimates well
# conditioned at every timestep, where x_0 from an epsilon prediction divides by sqrt(abar_T) (about 0.006)
Prediction = Literal["epsilon", "x0", "v"]
PREDICTIONS = ("epsilon", "x0", "v")
# on_step(t, x): the sampler's state x after the step that left timestep t (e.g. to record a trajectory)
StepCallback = Callable[[int, torch.Tensor], None]


def split_prediction(output: torch.Tensor, x: torch.Tensor, abar: torch.Tensor,
                     prediction: Prediction) -> tuple[torch.Tensor, torch.Tensor]:
    """The (clean estimate x_0, noise eps) that a network ``output`` of kind ``prediction`` implies at the state
    ``x`` of a timestep with signal fraction ``abar``, using ``x = sqrt(abar) x_0 + sqrt(1 - abar) eps``."""
    signal, noise = abar.sqrt(), (1 - abar).sqrt()
    if prediction == "epsilon":
        return (x - noise * output) / signal, output
    if prediction == "x0":
        return output, (x - signal * output) / noise
    if prediction == "v":
        return signal * x - noise * output, noise * x + signal * output
    raise ValueError(f"unknown prediction '{prediction}': use one of {', '.join(PREDICTIONS)}")


def prediction_target(x0: torch.Tensor, noise: torch.Tensor, abar: torch.Tensor,
                      prediction: Prediction) -> torch.Tensor:
    """What a network of kind ``prediction`` is trained to output for ``x_t`` made from ``x0`` and ``noise``
    (``abar`` broadcastable to them)."""
    if prediction == "epsilon":
        return noise
    if prediction == "x0":
        return x0
    if prediction == "v":
        return abar.sqrt() * noise - (1 - abar).sqrt() * x0
    raise ValueError(f"unknown prediction '{prediction}': use one of {', '.join(PREDICTIONS)}")


def ddim_timesteps(schedule: NoiseSchedule, steps: int, start: int | None = None) -> list[int]:
    """The descending timesteps visited by a ``steps``-step DDIM run from ``start`` (default T-1) down to 0."""
    start = schedule.steps - 1 if start is None else start
    if not 0 <= start < schedule.steps:
        raise ValueError(f"DDIM start step {start} is outside the schedule's 0..{schedule.steps - 1}")
    if steps < 1:
        raise ValueError("DDIM needs at least 1 step")
    visited = torch.linspace(start, 0, min(steps, start + 1), dtype=torch.float64).round().long()
    return visited.tolist()


@torch.no_grad()
def ddim_sample(model: DenoisingModel, x_start: torch.Tensor, schedule: NoiseSchedule, steps: int,
                start: int | None = None, prediction: Prediction = "epsilon", on_step: StepCallback | None = None,
                progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                stage: str = "ddim") -> torch.Tensor:
    """Run DDIM with eta = 0 from ``x_start`` (x at timestep ``start``, default T-1) to a clean estimate.

    Every update moves exactly to the noise level of the next visited timestep (the last one to abar = 1),
    so any step count is consistent with the schedule. ``on_step(t, x)`` sees the state after each step.
    """
    abar = schedule.alphas_cumprod().to(x_start.device)
    visited = ddim_timesteps(schedule, steps, start)
    x = x_start
    for index, t in enumerate(visited):
        raise_if_cancelled(cancel, stage)
        timesteps = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
        output = model(x, timesteps).to(x.dtype)
        x0, eps = split_prediction(output, x, abar[t].to(x.dtype), prediction)
        a_prev = abar[visited[index + 1]].to(x.dtype) if index + 1 < len(visited) else torch.ones_like(abar[t])
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
        if on_step is not None:
            on_step(t, x)
        report(progress, stage, index + 1, len(visited))
    return x
