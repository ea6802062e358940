"""Empirical Wiener filtering with the blind-spot estimate as its pilot, blended with that estimate.

The combination with the noisy pixel (:mod:`.posterior`) puts back each pixel's own measurement one pixel at a
time. A Wiener filter in a local transform puts back what the whole patch measured: BM3D's second stage (Dabov
et al. 2007, "Image denoising by sparse 3-D transform-domain collaborative filtering") shrinks each transform
coefficient of the noisy patch by ``P^2 / (P^2 + S)``, with ``P`` the coefficient of a pilot estimate and
``S`` the noise variance of that coefficient. Here the pilot is the BSN estimate and the transform the 2D
DCT of every 8 x 8 patch (stride 1, no block matching); each pixel is the average of the patch estimates that
cover it, weighted as in BM3D by ``1 / sum(W^2 S)``, so patches whose noise was kept weigh less. ``S`` is the
noise model's variance at the pilot's mean over the patch (signal-dependent noise), times the coefficient's
variance under the noise's colouring kernel (1 for white noise).

The patch mean (the DC coefficient) is the pilot's, not a shrunk noisy one: its gain ``P^2 / (P^2 + S)`` is
about 1 wherever the image is not near 0 in the normalised units, so the noisy patch mean would pass whole,
and the overlapping patch means add up to low-frequency noise, which SSIM punishes hardest in flat and empty
regions (MNI, Gaussian 0.1, quick BSN: SSIM 0.823 for the filter with noisy means, 0.966 with the pilot's,
whose error averages out over the patch; a session measurement on the 24 central slices).

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

from .noise_model import NoiseModel

PATCH = 8  # BM3D's Wiener-stage block size


@functools.cache
def dct_basis(size: int) -> np.ndarray:
    """The (size^2, size, size) orthonormal 2D DCT-II basis images."""
    n = np.arange(size)
    cosines = np.sqrt(2 / size) * np.cos(np.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size))
    cosines[0] /= np.sqrt(2)
    return np.einsum("ui,vj->uvij", cosines, cosines).reshape(size * size, size, size)


def coefficient_variances(kernel: np.ndarray, size: int = PATCH) -> np.ndarray:
    """The variance of each DCT coefficient of unit-variance noise coloured by ``kernel`` (unit L2 norm):
    the squared norm of the basis image convolved with the kernel (all 1 for white noise)."""
    return np.array([np.sum(fftconvolve(kernel, image, mode="full") ** 2) for image in dct_basis(size)])


def wiener_filter(noisy: np.ndarray, pilot: np.ndarray, noise: NoiseModel, variance_factor: float = 1.0,
                  size: int = PATCH) -> np.ndarray:
    """The empirical Wiener estimate of (N, 1, H, W) noisy slices given a (N, 1, H, W) ``pilot`` estimate of
    the same slices, for the noise of ``noise`` times ``variance_factor`` in variance (for a recorrupted
    copy). Slices smaller than ``size`` are returned as the pilot."""
    if min(noisy.shape[-2:]) < size:
        return pilot.astype(np.float32)
    basis = torch.from_numpy(dct_basis(size)).float()[:, None]
    gains = torch.from_numpy(coefficient_variances(noise.kernel, size)).float()[None, :, None, None]
    ones = torch.ones(1, 1, size, size)
    filtered = np.empty(noisy.shape, np.float32)
    for index in range(len(noisy)):  # one slice at a time: the coefficients take size^2 times its memory
        y = torch.from_numpy(np.ascontiguousarray(noisy[index:index + 1], np.float32))
        p = torch.from_numpy(np.ascontiguousarray(pilot[index:index + 1], np.float32))
        level = torch.from_numpy(noise.std(pilot[index:index + 1]) ** 2 * np.float32(variance_factor))
        variance = gains * F.avg_pool2d(level, size, stride=1)
        pilot_coefficients = F.conv2d(p, basis)
        shrink = pilot_coefficients**2 / (pilot_coefficients**2 + variance).clamp_min(torch.finfo(torch.float32).tiny)
        shrink[:, 0] = 0  # the patch mean comes from the pilot (module docstring)
        coefficients = shrink * F.conv2d(y, basis)
        coefficients[:, 0] = pilot_coefficients[:, 0]
        patch_weight = 1 / (torch.sum(shrink**2 * variance, dim=1, keepdim=True) + torch.finfo(torch.float32).eps)
        estimate = F.conv_transpose2d(coefficients * patch_weight, basis)
        filtered[index] = (estimate / F.conv_transpose2d(patch_weight, ones)).numpy()
    return filtered


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


def blend_with_filtering(noisy: np.ndarray, estimate: np.ndarray, noise: NoiseModel, weight: float) -> np.ndarray:
    """``estimate`` of (N, 1, H, W) ``noisy`` slices blended by ``weight`` with its Wiener filtering
    (:func:`wiener_filter` with ``estimate`` as the pilot)."""
    return blend(estimate, wiener_filter(noisy, estimate, noise), weight)
