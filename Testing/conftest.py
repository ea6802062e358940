"""Shared fixtures: tiny network settings, the embedded sample, and the optional shared data folder (the plain
helpers they are built from are in ``helpers.py``)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import slicer_app_stand_ins
from helpers import SHARED_DATA, SMALL_DWI, make_tiny_settings

from DiffDenoiseLib.data import SAMPLE_KNEE
from DiffDenoiseLib.io import DiffusionVolume, read_dwi, read_volume
from DiffDenoiseLib.presets import PipelineSettings

if importlib.util.find_spec("slicer") is not None:  # slicer-core: the module imports with the app's stand-ins
    slicer_app_stand_ins.install()


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture
def tiny_settings() -> PipelineSettings:
    return make_tiny_settings()


@pytest.fixture
def small_dwi() -> DiffusionVolume:
    """A real DWI (dipy's small_64D: 65 volumes of 10x10x10, one b0)."""
    return read_dwi(SMALL_DWI)


@pytest.fixture(scope="session")
def knee_crop() -> np.ndarray:
    """A small real volume: 4 slices of 64x64 from the embedded knee sample."""
    return read_volume(SAMPLE_KNEE).array[4:8, 64:128, 64:128].astype(np.float32)
