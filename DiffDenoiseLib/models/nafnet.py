"""NAFNet (Chen et al., ECCV 2022) for single-channel images, optionally conditioned on a diffusion timestep.

One architecture serves two stages of DiffDenoise (and both DDM2 networks):

* the distilled denoiser: noisy slice in, denoised slice out (global residual), trained on (noisy, SRDS) pairs;
* the conditional diffusion network: ``[x_t, c]`` in, noise (or x0) out, with the timestep injected into every
  block as a per-channel scale and shift of its first normalisation (FiLM).

The network is a plain U-Net: gated blocks at each level, 2x2 stride-2 convolutions down, 1x1 convolution +
pixel shuffle up, additive skips.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn

from .blocks import GatedBlock, check_self_ensemble, dihedral_average, pad_to_multiple


@dataclass
class NAFNetConfig:
    """Architecture of :class:`NAFNet` (stored in model bundles).

    Args:
        width: channels at full resolution (doubled at every level down).
        encoder_blocks: gated blocks per encoder level; its length is the number of downsamplings.
        middle_blocks: gated blocks at the lowest resolution.
        decoder_blocks: gated blocks per decoder level (same length as ``encoder_blocks``).
        in_channels: input channels (1 for a denoiser; 1 + condition channels for ``[x_t, c]`` in diffusion).
        out_channels: output channels.
        residual: what the output is a correction of: ``first`` input channel (a denoiser), ``mean`` of the
            input channels (DDM2 Stage I predicts a slice from other volumes) or ``none``.
        time_conditioned: take a diffusion timestep as second argument of ``forward``.
        zero_start: the last convolution starts at zero, so training starts from the residual alone instead of
            from noise: DDM2 Stage I from the plain mean of its inputs, the diffusion network (which generates
            deviations from the BSN output) from the BSN output itself.
        self_ensemble: flips and turns averaged in eval mode (1, 2, 4 or 8; :func:`.blocks.dihedral_average`).
    """

    width: int = 32
    encoder_blocks: tuple[int, ...] = (1, 1, 1)
    middle_blocks: int = 1
    decoder_blocks: tuple[int, ...] = (1, 1, 1)
    in_channels: int = 1
    out_channels: int = 1
    residual: Literal["none", "first", "mean"] = "first"
    time_conditioned: bool = False
    self_ensemble: int = 1
    zero_start: bool = False

    def __post_init__(self) -> None:
        self.encoder_blocks = tuple(self.encoder_blocks)
        self.decoder_blocks = tuple(self.decoder_blocks)
        check_self_ensemble(self.self_ensemble)
        if self.residual not in ("none", "first", "mean"):
            raise ValueError(f"unknown NAFNet residual '{self.residual}': use none, first or mean")
        if len(self.encoder_blocks) != len(self.decoder_blocks):
            raise ValueError("encoder_blocks and decoder_blocks need the same number of levels")

    @property
    def min_size(self) -> int:
        """Smallest image height/width the network accepts (reflect padding must be smaller than the image)."""
        return 2 ** len(self.encoder_blocks) + 1


def timestep_embedding(timesteps: torch.Tensor, channels: int) -> torch.Tensor:
    """Sinusoidal embedding of integer timesteps (N,) -> (N, channels), as in the Transformer and DDPM."""
    half = channels // 2
    frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=timesteps.device) / half)
    angles = timesteps.float()[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class NAFNet(nn.Module):
    """NAFNet U-Net; ``forward(x)`` for a denoiser, ``forward(x, timesteps)`` when time-conditioned.

    Accepts any height and width (padded internally by reflection to a multiple of the total downsampling).
    """

    architecture = "nafnet"

    def __init__(self, config: NAFNetConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or NAFNetConfig()
        width = config.width
        self.time_channels = 4 * width if config.time_conditioned else 0
        if config.time_conditioned:
            self.time_mlp = nn.Sequential(nn.Linear(width, self.time_channels), nn.SiLU(),
                                          nn.Linear(self.time_channels, self.time_channels))
        self.intro = nn.Conv2d(config.in_channels, width, 3, padding=1)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        channels = width
        for count in config.encoder_blocks:
            self.encoders.append(self._level(channels, count))
            self.downs.append(nn.Conv2d(channels, channels * 2, 2, stride=2))
            channels *= 2
        self.middle = self._level(channels, config.middle_blocks)
        for count in config.decoder_blocks:
            self.ups.append(nn.Sequential(nn.Conv2d(channels, channels * 2, 1, bias=False), nn.PixelShuffle(2)))
            channels //= 2
            self.decoders.append(self._level(channels, count))
        self.ending = nn.Conv2d(width, config.out_channels, 3, padding=1)
        if config.zero_start:
            nn.init.zeros_(self.ending.weight)
            nn.init.zeros_(self.ending.bias)
        self.multiple = 2 ** len(config.encoder_blocks)

    def _level(self, channels: int, count: int) -> nn.ModuleList:
        return nn.ModuleList(GatedBlock(channels, time_channels=self.time_channels) for _ in range(count))

    @property
    def min_size(self) -> int:
        return self.config.min_size

    def config_dict(self) -> dict:
        return asdict(self.config)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor | None = None) -> torch.Tensor:
        if self.config.time_conditioned:
            if timesteps is None:
                raise ValueError("this NAFNet is time-conditioned: call it with (x, timesteps)")
            time = self.time_mlp(timestep_embedding(timesteps.reshape(-1), self.config.width).to(x.dtype))
        else:
            time = None
        if self.training:
            return self._forward(x, time)
        return dihedral_average(lambda view: self._forward(view, time), x, self.config.self_ensemble)

    def _forward(self, x: torch.Tensor, time: torch.Tensor | None) -> torch.Tensor:
        padded, (height, width) = pad_to_multiple(x, self.multiple)
        features = self.intro(padded)
        skips = []
        for level, down in zip(self.encoders, self.downs, strict=True):
            for block in level:
                features = block(features, time)
            skips.append(features)
            features = down(features)
        for block in self.middle:
            features = block(features, time)
        for up, level, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            features = up(features) + skip
            for block in level:
                features = block(features, time)
        out = self.ending(features)[..., :height, :width]
        if self.config.residual == "first":
            return out + x[:, :1]
        return out + x.mean(dim=1, keepdim=True) if self.config.residual == "mean" else out
