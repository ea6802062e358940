"""Empirical Wiener filtering with the blind-spot estimate as its pilot, blended with that estimate.

The combination with the noisy pixel (:mod:`.posterior`) puts back each pixel's own measurement one pixel at a
time. A Wiener filter in a local transform puts back what the whole patch measured: BM3D's second stage (Dabov
et al. 2007, "Image denoising by sparse 3-D transform-domain collaborative filtering") shrinks each transform
coefficient of the noisy patch by ``P^2 / (P^2 + S)``, with ``P`` the coefficient of a pilot estimate and
``S`` the noise variance of that coefficient. Here the pilot is the BSN estimate and the transform the DCT
of every 8 x 8 patch (stride 1, no block matching), or of every patch of 8 x 8 pixels across a few adjacent
slices of a volume whose slices share anatomy and not noise (what BM4D's 3D blocks gain from); each pixel is
the average of the patch estimates that cover it, weighted as in BM3D by ``1 / sum(W^2 S)``, so patches whose
noise was kept weigh less. ``S`` is the noise model's variance at the pilot's mean over the patch
(signal-dependent noise), times the coefficient's variance under the noise's in-plane colouring kernel (1 for
white noise).

The patch mean (the DC coefficient) is the pilot's, not a shrunk noisy one: its gain ``P^2 / (P^2 + S)`` is
about 1 wherever the image is not near 0 in the normalised units, so the noisy patch mean would pass whole,
and the overlapping patch means add up to low-frequency noise, which SSIM punishes hardest in flat and empty
regions; the pilot's error averages out over the patch (docs/decisions.md, "Where the code's choices were
measured").

Neither estimate is better everywhere, and their errors are only partly shared, so a mix of the two beats
both. The mixing weight is fitted without clean data on the recorrupted copy that also trains the diffusion
stage (Pang et al. 2021, "Recorrupted-to-Recorrupted"): for estimates made from the first copy, the mean square
difference from the second copy, whose noise is independent, is their squared error against the clean image
plus a constant, so the least-squares weight against the second copy is the weight that minimises the error.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import fftconvolve

from .noise.model import NoiseModel

PATCH = 8  # BM3D's Wiener-stage block size


@functools.cache
def dct_matrix(size: int) -> np.ndarray:
    """The (size, size) orthonormal DCT-II matrix: row ``k`` is the ``k``-th cosine (row 0 the mean)."""
    k = np.arange(size)
    matrix = np.sqrt(2 / size) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * size))
    matrix[0] /= np.sqrt(2)
    return matrix


@functools.cache
def dct_basis(size: int, depth: int = 1) -> np.ndarray:
    """The (depth * size^2, depth, size, size) orthonormal DCT-II basis of depth x size x size patches (the 2D
    basis for ``depth`` 1); element ``t * size^2 + u * size + v`` is the product of the ``t``-th cosine through
    the slices and the ``u``-th and ``v``-th in the plane, element 0 the patch mean."""
    basis = np.einsum("ti,uj,vk->tuvijk", dct_matrix(depth), dct_matrix(size), dct_matrix(size))
    return basis.reshape(depth * size * size, depth, size, size)


def coefficient_variances(kernel: np.ndarray, size: int = PATCH, depth: int = 1) -> np.ndarray:
    """The variance of each DCT coefficient of unit-variance noise coloured in-plane by ``kernel`` (unit L2
    norm) and independent between slices: the squared norm of the basis patch convolved with the kernel (all 1
    for white noise)."""
    return np.array([np.sum(fftconvolve(kernel[None], patch, mode="full") ** 2)
                     for patch in dct_basis(size, depth)])


def wiener_filter(noisy: np.ndarray, pilot: np.ndarray, noise: NoiseModel, variance_factor: float = 1.0,
                  size: int = PATCH, depth: int = 1) -> np.ndarray:
    """The empirical Wiener estimate of (N, 1, H, W) noisy slices given a (N, 1, H, W) ``pilot`` estimate of
    the same slices, for the noise of ``noise`` times ``variance_factor`` in variance (for a recorrupted
    copy). Patches span ``depth`` adjacent slices (1: each slice alone; more only for noise independent between
    slices, at most N). Slices smaller than ``size`` are returned as the pilot."""
    if min(noisy.shape[-2:]) < size:
        return pilot.astype(np.float32)
    if not 1 <= depth <= len(noisy):
        raise ValueError(f"patch depth {depth} needs 1 to {len(noisy)} slices")
    transform = PatchDct(size, depth)
    gains = torch.from_numpy(coefficient_variances(noise.kernel, size, depth)).float()[None, :, None, None, None]
    ones = torch.ones(1, 1, depth, size, size)

    def volume(values: np.ndarray) -> torch.Tensor:  # (N, 1, H, W) -> (1, 1, N, H, W)
        return torch.from_numpy(np.ascontiguousarray(values[:, 0], np.float32))[None, None]

    y, p = volume(noisy), volume(pilot)
    level = volume(noise.std(pilot) ** 2 * np.float32(variance_factor))
    total = torch.zeros_like(y, dtype=torch.float64)
    weights = torch.zeros_like(total)
    # one patch position along the slices at a time: the coefficients take depth * size^2 times its memory
    for first in range(len(noisy) - depth + 1):
        window = np.s_[:, :, first:first + depth]
        variance = gains * F.avg_pool3d(level[window], (depth, size, size), stride=1)
        power = transform.analyse(p[window])
        mean = power[:, :1].clone()  # the patch mean comes from the pilot (module docstring)
        shrink = power.square_() / (power + variance).clamp_min_(torch.finfo(torch.float32).tiny)
        shrink[:, 0] = 0
        noise_kept = (shrink * variance).mul_(shrink).sum(dim=1, keepdim=True)
        patch_weight = 1 / (noise_kept + torch.finfo(torch.float32).eps)
        coefficients = transform.analyse(y[window]).mul_(shrink)
        coefficients[:, :1] = mean
        total[window] += transform.synthesise(coefficients.mul_(patch_weight))
        weights[window] += F.conv_transpose3d(patch_weight, ones)
    return (total / weights)[0, 0, :, None].numpy().astype(np.float32)


class PatchDct:
    """The DCT of every depth x size x size patch of a (1, 1, D, H, W) volume (stride 1) and its adjoint, one
    axis at a time: the same coefficients as a convolution with :func:`dct_basis` (in its order), at about
    ``3 * size`` instead of ``depth * size^2`` multiplications per coefficient."""

    def __init__(self, size: int, depth: int) -> None:
        self.size, self.depth = size, depth
        self.through = torch.from_numpy(dct_matrix(depth)).float()
        self.in_plane = torch.from_numpy(dct_matrix(size)).float()

    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 1, depth, H, W) -> (1, depth * size^2, 1, H - size + 1, W - size + 1) coefficients."""
        (depth, height, width), size = x.shape[2:], self.size
        x = (self.through @ x.reshape(depth, height * width)).reshape(depth, 1, height, width)
        # each row and column transform as a batch of one-channel 2D convolutions: faster than grouped 3D ones
        x = F.conv2d(x, self.in_plane.reshape(size, 1, size, 1))
        x = F.conv2d(x.reshape(depth * size, 1, height - size + 1, width), self.in_plane.reshape(size, 1, 1, size))
        return x.reshape(1, depth * size * size, 1, height - size + 1, width - size + 1)

    def synthesise(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`analyse`: every patch's coefficients put back as pixels and summed, (1, 1,
        depth, H, W)."""
        size, depth = self.size, self.depth
        # grouped 3D transposed convolutions: here faster than batches of 2D ones
        x = F.conv_transpose3d(coefficients, self.in_plane.repeat(depth * size, 1).reshape(-1, 1, 1, 1, size),
                               groups=depth * size)
        x = F.conv_transpose3d(x, self.in_plane.repeat(depth, 1).reshape(-1, 1, 1, size, 1), groups=depth)
        return F.conv_transpose3d(x, self.through.reshape(depth, 1, depth, 1, 1))


def blend_weight(estimate: np.ndarray, filtered: np.ndarray, target: np.ndarray) -> float:
    """The weight ``w`` in [0, 1] of ``w * estimate + (1 - w) * filtered`` that best fits ``target`` in least
    squares: with both made from a recorrupted copy and ``target`` its independent twin, the weight that
    minimises the error against the clean image."""
    difference = (estimate - filtered).astype(np.float64).ravel()
    power = float(difference @ difference)
    if power == 0:
        return 1.0
    return float(np.clip(difference @ (target - filtered).astype(np.float64).ravel() / power, 0.0, 1.0))


def blend(estimate: np.ndarray, filtered: np.ndarray, weight: float) -> np.ndarray:
    """``weight * estimate + (1 - weight) * filtered`` (float32)."""
    return (weight * estimate + (1 - weight) * filtered).astype(np.float32)


def blend_with_filtering(noisy: np.ndarray, estimate: np.ndarray, noise: NoiseModel, weight: float,
                         depth: int = 1) -> np.ndarray:
    """``estimate`` of (N, 1, H, W) ``noisy`` slices blended by ``weight`` with its Wiener filtering
    (:func:`wiener_filter` with ``estimate`` as the pilot, patches ``depth`` slices deep)."""
    return blend(estimate, wiener_filter(noisy, estimate, noise, depth=depth), weight)
