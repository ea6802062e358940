"""Stage 1 of DiffDenoise on its own: train a blind-spot network on the noisy slices and apply it."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..models import BlindSpotDenoiser, PUCAConfig
from ..progress import CancelCheck, ProgressCallback
from ..training import TrainConfig, TrainSummary, train


@dataclass
class BsnSettings:
    """Network and training settings of the BSN stage."""

    network: PUCAConfig
    training: TrainConfig


# Budgets measured on 2 CPU cores for a 24x256x256 volume (README "Presets"): quick ~3 min, standard ~1.5 h;
# full is paper-scale (PUCA width 128, [3,4]/4/[4,3]) and meant for a GPU.
BSN_PRESETS: dict[str, BsnSettings] = {
    "quick": BsnSettings(
        PUCAConfig(width=32, encoder_blocks=(1, 1), middle_blocks=2, decoder_blocks=(1, 1)),
        TrainConfig(steps=600, batch_size=8, patch_size=64, learning_rate=2e-3),
    ),
    "standard": BsnSettings(
        PUCAConfig(width=48, encoder_blocks=(2, 2), middle_blocks=2, decoder_blocks=(2, 2)),
        TrainConfig(steps=3000, batch_size=8, patch_size=96, learning_rate=1e-3),
    ),
    "full": BsnSettings(
        PUCAConfig(width=128, encoder_blocks=(3, 4), middle_blocks=4, decoder_blocks=(4, 3)),
        TrainConfig(steps=50000, batch_size=8, patch_size=128, learning_rate=3e-4),
    ),
}

# Pixel-shuffle factors (train, inference) and R3 passes per noise type (PUCA: PD 4/2 + R3 for real noise).
NOISE_SETTINGS = {"iid": {"pd_train": 1, "pd_infer": 1, "r3_passes": 0},
                  "correlated": {"pd_train": 4, "pd_infer": 2, "r3_passes": 8}}


def bsn_settings(preset: str | BsnSettings, noise_kind: str) -> BsnSettings:
    """The settings of a preset name (or given settings), adapted to ``iid`` or ``correlated`` noise."""
    if isinstance(preset, BsnSettings):
        settings = preset
    elif preset in BSN_PRESETS:
        settings = BSN_PRESETS[preset]
    else:
        raise InputError(f"unknown preset '{preset}': use one of {', '.join(BSN_PRESETS)}")
    return BsnSettings(replace(settings.network, **NOISE_SETTINGS[noise_kind]), settings.training)


def blind_spot_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Self-supervised loss: reproduce the noisy input; the blind spot makes the identity unreachable."""
    return F.mse_loss(model(batch).float(), batch.float())


def train_bsn(slices: np.ndarray, settings: BsnSettings, progress: ProgressCallback | None = None,
              cancel: CancelCheck | None = None) -> tuple[BlindSpotDenoiser, TrainSummary]:
    """Train a PUCA blind-spot network on normalised (N, 1, H, W) noisy slices."""
    torch.manual_seed(settings.training.seed)
    model = BlindSpotDenoiser(settings.network)
    patch = settings.training.patch_size
    multiple = model.min_size
    training = replace(settings.training, patch_size=max(multiple, patch - patch % multiple))
    summary = train(model, slices, blind_spot_loss, training, progress, cancel, stage="train bsn")
    return model, summary
