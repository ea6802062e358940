"""Simulated noise, for the benchmarks, the demo and the tests.

Noise levels are relative to the image's robust intensity range (0.5th to 99.5th percentile), so ``level=0.1``
means the same visual strength on a uint8 PNG and on a float CT in Hounsfield units.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .analysis import robust_range

NoiseKind = Literal["gaussian", "poisson", "gamma", "rician", "correlated"]
NOISE_KINDS: tuple[str, ...] = ("gaussian", "poisson", "gamma", "rician", "correlated")


def correlated_gaussian(shape: tuple[int, ...], correlation_sigma: float, rng: np.random.Generator,
                        through_plane_sigma: float = 0.0) -> np.ndarray:
    """Unit-variance Gaussian noise correlated within each 2D slice (Gaussian kernel of ``correlation_sigma`` px)
    and, with ``through_plane_sigma`` (in slices), shared between neighbouring slices of a volume, as an
    interpolation or overlapping reconstructed slices share it."""
    white = rng.standard_normal(shape)
    kernel = [0.0] * (len(shape) - 2) + [correlation_sigma, correlation_sigma]
    if len(shape) > 2:
        kernel[-3] = through_plane_sigma
    field = ndimage.gaussian_filter(white, sigma=kernel, mode="wrap")
    return field / field.std()


def add_noise(clean: np.ndarray, kind: NoiseKind, level: float, seed: int = 0,
              correlation_sigma: float = 1.0, through_plane_sigma: float = 0.0) -> np.ndarray:
    """Return a noisy float32 copy of ``clean``.

    Args:
        clean: image of any dimensionality (2D slices are the last two axes).
        kind: ``gaussian`` (additive, std = level x robust range), ``correlated`` (same, but filtered in-plane
            by a Gaussian of ``correlation_sigma`` px and, in a volume, along the slices by one of
            ``through_plane_sigma`` slices), ``rician`` (magnitude of complex Gaussian noise of
            std level x range, as in MR magnitude images), ``poisson`` (photon counting with
            ``level`` = counts at the top of the robust range, the "peak"), ``gamma`` (multiplicative speckle
            with ``level`` = number of looks L; mean 1, variance 1/L).
        level: noise strength as described for each kind.
        seed: random seed; the same seed gives the same noise.
    """
    if level <= 0:
        raise InputError(f"noise level must be positive, got {level}")
    rng = np.random.default_rng(seed)
    image = clean.astype(np.float64)
    low, high = robust_range(image)
    scale = high - low
    if kind == "gaussian":
        noisy = image + level * scale * rng.standard_normal(image.shape)
    elif kind == "correlated":
        noisy = image + level * scale * correlated_gaussian(image.shape, correlation_sigma, rng,
                                                                  through_plane_sigma)
    elif kind == "rician":
        sigma = level * scale
        noisy = np.hypot(image + sigma * rng.standard_normal(image.shape), sigma * rng.standard_normal(image.shape))
    elif kind == "poisson":
        counts = np.clip((image - low) / scale, 0, None) * level
        noisy = rng.poisson(counts) / level * scale + low
    elif kind == "gamma":
        noisy = image * rng.gamma(shape=level, scale=1.0 / level, size=image.shape)
    else:
        raise InputError(f"unknown noise kind '{kind}': use one of {', '.join(NOISE_KINDS)}")
    return noisy.astype(np.float32)
