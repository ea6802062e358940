"""Empirical Wiener filtering with a pilot estimate, and its blend weight fitted on a recorrupted pair."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.noise.model import NoiseModel
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.wiener import PatchDct, blend, blend_weight, coefficient_variances, dct_basis, wiener_filter

SIGMA = 0.1


def _texture(seed: int = 0) -> np.ndarray:
    """(3, 1, 64, 64) slices: a flat left half, smooth blobs of 0.3 contrast on the right."""
    rng = np.random.default_rng(seed)
    clean = np.full((3, 1, 64, 64), 0.5, np.float32)
    blobs = ndimage.gaussian_filter(rng.standard_normal((3, 1, 64, 32)), (0, 0, 2, 2))
    clean[..., 32:] += (0.3 * blobs / blobs.std()).astype(np.float32)
    return clean


def _rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).mean()))


def test_the_dct_basis_is_orthonormal_and_white_noise_spreads_evenly():
    basis = dct_basis(8).reshape(64, 64)
    np.testing.assert_allclose(basis @ basis.T, np.eye(64), atol=1e-10)
    white = np.zeros((1, 1))
    white[0, 0] = 1
    np.testing.assert_allclose(coefficient_variances(white), 1.0)
    # noise smoothed by a Gaussian: strong at the lowest frequency, weak at the highest
    delta = np.zeros((9, 9))
    delta[4, 4] = 1
    coloured = ndimage.gaussian_filter(delta, 1.0)
    variances = coefficient_variances(coloured / np.linalg.norm(coloured))
    assert variances[0] > 3 and variances[-1] < 0.01


def test_the_dct_basis_across_slices_is_orthonormal_and_white_noise_spreads_evenly():
    basis = dct_basis(8, 4).reshape(256, 256)
    np.testing.assert_allclose(basis @ basis.T, np.eye(256), atol=1e-10)
    np.testing.assert_allclose(basis[0], 1 / 16)  # element 0 is the patch mean
    np.testing.assert_allclose(coefficient_variances(np.ones((1, 1)), depth=4), 1.0)


@pytest.mark.parametrize("depth", [1, 3])
def test_the_separable_transform_is_the_convolution_with_the_basis_and_its_adjoint(depth):
    rng = np.random.default_rng(3)
    volume = torch.from_numpy(rng.standard_normal((1, 1, depth, 20, 23)).astype(np.float32))
    basis = torch.from_numpy(dct_basis(8, depth)).float()[:, None]
    transform = PatchDct(8, depth)
    coefficients = transform.analyse(volume)
    torch.testing.assert_close(coefficients, F.conv3d(volume, basis), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(transform.synthesise(coefficients), F.conv_transpose3d(coefficients, basis),
                               atol=1e-4, rtol=1e-5)


def test_patches_across_slices_that_share_the_anatomy_remove_more_noise():
    # 8 slices of the same texture, noise independent between them: the mean across slices is signal
    clean = np.repeat(_texture()[:1], 8, axis=0)
    noisy = clean + np.random.default_rng(7).normal(0, SIGMA, clean.shape).astype(np.float32)
    pilot = clean + np.random.default_rng(8).normal(0, SIGMA / 3, clean.shape).astype(np.float32)
    flat = _rms(wiener_filter(noisy, pilot, NoiseModel.white(SIGMA)), clean)
    deep = _rms(wiener_filter(noisy, pilot, NoiseModel.white(SIGMA), depth=4), clean)
    assert deep < 0.8 * flat
    with pytest.raises(ValueError, match="patch depth"):
        wiener_filter(noisy[:3], pilot[:3], NoiseModel.white(SIGMA), depth=4)


def test_the_patch_depth_follows_how_the_network_reads_the_neighbours(tiny_settings):
    settings = tiny_settings.bsn
    read_whole = replace(settings, network=replace(settings.network, context_slices=2, blind_context=False))
    assert read_whole.wiener_patch_depth(24) == settings.wiener_depth
    assert read_whole.wiener_patch_depth(3) == min(3, settings.wiener_depth)  # never more than the volume
    shared_noise = replace(read_whole, network=replace(read_whole.network, blind_context=True))
    assert shared_noise.wiener_patch_depth(24) == 1
    assert settings.wiener_patch_depth(24) == 1  # the 2D path
    with pytest.raises(InputError, match="patch depth"):
        replace(settings, wiener_depth=0)


def test_a_good_pilot_removes_the_noise_and_keeps_the_detail():
    clean = _texture()
    noisy = clean + np.random.default_rng(1).normal(0, SIGMA, clean.shape).astype(np.float32)
    # a pilot that is right on average but itself noisy at a third of the noise level
    pilot = clean + np.random.default_rng(2).normal(0, SIGMA / 3, clean.shape).astype(np.float32)
    filtered = wiener_filter(noisy, pilot, NoiseModel.white(SIGMA))
    assert filtered.shape == noisy.shape and filtered.dtype == np.float32
    flat, textured = np.s_[..., 4:28], np.s_[..., 36:60]
    assert _rms(filtered[flat], clean[flat]) < 0.25 * SIGMA  # the noisy input: 1 sigma
    assert _rms(filtered[textured], clean[textured]) < 0.5 * SIGMA
    # a blurred pilot: the filter brings back detail the pilot lost, from the noisy patch
    blurred = ndimage.gaussian_filter(clean, (0, 0, 2, 2))
    rebuilt = wiener_filter(noisy, blurred, NoiseModel.white(SIGMA))
    assert _rms(rebuilt[textured], clean[textured]) < 0.8 * _rms(blurred[textured], clean[textured])


def test_patches_filtered_with_the_similar_patches_around_them_remove_more_noise():
    # a texture that repeats every 10 pixels: each patch has many like it within the search radius
    rng = np.random.default_rng(9)
    tile = ndimage.gaussian_filter(rng.standard_normal((10, 10)), 1.0, mode="wrap")
    clean = np.tile(0.5 + 0.3 * tile / tile.std(), (2, 1, 7, 7)).astype(np.float32)[..., :64, :64]
    noisy = clean + rng.normal(0, SIGMA, clean.shape).astype(np.float32)
    pilot = clean + rng.normal(0, SIGMA / 3, clean.shape).astype(np.float32)
    alone = _rms(wiener_filter(noisy, pilot, NoiseModel.white(SIGMA), group=1, step=1), clean)
    grouped = _rms(wiener_filter(noisy, pilot, NoiseModel.white(SIGMA)), clean)
    assert grouped < 0.75 * alone


def test_a_flat_pilot_lets_no_noise_through():
    """Every AC coefficient of a flat pilot is 0, so it shrinks them all away, and the patch mean is the
    pilot's: a noisy mean would pass almost whole and leave low-frequency noise (what SSIM punishes most)."""
    pilot = np.full((2, 1, 48, 48), 0.6, np.float32)
    noisy = pilot + np.random.default_rng(6).normal(0, SIGMA, pilot.shape).astype(np.float32)
    np.testing.assert_allclose(wiener_filter(noisy, pilot, NoiseModel.white(SIGMA)), pilot, atol=1e-5)


def test_more_noise_means_more_shrinkage():
    clean = _texture()
    noisy = clean + np.random.default_rng(3).normal(0, SIGMA, clean.shape).astype(np.float32)
    pilot = ndimage.gaussian_filter(clean, (0, 0, 1, 1))
    as_measured = wiener_filter(noisy, pilot, NoiseModel.white(SIGMA))
    recorrupted_level = wiener_filter(noisy, pilot, NoiseModel.white(SIGMA), variance_factor=4.0)
    # the larger assumed noise pulls the output towards the pilot
    assert _rms(recorrupted_level, pilot) < 0.8 * _rms(as_measured, pilot)


def test_slices_smaller_than_a_patch_keep_the_pilot():
    noisy = np.random.default_rng(4).random((2, 1, 6, 40)).astype(np.float32)
    pilot = np.full_like(noisy, 0.5)
    np.testing.assert_array_equal(wiener_filter(noisy, pilot, NoiseModel.white(SIGMA)), pilot)


def test_the_weight_fitted_against_a_noisy_twin_is_the_one_that_minimises_the_error():
    rng = np.random.default_rng(5)
    clean = rng.random((4, 1, 128, 128)).astype(np.float32)
    # two estimates with independent errors, the second twice as large: the best mix is 0.8 / 0.2
    first = clean + rng.normal(0, 0.05, clean.shape).astype(np.float32)
    second = clean + rng.normal(0, 0.1, clean.shape).astype(np.float32)
    twin = clean + rng.normal(0, 0.3, clean.shape).astype(np.float32)  # independent noise, 3x the larger error
    assert blend_weight(first, second, clean) == pytest.approx(0.8, abs=0.01)
    weight = blend_weight(first, second, twin)
    assert weight == pytest.approx(0.8, abs=0.03)
    mixed = blend(first, second, weight)
    assert _rms(mixed, clean) < 0.92 * _rms(first, clean)
    # weights stay in [0, 1]; identical estimates give the first
    assert blend_weight(first, second, first + (first - second)) == 1.0
    assert blend_weight(first, first, twin) == 1.0


def test_denoise_fits_the_weight_and_apply_repeats_the_blend(knee_crop, tiny_settings):
    noisy = add_noise(knee_crop, "gaussian", 0.1, seed=0)
    result = denoise(noisy, method="bsn", preset=tiny_settings, device="cpu", seed=0)
    weight = result.bundle.metadata["bsn"]["wiener_weight"]
    assert 0.0 <= weight <= 1.0
    np.testing.assert_allclose(apply_bundle(result.bundle, noisy, device="cpu").denoised, result.denoised,
                               atol=1e-4)
    # a bundle without a weight (before the blend) applies the combination with the noisy pixel alone
    del result.bundle.metadata["bsn"]["wiener_weight"]
    plain = apply_bundle(result.bundle, noisy, device="cpu").denoised
    assert weight == 1.0 or not np.allclose(plain, result.denoised, atol=1e-4)
