"""The methods we compare against: Gaussian blur and scikit-image NLM (each tuned against the clean image, an
optimistic oracle), BM3D when the ``bm3d`` package is importable, and CAREamics when it is installed.

BM3D (non-commercial license) and CAREamics are never dependencies: ``pip install bm3d`` to include BM3D.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_nl_means

from DiffDenoiseLib.metrics import psnr
from DiffDenoiseLib.noise import correlated_gaussian


@dataclass
class MethodOutput:
    """One method's result on one image: ``seconds_per_slice`` is inference, ``total_seconds`` everything a user
    waits for on this image (training included)."""

    method: str
    setting: str
    image: np.ndarray
    seconds_per_slice: float
    total_seconds: float

    @property
    def label(self) -> str:
        return f"{self.method} ({self.setting})" if self.setting else self.method


def tuned(method: str, noisy: np.ndarray, clean: np.ndarray, data_range: float,
          candidates: dict[str, Callable[[np.ndarray], np.ndarray]]) -> MethodOutput:
    """The candidate setting with the best PSNR against the clean image (an optimistic, oracle-tuned peer)."""
    best = None
    for setting, run in candidates.items():
        started = time.perf_counter()
        output = run(noisy).astype(np.float32)
        seconds = time.perf_counter() - started
        score = psnr(clean, output, data_range)
        if best is None or score > best[0]:
            best = score, MethodOutput(method, setting, output, seconds / len(noisy), seconds)
    return best[1]


def blur_and_nlm(noisy: np.ndarray, clean: np.ndarray, data_range: float, sigma: float) -> list[MethodOutput]:
    """Gaussian blur and NLM on (slices, H, W), each with its best setting for this image."""
    blur = {f"sigma {s} px": (lambda x, s=s: gaussian_filter(x, (0, s, s))) for s in (0.5, 0.75, 1.0, 1.5, 2.0)}
    nlm = {f"h {h} sigma": (lambda x, h=h: np.stack([
        denoise_nl_means(s, h=h * sigma, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True) for s in x]))
        for h in (0.6, 0.8, 1.0, 1.2)}
    return [tuned("Gaussian blur", noisy, clean, data_range, blur), tuned("NLM", noisy, clean, data_range, nlm)]


def correlated_noise_psd(shape: tuple[int, int], sigma: float, draws: int = 16) -> np.ndarray:
    """The power spectrum of the benchmark's correlated noise (``add_noise(kind="correlated")``) at std
    ``sigma``, in BM3D's convention (|FFT|^2 of one realisation, unnormalised FFT), averaged over draws."""
    rng = np.random.default_rng(0)
    spectra = [np.abs(np.fft.fft2(correlated_gaussian(shape, 1.0, rng))) ** 2 for _ in range(draws)]
    return np.mean(spectra, axis=0) * sigma ** 2


def bm3d_available() -> bool:
    return importlib.util.find_spec("bm3d") is not None


@contextmanager
def _numpy_trapz() -> Iterator[None]:
    """bm3d 4.0.3 calls ``np.trapz`` for spectra (removed in NumPy 2.0): lend it ``np.trapezoid`` meanwhile."""
    missing = not hasattr(np, "trapz")
    if missing:
        np.trapz = np.trapezoid
    try:
        yield
    finally:
        if missing:
            del np.trapz


def bm3d_output(noisy: np.ndarray, sigma: float, correlated: bool) -> MethodOutput:
    """BM3D (``bm3d`` package) given the true noise std, or the true noise spectrum for correlated noise."""
    import bm3d

    noise = correlated_noise_psd(noisy.shape[-2:], sigma) if correlated else sigma
    started = time.perf_counter()
    with _numpy_trapz():
        output = np.stack([bm3d.bm3d(s, noise) for s in noisy]).astype(np.float32)
    seconds = time.perf_counter() - started
    return MethodOutput("BM3D", "true noise spectrum" if correlated else "true sigma", output,
                        seconds / len(noisy), seconds)


def careamics_status() -> str | None:
    """Why CAREamics is not in the run, or None when it is importable."""
    if importlib.util.find_spec("careamics") is None:
        return ("CAREamics (N2V) not installed: careamics 0.3 needs torchvision <= 0.26, which pins torch <= 2.11, "
                "and this environment has torch 2.13")
    return ("CAREamics is installed but not wired in: its training API changes between 0.x releases and no "
            "release installs beside torch 2.13 to test an adapter against")
