"""Image quality metrics: PSNR and SSIM against a reference (scikit-image), detail PSNR (the high-pass band,
where over-smoothing shows), SNR and CNR from regions."""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .errors import InputError


def _check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise InputError(f"shapes differ: reference {reference.shape} vs test {test.shape}")


def _data_range(reference: np.ndarray, data_range: float | None) -> float:
    value = float(reference.max() - reference.min()) if data_range is None else float(data_range)
    if value <= 0:
        raise InputError("the reference image is constant: give data_range explicitly")
    return value


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio in dB; ``data_range`` defaults to the reference's max - min."""
    _check_pair(reference, test)
    rng = _data_range(reference, data_range)
    return float(peak_signal_noise_ratio(reference.astype(np.float64), test.astype(np.float64), data_range=rng))


def ssim(reference: np.ndarray, test: np.ndarray, data_range: float | None = None) -> float:
    """Structural similarity; for 3D volumes the mean over 2D slices along the first axis."""
    _check_pair(reference, test)
    rng = _data_range(reference, data_range)
    ref = reference.astype(np.float64).reshape(-1, *reference.shape[-2:])
    tst = test.astype(np.float64).reshape(-1, *test.shape[-2:])
    return float(np.mean([structural_similarity(r, t, data_range=rng) for r, t in zip(ref, tst, strict=True)]))


def high_pass(image: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """The detail band of each 2D slice (last two axes): the image minus its Gaussian blur of ``sigma`` px."""
    image = image.astype(np.float64)
    return image - gaussian_filter(image, sigma=[0.0] * (image.ndim - 2) + [sigma, sigma])


def detail_psnr(reference: np.ndarray, test: np.ndarray, data_range: float | None = None,
                sigma: float = 1.0) -> float:
    """PSNR (dB) of the high-pass bands (:func:`high_pass`) with the images' ``data_range``: a denoiser that
    blurs away fine structure scores low here even where its plain PSNR is good, while smooth intensity
    errors barely count."""
    _check_pair(reference, test)
    rng = _data_range(reference, data_range)
    return float(peak_signal_noise_ratio(high_pass(reference, sigma), high_pass(test, sigma), data_range=rng))


def _region(image: np.ndarray, mask: np.ndarray, name: str) -> np.ndarray:
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape:
        raise InputError(f"{name} mask shape {mask.shape} does not match the image {image.shape}")
    if mask.sum() < 2:
        raise InputError(f"{name} region has fewer than 2 voxels: draw a larger region")
    return image[mask].astype(np.float64)


def snr(image: np.ndarray, signal_mask: np.ndarray, background_mask: np.ndarray) -> float:
    """Mean of the signal region divided by the standard deviation of the background region."""
    signal = _region(image, signal_mask, "signal")
    background = _region(image, background_mask, "background")
    return float(signal.mean() / background.std(ddof=1))


def cnr(image: np.ndarray, region_a: np.ndarray, region_b: np.ndarray, background_mask: np.ndarray) -> float:
    """|mean(a) - mean(b)| divided by the standard deviation of the background region."""
    a = _region(image, region_a, "region a")
    b = _region(image, region_b, "region b")
    background = _region(image, background_mask, "background")
    return float(abs(a.mean() - b.mean()) / background.std(ddof=1))
