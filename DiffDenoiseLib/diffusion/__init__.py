"""Diffusion building blocks: noise schedules, the DDIM and DDPM samplers and SRDS."""

from .ddim import PREDICTIONS, ddim_sample, ddim_timesteps, prediction_target, split_prediction
from .ddpm import ddpm_sample
from .schedules import NoiseSchedule
from .srds import SRDSResult, srds_sample

__all__ = ["PREDICTIONS", "NoiseSchedule", "SRDSResult", "ddim_sample", "ddim_timesteps", "ddpm_sample",
           "prediction_target", "split_prediction", "srds_sample"]
