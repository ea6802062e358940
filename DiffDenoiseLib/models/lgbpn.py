"""LG-BPN-style blind-patch network for spatially correlated noise (after Wang et al., CVPR 2023).

A blind-*spot* network still sees the pixels next to the one it predicts; with correlated noise those carry
the same noise, so it learns to copy it. Here the output at ``p`` never depends on any input pixel in the
diamond ``|dy| + |dx| <= radius`` around ``p`` (radius 4 by default). Two branches read the image:

* **local**: a 9x9 convolution with the diamond masked (the dense ring just outside the blind patch), then
  gated blocks whose depthwise convolutions have dilation ``2 * radius + 1``;
* **global**: a 21x21 convolution sampling every second pixel, diamond masked, then "dilated transformer"
  blocks: self-attention among all positions of one lattice ``p + L * Z^2`` of the whole image
  (``L = 3 * radius + 3``), plus gated blocks with dilation ``L``.

Why the blind patch survives: after a masked head, a feature at ``q`` depends on inputs ``q + s`` with ``s``
outside the diamond and ``|s|_inf <= R`` (R = 4 local, 10 global). Later layers only combine features whose
positions differ by multiples of a lattice step ``L >= R + radius + 1``, so any other feature they bring in
depends on inputs at least ``L - R > radius`` away from ``p`` in one coordinate: outside the diamond.
Everything else is per pixel (1x1 convolutions, per-pixel layer norm), and padding is with zeros (a reflected
copy of a blind pixel could land outside the blind patch). Pixel-shuffle downsampling (PD) in front, as in
PUCA, widens the blind patch to the correlation length of stronger noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .blind_spot import BlindSpotNetwork, ContextChannels
from .blocks import GatedBlock, LayerNorm2d, SimpleGate, check_self_ensemble


class DiamondMaskedConv2d(nn.Conv2d):
    """Convolution with ``taps`` x ``taps`` taps ``dilation`` pixels apart; taps inside the diamond are zero in
    the first ``blind_channels`` input channels (default: all; the others are neighbouring slices whose noise
    is independent)."""

    def __init__(self, in_channels: int, out_channels: int, taps: int, dilation: int, radius: int,
                 blind_channels: int | None = None) -> None:
        super().__init__(in_channels, out_channels, taps, padding=dilation * (taps // 2), dilation=dilation)
        offsets = (torch.arange(taps) - taps // 2) * dilation
        outside = offsets[:, None].abs() + offsets[None, :].abs() > radius
        mask = torch.ones_like(self.weight)
        mask[:, :blind_channels] = outside.to(self.weight.dtype)
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.weight * self.mask, self.bias)


def lattice_split(x: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Group the positions of (N, C, H, W) by their residue modulo ``step``: -> (N*step^2, h*w, C) tokens.

    Zero-pads to a multiple of ``step``; also returns a (N*step^2, h*w) mask of the real (unpadded) tokens.
    """
    n, c, height, width = x.shape
    pad_h, pad_w = (-height) % step, (-width) % step
    valid = F.pad(torch.ones(n, 1, height, width, device=x.device, dtype=torch.bool), (0, pad_w, 0, pad_h))
    x = F.pad(x, (0, pad_w, 0, pad_h))

    def split(t: torch.Tensor) -> torch.Tensor:
        h, w = t.shape[2] // step, t.shape[3] // step
        t = t.reshape(n, t.shape[1], h, step, w, step).permute(0, 3, 5, 2, 4, 1)
        return t.reshape(n * step * step, h * w, t.shape[-1])

    return split(x), split(valid)[..., 0]


def lattice_merge(tokens: torch.Tensor, shape: tuple[int, ...], step: int) -> torch.Tensor:
    """Inverse of :func:`lattice_split` for an (N, C, H, W) ``shape``."""
    n, c, height, width = shape
    h, w = -(-height // step), -(-width // step)
    x = tokens.reshape(n, step, step, h, w, c).permute(0, 5, 3, 1, 4, 2).reshape(n, c, h * step, w * step)
    return x[..., :height, :width]


class LatticeAttention(nn.Module):
    """Multi-head self-attention among the positions of each lattice ``p + step * Z^2`` (pre-norm, residual)."""

    def __init__(self, channels: int, step: int, heads: int = 1) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError("channels must be divisible by heads")
        self.step, self.heads = step, heads
        self.norm = LayerNorm2d(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.project = nn.Linear(channels, channels)
        self.scale = nn.Parameter(torch.zeros(1, channels, 1, 1))  # starts as the identity, like GatedBlock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens, valid = lattice_split(self.norm(x), self.step)
        groups, count, channels = tokens.shape
        q, k, v = self.qkv(tokens).reshape(groups, count, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :])
        attended = self.project(attended.transpose(1, 2).reshape(groups, count, channels))
        return x + self.scale * lattice_merge(attended, x.shape, self.step)


@dataclass
class LGBPNConfig(ContextChannels):
    """Architecture of :class:`LGBPN` (stored in model bundles).

    Args:
        width: feature channels of each branch.
        local_blocks: dilated gated blocks of the local branch.
        global_blocks: dilated transformer blocks (lattice attention + dilated gated block) of the global branch.
        radius: blind patch radius: the output never sees input pixels with ``|dy| + |dx| <= radius``
            (in sub-image pixels when PD > 1).
        heads: attention heads of the global branch.
        in_channels: image channels.
        pd_train, pd_infer: pixel-shuffle downsampling factors in training and at inference (1 = none).
        r3_passes, r3_probability: R3 refinement at inference, as in :class:`PUCAConfig`.
        context_slices, blind_context: neighbouring slices read, and whether their blind patch is masked too,
            as in :class:`PUCAConfig`.
        self_ensemble: flips and turns averaged at inference, as in :class:`PUCAConfig`.
    """

    width: int = 32
    local_blocks: int = 2
    global_blocks: int = 2
    radius: int = 4
    heads: int = 2
    in_channels: int = 1
    pd_train: int = 1
    pd_infer: int = 1
    r3_passes: int = 0
    r3_probability: float = 0.16
    context_slices: int = 0
    blind_context: bool = False
    self_ensemble: int = 1

    def __post_init__(self) -> None:
        if self.radius < 1:
            raise ValueError("the blind patch radius must be at least 1")
        check_self_ensemble(self.self_ensemble)

    @property
    def global_step(self) -> int:
        """Lattice step of the global branch: head half-span (2 * radius + 2) + radius + 1."""
        return 3 * self.radius + 3

    @property
    def min_size(self) -> int:
        """Smallest image height/width: every lattice of the global branch holds at least one real pixel."""
        return self.global_step * max(self.pd_train, self.pd_infer)


class LGBPNNet(nn.Module):
    """The two-branch blind-patch network on one (sub-)image; fuses the branches per pixel."""

    def __init__(self, config: LGBPNConfig) -> None:
        super().__init__()
        width, radius = config.width, config.radius
        local_step = 2 * radius + 1
        # Local: dense taps up to `radius` away; global: every 2nd pixel up to 2 * radius + 2 away.
        channels, blind = config.input_channels, config.blind_channels
        self.local_head = DiamondMaskedConv2d(channels, width, 2 * radius + 1, 1, radius, blind)
        self.global_head = DiamondMaskedConv2d(channels, width, 2 * radius + 3, 2, radius, blind)
        self.local_branch = nn.Sequential(
            *[GatedBlock(width, local_step, channel_attention=False) for _ in range(config.local_blocks)])
        self.global_branch = nn.Sequential(*[
            module for _ in range(config.global_blocks)
            for module in (LatticeAttention(width, config.global_step, config.heads),
                           GatedBlock(width, config.global_step, channel_attention=False))])
        self.fuse = nn.Sequential(nn.Conv2d(2 * width, 2 * width, 1), SimpleGate(), nn.Conv2d(width, width, 1),
                                  nn.GELU(), nn.Conv2d(width, config.in_channels, 1))
        self.multiple = 1  # any size: the lattice layers pad themselves

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local_branch(F.gelu(self.local_head(x)))
        global_ = self.global_branch(F.gelu(self.global_head(x)))
        return self.fuse(torch.cat([local, global_], dim=1))


class LGBPN(BlindSpotNetwork):
    """LG-BPN blind-patch denoiser with PD, zero padding and optional R3 (see the module docstring)."""

    architecture = "lgbpn"
    pd_padding = inner_padding = "constant"  # zeros: no copy of a blind pixel may appear anywhere

    def __init__(self, config: LGBPNConfig | None = None) -> None:
        super().__init__(config or LGBPNConfig())

    def _build(self, config: LGBPNConfig) -> nn.Module:
        return LGBPNNet(config)
