"""Diffusion building blocks: noise schedules, the DDIM and DDPM samplers and SRDS."""

from .ddim import ddim_sample, ddim_timesteps
from .ddpm import ddpm_sample
from .schedules import NoiseSchedule
from .srds import SRDSResult, srds_sample

__all__ = ["NoiseSchedule", "SRDSResult", "ddim_sample", "ddim_timesteps", "ddpm_sample", "srds_sample"]
