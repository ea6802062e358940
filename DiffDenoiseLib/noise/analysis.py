"""Noise analysis of real images: the noise level and whether it is white or spatially correlated, its
correlation between slices, and the slices whose removed part does not look like their noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage
from skimage.restoration import estimate_sigma

from ..errors import InputError

# Lag-1 correlation of the fine-scale noise residual above which noise counts as spatially correlated.
# Calibrated on real images (knee MRI, MNI T1, head CT): gaussian, poisson and rician white noise measure
# -0.14 +- 0.02; Gaussian-filtered noise of kernel sigma 0.7 px measures >= 0.18 (1 px: >= 0.36).
# Images with little noise measure the anatomy's own texture (0.1 to 0.35) and count as correlated.
CORRELATION_THRESHOLD = 0.02
MIN_ANALYSIS_SIZE = 16  # slices need at least two 8x8 blocks per side


def robust_range(image: np.ndarray, low: float = 0.5, high: float = 99.5) -> tuple[float, float]:
    """The (low, high) percentiles of the finite voxels: an intensity range that ignores outliers."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        raise InputError("the image has no finite voxels (all NaN or Inf): check the input file")
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:  # very sparse images: fall back to the full range
        lo, hi = float(finite.min()), float(finite.max())
    return float(lo), float(hi)


@dataclass(frozen=True)
class NoiseAnalysis:
    """What the noise in an image looks like."""

    sigma: float  # estimated noise standard deviation, in image intensity units
    relative_sigma: float  # sigma as a fraction of the robust intensity range
    neighbour_correlation: float  # lag-1 correlation of the fine-scale residual (about 0 for white noise)
    kind: Literal["iid", "correlated"]
    # noise correlation between adjacent slices (None: 2D, under 4 slices, or slices under 32 px)
    slice_correlation: float | None = None


def _slices(image: np.ndarray) -> np.ndarray:
    if image.ndim < 2:
        raise InputError(f"noise analysis needs a 2D or 3D image, got {image.ndim}D")
    return image.reshape(-1, *image.shape[-2:]).astype(np.float64)


def image_blocks(image: np.ndarray, size: int) -> np.ndarray:
    """(N, H, W) -> (M, size, size) non-overlapping blocks, row by row (edges that do not fill one are dropped)."""
    n, height, width = image.shape
    height, width = height - height % size, width - width % size
    blocks = image[:, :height, :width].reshape(n, height // size, size, width // size, size)
    return blocks.transpose(0, 1, 3, 2, 4).reshape(-1, size, size)


def _flat_residuals(plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(M, 8, 8) blocks of the residual of a 3x3 median of ``plane``, and each block's signal energy."""
    residual = plane - ndimage.median_filter(plane, size=3)
    return image_blocks(residual[None], 8), image_blocks(plane[None], 8).std(axis=(1, 2))


def neighbour_correlation(image: np.ndarray) -> float:
    """Lag-1 correlation of the noise, measured on the residual of a 3x3 median in flat regions.

    White noise gives a value near 0 (slightly negative), spatially correlated noise a clearly positive one.
    Only the flattest half of 8x8 blocks is used, so anatomy edges do not count as correlation.
    """
    values = []
    for plane in _slices(image):
        if min(plane.shape) < MIN_ANALYSIS_SIZE:
            continue
        blocks, energy = _flat_residuals(plane)
        textured = energy > 0  # exactly constant blocks (clipped background) carry no noise to measure
        if textured.any():
            blocks, energy = blocks[textured], energy[textured]
        flat = blocks[energy <= np.median(energy)]
        centred = flat - flat.mean(axis=(1, 2), keepdims=True)
        horizontal = (centred[:, :, 1:] * centred[:, :, :-1]).sum()
        vertical = (centred[:, 1:, :] * centred[:, :-1, :]).sum()
        norm = 0.5 * ((centred[:, :, 1:] ** 2).sum() + (centred[:, :, :-1] ** 2).sum()) + 1e-12
        values.append(0.5 * (horizontal + vertical) / norm)
    if not values:
        raise InputError(f"slices of {image.shape[-2:]} px are too small for noise analysis "
                         f"(need {MIN_ANALYSIS_SIZE}x{MIN_ANALYSIS_SIZE})")
    return float(np.median(values))


SLICE_WINDOWS = 16  # runs of four slices measured (evenly spaced): enough for a stable median, fast on big volumes
# Blocks of the between-slice measure: 16 px keep most of a noise correlated over a pixel or two once their
# plane is removed; the flattest quarter of them (least structure in all four slices) keeps edges out, and still
# 64 blocks of a 256 x 256 slice.
SLICE_BLOCK = 16
FLAT_SHARE = 0.25
MIN_FLAT_BLOCKS = 4
STRUCTURE_SMOOTHING = 1.5  # px: a block's structure is the spread of the smoothed slice, which noise hardly moves


def remove_plane(blocks: np.ndarray) -> np.ndarray:
    """Each (S, S) block minus its least-squares plane a + b y + c x."""
    count, size, _ = blocks.shape
    rows, columns = np.mgrid[:size, :size]
    design = np.stack([np.ones(size * size), rows.ravel(), columns.ravel()], axis=1)
    coefficients = np.linalg.lstsq(design, blocks.reshape(count, -1).T, rcond=None)[0]
    return blocks - (design @ coefficients).T.reshape(count, size, size)


def _adjacent_correlation(window: np.ndarray) -> float | None:
    """The noise correlation between adjacent slices, from four consecutive (H, W) slices ``window``.

    The second differences along z, d_k = x_k - (x_k-1 + x_k+1) / 2, cancel the anatomy that continues through
    the slices (which a residual within each slice keeps, and counts as shared). Of noise with variance C0 and
    covariance C1 between adjacent slices (none further), d_k and d_k+1 correlate as
    r = (1.75 C1 - C0) / (1.5 C0 - 2 C1): -2/3 for noise of each slice's own; solved for rho = C1 / C0 below.
    Measured in the flattest blocks of the window, their planes removed. None where no block carries noise."""
    second = window[1:3] - 0.5 * (window[:2] + window[2:])
    blocks = [image_blocks(plane[None], SLICE_BLOCK) for plane in second]
    structure = np.max([image_blocks(ndimage.gaussian_filter(plane, STRUCTURE_SMOOTHING)[None], SLICE_BLOCK)
                        .std(axis=(1, 2)) for plane in window], axis=0)
    usable = np.flatnonzero((blocks[0].std(axis=(1, 2)) > 0) & (blocks[1].std(axis=(1, 2)) > 0))
    if not usable.size:  # constant blocks (clipped background) carry no noise
        return None
    count = max(MIN_FLAT_BLOCKS, round(FLAT_SHARE * usable.size))
    flat = usable[np.argsort(structure[usable], kind="stable")[:count]]
    a, b = remove_plane(blocks[0][flat]), remove_plane(blocks[1][flat])
    r = (a * b).sum() / (np.sqrt((a ** 2).sum() * (b ** 2).sum()) + 1e-12)
    r = max(r, -0.8)  # clear of the pole at r = -0.875 (noise anti-correlated between slices reads as rho -1)
    return float(np.clip((1 + 1.5 * r) / (1.75 + 2 * r), -1.0, 1.0))


def slice_correlation(volume: np.ndarray) -> float | None:
    """Correlation of the noise between adjacent slices of an (N, H, W) volume: about 0 when each slice has its
    own noise, clearly positive when the reconstruction or an interpolation shares it between slices, whatever
    the anatomy continuing through thin slices (:func:`_adjacent_correlation`; median over up to
    :data:`SLICE_WINDOWS` runs of four slices). None for fewer than 4 slices or slices under 32 px."""
    if volume.ndim != 3 or len(volume) < 4 or min(volume.shape[1:]) < 2 * SLICE_BLOCK:
        return None
    firsts = np.unique(np.linspace(0, len(volume) - 4, SLICE_WINDOWS).round().astype(int))
    values = [value for first in firsts
              if (value := _adjacent_correlation(volume[first:first + 4].astype(np.float64))) is not None]
    return float(np.median(values)) if values else None


def estimate_noise(image: np.ndarray) -> NoiseAnalysis:
    """Estimate the noise level (wavelet MAD, per slice, median), whether it is i.i.d. or correlated within
    slices and, for volumes, how much it is correlated between adjacent slices."""
    planes = _slices(image)
    if not np.all(np.isfinite(planes)):
        raise InputError("the image contains NaN or Inf voxels: replace or mask them before noise analysis")
    low, high = robust_range(planes)
    sigma = float(np.median([estimate_sigma(plane) for plane in planes]))
    correlation = neighbour_correlation(planes)
    kind: Literal["iid", "correlated"] = "correlated" if correlation > CORRELATION_THRESHOLD else "iid"
    return NoiseAnalysis(sigma, sigma / (high - low), correlation, kind, slice_correlation(planes))


# A slice is an outlier when its removed-noise ratio is this many times above or below the volume's median.
OUTLIER_FACTOR = 1.5


def residual_outliers(noisy: np.ndarray, denoised: np.ndarray) -> np.ndarray:
    """Per-slice audit of (N, H, W) slices before and after denoising: True where the part removed (noisy -
    denoised), relative to the slice's own noise level, is ``OUTLIER_FACTOR`` times larger or smaller than in
    the median slice: a slice where much less than its noise was removed, or much more (anatomy). Relative
    to the volume, so it holds for correlated noise, which the wavelet estimate underrates; slices without
    measurable noise are never flagged."""
    ratios = np.full(len(noisy), np.nan)
    for index, (before, after) in enumerate(zip(noisy, denoised, strict=True)):
        sigma = estimate_sigma(before.astype(np.float64)) if np.ptp(before) > 0 else 0.0
        if sigma > 0:
            ratios[index] = np.std(before.astype(np.float64) - after) / sigma
    if not np.isfinite(ratios).any():
        return np.zeros(len(noisy), dtype=bool)
    median = np.nanmedian(ratios)
    with np.errstate(invalid="ignore"):
        return np.isfinite(ratios) & ((ratios > OUTLIER_FACTOR * median) | (ratios < median / OUTLIER_FACTOR))
