"""Diffusion building blocks: noise schedules, the deterministic DDIM sampler and SRDS."""

from .ddim import ddim_sample, ddim_timesteps
from .schedules import NoiseSchedule
from .srds import SRDSResult, srds_sample

__all__ = ["NoiseSchedule", "SRDSResult", "ddim_sample", "ddim_timesteps", "srds_sample"]
