"""A model of an image's noise that can draw more of it: how its variance depends on the signal (noise level
function) and how it is correlated in space (colouring kernel), both fitted in flat regions (judged by the BSN
output). The colouring of correlated noise needs flat areas of about 32 px (``CORRELATED_BLOCK``): with
smaller ones, edges enter the analysed blocks and lengthen the fitted correlation.

Recorruption (Pang et al. 2021) splits a noisy image y into y + a z and y - z / a, whose noises are independent
only if z has the covariance of the image's noise. A single global sigma of white noise is right for i.i.d.
Gaussian noise only: Poisson noise is stronger in bright regions, correlated noise has power at short lags.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

from .noise import image_blocks

BLOCK = 16  # px per side of the analysed blocks (i.i.d. noise)
CORRELATED_BLOCK = 32  # larger blocks for correlated noise: its spectrum has detail at low frequencies
LEVEL_BINS = 8  # intensity bins of the noise level function
FLAT_FRACTION = 0.3  # flattest share analysed: of each intensity bin (i.i.d.), of all blocks (correlated)


@dataclass(frozen=True)
class NoiseModel:
    """Noise of variance ``variances`` at signal ``intensities`` (linear in between, constant outside),
    coloured by ``kernel`` (unit L2 norm: a centred delta for white noise)."""

    intensities: np.ndarray
    variances: np.ndarray
    kernel: np.ndarray

    @classmethod
    def white(cls, sigma: float) -> NoiseModel:
        """i.i.d. noise of one standard deviation everywhere."""
        return cls(np.zeros(1), np.full(1, float(sigma) ** 2), np.ones((1, 1)))

    def std(self, signal: np.ndarray) -> np.ndarray:
        """Noise standard deviation at each pixel of ``signal`` (the noise-free image estimate)."""
        return np.sqrt(np.interp(signal, self.intensities, self.variances)).astype(np.float32)

    def draw(self, signal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Noise for (N, H, W) ``signal``: white noise coloured by the kernel slice by slice, scaled per pixel."""
        white = rng.standard_normal(signal.shape).astype(np.float32)
        coloured = fftconvolve(white, self.kernel[None].astype(np.float32), mode="same", axes=(1, 2))
        return (coloured * self.std(signal)).astype(np.float32)

    def describe(self) -> dict:
        """JSON-friendly summary: the noise level function and the lag-1 correlation of the colouring."""
        k = self.kernel  # unit L2 norm: its autocorrelation at a lag is the noise correlation at that lag
        lag1 = 0.5 * ((k[:, 1:] * k[:, :-1]).sum() + (k[1:] * k[:-1]).sum())
        return {"intensities": self.intensities.round(5).tolist(),
                "std": np.sqrt(self.variances).round(5).tolist(),
                "neighbour_correlation": round(float(lag1), 4)}


def fit_noise_model(noisy: np.ndarray, signal: np.ndarray, correlated: bool) -> NoiseModel:
    """Fit a :class:`NoiseModel` to (N, H, W) noisy slices and a noise-free estimate of them (the BSN output).

    Blocks are judged by the signal estimate, and the flattest analysed, where what varies is noise and not
    anatomy. ``correlated`` is the noise analysis' verdict:

    * i.i.d. noise: blocks are binned by signal level and the flattest of each bin analysed; a block's noise
      variance is the mean square of the noisy image's finest diagonal (Haar HH) detail, which keeps white
      noise whole and cancels locally linear signal; the model is white. (The BSN residual would not do: it
      carries the BSN's own error, and the BSN's averaging of the neighbours' noise makes it anti-correlated
      at short lags.)
    * correlated noise: see :func:`_correlated_noise`: one level, and a colouring kernel.
    """
    if correlated:
        variance, kernel = _correlated_noise(noisy.astype(np.float64), signal.astype(np.float64))
        return NoiseModel(np.zeros(1), np.full(1, variance), kernel)
    size = min(BLOCK, *noisy.shape[1:])
    smooth = image_blocks(signal.astype(np.float64), size)
    level, structure = smooth.mean(axis=(1, 2)), smooth.std(axis=(1, 2))
    chosen = []
    edges = np.unique(np.quantile(level, np.linspace(0, 1, LEVEL_BINS + 1)))
    members = np.clip(np.searchsorted(edges, level, side="right") - 1, 0, max(len(edges) - 2, 0))
    for bin_index in np.unique(members):
        in_bin = np.flatnonzero(members == bin_index)
        chosen.append(in_bin[np.argsort(structure[in_bin])[:max(1, round(FLAT_FRACTION * len(in_bin)))]])
    y = noisy.astype(np.float64)
    diagonal = (y[:, 0:-1:2, 0:-1:2] - y[:, 0:-1:2, 1::2] - y[:, 1::2, 0:-1:2] + y[:, 1::2, 1::2]) / 2
    block_variance = (image_blocks(diagonal, size // 2) ** 2).mean(axis=(1, 2))
    return NoiseModel(np.array([level[c].mean() for c in chosen]), np.array([block_variance[c].mean() for c in chosen]),
                      np.ones((1, 1)))


def _periodograms(blocks: np.ndarray) -> np.ndarray:
    """Power spectra of (B, S, S) blocks under a Hann window (no leakage from the block edges), in units of
    variance per frequency bin."""
    size = blocks.shape[-1]
    window = np.outer(np.hanning(size + 2)[1:-1], np.hanning(size + 2)[1:-1])
    return np.abs(np.fft.fft2(blocks * window)) ** 2 / (window**2).sum()


def _remove_plane(blocks: np.ndarray) -> np.ndarray:
    """Each (S, S) block minus its least-squares plane a + b y + c x."""
    count, size, _ = blocks.shape
    rows, columns = np.mgrid[:size, :size]
    design = np.stack([np.ones(size * size), rows.ravel(), columns.ravel()], axis=1)
    coefficients = np.linalg.lstsq(design, blocks.reshape(count, -1).T, rcond=None)[0]
    return blocks - (design @ coefficients).T.reshape(count, size, size)


def _correlated_noise(noisy: np.ndarray, signal: np.ndarray) -> tuple[float, np.ndarray]:
    """(noise variance, colouring kernel) of correlated noise from the flattest blocks of the whole stack.

    * Level: the mean power of the BSN residual (block mean removed). One level for the whole image: per
      intensity bin, the flattest blocks of bright tissue still carry texture (knee, correlated sigma 0.079:
      0.086-0.12 per bin), and recorruption noise that much too strong cost an R2R network 2.2 dB.
    * Colouring: the pooled spectrum of the noisy blocks with their plane removed. The BSN residual would
      lack the noise's low frequencies, which the BSN output keeps from the ring around its blind patch (its
      colouring decorrelated too fast: lag-2 correlation 0.20 against 0.36).
    """
    size = min(CORRELATED_BLOCK, *noisy.shape[1:])
    structure = image_blocks(signal, size).std(axis=(1, 2))
    flat = np.argsort(structure)[:max(1, round(FLAT_FRACTION * len(structure)))]
    residual = image_blocks(noisy - signal, size)[flat]
    variance = float(_periodograms(residual - residual.mean(axis=(1, 2), keepdims=True)).mean())
    spectrum = _periodograms(_remove_plane(image_blocks(noisy, size)[flat])).mean(axis=0)
    if variance <= 0 or spectrum.sum() <= 0:  # a noise-free image: nothing to colour
        return 0.0, np.ones((1, 1))
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(np.sqrt(spectrum / spectrum.mean()))))
    return variance, kernel / np.sqrt((kernel**2).sum())
