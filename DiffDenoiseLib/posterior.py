"""The blind-spot estimate combined with the noisy pixel it never saw.

A blind-spot network predicts each pixel from its surroundings only, so it discards the one measurement that
says most about that pixel. Laine et al. (2019, "High-quality self-supervised deep image denoising") put it
back with Bayes' rule: given the surroundings, the clean pixel has mean ``mu`` (the BSN output) and some
variance ``s2``; the noisy pixel adds an independent measurement of variance ``sigma2``; the posterior mean is

    mu + s2 / (s2 + sigma2) * (y - mu).

Where the BSN is sure (flat regions, ``s2`` near 0) the noisy pixel is ignored and no noise comes back; at
edges and fine detail, where the surroundings leave the pixel uncertain, it takes a larger share.

``s2`` is estimated from the residuals ``y - mu`` of the neighbouring pixels (their mean square is
``s2 + sigma2`` when the BSN output is the conditional mean), excluding the pixel itself so that the weight
does not depend on its own noise. Where that local estimate could be noise alone (within
``THRESHOLD_SPREADS`` of its sampling spread above ``sigma2``) ``s2`` is taken as 0: without the threshold
the weight picks up part of the noise in flat regions. The measurements: docs/decisions.md, "The noisy pixel
the blind spot leaves out".

For spatially correlated noise the same rule holds: the LG-BPN's blind patch keeps the pixel's noise
independent of the estimate. The neighbours' residuals are then correlated, so their mean square spreads more
and the threshold rises with the noise's correlation (without that factor SSIM falls below the BSN's).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from .noise.model import NoiseModel

# Neighbourhood (slices, rows, columns) whose residuals estimate the BSN's uncertainty at a pixel: 3 slices
# of a volume (the uncertainty varies smoothly through the volume: 3 slices did better than 1 even on the
# 4 mm knee, by 0.12 dB / 0.002 SSIM with Gaussian noise and 0.12 dB / 0.001 with Poisson), a larger square on
# a 2D image for about as many residuals.
VOLUME_WINDOW = (3, 7, 7)
IMAGE_WINDOW = (1, 9, 9)
# How many sampling spreads of the residuals' mean square above the noise variance count as uncertainty
# (2: SSIM at the BSN's on MNI; 1.5 gave 0.07 dB more PSNR and 0.002 less SSIM there).
THRESHOLD_SPREADS = 2.0


def spread_factor(kernel: np.ndarray) -> float:
    """How much more the mean square of noise coloured by ``kernel`` (unit L2 norm) spreads than that of white
    noise over the same pixels: the root of the summed squared autocorrelation (1 for white noise)."""
    autocorrelation = fftconvolve(kernel, kernel[::-1, ::-1])
    return float(np.sqrt((autocorrelation**2).sum()))


def combine_with_noisy(noisy: np.ndarray, estimate: np.ndarray, noise: NoiseModel,
                       variance_factor: float = 1.0) -> np.ndarray:
    """The posterior mean of (N, 1, H, W) noisy slices given their blind-spot ``estimate``, for the noise of
    ``noise`` (its level at the estimate) times ``variance_factor`` in variance (for a recorrupted copy);
    slices of a volume (N >= 3) share the estimate of the uncertainty with their neighbouring slices."""
    window = VOLUME_WINDOW if len(noisy) >= VOLUME_WINDOW[0] else IMAGE_WINDOW
    residual = (noisy[:, 0] - estimate[:, 0]).astype(np.float32)
    noise_variance = noise.std(estimate[:, 0]) ** 2 * np.float32(variance_factor)
    count = _neighbour_count(residual.shape, window)
    squares = _neighbour_mean(residual * residual, window, count)
    # The neighbours' residuals carry the neighbours' noise: with signal-dependent noise next to an edge that
    # is not the pixel's own level (knee, Poisson 30: SSIM 0.853 against the BSN's 0.854 with the pixel's,
    # 0.861 with the neighbours').
    neighbours_noise = _neighbour_mean(noise_variance, window, count)
    # for white Gaussian residuals the mean of n squares spreads by sigma2 * sqrt(2 / n)
    spread = THRESHOLD_SPREADS * spread_factor(noise.kernel) * np.sqrt(2 / count)
    uncertainty = np.maximum(squares - neighbours_noise * (1 + spread), 0)
    weight = uncertainty / (uncertainty + np.maximum(noise_variance, np.finfo(np.float32).tiny))
    return (estimate[:, 0] + weight * residual)[:, None].astype(np.float32)


# Only pixels inside the image count as neighbours: a mirrored border would count some pixels near it twice,
# the centre itself among them.
def _neighbour_count(shape: tuple[int, ...], window: tuple[int, int, int]) -> np.ndarray:
    """How many pixels of each pixel's ``window`` lie inside an image of ``shape``, the pixel itself excluded."""
    return ndimage.uniform_filter(np.ones(shape, np.float32), window, mode="constant") * float(np.prod(window)) - 1


def _neighbour_mean(values: np.ndarray, window: tuple[int, int, int], count: np.ndarray) -> np.ndarray:
    """The mean of (N, H, W) ``values`` over each pixel's ``window`` without the pixel itself (``count``
    pixels: :func:`_neighbour_count`)."""
    window_sum = ndimage.uniform_filter(values, window, mode="constant") * float(np.prod(window))
    return (window_sum - values) / count
