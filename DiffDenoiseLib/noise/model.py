"""A model of an image's noise that can draw more of it: how its variance depends on the signal (noise level
function) and how it is correlated in space (colouring kernel), both fitted in flat regions (judged by the BSN
output). The colouring of correlated noise needs flat areas of about 32 px (``CORRELATED_BLOCK``): with
smaller ones, edges enter the analysed blocks and lengthen the fitted correlation.

Recorruption (Pang et al. 2021) splits a noisy image y into y + a z and y - z / a, whose noises are independent
only if z has the covariance of the image's noise. A single global sigma of white noise is right for i.i.d.
Gaussian noise only: Poisson noise is stronger in bright regions, correlated noise has power at short lags.
And even with the right covariance, Gaussian z gives independent halves only for Gaussian noise: the halves
of skewed noise stay dependent through the third moment. So the model also knows its *family*
(:data:`FAMILIES`), and :meth:`NoiseModel.split` uses the split that is exact for it (Generalized R2R,
Monroy et al. 2025): binomial thinning of the counts for Poisson noise, a beta split of the gamma variate for
multiplicative speckle, Gaussian recorruption for Gaussian noise (also used for Rician and correlated noise).
Rician noise is also biased (:mod:`.rician`): :meth:`NoiseModel.unbiased` takes its bias out of an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve

from . import rician
from .analysis import image_blocks, remove_plane

BLOCK = 16  # px per side of the analysed blocks (i.i.d. noise)
CORRELATED_BLOCK = 32  # larger blocks for correlated noise: its spectrum has detail at low frequencies
LEVEL_BINS = 8  # intensity bins of the noise level function
FLAT_FRACTION = 0.3  # flattest share of each intensity bin analysed (i.i.d. noise)
CORRELATED_FLAT_FRACTION = 0.05  # flattest share of all blocks analysed (correlated noise)
CORRELATED_MIN_BLOCKS = 16  # but at least this many: the spectrum of fewer is too noisy to colour with
FAMILIES = ("gaussian", "poisson", "gamma", "rician")
NoiseFamily = Literal["gaussian", "poisson", "gamma", "rician"]


@dataclass(frozen=True)
class NoiseModel:
    """Noise of variance ``variances`` at signal ``intensities`` (linear in between, constant outside),
    coloured by ``kernel`` (unit L2 norm: a centred delta for white noise), of one ``family``:

    * ``gaussian``: additive;
    * ``poisson``: ``y = offset + gain * k`` with ``k`` Poisson counts (variance ``gain * (signal - offset)``);
    * ``gamma``: ``y = offset + (x - offset) * g`` with ``g`` gamma of mean 1 and variance ``gain`` (1 / looks);
    * ``rician``: ``y = offset + |x - offset + n|`` with ``n`` complex Gaussian of variance ``gain`` per channel.
    """

    intensities: np.ndarray
    variances: np.ndarray
    kernel: np.ndarray
    family: NoiseFamily = "gaussian"
    gain: float = 0.0
    offset: float = 0.0

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

    def split(self, noisy: np.ndarray, signal: np.ndarray, alpha: float,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Split (N, H, W) ``noisy`` slices into two noisy copies of the same signal whose noises are
        independent: the first with ``1 + alpha^2`` times the noise variance, the second ``1 + 1 / alpha^2``
        times (the variances of Gaussian recorruption ``y + alpha z``, ``y - z / alpha``). ``signal`` (the BSN
        output) sets the level of Gaussian z; the Poisson and gamma splits need no signal estimate."""
        keep = 1.0 / (1.0 + alpha**2)  # the first copy's share: variance / keep = (1 + alpha^2) x
        y = noisy.astype(np.float64)
        if self.family == "poisson":
            counts = np.maximum(y - self.offset, 0.0) / self.gain
            # Rounded, not floored: with a gain fitted a little too large, exact counts k fall just below k, and
            # a floor would keep a whole count (k - 1 + 0.99) in both copies, sharing noise between them (knee,
            # Poisson 30, gain 0.3% off: copy and twin errors correlated 0.86 in dark tissue). What is left of a
            # count (real images are not exact counts) is at most half of one and stays in both copies unchanged.
            whole = np.round(counts)
            fraction = counts - whole
            first = rng.binomial(whole.astype(np.int64), keep)  # thinning: two independent Poisson variates
            halves = (first / keep + fraction, (whole - first) / (1 - keep) + fraction)
            return tuple((self.offset + self.gain * h).astype(np.float32) for h in halves)  # type: ignore[return-value]
        if self.family == "gamma":
            looks = 1.0 / self.gain
            # Beta-gamma algebra: for G ~ Gamma(L) and B ~ Beta(p L, (1 - p) L) independent of it, G B and
            # G (1 - B) are independent Gamma(p L) and Gamma((1 - p) L) variates.
            share = rng.beta(keep * looks, (1 - keep) * looks, size=y.shape)
            excess = y - self.offset
            halves = (excess * share / keep, excess * (1 - share) / (1 - keep))
            return tuple((self.offset + h).astype(np.float32) for h in halves)  # type: ignore[return-value]
        z = self.draw(signal, rng)
        return (noisy + alpha * z).astype(np.float32), (noisy - z / alpha).astype(np.float32)

    def unbiased(self, estimate: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
        """The noise-free signal whose noisy mean ``estimate`` is (what a network trained on the noisy image
        learns): ``estimate`` itself for zero-mean noise, the Rician amplitude for Rician noise.

        With a ``reference`` estimate of the same mean (the BSN's, which later stages refine), the bias is
        taken out of the reference and ``estimate``'s departure from it is kept as it is. The Rician mean
        rises with slope 1 in bright tissue but flat just above its floor, so inverting ``estimate`` itself
        would multiply its own error there without bound (a later stage's spread on an empty background came
        back as signal); kept at slope 1, the departure is exact in bright tissue and not amplified in the
        dark (docs/decisions.md, "Rician noise and its bias")."""
        if self.family != "rician":
            return estimate
        if reference is None:
            return (self.offset + rician.amplitude(estimate - self.offset, np.sqrt(self.gain))).astype(estimate.dtype)
        unbiased_reference = self.unbiased(reference)
        return np.maximum(unbiased_reference + (estimate - reference), self.offset).astype(estimate.dtype)

    def describe(self) -> dict:
        """JSON-friendly summary: family, the noise level function and the lag-1 correlation of the colouring."""
        k = self.kernel  # unit L2 norm: its autocorrelation at a lag is the noise correlation at that lag
        lag1 = 0.5 * ((k[:, 1:] * k[:, :-1]).sum() + (k[1:] * k[:-1]).sum())
        family = {"family": self.family} | ({"gain": round(self.gain, 8), "offset": round(self.offset, 6)}
                                            if self.family != "gaussian" else {})
        return family | {"intensities": self.intensities.round(5).tolist(),
                         "std": np.sqrt(self.variances).round(5).tolist(),
                         "neighbour_correlation": round(float(lag1), 4)}


# A signal-dependent family is chosen only when it explains the level function this much better (mean squared
# log-ratio of fitted to measured variance) than one constant level, and the variance spans this factor.
FAMILY_ADVANTAGE = 4.0
FAMILY_SPAN = 2.0


# Share of the pixels that must sit exactly at the image's minimum for it to count as an exact floor.
FLOOR_FRACTION = 1e-3
# Levels within this fraction of the level function's span above an exact floor are left out of the family
# comparison (:func:`_above_floor`).
FLOOR_MARGIN = 0.02


def exact_floor(noisy: np.ndarray) -> float | None:
    """The image's minimum when at least :data:`FLOOR_FRACTION` of its pixels take exactly that value, else None.

    Noise with a continuous distribution almost never repeats a value; a floor that many pixels share exactly is
    zero counts of Poisson-like noise (photon counting, an empty background) or a clip. It fixes where the
    counts start far better than the intercept of the level function, whose lowest bins the blocks straddling
    dark edges inflate: on MNI with Poisson noise (peak 30) that intercept put the zero count 0.06 of the range
    below the exactly-zero background, and the split then added noise to a background that had none.
    """
    lowest = noisy.min()
    return float(lowest) if np.count_nonzero(noisy == lowest) >= FLOOR_FRACTION * noisy.size else None


def with_family(model: NoiseModel, requested: str, zero: float, floor: float | None = None) -> NoiseModel:
    """``model`` with its family: ``requested`` (one of :data:`FAMILIES`), or for ``auto`` the one whose
    level function fits the measured one best: constant (Gaussian), linear in the signal (Poisson; from
    ``floor``, the noisy image's :func:`exact_floor`, when there is one) or quadratic about the intensity 0
    (gamma speckle; ``zero`` is where intensity 0 lies in the normalised units) or falling to 0.43 of its level
    towards a floor above 0 (Rician). Correlated noise (a coloured model) stays Gaussian."""
    if model.kernel.size > 1 or requested == "gaussian":
        return model
    intensities, variances = model.intensities.astype(np.float64), model.variances.astype(np.float64)
    usable = variances > 0
    if usable.sum() < 3:  # too few levels to tell a shape
        return model if requested == "auto" else _forced(model, requested, zero, floor)
    x, v = intensities[usable], variances[usable]
    fits = {"gaussian": (np.full_like(v, np.exp(np.mean(np.log(v)))), 0.0, 0.0)}
    if floor is not None and np.count_nonzero(x > floor) >= 2:  # counts start at the floor: slope through it
        above = x > floor
        excess = x[above] - floor
        slope, offset = float(np.sum(v[above] * excess) / np.sum(excess**2)), floor
    else:
        slope, intercept = np.polyfit(x, v, 1)
        offset = float(-intercept / slope) if slope > 0 else 0.0
    if slope > 0:
        fits["poisson"] = (np.maximum(slope * (x - offset), 1e-12), float(slope), offset)
    spread = (x - zero) ** 2
    if np.all(spread > 0):  # the median ratio: bins of blocks that straddle an edge measure too much
        ratio = float(np.median(v / spread))
        fits["gamma"] = (ratio * spread, ratio, zero)
    if np.all(x > zero):  # magnitude images: every level above true zero
        sigma = rician.fit_sigma(x - zero, v)
        fits["rician"] = (rician.variance_at_mean(x - zero, sigma), sigma**2, zero)
    if requested in FAMILIES:
        return _forced(model, requested, zero, floor) if requested not in fits else replace(
            model, family=requested, gain=fits[requested][1], offset=fits[requested][2])
    compared = _above_floor(x, floor)
    errors = {family: float(np.mean(np.log(v / fitted)[compared] ** 2)) for family, (fitted, _, _) in fits.items()}
    best = min(errors, key=errors.get)
    if best == "gaussian" or v.max() < FAMILY_SPAN * v.min() or errors[best] * FAMILY_ADVANTAGE > errors["gaussian"]:
        return model
    return replace(model, family=best, gain=fits[best][1], offset=fits[best][2])


def _above_floor(levels: np.ndarray, floor: float | None) -> np.ndarray:
    """The levels on which the families are compared: those clear of the exact ``floor`` (by
    :data:`FLOOR_MARGIN` of the span), where there is one and at least 3 levels are.

    The levels at the floor are (nearly all) zero counts: their measured variance is close to 0 and the log
    ratio there is huge for any family but the one that passes nearest 0 at that point, so it, not the shape of
    the level function, chose the family (T1, Poisson 30, noise seed 2: gamma 0.93 against Poisson 20.0 with
    the floor's level, Poisson 0.011 against gamma 0.89 without it).
    """
    if floor is not None:
        clear = levels - floor > FLOOR_MARGIN * (levels.max() - floor)
        if np.count_nonzero(clear) >= 3:
            return clear
    return np.ones(levels.shape, dtype=bool)


def _forced(model: NoiseModel, family: str, zero: float, floor: float | None) -> NoiseModel:
    """A requested signal-dependent family whose level function cannot be fitted: from the mean level."""
    zero = floor if family == "poisson" and floor is not None else zero
    mean_signal = max(float(np.mean(model.intensities)) - zero, 1e-6)
    mean_variance = float(np.mean(model.variances))
    gain = {"poisson": mean_variance / mean_signal, "gamma": mean_variance / mean_signal**2}.get(family, mean_variance)
    return replace(model, family=family, gain=max(gain, 1e-12), offset=zero)


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


def _correlated_noise(noisy: np.ndarray, signal: np.ndarray) -> tuple[float, np.ndarray]:
    """(noise variance, colouring kernel) of correlated noise from the flattest blocks of the whole stack.

    Correlated noise has its power at the low frequencies where texture has most of its own, and a finely
    textured image has few blocks without any: only the flattest :data:`CORRELATED_FLAT_FRACTION` of the
    blocks count (at least :data:`CORRELATED_MIN_BLOCKS`; blocks touching an exact floor, a clip or masked
    background without noise, are left out while others remain). A block's flatness is the signal estimate's
    mean gradient magnitude over it and its eight neighbours: the estimate keeps some low-frequency noise, and
    judged by its own block alone the flattest of a large background are those where the noise happened to
    be weakest (knee: 0.93 of the level, 0.98 judged with the neighbours).

    * Colouring: the pooled spectrum of the noisy blocks with their plane removed. The BSN residual would
      lack the noise's low frequencies, which the BSN output keeps from the ring around its blind patch (its
      colouring decorrelated too fast).
    * Level: the lower of that spectrum's mean power and the BSN residual's (block mean removed). The first
      counts what texture is left in the blocks, the second the BSN's own error there: whichever is smaller
      is closer (docs/decisions.md, "The level of correlated noise").
    """
    size = min(CORRELATED_BLOCK, *noisy.shape[1:])
    blocks = image_blocks(noisy, size)
    gradient = image_blocks(np.hypot(*np.gradient(signal, axis=(1, 2))), size).mean(axis=(1, 2))
    rows, columns = noisy.shape[1] // size, noisy.shape[2] // size
    flatness = ndimage.uniform_filter(gradient.reshape(-1, rows, columns), (1, 3, 3), mode="nearest").ravel()
    floor = exact_floor(noisy)
    if floor is not None:
        clear = ~np.any(blocks == floor, axis=(1, 2))
        flatness = np.where(clear, flatness, np.inf) if clear.any() else flatness
    count = min(len(blocks), max(round(CORRELATED_FLAT_FRACTION * len(blocks)), CORRELATED_MIN_BLOCKS))
    flat = np.argsort(flatness, kind="stable")[:count]
    spectrum = _periodograms(remove_plane(blocks[flat])).mean(axis=0)
    residual = image_blocks(noisy - signal, size)[flat]
    variance = min(float(spectrum.mean()),
                   float(_periodograms(residual - residual.mean(axis=(1, 2), keepdims=True)).mean()))
    if variance <= 0:  # a noise-free image: nothing to colour
        return 0.0, np.ones((1, 1))
    kernel = np.fft.fftshift(np.real(np.fft.ifft2(np.sqrt(spectrum / spectrum.mean()))))
    return variance, kernel / np.sqrt((kernel**2).sum())
