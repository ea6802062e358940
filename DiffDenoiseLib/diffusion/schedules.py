"""Forward-process noise schedules: beta_t for t = 0..T-1 and the cumulative signal fraction abar_t."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import InputError

ScheduleKind = Literal["linear", "cosine", "reverse_warmup"]


@dataclass
class NoiseSchedule:
    """A DDPM noise schedule; ``x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps``.

    Args:
        kind: ``linear`` (DDPM: beta from ``beta_start`` to ``beta_end``), ``cosine`` (Nichol & Dhariwal) or
            ``reverse_warmup`` (DDM2: ``beta_start`` for the first ``warmup_steps``, then linear to ``beta_end``).
        steps: number of training timesteps T.
        beta_start: first beta (linear, reverse_warmup).
        beta_end: last beta (linear, reverse_warmup).
        warmup_steps: length of the constant start of ``reverse_warmup``.
    """

    kind: ScheduleKind = "linear"
    steps: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2
    warmup_steps: int = 300

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "cosine", "reverse_warmup"):
            raise InputError(f"unknown noise schedule '{self.kind}': use linear, cosine or reverse_warmup")
        if self.steps < 2:
            raise InputError("a noise schedule needs at least 2 timesteps")

    def betas(self) -> torch.Tensor:
        """beta_t for t = 0..T-1 (float64)."""
        if self.kind == "linear":
            return torch.linspace(self.beta_start, self.beta_end, self.steps, dtype=torch.float64)
        if self.kind == "reverse_warmup":
            warmup = min(self.warmup_steps, self.steps)
            constant = torch.full((warmup,), self.beta_start, dtype=torch.float64)
            ramp = torch.linspace(self.beta_start, self.beta_end, self.steps - warmup, dtype=torch.float64)
            return torch.cat([constant, ramp])
        offset = 0.008  # cosine schedule: abar follows cos^2, betas capped at 0.999
        t = torch.arange(self.steps + 1, dtype=torch.float64) / self.steps
        abar = torch.cos((t + offset) / (1 + offset) * math.pi / 2) ** 2
        return (1 - abar[1:] / abar[:-1]).clamp(max=0.999)

    def alphas_cumprod(self) -> torch.Tensor:
        """abar_t for t = 0..T-1 (float64): the signal fraction left after t+1 noising steps."""
        return torch.cumprod(1 - self.betas(), dim=0)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """Sample x_t from q(x_t | x_0) for a batch of timesteps (N,)."""
        abar = self.alphas_cumprod().to(x0.device)[timesteps].to(x0.dtype).view(-1, *([1] * (x0.ndim - 1)))
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise
