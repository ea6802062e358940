"""What several test modules share: tiny settings, the test data's paths and the blind-spot probe.

Test modules import these by name (``from helpers import make_tiny_settings``); ``conftest.py`` builds its
fixtures from them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from DiffDenoiseLib.diffusion import NoiseSchedule
from DiffDenoiseLib.models import NAFNetConfig, PUCAConfig
from DiffDenoiseLib.pipelines.bsn import BsnSettings
from DiffDenoiseLib.pipelines.ddm2 import DDM2Settings
from DiffDenoiseLib.pipelines.diffdenoise import DiffusionSettings, DistillationSettings, SamplingSettings
from DiffDenoiseLib.presets import PipelineSettings
from DiffDenoiseLib.runtime.training import TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL_DWI = Path(__file__).parent / "data" / "small_64D.nii.gz"


class LossRecorder(nn.Module):
    """A fixed estimate standing in for a time-conditioned network: it records the (inputs, timesteps) a
    training loss hands it, to test the loss's contract rather than our network."""

    def __init__(self, estimate: torch.Tensor) -> None:
        super().__init__()
        self.estimate = estimate
        self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, inputs: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        self.seen.append((inputs, timesteps))
        return self.estimate


def make_tiny_settings() -> PipelineSettings:
    """Every stage of the pipeline at toy size: seconds on a CPU, for contracts, not quality."""
    training = TrainConfig(steps=4, batch_size=2, patch_size=32)
    nafnet = NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,))
    return PipelineSettings(
        BsnSettings(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)), training),
        DiffusionSettings(nafnet, training, NoiseSchedule(steps=50)),
        SamplingSettings(steps=2, pairs=1),
        DistillationSettings(nafnet, training),
    )


def make_tiny_ddm2(steps: int = 3) -> DDM2Settings:
    """DDM2 at toy size; a 100-step chain keeps the full sampler to at most 100 network calls per slice."""
    nafnet = NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,))
    training = TrainConfig(steps=steps, batch_size=2, patch_size=16, device="cpu")
    schedule = NoiseSchedule("reverse_warmup", 100, 5e-4, 0.1, 30)
    return DDM2Settings(nafnet, training, nafnet, training, schedule=schedule, sampler_steps=2)


def output_change(network: nn.Module, image: torch.Tensor, pixel: tuple[int, int], delta: float = 10.0) -> torch.Tensor:
    """|network(image with ``delta`` added at ``pixel``) - network(image)| of the first channel: where a
    change of one input pixel reaches (a blind-spot network's must not reach the pixel itself)."""
    changed = image.clone()
    changed[0, 0, pixel[0], pixel[1]] += delta
    with torch.no_grad():
        return (network(changed) - network(image)).abs()[0, 0]
