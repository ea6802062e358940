"""The methods we compare against, on the same noisy input as ours.

* Gaussian blur and scikit-image NLM, each tuned against the clean image (an optimistic oracle);
* NLM with the noise level *estimated* from the noisy image (what a user without the clean image gets);
* BM3D (slice by slice) and BM4D (the volume) told the true noise: its std, its power spectrum for correlated
  noise, and for Poisson noise the counts, denoised after the Anscombe transform and mapped back with the
  closed form of its exact unbiased inverse (Makitalo & Foi, "A closed-form approximation of the exact unbiased
  inverse of the Anscombe variance-stabilizing transformation", IEEE Trans. Image Process. 20(9), 2011); for
  Rician noise the Gaussian sigma of its two channels, with the Rician bias then taken out of the result as
  ours is (:func:`DiffDenoiseLib.noise.rician.amplitude`), when ``bm3d`` / ``bm4d`` are importable;
* CAREamics, when it is installed.

BM3D, BM4D (non-commercial licenses) and CAREamics are never dependencies: ``pip install bm3d bm4d`` to include
them.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.restoration import denoise_nl_means, estimate_sigma

from DiffDenoiseLib.metrics import psnr
from DiffDenoiseLib.noise import rician
from DiffDenoiseLib.noise.simulate import correlated_gaussian

# BM4D is a volume method: 2D images and stacks of a few slices get BM3D only.
BM4D_MIN_SLICES = 8


def method_label(method: str, setting: str) -> str:
    """A method as the tables name it: "BM3D (true sigma)", or the bare name without a setting."""
    return f"{method} ({setting})" if setting else method


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
        return method_label(self.method, self.setting)


@dataclass(frozen=True)
class TrueNoise:
    """The noise a benchmark case added (:func:`DiffDenoiseLib.noise.simulate.add_noise`), as the oracle peers
    are told it: its kind and level, the std of noisy - clean in image units, and the clean image's robust range
    ``low`` .. ``low + scale`` (which maps intensities to Poisson counts)."""

    kind: str
    level: float
    sigma: float
    low: float
    scale: float

    def counts(self, image: np.ndarray) -> np.ndarray:
        """Image intensities as the photon counts of Poisson noise (``level`` counts at the top of the range)."""
        return (image - self.low) / self.scale * self.level

    def intensities(self, counts: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`counts`."""
        return counts / self.level * self.scale + self.low


def tuned(method: str, noisy: np.ndarray, clean: np.ndarray, data_range: float,
          candidates: dict[str, Callable[[np.ndarray], np.ndarray]]) -> MethodOutput:
    """The candidate setting with the best PSNR against the clean image (an optimistic, oracle-tuned peer)."""
    best = None
    for setting, run in candidates.items():
        output, seconds = _timed(run, noisy)
        score = psnr(clean, output, data_range)
        if best is None or score > best[0]:
            best = score, MethodOutput(method, setting, output, seconds / len(noisy), seconds)
    return best[1]


def _timed(run: Callable[[np.ndarray], np.ndarray], noisy: np.ndarray) -> tuple[np.ndarray, float]:
    started = time.perf_counter()
    output = run(noisy).astype(np.float32)
    return output, time.perf_counter() - started


def nlm_slices(noisy: np.ndarray, h: float, sigma: float) -> np.ndarray:
    """scikit-image NLM (fast mode, 5 x 5 patches, 13 x 13 search window) on each (slices, H, W) slice."""
    return np.stack([denoise_nl_means(s, h=h, sigma=sigma, patch_size=5, patch_distance=6, fast_mode=True)
                     for s in noisy])


def blur_and_nlm(noisy: np.ndarray, clean: np.ndarray, data_range: float, sigma: float) -> list[MethodOutput]:
    """Gaussian blur and NLM on (slices, H, W), each with its best setting for this image."""
    blur = {f"sigma {s} px": (lambda x, s=s: gaussian_filter(x, (0, s, s))) for s in (0.5, 0.75, 1.0, 1.5, 2.0)}
    nlm = {f"h {h} sigma": (lambda x, h=h: nlm_slices(x, h * sigma, sigma)) for h in (0.6, 0.8, 1.0, 1.2)}
    return [tuned("Gaussian blur", noisy, clean, data_range, blur), tuned("NLM", noisy, clean, data_range, nlm)]


def nlm_estimated(noisy: np.ndarray) -> MethodOutput:
    """NLM as a user without the clean image runs it: the noise std of each slice estimated from the slice
    (wavelet median absolute deviation, scikit-image ``estimate_sigma``) and h = 0.8 sigma, scikit-image's
    advice for its fast mode."""
    def run(image: np.ndarray) -> np.ndarray:
        return np.stack([nlm_slices(s[None], 0.8 * (sigma := float(estimate_sigma(s))), sigma)[0] for s in image])

    output, seconds = _timed(run, noisy)
    return MethodOutput("NLM, estimated sigma", "h 0.8 sigma", output, seconds / len(noisy), seconds)


def correlated_noise_psd(shape: tuple[int, ...], sigma: float, draws: int = 16) -> np.ndarray:
    """The power spectrum of the benchmark's correlated noise (``add_noise(kind="correlated")``) at std ``sigma``
    on an array of ``shape`` (a slice for BM3D, the volume for BM4D), in their convention (|FFT|^2 of one
    realisation, unnormalised FFT), averaged over draws."""
    rng = np.random.default_rng(0)
    spectra = [np.abs(np.fft.fftn(correlated_gaussian(shape, 1.0, rng))) ** 2 for _ in range(draws)]
    return np.mean(spectra, axis=0) * sigma ** 2


def anscombe(counts: np.ndarray) -> np.ndarray:
    """Anscombe's variance-stabilising transform: Poisson counts -> values of noise std about 1."""
    return 2.0 * np.sqrt(np.clip(counts, 0, None) + 3.0 / 8.0)


def inverse_anscombe(values: np.ndarray) -> np.ndarray:
    """The closed-form approximation of the exact unbiased inverse of :func:`anscombe` (Makitalo & Foi 2011):
    unlike the algebraic inverse it is unbiased at low counts."""
    # below the transform of 0 counts, where the approximation is 0, its inverse powers would turn back up
    d = np.maximum(values, 2.0 * np.sqrt(3.0 / 8.0))
    inverse = 0.25 * d ** 2 + 0.25 * np.sqrt(1.5) / d - 1.375 / d ** 2 + 0.625 * np.sqrt(1.5) / d ** 3 - 0.125
    return np.clip(inverse, 0, None)


def bm3d_available() -> bool:
    return importlib.util.find_spec("bm3d") is not None


def bm4d_available() -> bool:
    return importlib.util.find_spec("bm4d") is not None


@contextmanager
def _numpy_trapz() -> Iterator[None]:
    """bm3d 4.0.3 and bm4d 4.2.5 call ``np.trapz`` for spectra (removed in NumPy 2.0): lend them
    ``np.trapezoid`` meanwhile."""
    missing = not hasattr(np, "trapz")
    if missing:
        np.trapz = np.trapezoid
    try:
        yield
    finally:
        if missing:
            del np.trapz


def bm3d_slices(noisy: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
    """BM3D (``bm3d`` package) on each (slices, H, W) slice; ``noise`` is the std or the slice's power spectrum."""
    import bm3d

    with _numpy_trapz():
        return np.stack([bm3d.bm3d(s, noise) for s in noisy])


def bm4d_volume(noisy: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
    """BM4D (``bm4d`` package) on the (slices, H, W) volume; ``noise`` is the std or the volume's power spectrum."""
    import bm4d

    with _numpy_trapz():
        return np.asarray(bm4d.bm4d(noisy, noise))


def told_the_truth(method: str, denoiser: Callable[[np.ndarray, float | np.ndarray], np.ndarray],
                   noisy: np.ndarray, truth: TrueNoise, whole_volume: bool = False) -> MethodOutput:
    """``denoiser(image, noise)`` told the true noise: its std; its power spectrum for correlated noise (of the
    volume when the denoiser sees the ``whole_volume``, else of one slice); for Poisson noise it denoises the
    Anscombe transform of the counts (std 1) and the exact unbiased inverse maps the result back; for Rician
    noise it is told the channels' sigma and its result's Rician bias is taken out."""
    if truth.kind == "poisson":
        def run(image: np.ndarray) -> np.ndarray:
            return truth.intensities(inverse_anscombe(denoiser(anscombe(truth.counts(image)), 1.0)))
        setting = "Anscombe, exact unbiased inverse"
    elif truth.kind == "correlated":
        spectrum = correlated_noise_psd(noisy.shape if whole_volume else noisy.shape[-2:], truth.sigma)
        def run(image: np.ndarray) -> np.ndarray:
            return denoiser(image, spectrum)
        setting = "true noise spectrum"
    elif truth.kind == "rician":
        sigma = truth.level * truth.scale  # add_noise's channel std (the magnitude's std is lower)
        def run(image: np.ndarray) -> np.ndarray:
            return rician.amplitude(denoiser(image, sigma), sigma).astype(np.float32)
        setting = "true sigma, Rician bias removed"
    else:
        def run(image: np.ndarray) -> np.ndarray:
            return denoiser(image, truth.sigma)
        setting = "true sigma"
    output, seconds = _timed(run, noisy)
    return MethodOutput(method, setting, output, seconds / len(noisy), seconds)


def classical_peers(noisy: np.ndarray, clean: np.ndarray, data_range: float, truth: TrueNoise) -> list[MethodOutput]:
    """Every classical peer on the (slices, H, W) ``noisy`` image: tuned blur and NLM, estimated-sigma NLM,
    and BM3D and BM4D (volumes of at least :data:`BM4D_MIN_SLICES` slices) where installed."""
    outputs = [*blur_and_nlm(noisy, clean, data_range, truth.sigma), nlm_estimated(noisy)]
    if bm3d_available():
        outputs.append(told_the_truth("BM3D", bm3d_slices, noisy, truth))
    if bm4d_available() and len(noisy) >= BM4D_MIN_SLICES:
        outputs.append(told_the_truth("BM4D", bm4d_volume, noisy, truth, whole_volume=True))
    return outputs


def missing_peers() -> list[str]:
    """A note for each optional peer that is not installed, naming the fix."""
    return [f"{name.upper()} skipped: `pip install {name}` to include it (non-commercial license)"
            for name, available in (("bm3d", bm3d_available()), ("bm4d", bm4d_available())) if not available]


def careamics_status() -> str | None:
    """Why CAREamics is not in the run, or None when it is importable."""
    if importlib.util.find_spec("careamics") is None:
        return ("CAREamics (N2V) not installed: careamics 0.3 needs torchvision <= 0.26, which pins torch <= 2.11, "
                "and this environment has torch 2.13")
    return ("CAREamics is installed but not wired in: its training API changes between 0.x releases and no "
            "release installs beside torch 2.13 to test an adapter against")
