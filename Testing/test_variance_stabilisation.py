"""The variance-stabilising transform: one noise level after it, unbiased means back through its inverse."""

import json

import numpy as np
import pytest

from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.noise_model import NoiseModel
from DiffDenoiseLib.variance_stabilisation import VarianceStabiliser

PEAK = 30  # Poisson counts at intensity 1: variance = x / PEAK
LEVELS = (0.05, 0.2, 0.5, 0.9)


def poisson_model() -> NoiseModel:
    grid = np.linspace(0, 1, 50)
    return NoiseModel(grid, grid / PEAK, np.ones((1, 1)))


def test_poisson_noise_has_one_level_after_the_transform():
    stabiliser = VarianceStabiliser.from_noise_model(poisson_model(), 0.0, 1.0, target_noise_factor=1.0)
    rng = np.random.default_rng(0)
    spreads = [stabiliser.forward(rng.poisson(x * PEAK, 100_000) / PEAK).std() for x in LEVELS]
    raw = [np.sqrt(x / PEAK) for x in LEVELS]
    assert max(spreads) / min(spreads) < 1.25 < max(raw) / min(raw)


@pytest.mark.parametrize("x", LEVELS)
def test_inverse_recovers_the_mean_of_recorrupted_poisson_targets(x):
    alpha = 0.5
    stabiliser = VarianceStabiliser.from_noise_model(poisson_model(), 0.0, 1.0, target_noise_factor=1 + alpha**-2)
    rng = np.random.default_rng(1)
    target = rng.poisson(x * PEAK, 400_000) / PEAK - rng.standard_normal(400_000) * np.sqrt(x / PEAK) / alpha
    mean_in_stabilised_domain = stabiliser.forward(target).mean()
    assert stabiliser.inverse(np.array(mean_in_stabilised_domain)) == pytest.approx(x, abs=0.01)
    # T's plain inverse keeps the Jensen bias of the curved transform
    assert abs(np.interp(mean_in_stabilised_domain, stabiliser.values, stabiliser.grid) - x) > 0.01


def test_constant_noise_gives_an_identity_transform_and_uncertainty_scale():
    stabiliser = VarianceStabiliser.from_noise_model(NoiseModel.white(0.1), 0.0, 1.0, target_noise_factor=5.0)
    x = np.linspace(-0.5, 1.5, 41)
    np.testing.assert_allclose(stabiliser.forward(x), x, atol=1e-6)
    np.testing.assert_allclose(stabiliser.inverse(x), x, atol=1e-5)
    np.testing.assert_allclose(stabiliser.slope(x), 1.0, atol=1e-5)


def test_metadata_round_trip_rebuilds_the_same_transform():
    stabiliser = VarianceStabiliser.from_noise_model(poisson_model(), -0.1, 1.2, target_noise_factor=5.0)
    rebuilt = VarianceStabiliser.from_metadata(json.loads(json.dumps(stabiliser.describe())))
    x = np.linspace(-0.2, 1.3, 101)
    np.testing.assert_array_equal(rebuilt.forward(x), stabiliser.forward(x))
    np.testing.assert_array_equal(rebuilt.inverse(x), stabiliser.inverse(x))


def test_a_noise_free_model_is_refused():
    with pytest.raises(InputError, match="no noise"):
        VarianceStabiliser.from_noise_model(NoiseModel.white(0.0), 0.0, 1.0, target_noise_factor=1.0)
