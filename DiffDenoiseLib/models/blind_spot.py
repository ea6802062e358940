"""What every blind-spot network here shares: pixel-shuffle downsampling (PD) around the network, padding for
any input size, R3 refinement and the self-ensemble at inference, and the slice-context input channels.

A blind-spot network predicts each pixel without seeing it (Noise2Void, Krull et al., CVPR 2019,
https://arxiv.org/abs/1811.10980), so training it to reproduce the noisy input learns a denoiser. PD with
factor > 1 (AP-BSN, Lee et al., CVPR 2022, https://arxiv.org/abs/2203.11799) splits the image into sub-images
whose noise is less correlated; R3 re-runs the network without PD on copies where a fraction of the pixels is
the noisy input, and averages. :class:`BlindSpotNetwork` does this around the network a subclass builds
(:class:`.puca.PUCA`, :class:`.lgbpn.LGBPN`).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from .blocks import dihedral_average, pad_to_multiple


class ContextChannels:
    """The input channels of a blind-spot config with ``in_channels``, ``context_slices`` and ``blind_context``
    (the slice and its neighbours, :mod:`..context`)."""

    in_channels: int
    context_slices: int
    blind_context: bool

    @property
    def input_channels(self) -> int:
        """Channels the network reads: the image's, then those of each neighbouring slice."""
        return self.in_channels * (1 + 2 * self.context_slices)

    @property
    def blind_channels(self) -> int:
        """Leading input channels whose blind spot is masked: the slice's own, or all of them."""
        return self.input_channels if self.blind_context else self.in_channels


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


class BlindSpotNetwork(nn.Module):
    """A blind-spot network with pixel-shuffle downsampling, padding for any input size and R3 refinement.

    Takes (N, C, H, W) images (C: the config's ``input_channels``, the slice and its neighbours) of any size at
    least :attr:`min_size` on each side and returns the denoised slice, (N, 1, H, W). Uses ``pd_train`` in
    training mode and ``pd_infer`` (plus R3 when configured) in eval mode, averaged over ``self_ensemble``
    flips and turns of the input (each of them blind at every pixel). Subclasses name their ``architecture``
    (the bundle's key), build the network of one sub-image (:meth:`_build`) and choose the padding of the
    image before PD (``pd_padding``) and of each sub-image (``inner_padding``).
    """

    architecture: str
    pd_padding: str
    inner_padding: str

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.net = self._build(config)

    def _build(self, config) -> nn.Module:
        """The network of one sub-image; its ``multiple`` is the size its input must be a multiple of."""
        raise NotImplementedError

    @property
    def min_size(self) -> int:
        return self.config.min_size

    def config_dict(self) -> dict:
        return asdict(self.config)

    def blind_spot_forward(self, x: torch.Tensor, pd: int) -> torch.Tensor:
        """Run the network with pixel-shuffle factor ``pd``; the output never depends on the same input pixel."""
        # ``pd_padding`` pads the whole image, ``inner_padding`` each sub-image: each network sets the two
        # so that no padded copy of a pixel reaches that pixel's output (PUCA, LG-BPN: see their modules).
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
