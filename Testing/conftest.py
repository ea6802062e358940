"""Shared fixtures: tiny network settings, the embedded sample, and the optional shared data folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from DiffDenoiseLib.data import SAMPLE_KNEE
from DiffDenoiseLib.diffusion import NoiseSchedule
from DiffDenoiseLib.io import DiffusionVolume, read_dwi, read_volume
from DiffDenoiseLib.models import NAFNetConfig, PUCAConfig
from DiffDenoiseLib.pipelines.bsn import BsnSettings
from DiffDenoiseLib.pipelines.ddm2 import DDM2Settings
from DiffDenoiseLib.pipelines.diffdenoise import DiffusionSettings, DistillationSettings, SamplingSettings
from DiffDenoiseLib.presets import PipelineSettings
from DiffDenoiseLib.training import TrainConfig

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL_DWI = Path(__file__).parent / "data" / "small_64D.nii.gz"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


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


@pytest.fixture
def tiny_settings() -> PipelineSettings:
    return make_tiny_settings()


def make_tiny_ddm2(steps: int = 3) -> DDM2Settings:
    """DDM2 at toy size; a 100-step chain keeps the full sampler to at most 100 network calls per slice."""
    nafnet = NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,))
    training = TrainConfig(steps=steps, batch_size=2, patch_size=16, device="cpu")
    schedule = NoiseSchedule("reverse_warmup", 100, 5e-4, 0.1, 30)
    return DDM2Settings(nafnet, training, nafnet, training, schedule=schedule, sampler_steps=2)


@pytest.fixture
def small_dwi() -> DiffusionVolume:
    """A real DWI (dipy's small_64D: 65 volumes of 10x10x10, one b0)."""
    return read_dwi(SMALL_DWI)


@pytest.fixture(scope="session")
def knee_crop() -> np.ndarray:
    """A small real volume: 4 slices of 64x64 from the embedded knee sample."""
    return read_volume(SAMPLE_KNEE).array[4:8, 64:128, 64:128].astype(np.float32)
