"""Small building blocks shared by the networks (NAFNet-style gated blocks, per-pixel layer norm, the
dihedral self-ensemble)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Depthwise convolutions dilated this far or more (LG-BPN's 9 and 15, not PUCA's 2) read standard (NCHW) memory on
# the CPU: faster there in both training and inference, where at dilation 2 the copy cost PUCA's inference.
WIDE_DILATION = 3
SELF_ENSEMBLE_SIZES = (1, 2, 4, 8)  # identity; + left-right flip; + up-down flip and half turn; + transposes


def check_self_ensemble(count: int) -> None:
    """Raise ValueError unless ``count`` is a self-ensemble size :func:`dihedral_average` supports."""
    if count not in SELF_ENSEMBLE_SIZES:
        raise ValueError(f"self_ensemble must be one of {', '.join(map(str, SELF_ENSEMBLE_SIZES))}, not {count!r}")


def dihedral_average(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, count: int) -> torch.Tensor:
    """The mean of ``forward`` over the first ``count`` (1, 2, 4 or 8) symmetries of the square, each applied
    to the (N, C, H, W) input and undone on the output (a self-ensemble, as in Lim et al. 2017, EDSR).

    Every symmetry only permutes pixels, so an output pixel of the average depends on exactly the input pixels
    that one run reads at that pixel: a blind spot stays blind.
    """
    check_self_ensemble(count)
    total = None
    for index in range(count):
        transpose, flip_rows, flip_columns = index >= 4, index % 4 >= 2, index % 2 == 1
        dims = [d for d, flip in ((-2, flip_rows), (-1, flip_columns)) if flip]
        view = x.transpose(-2, -1) if transpose else x
        view = view.flip(dims) if dims else view
        out = forward(view)
        out = out.flip(dims) if dims else out
        out = out.transpose(-2, -1) if transpose else out
        total = out if total is None else total + out
    return total / count


class _DilatedDepthwiseOnCpu(torch.autograd.Function):
    """A dilated depthwise convolution ('same' padding, odd kernel) whose gradients are computed here: the input's
    as a forward convolution with the flipped kernel, the kernel's as one product per tap. On the CPU, PyTorch's
    (oneDNN's) own backward of dilated depthwise convolutions ran 1.3-4x slower (docs/decisions.md, "Dilated
    depthwise gradients on the CPU")."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.dilation, ctx.has_bias = dilation, bias is not None
        padding = dilation * (weight.shape[-1] // 2)
        return F.conv2d(x, weight, bias, padding=padding, dilation=dilation, groups=x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        dilation, size = ctx.dilation, weight.shape[-1]
        padding = dilation * (size // 2)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:  # the adjoint of a 'same' convolution: the same one with the kernel flipped
            grad_x = F.conv2d(grad, weight.flip(-2, -1), padding=padding, dilation=dilation, groups=x.shape[1])
        if ctx.needs_input_grad[1]:
            padded = F.pad(x, (padding,) * 4)
            height, width = x.shape[-2:]
            taps = [(padded[:, :, i * dilation:i * dilation + height, j * dilation:j * dilation + width] * grad)
                    .sum(dim=(0, 2, 3)) for i in range(size) for j in range(size)]
            grad_weight = torch.stack(taps, dim=1).reshape(weight.shape)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad.sum(dim=(0, 2, 3))
        return grad_x, grad_weight, grad_bias, None


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise ``kernel_size`` x ``kernel_size`` convolution with 'same' padding at ``dilation``; dilated and
    training on the CPU, its gradients come from :class:`_DilatedDepthwiseOnCpu` (the same values, faster), and
    dilated :data:`WIDE_DILATION` or more on the CPU it reads standard (NCHW) memory."""

    def __init__(self, channels: int, kernel_size: int = 3, dilation: int = 1) -> None:
        super().__init__(channels, channels, kernel_size, padding=dilation * (kernel_size // 2), dilation=dilation,
                         groups=channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and self.dilation[0] >= WIDE_DILATION:
            # A layer norm's permutes leave channels-last memory, on which the CPU's widely dilated depthwise
            # convolution ran about 5x slower (docs/decisions.md, "Widely dilated convolutions on the CPU").
            x = x.contiguous()
        if self.dilation[0] > 1 and x.device.type == "cpu" and torch.is_grad_enabled():
            return _DilatedDepthwiseOnCpu.apply(x, self.weight, self.bias, self.dilation[0])
        return super().forward(x)


class LayerNorm2d(nn.Module):
    """Layer norm over channels at each pixel (never mixes pixels, so it keeps a blind spot intact)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them (NAFNet's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x.chunk(2, dim=1)
        return first * second


class GatedBlock(nn.Module):
    """NAFNet block: norm -> 1x1 -> 3x3 depthwise -> gate [-> channel attention] -> 1x1, then a gated FFN.

    Both branches are residual with learned scales initialised at zero, so a fresh block is the identity.

    Args:
        channels: feature channels in and out.
        dilation: dilation of the depthwise 3x3 conv (2 in blind-spot networks, to skip the blind pixel).
        channel_attention: global-pool channel attention; it mixes every pixel, so blind-spot networks
            must turn it off.
        expansion: channel expansion inside both branches.
        time_channels: size of a conditioning vector (a diffusion timestep embedding) that scales and shifts
            the first normalisation per channel (FiLM); 0 for none.
    """

    def __init__(self, channels: int, dilation: int = 1, channel_attention: bool = True, expansion: int = 2,
                 time_channels: int = 0) -> None:
        super().__init__()
        hidden = channels * expansion
        self.norm1 = LayerNorm2d(channels)
        self.expand = nn.Conv2d(channels, hidden, 1)
        self.depthwise = DepthwiseConv2d(hidden, dilation=dilation)
        self.gate = SimpleGate()
        self.attention = (
            nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(hidden // 2, hidden // 2, 1))
            if channel_attention else None
        )
        self.project = nn.Conv2d(hidden // 2, channels, 1)
        self.norm2 = LayerNorm2d(channels)
        self.ffn_expand = nn.Conv2d(channels, hidden, 1)
        self.ffn_project = nn.Conv2d(hidden // 2, channels, 1)
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.modulation = nn.Linear(time_channels, 2 * channels) if time_channels else None

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        y = self.norm1(x)
        if self.modulation is not None:
            scale, shift = self.modulation(condition)[:, :, None, None].chunk(2, dim=1)
            y = y * (1 + scale) + shift
        y = self.gate(self.depthwise(self.expand(y)))
        if self.attention is not None:
            y = y * self.attention(y)
        x = x + self.beta * self.project(y)
        y = self.ffn_project(self.gate(self.ffn_expand(self.norm2(x))))
        return x + self.gamma * y


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad the bottom/right of ``x`` so height and width are multiples of ``multiple``.

    Returns the padded tensor and the original (height, width) to crop back to. Reflection (the default,
    not edge replication) puts each mirrored copy of a pixel at an even offset from it, which a blind-spot
    network with dilation 2 never sees.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (height, width)
