"""PUCA-style blind-spot network for single-channel images.

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

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .blocks import GatedBlock, check_self_ensemble, dihedral_average, pad_to_multiple

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


def pd_down(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pixel-shuffle downsampling: (N, C, H, W) -> (N*f*f, C, H/f, W/f), sub-images stacked in the batch."""
    if factor == 1:
        return x
    n, c, h, w = x.shape
    x = x.view(n, c, h // factor, factor, w // factor, factor).permute(0, 3, 5, 1, 2, 4)
    return x.reshape(n * factor * factor, c, h // factor, w // factor)


def pd_up(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Inverse of :func:`pd_down`."""
    if factor == 1:
        return x
    nf, c, h, w = x.shape
    n = nf // (factor * factor)
    x = x.view(n, factor, factor, c, h, w).permute(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c, h * factor, w * factor)


@dataclass
class PUCAConfig:
    """Architecture of :class:`PUCANet` / :class:`BlindSpotDenoiser` (stored in model bundles)."""

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

    @property
    def input_channels(self) -> int:
        """Channels the network reads: the image's, then those of each neighbouring slice."""
        return self.in_channels * (1 + 2 * self.context_slices)

    @property
    def blind_channels(self) -> int:
        """Leading input channels whose blind spot is masked: the slice's own, or all of them."""
        return self.input_channels if self.blind_context else self.in_channels


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


class BlindSpotDenoiser(nn.Module):
    """A blind-spot network with pixel-shuffle downsampling, padding for any input size and R3 refinement.

    Takes (N, C, H, W) images (C: :attr:`PUCAConfig.input_channels`, the slice and its neighbours) of any size
    at least :attr:`min_size` on each side and returns the denoised slice, (N, 1, H, W). Uses
    ``pd_train`` in training mode and ``pd_infer`` (plus R3 when configured) in eval mode, averaged over
    ``self_ensemble`` flips and turns of the input (each of them blind at every pixel). This class runs a
    :class:`PUCANet`; subclasses set another ``net`` (whose sub-image padding is ``inner_padding``).
    """

    architecture = "puca"
    pd_padding = "circular"
    inner_padding = "reflect"

    def __init__(self, config: PUCAConfig | None = None) -> None:
        super().__init__()
        self.config = config or PUCAConfig()
        self.net = self._build(self.config)

    def _build(self, config: PUCAConfig) -> nn.Module:
        return PUCANet(config)

    @property
    def min_size(self) -> int:
        return self.config.min_size

    def config_dict(self) -> dict:
        return asdict(self.config)

    def blind_spot_forward(self, x: torch.Tensor, pd: int) -> torch.Tensor:
        """Run the network with pixel-shuffle factor ``pd``; the output never depends on the same input pixel."""
        # PUCA: circular padding for PD puts each copy of a pixel in another sub-image, which the network
        # processes separately; inside a sub-image, reflection keeps copies at even (unseen) offsets.
        x, (height, width) = pad_to_multiple(x, pd, mode=self.pd_padding)
        sub_images, (sub_height, sub_width) = pad_to_multiple(pd_down(x, pd), self.net.multiple,
                                                              self.inner_padding)
        out = self.net(sub_images)[..., :sub_height, :sub_width]
        return pd_up(out, pd)[..., :height, :width]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.blind_spot_forward(x, self.config.pd_train)
        return dihedral_average(self._infer, x, self.config.self_ensemble)

    def _infer(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blind_spot_forward(x, self.config.pd_infer)
        if self.config.r3_passes:
            out = self.refine_r3(x, out)
        return out

    def refine_r3(self, noisy: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
        """R3: average passes without PD over copies where a random fraction of pixels is the noisy input.

        The random masks come from a generator seeded from the input size, so inference stays deterministic.
        """
        generator = torch.Generator(device="cpu").manual_seed(noisy.shape[-1] * 7919 + noisy.shape[-2])
        total = torch.zeros_like(estimate)
        own, neighbours = noisy[:, :estimate.shape[1]], noisy[:, estimate.shape[1]:]
        for _ in range(self.config.r3_passes):
            keep_noisy = torch.rand(own.shape, generator=generator).to(noisy.device) < self.config.r3_probability
            mixed = torch.cat([torch.where(keep_noisy, own, estimate), neighbours], dim=1)
            total += self.blind_spot_forward(mixed, 1)
        return total / self.config.r3_passes
