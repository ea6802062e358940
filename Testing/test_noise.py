"""Noise simulation and noise analysis on a real image."""

import numpy as np
import pytest

from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.noise.analysis import estimate_noise, robust_range
from DiffDenoiseLib.noise.simulate import NOISE_KINDS, add_noise


@pytest.mark.parametrize("kind,level", [("gaussian", 0.1), ("correlated", 0.1), ("rician", 0.05),
                                        ("poisson", 30), ("gamma", 4)])
def test_noise_is_seeded_and_changes_the_image(knee_crop, kind, level):
    first = add_noise(knee_crop, kind, level, seed=3)
    assert np.array_equal(first, add_noise(knee_crop, kind, level, seed=3))
    assert not np.array_equal(first, add_noise(knee_crop, kind, level, seed=4))
    assert first.dtype == np.float32 and first.shape == knee_crop.shape
    assert np.abs(first - knee_crop).mean() > 0


def test_gaussian_noise_has_the_requested_strength(knee_crop):
    low, high = robust_range(knee_crop)
    residual = add_noise(knee_crop, "gaussian", 0.1, seed=0) - knee_crop
    assert residual.std() == pytest.approx(0.1 * (high - low), rel=0.03)


def test_gamma_speckle_is_multiplicative_with_unit_mean(knee_crop):
    ratio = add_noise(knee_crop, "gamma", 4, seed=0)[knee_crop > 100] / knee_crop[knee_crop > 100]
    assert ratio.mean() == pytest.approx(1.0, abs=0.02)
    assert ratio.var() == pytest.approx(1 / 4, rel=0.1)


@pytest.mark.parametrize("kind", ["gaussian", "poisson", "rician"])
def test_white_noise_is_classified_iid_with_a_fair_level(knee_crop, kind):
    level = {"gaussian": 0.05, "poisson": 30, "rician": 0.05}[kind]
    analysis = estimate_noise(add_noise(knee_crop, kind, level, seed=1))
    assert analysis.kind == "iid"
    if kind == "gaussian":
        low, high = robust_range(knee_crop)
        assert analysis.sigma == pytest.approx(0.05 * (high - low), rel=0.3)


@pytest.mark.parametrize("correlation_sigma", [1.0, 2.0])
def test_filtered_noise_is_classified_correlated(knee_crop, correlation_sigma):
    noisy = add_noise(knee_crop, "correlated", 0.1, seed=1, correlation_sigma=correlation_sigma)
    assert estimate_noise(noisy).kind == "correlated"


def test_unknown_kind_and_bad_level_are_refused(knee_crop):
    with pytest.raises(InputError, match="unknown noise kind"):
        add_noise(knee_crop, "salt", 0.1)
    with pytest.raises(InputError, match="positive"):
        add_noise(knee_crop, "gaussian", 0)
    assert set(NOISE_KINDS) == {"gaussian", "poisson", "gamma", "rician", "correlated"}


def test_outlier_slices_are_those_denoised_unlike_the_others(knee_crop):
    from scipy import ndimage

    from DiffDenoiseLib.noise.analysis import residual_outliers

    noisy = add_noise(knee_crop, "gaussian", 0.1, seed=2)
    denoised = np.stack([ndimage.gaussian_filter(plane, 1.0) for plane in noisy])
    denoised[1] = noisy[1]  # nothing removed
    denoised[3] = ndimage.gaussian_filter(noisy[3], 6.0)  # anatomy removed with the noise
    flagged = residual_outliers(noisy, denoised)
    assert flagged.tolist() == [i in (1, 3) for i in range(len(noisy))]
    assert not residual_outliers(noisy[:1], denoised[:1]).any()
    assert not residual_outliers(np.zeros((2, 32, 32)), np.zeros((2, 32, 32))).any()
