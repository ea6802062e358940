"""The blind-spot estimate combined with the noisy pixel: detail back, no noise back in flat regions."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.noise.model import NoiseModel
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.posterior import combine_with_noisy, spread_factor

SIGMA = 0.1


def _scene(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, H, W) slices: a flat left half and a fine random texture on the right; a noise-free estimate
    that misses the texture (as a blind-spot network misses detail it cannot infer from the surroundings)."""
    rng = np.random.default_rng(seed)
    clean = np.full((4, 1, 64, 64), 0.5, np.float32)
    clean[..., 32:] += rng.uniform(-0.3, 0.3, (4, 1, 64, 32)).astype(np.float32)
    estimate = np.full_like(clean, 0.5)
    return clean, estimate


def test_the_noisy_pixel_restores_detail_and_adds_no_noise_to_flat_regions():
    clean, estimate = _scene()
    noisy = clean + np.random.default_rng(1).normal(0, SIGMA, clean.shape).astype(np.float32)
    combined = combine_with_noisy(noisy, estimate, NoiseModel.white(SIGMA))
    flat, textured = np.s_[..., 4:28], np.s_[..., 36:60]
    # flat: the estimate is exact, and almost none of the noise comes back (all of it would be 0.1)
    assert np.abs(combined[flat] - clean[flat]).std() < 0.1 * SIGMA
    # texture: the estimate is off by its 0.17 spread; the combination recovers much of it, beating both the
    # estimate and the noisy pixel (the Wiener gain here is 0.03 / (0.03 + 0.01) = 0.75)
    error = {name: np.sqrt(((image[textured] - clean[textured]) ** 2).mean())
             for name, image in (("estimate", estimate), ("noisy", noisy), ("combined", combined))}
    assert error["combined"] < 0.9 * min(error["estimate"], error["noisy"])


def test_the_weight_ignores_the_pixels_own_noise():
    """The uncertainty comes from the neighbours only: a pixel's share of its own noise does not grow with it
    (a weight that did would pull large noise values through)."""
    clean, estimate = _scene()
    noisy = clean + np.random.default_rng(2).normal(0, SIGMA, clean.shape).astype(np.float32)
    spiked = noisy.copy()
    spiked[0, 0, 16, 16] += 5 * SIGMA  # a noise spike in the flat half
    combined = combine_with_noisy(spiked, estimate, NoiseModel.white(SIGMA))
    assert abs(combined[0, 0, 16, 16] - 0.5) < 0.05 * SIGMA


def test_more_noise_gives_the_noisy_pixel_less_weight():
    clean, estimate = _scene()
    noise = np.random.default_rng(3).normal(0, SIGMA, clean.shape).astype(np.float32)
    noisy = clean + noise
    textured = np.s_[..., 36:60]
    as_measured = combine_with_noisy(noisy, estimate, NoiseModel.white(SIGMA))
    recorrupted_level = combine_with_noisy(noisy, estimate, NoiseModel.white(SIGMA), variance_factor=4.0)
    share = [np.abs(out[textured] - estimate[textured]).mean() / np.abs(noisy[textured] - estimate[textured]).mean()
             for out in (as_measured, recorrupted_level)]
    assert share[1] < 0.8 * share[0]


def test_correlated_noise_raises_the_threshold():
    white = np.zeros((9, 9))
    white[4, 4] = 1
    coloured = ndimage.gaussian_filter(white, 1.0)
    coloured /= np.linalg.norm(coloured)
    assert spread_factor(white) == pytest.approx(1.0)
    assert spread_factor(coloured) > 1.5
    # correlated noise on a flat image: without the larger threshold its blobs would pass as detail
    rng = np.random.default_rng(4)
    noise = ndimage.gaussian_filter(rng.standard_normal((3, 1, 96, 96)), (0, 0, 1, 1))
    noise = (noise / noise.std() * SIGMA).astype(np.float32)
    estimate = np.full_like(noise, 0.5)
    model = NoiseModel(np.zeros(1), np.full(1, SIGMA**2), coloured)
    combined = combine_with_noisy(estimate + noise, estimate, model)
    as_white = combine_with_noisy(estimate + noise, estimate, NoiseModel.white(SIGMA))
    assert np.abs(combined - 0.5).std() < 0.5 * np.abs(as_white - 0.5).std()


def test_denoise_records_the_combination_and_apply_repeats_it(knee_crop, tiny_settings):
    noisy = add_noise(knee_crop, "gaussian", 0.1, seed=0)
    result = denoise(noisy, method="bsn", preset=tiny_settings, device="cpu", seed=0)
    assert result.bundle.metadata["bsn"]["posterior"] is True
    assert result.bundle.metadata["noise"]["model"]["family"] == "gaussian"
    np.testing.assert_allclose(apply_bundle(result.bundle, noisy, device="cpu").denoised, result.denoised,
                               atol=1e-4)
    without = replace(tiny_settings, bsn=replace(tiny_settings.bsn, posterior=False, wiener=False))
    plain = denoise(noisy, method="bsn", preset=without, device="cpu", seed=0)
    assert plain.bundle.metadata["bsn"] == {"posterior": False, "wiener_weight": None, "wiener_depth": 1}
    assert not np.allclose(plain.denoised, result.denoised)
    # a bundle from before the combination (no "bsn" entry) applies its BSN alone, as it was trained
    del result.bundle.metadata["bsn"]
    np.testing.assert_allclose(apply_bundle(result.bundle, noisy, device="cpu").denoised, plain.denoised, atol=1e-4)
