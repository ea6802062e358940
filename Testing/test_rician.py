"""Rician noise: its mean and variance, the bias taken out, and telling it from Gaussian noise."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.noise import rician
from DiffDenoiseLib.noise.model import NoiseModel, fit_noise_model, with_family

SIGMA = 0.05


def _magnitude(amplitude: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.hypot(amplitude + SIGMA * rng.standard_normal(amplitude.shape),
                    SIGMA * rng.standard_normal(amplitude.shape)).astype(np.float32)


def test_mean_and_variance_match_sampled_magnitudes():
    rng = np.random.default_rng(0)
    for snr in (0.0, 0.7, 1.5, 3.0, 10.0, 60.0):
        samples = _magnitude(np.full(400_000, snr * SIGMA), rng).astype(np.float64)
        assert rician.normalised_mean(snr) * SIGMA == pytest.approx(samples.mean(), rel=2e-3)
        assert rician.variance_at_mean(samples.mean(), SIGMA) == pytest.approx(samples.var(), rel=0.03)


def test_amplitude_inverts_the_mean_and_is_zero_below_the_floor():
    snr = np.array([0.0, 0.3, 1.0, 2.0, 5.0, 39.0, 41.0, 200.0])
    np.testing.assert_allclose(rician.amplitude(SIGMA * rician.normalised_mean(snr), SIGMA), SIGMA * snr,
                               atol=1e-3 * SIGMA, rtol=1e-4)
    assert np.all(rician.amplitude(np.array([-1.0, 0.0, 1.2 * SIGMA]), SIGMA) == 0)


def test_a_later_stage_keeps_its_departure_from_the_bsn_estimate_unamplified():
    model = replace(NoiseModel.white(SIGMA), family="rician", gain=SIGMA**2)
    floor, bright = SIGMA * rician.normalised_mean(0.0), SIGMA * rician.normalised_mean(20.0)
    reference = np.array([floor, bright], np.float32)
    np.testing.assert_allclose(model.unbiased(reference, reference), model.unbiased(reference), atol=1e-7)
    estimate = reference + np.float32(0.1 * SIGMA)
    kept, inverted = model.unbiased(estimate, reference), model.unbiased(estimate)
    # in bright tissue the mean rises with slope 1: both ways agree
    assert kept[1] == pytest.approx(inverted[1], abs=0.01 * SIGMA)
    # at the floor, inverting the estimate itself turns a 0.1 sigma departure into more than 0.5 sigma of signal
    assert inverted[0] > 0.5 * SIGMA and kept[0] == pytest.approx(0.1 * SIGMA, abs=1e-6)
    assert model.unbiased(reference - np.float32(SIGMA), reference)[0] == 0  # never below the offset


def _phantom() -> np.ndarray:
    """(6, 128, 128): a dark background with no signal (as outside the head) and flat tissue discs."""
    yy, xx = np.mgrid[:128, :128]
    image = np.zeros((6, 128, 128), np.float32)
    for cy, cx, value in [(40, 40, 0.3), (40, 90, 0.5), (90, 40, 0.7), (90, 90, 0.9)]:
        image[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 22**2] = value
    return image


@pytest.mark.parametrize("kind", ["rician", "gaussian"])
def test_rician_noise_is_told_from_gaussian_and_its_sigma_found(kind):
    clean, rng = _phantom(), np.random.default_rng(1)
    noisy = _magnitude(clean, rng) if kind == "rician" else clean + SIGMA * rng.standard_normal(clean.shape)
    signal = ndimage.uniform_filter(noisy, (1, 7, 7))  # a smooth estimate of the noisy mean, as a BSN gives
    model = with_family(fit_noise_model(noisy, signal, correlated=False), "auto", zero=0.0)
    assert model.family == kind
    if kind == "rician":
        assert np.sqrt(model.gain) == pytest.approx(SIGMA, rel=0.1) and model.offset == 0.0


def test_the_bias_is_taken_out_of_the_output_and_apply_repeats_it(tiny_settings):
    settings = replace(tiny_settings, bsn=replace(tiny_settings.bsn, training=replace(tiny_settings.bsn.training,
                                                                                      steps=150)))
    clean = _phantom()
    noisy = _magnitude(clean, np.random.default_rng(2))
    background = clean == 0
    as_learned = denoise(noisy, method="bsn", noise="gaussian", preset=settings, device="cpu", seed=0)
    corrected = denoise(noisy, method="bsn", noise="rician", preset=settings, device="cpu", seed=0,
                        outputs=("bsn",))
    assert corrected.bundle.metadata["noise"]["model"]["family"] == "rician"
    # the same network (same seed): its noisy mean sits near 1.25 sigma on the empty background. The inverse
    # is steep just above that floor, so the spread of this barely trained estimate keeps part of it (0.18
    # sigma after 300 steps on the MNI volume, benchmarks.rician_bias)
    rmse = [np.sqrt(((result.denoised - clean) ** 2).mean()) for result in (as_learned, corrected)]
    assert as_learned.denoised[background].mean() > 1.0 * SIGMA
    assert corrected.denoised[background].mean() < 0.7 * as_learned.denoised[background].mean()
    assert rmse[1] < 0.9 * rmse[0]
    np.testing.assert_array_equal(corrected.extras["bsn"], corrected.denoised)
    np.testing.assert_allclose(apply_bundle(corrected.bundle, noisy, device="cpu").denoised, corrected.denoised,
                               atol=1e-4)
