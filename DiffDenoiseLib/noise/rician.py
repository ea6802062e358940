"""Rician noise: the magnitude of a complex signal whose two channels carry Gaussian noise of one sigma.

Magnitude MR images have it. It is not zero-mean: a pixel of amplitude ``nu`` measures on average

    E[y] = sigma sqrt(pi / 2) L_1/2(-nu^2 / (2 sigma^2))      (L_1/2: a Laguerre function)

which is about ``sqrt(nu^2 + sigma^2)`` in bright tissue and ``1.25 sigma`` where there is no signal at all,
and its variance falls from ``sigma^2`` there to ``(2 - pi / 2) sigma^2`` (0.43 sigma^2) in the background.
A network trained with a squared error on such images learns ``E[y]``, the biased mean: an empty background
comes out at 1.25 sigma instead of 0.
:func:`amplitude` inverts the mean (as in Koay & Basser 2006), and :func:`fit_sigma` finds ``sigma`` from the
noise level function, whose fall at low signal is also what tells Rician noise from Gaussian.
"""

from __future__ import annotations

import numpy as np
from scipy.special import i0e, i1e

_SNR = np.concatenate([np.linspace(0.0, 4.0, 401), np.linspace(4.01, 40.0, 600)])  # nu / sigma


def normalised_mean(snr: np.ndarray) -> np.ndarray:
    """E[y] / sigma of Rician noise at amplitude ``snr`` = nu / sigma (exponentially scaled Bessel functions
    keep it finite at any SNR)."""
    t = np.asarray(snr, dtype=np.float64) ** 2 / 4
    return np.sqrt(np.pi / 2) * ((1 + 2 * t) * i0e(t) + 2 * t * i1e(t))


_MEAN = normalised_mean(_SNR)
_VARIANCE = 2 + _SNR**2 - _MEAN**2  # Var[y] / sigma^2 = (E[y^2] = nu^2 + 2 sigma^2) - E[y]^2


def variance_at_mean(mean: np.ndarray, sigma: float) -> np.ndarray:
    """The variance of Rician noise of ``sigma`` at pixels whose mean (the biased, measured one) is ``mean``;
    means below the floor are taken as the floor."""
    return sigma**2 * np.interp(np.asarray(mean, dtype=np.float64) / sigma, _MEAN, _VARIANCE)


def amplitude(mean: np.ndarray, sigma: float) -> np.ndarray:
    """The amplitude ``nu`` whose Rician mean is ``mean`` (0 at or below the floor of 1.25 sigma)."""
    ratio = np.asarray(mean, dtype=np.float64) / sigma
    # beyond the table E[y] = sqrt(nu^2 + sigma^2) to within 1e-5 sigma
    inverted = np.where(ratio <= _MEAN[-1], np.interp(ratio, _MEAN, _SNR, left=0.0),
                        np.sqrt(np.maximum(ratio**2 - 1, 0.0)))
    return sigma * inverted


def fit_sigma(means: np.ndarray, variances: np.ndarray) -> float:
    """The Rician sigma whose level function fits measured ``variances`` at ``means`` (signal above true zero)
    best, in mean squared log-ratio. A grid over sigma: the error is not smooth where the floor cuts the level
    function."""
    means, variances = np.asarray(means, dtype=np.float64), np.asarray(variances, dtype=np.float64)
    candidates = np.sqrt(variances.max()) * np.geomspace(0.5, 2.0, 241)
    errors = [float(np.mean(np.log(variances / variance_at_mean(means, sigma)) ** 2)) for sigma in candidates]
    return float(candidates[int(np.argmin(errors))])
