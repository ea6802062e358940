"""Stage 1 of DiffDenoise: train a blind-spot network on the noisy slices.

PUCA for pixel-independent noise; LG-BPN (a blind patch instead of a blind pixel) for spatially correlated
noise, which a blind-spot network would learn to copy from the pixels next to the one it predicts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..context import stack_context
from ..errors import InputError
from ..models import LGBPN, PUCA, BlindSpotNetwork, LGBPNConfig, PUCAConfig
from ..runtime.progress import CancelCheck, ProgressCallback
from ..runtime.training import TrainConfig, TrainSummary, fit_patch_size, train


@dataclass
class BsnSettings:
    """Network and training settings of the BSN stage (a PUCA or an LG-BPN config); with ``posterior`` its
    output is combined with the noisy pixel the blind spot left out (:mod:`..posterior`), and with ``wiener``
    that estimate is blended with its empirical Wiener filtering, the weight fitted on a recorrupted copy
    (:mod:`..wiener`), whose patches span ``wiener_depth`` slices where the network reads its neighbouring
    slices whole (docs/decisions.md, "Wiener patches across slices"). Where correlated noise turns a PUCA config
    into an LG-BPN, the LG-BPN trains ``lgbpn_step_share`` of the PUCA's steps (its steps cost more)."""

    network: PUCAConfig | LGBPNConfig
    training: TrainConfig
    posterior: bool = True
    wiener: bool = True
    wiener_depth: int = 4
    lgbpn_step_share: float = 1.0

    def __post_init__(self) -> None:
        if self.wiener_depth < 1:
            raise InputError(f"the Wiener patch depth must be at least 1 slice, got {self.wiener_depth}")
        if not 0 < self.lgbpn_step_share <= 1:
            raise InputError(f"the LG-BPN's share of the training steps must be in (0, 1], got {self.lgbpn_step_share}")

    def lgbpn_steps(self) -> int:
        """Training steps of the LG-BPN that :func:`for_noise` makes of these settings' PUCA."""
        return max(1, round(self.training.steps * self.lgbpn_step_share))

    def wiener_patch_depth(self, slice_count: int) -> int:
        """Slices the Wiener patches of a volume of ``slice_count`` slices span: ``wiener_depth`` (at most the
        volume) where the network reads its neighbours whole; 1 for 2D images, the 2D path, and noise shared
        between slices, whose coefficients across slices the noise model does not describe."""
        if self.network.context_slices == 0 or self.network.blind_context:
            return 1
        return min(self.wiener_depth, slice_count)


# Pixel-shuffle factors (train, inference) and R3 passes for PUCA on i.i.d. noise. For correlated noise the
# LG-BPN's radius-4 blind patch already spans the correlation of typical reconstruction-filtered noise
# (measured in the README benchmarks); raise pd_train/pd_infer for longer-range correlation.
PUCA_IID = {"pd_train": 1, "pd_infer": 1, "r3_passes": 0}
LGBPN_CORRELATED = {"pd_train": 1, "pd_infer": 1, "r3_passes": 0}


def for_noise(settings: BsnSettings, noise_kind: str) -> BsnSettings:
    """Adapt BSN settings to ``iid`` (PUCA) or ``correlated`` (LG-BPN of the same width, trained for
    ``lgbpn_step_share`` of the steps) noise."""
    network = settings.network
    if isinstance(network, LGBPNConfig):  # an explicit LG-BPN is kept for either noise kind
        return settings
    if noise_kind == "iid":
        return replace(settings, network=replace(network, **PUCA_IID))
    depth = sum(network.encoder_blocks) + network.middle_blocks
    lgbpn = LGBPNConfig(width=network.width, local_blocks=max(1, depth // 2), global_blocks=max(1, depth // 3),
                        in_channels=network.in_channels, context_slices=network.context_slices,
                        blind_context=network.blind_context, self_ensemble=network.self_ensemble,
                        **LGBPN_CORRELATED)
    return replace(settings, network=lgbpn, training=replace(settings.training, steps=settings.lgbpn_steps()))


def build_bsn(config: PUCAConfig | LGBPNConfig) -> BlindSpotNetwork:
    """The blind-spot network of a config: :class:`LGBPN` for an LG-BPN config, PUCA otherwise."""
    return LGBPN(config) if isinstance(config, LGBPNConfig) else PUCA(config)


def blind_spot_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Self-supervised loss: reproduce the noisy slice (the first channels of a context stack, the rest being
    its neighbours); the blind spot makes the identity unreachable."""
    output = model(batch).float()
    return F.mse_loss(output, batch[:, :output.shape[1]].float())


def train_bsn(slices: np.ndarray, settings: BsnSettings, progress: ProgressCallback | None = None,
              cancel: CancelCheck | None = None) -> tuple[BlindSpotNetwork, TrainSummary]:
    """Train a blind-spot network on normalised (N, 1, H, W) noisy slices (with the neighbouring slices its
    config reads, :mod:`..context`)."""
    torch.manual_seed(settings.training.seed)
    model = build_bsn(settings.network)
    multiple = model.net.multiple * max(settings.network.pd_train, 1)
    training = fit_patch_size(settings.training, multiple, model.min_size)
    stacks = stack_context(slices, settings.network.context_slices)
    summary = train(model, stacks, blind_spot_loss, training, progress, cancel, stage="train bsn")
    return model, summary

