"""PUCA: a blind-spot network for images with pixel-independent noise.

A blind-spot network predicts each pixel from its neighbours only, so training it to reproduce the noisy
input learns a denoiser for pixel-independent noise (Noise2Void idea). Here the blind spot is built in:

* the first layer is a 3x3 convolution with its centre tap zeroed: feature ``p`` sees the 8 neighbours of ``p``;
* every later spatial operation only combines features at even offsets (dilation-2 depthwise convs,
  patch-unshuffle that groups whole 2x2 patches), and ``p`` minus an even offset is never a neighbour of
  ``p``'s own parity class, so no path leads back to input ``p``;
* there is no global pooling (channel attention would mix every pixel, the centre included).

Pixel-shuffle downsampling (PD, factor > 1) breaks spatially correlated noise into less correlated
sub-images; use factor 1 for i.i.d. noise. Optional R3 refinement (AP-BSN) re-runs the network without PD
on copies where 16% of pixels are replaced by the noisy input, and averages.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .blind_spot import BlindSpotNetwork, ContextChannels
from .blocks import GatedBlock, check_self_ensemble

PATCH = 2  # patch-unshuffle groups 2x2 patches, matching the dilation of the blocks


class CentreMaskedConv2d(nn.Conv2d):
    """Convolution whose centre tap is fixed at zero: an output pixel never sees its own input pixel.

    Only the first ``blind_channels`` input channels are masked (default: all); the others (neighbouring
    slices whose noise is independent, :mod:`..context`) may be seen at the centre too.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 blind_channels: int | None = None) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        mask = torch.ones_like(self.weight)
        mask[:, :blind_channels, kernel_size // 2, kernel_size // 2] = 0
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def patch_unshuffle(x: torch.Tensor) -> torch.Tensor:
    """Space-to-depth over whole 2x2 patches: (N, C, H, W) -> (N, 4C, H/2, W/2), keeping pixel parity."""
    n, c, h, w = x.shape
    x = x.view(n, c, h // (2 * PATCH), 2, PATCH, w // (2 * PATCH), 2, PATCH)
    return x.permute(0, 1, 3, 6, 2, 4, 5, 7).reshape(n, c * 4, h // 2, w // 2)


def patch_shuffle(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`patch_unshuffle`: (N, 4C, H, W) -> (N, C, 2H, 2W)."""
    n, c4, h, w = x.shape
    c = c4 // 4
    x = x.view(n, c, 2, 2, h // PATCH, PATCH, w // PATCH, PATCH)
    return x.permute(0, 1, 4, 2, 5, 6, 3, 7).reshape(n, c, h * 2, w * 2)


@dataclass
class PUCAConfig(ContextChannels):
    """Architecture of :class:`PUCA` (stored in model bundles)."""

    width: int = 32
    encoder_blocks: tuple[int, ...] = (2, 2)
    middle_blocks: int = 2
    decoder_blocks: tuple[int, ...] = (2, 2)
    in_channels: int = 1
    pd_train: int = 1
    pd_infer: int = 1
    r3_passes: int = 0  # R3 refinement passes at inference (0 = off; AP-BSN uses 8 with PD > 1)
    r3_probability: float = 0.16
    context_slices: int = 0  # neighbouring slices per side also read (a :mod:`..context` stack; 0 = 2D)
    blind_context: bool = False  # mask the neighbours' blind spot too (noise correlated between slices)
    self_ensemble: int = 1  # flips and turns averaged at inference (1, 2, 4 or 8; blocks.dihedral_average)

    def __post_init__(self) -> None:
        self.encoder_blocks = tuple(self.encoder_blocks)
        self.decoder_blocks = tuple(self.decoder_blocks)
        if len(self.encoder_blocks) != len(self.decoder_blocks):
            raise ValueError("encoder_blocks and decoder_blocks need the same number of levels")
        if self.width % 2:
            raise ValueError("width must be even (downsampling halves it first)")
        check_self_ensemble(self.self_ensemble)

    @property
    def min_size(self) -> int:
        """Smallest image height/width the network accepts (reflect padding must be smaller than the image)."""
        return 2 ** (len(self.encoder_blocks) + 1) * max(self.pd_train, self.pd_infer)


class PUCANet(nn.Module):
    """J-invariant U-Net: masked head, dilated gated blocks, patch-unshuffle down / patch-shuffle up."""

    def __init__(self, config: PUCAConfig) -> None:
        super().__init__()
        width = config.width
        self.head = CentreMaskedConv2d(config.input_channels, width, 3, config.blind_channels)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        channels = width
        for count in config.encoder_blocks:
            self.encoders.append(nn.Sequential(*[GatedBlock(channels, 2, False) for _ in range(count)]))
            self.downs.append(nn.Conv2d(channels, channels // 2, 1))  # then patch-unshuffle: x4 channels
            channels *= 2
        self.middle = nn.Sequential(*[GatedBlock(channels, 2, False) for _ in range(config.middle_blocks)])
        for count in config.decoder_blocks:
            self.ups.append(nn.Conv2d(channels, channels * 2, 1))  # then patch-shuffle: /4 channels
            channels //= 2
            self.decoders.append(nn.Sequential(*[GatedBlock(channels, 2, False) for _ in range(count)]))
        self.tail = nn.Sequential(nn.Conv2d(width, width, 1), nn.GELU(), nn.Conv2d(width, config.in_channels, 1))
        self.multiple = 2 ** (len(config.encoder_blocks) + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            x = encoder(x)
            skips.append(x)
            x = patch_unshuffle(down(x))
        x = self.middle(x)
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            x = decoder(patch_shuffle(up(x)) + skip)
        return self.tail(x)


class PUCA(BlindSpotNetwork):
    """The PUCA blind-spot network (:class:`PUCANet` on each pixel-shuffled sub-image; see the module docstring)."""

    architecture = "puca"
    pd_padding = "circular"  # each copy of a pixel lands in another sub-image, which is processed apart
    inner_padding = "reflect"  # inside a sub-image, copies sit at even offsets, which PUCANet never sees

    def __init__(self, config: PUCAConfig | None = None) -> None:
        super().__init__(config or PUCAConfig())

    def _build(self, config: PUCAConfig) -> nn.Module:
        return PUCANet(config)
