"""Noise normalisation around the BSN output: one noise level after it, exact inverse for means."""

import json

import numpy as np
import pytest

from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.noise.model import NoiseModel
from DiffDenoiseLib.noise.normalisation import NoiseNormaliser

PEAK = 30  # Poisson counts at intensity 1: variance = x / PEAK
LEVELS = np.array([0.05, 0.2, 0.5, 0.9])


def poisson_normaliser() -> NoiseNormaliser:
    grid = np.linspace(0, 1, 50)
    return NoiseNormaliser.from_noise_model(NoiseModel(grid, grid / PEAK, np.ones((1, 1))))


def test_signal_dependent_noise_has_one_level_after_normalisation():
    normaliser = poisson_normaliser()
    rng = np.random.default_rng(0)
    signal = np.repeat(LEVELS[:, None], 50_000, axis=1)
    noisy = rng.poisson(signal * PEAK) / PEAK
    spreads = normaliser.forward(noisy, signal).std(axis=1)
    raw = (noisy - signal).std(axis=1)
    assert spreads.max() / spreads.min() < 1.1 < 2 < raw.max() / raw.min()


def test_inverse_is_exact_for_means():
    normaliser = poisson_normaliser()
    rng = np.random.default_rng(1)
    signal = LEVELS[:, None] + 0.01 * rng.standard_normal((4, 10))  # a BSN output close to the truth
    values = rng.uniform(-0.5, 1.5, (4, 10))
    np.testing.assert_allclose(normaliser.inverse(normaliser.forward(values, signal), signal), values, atol=1e-5)
    # affine per pixel: the mean of normalised values maps back to the mean of the values
    samples = LEVELS[:, None] + np.sqrt(LEVELS[:, None] / PEAK) * rng.standard_normal((4, 100_000))
    centre = np.full_like(samples, 0.3)
    back = normaliser.inverse(normaliser.forward(samples, centre).mean(axis=1, keepdims=True), centre[:, :1])
    np.testing.assert_allclose(back[:, 0], samples.mean(axis=1), atol=1e-4)


def test_constant_noise_gives_the_plain_deviation():
    normaliser = NoiseNormaliser.from_noise_model(NoiseModel.white(0.1))
    values = np.linspace(-0.5, 1.5, 41, dtype=np.float32)
    signal = values[::-1].copy()
    np.testing.assert_allclose(normaliser.forward(values, signal), values - signal, atol=1e-6)


def test_metadata_round_trip():
    normaliser = poisson_normaliser()
    rebuilt = NoiseNormaliser.from_metadata(json.loads(json.dumps(normaliser.describe())))
    signal, values = np.linspace(0, 1, 11), np.linspace(-0.2, 1.3, 11)
    np.testing.assert_array_equal(rebuilt.forward(values, signal), normaliser.forward(values, signal))


def test_a_noise_free_image_is_refused_with_a_clear_error():
    with pytest.raises(InputError, match="no noise"):
        NoiseNormaliser.from_noise_model(NoiseModel.white(0.0))
