"""The classical peers of the benchmarks: told the true noise, estimating it, and the Anscombe round trip that
the Poisson oracle relies on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter
from scipy.stats import poisson

from benchmarks.peers import (
    BM4D_MIN_SLICES,
    anscombe,
    bm3d_available,
    bm4d_available,
    classical_peers,
    inverse_anscombe,
    nlm_estimated,
    told_the_truth,
)
from benchmarks.scalar import noisy_case
from DiffDenoiseLib.metrics import psnr


def phantom(slices: int = 2, side: int = 64) -> np.ndarray:
    """A smooth image with edges: a bright disc on a ramp, the same on every slice."""
    y, x = np.mgrid[:side, :side] / side
    image = 40 + 40 * x + 100 * ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.1)
    return np.repeat(image[None], slices, axis=0).astype(np.float32)


@pytest.mark.parametrize("counts", [1.0, 3.0, 10.0, 30.0])
def test_exact_unbiased_inverse_returns_the_mean_count_where_the_algebraic_one_is_biased(counts):
    values = np.arange(0, 200)
    expected_transform = float(np.sum(poisson.pmf(values, counts) * anscombe(values)))
    assert inverse_anscombe(np.array(expected_transform)) == pytest.approx(counts, rel=0.01)
    algebraic = (expected_transform / 2) ** 2 - 3 / 8
    assert counts - algebraic > 0.17  # biased low at every count: what the exact inverse corrects
    assert inverse_anscombe(anscombe(np.zeros(1)))[0] == pytest.approx(0, abs=1e-6)


def test_anscombe_stabilises_the_variance_of_counts():
    rng = np.random.default_rng(0)
    for counts in (10, 30, 100):
        assert np.std(anscombe(rng.poisson(counts, 100_000))) == pytest.approx(1.0, abs=0.03)


def test_estimated_sigma_nlm_removes_noise_without_the_clean_image():
    clean = phantom()
    noisy, data_range, truth = noisy_case(clean, "gaussian", 0.1, 0)
    output = nlm_estimated(noisy)
    assert output.method == "NLM, estimated sigma" and output.image.shape == noisy.shape
    assert psnr(clean, output.image, data_range) > psnr(clean, noisy, data_range) + 5


def test_the_poisson_oracle_denoises_counts_and_maps_back_without_bias():
    clean = phantom(side=96)
    noisy, data_range, truth = noisy_case(clean, "poisson", 30.0, 0)

    def smooth(image: np.ndarray, sigma: float) -> np.ndarray:  # a real denoiser of std-``sigma`` noise
        assert sigma == 1.0  # the Anscombe domain
        return gaussian_filter(image, (0, 1.5, 1.5))

    output = told_the_truth("smoothing", smooth, noisy, truth)
    assert output.setting == "Anscombe, exact unbiased inverse"
    assert psnr(clean, output.image, data_range) > psnr(clean, noisy, data_range) + 4
    flat = (slice(None), slice(2, 20), slice(2, 20))  # the dark corner: few counts, where bias would show
    assert output.image[flat].mean() == pytest.approx(clean[flat].mean(), rel=0.03)


@pytest.mark.parametrize("kind, level, setting", [("gaussian", 0.1, "true sigma"),
                                                   ("correlated", 0.1, "true noise spectrum"),
                                                   ("rician", 0.05, "true sigma, Rician bias removed")])
def test_the_oracle_is_told_the_noise_std_or_its_spectrum(kind, level, setting):
    clean = phantom()
    noisy, _, truth = noisy_case(clean, kind, level, 0)
    told = []

    def record(image: np.ndarray, noise: float | np.ndarray) -> np.ndarray:
        told.append(noise)
        return image

    assert told_the_truth("BM3D", record, noisy, truth).setting == setting
    if kind == "rician":  # the channels' std, and the bias of the magnitude taken out of the result
        assert told == [pytest.approx(level * truth.scale)]
        def floor(image: np.ndarray, sigma: float) -> np.ndarray:  # the Rician mean of no signal at all
            return np.full_like(image, sigma * np.sqrt(np.pi / 2))

        assert np.abs(told_the_truth("BM3D", floor, noisy, truth).image).max() < 1e-3 * told[0]
    elif kind == "gaussian":
        assert told == [pytest.approx(level * truth.scale, rel=0.02)]  # add_noise's std: level x robust range
    else:  # the slice's spectrum: its mean is the noise variance times the pixel count (unnormalised FFT)
        assert told[0].shape == noisy.shape[-2:]
        assert told[0].mean() == pytest.approx(truth.sigma ** 2 * told[0].size, rel=0.05)
        told_the_truth("BM4D", record, noisy, truth, whole_volume=True)  # a volume method: the volume's spectrum
        assert told[1].shape == noisy.shape
        assert told[1].mean() == pytest.approx(truth.sigma ** 2 * told[1].size, rel=0.05)


def test_classical_peers_include_bm3d_and_bm4d_where_installed():
    clean = phantom(slices=BM4D_MIN_SLICES, side=48)
    noisy, data_range, truth = noisy_case(clean, "gaussian", 0.1, 0)
    methods = {o.method: o for o in classical_peers(noisy, clean, data_range, truth)}
    expected = {"Gaussian blur", "NLM", "NLM, estimated sigma"}
    expected |= {"BM3D"} if bm3d_available() else set()
    expected |= {"BM4D"} if bm4d_available() else set()
    assert set(methods) == expected
    for output in methods.values():
        assert psnr(clean, output.image, data_range) > psnr(clean, noisy, data_range) + 3, output.label
