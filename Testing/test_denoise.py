"""The library's main call: input checks, shape/dtype contract, determinism, and the input left untouched."""

import numpy as np
import pytest

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.errors import Cancelled, InputError
from DiffDenoiseLib.noise import add_noise


def test_denoise_returns_float32_of_the_same_shape_and_leaves_the_input(knee_crop, tiny_settings):
    noisy = add_noise(knee_crop, "gaussian", 0.1, seed=0)
    before = noisy.copy()
    events = []
    result = denoise(noisy, preset=tiny_settings, device="cpu", progress=events.append)
    assert result.denoised.shape == noisy.shape and result.denoised.dtype == np.float32
    assert np.array_equal(noisy, before)
    assert result.noise.kind == "iid"
    assert {e.stage for e in events} == {"train bsn", "denoise"}
    assert set(result.timings) >= {"train_bsn_s", "inference_s", "total_s"}


def test_same_seed_same_result(knee_crop, tiny_settings):
    first = denoise(knee_crop, preset=tiny_settings, device="cpu", seed=1).denoised
    second = denoise(knee_crop, preset=tiny_settings, device="cpu", seed=1).denoised
    np.testing.assert_array_equal(first, second)


def test_2d_images_and_other_slice_axes(knee_crop, tiny_settings):
    assert denoise(knee_crop[0], preset=tiny_settings, device="cpu").denoised.shape == knee_crop[0].shape
    volume = knee_crop[:, :, :24]  # slicing along axis 2 gives 24 slices of 4x64: too small
    with pytest.raises(InputError, match="smaller than the network's minimum"):
        denoise(volume, preset=tiny_settings, slice_axis=2)


@pytest.mark.parametrize("image,message", [
    (np.zeros((2, 3, 32, 32)), "got a 4D array"),
    (np.zeros((1, 2, 3, 32, 32)), "got a 5D array"),
    (np.zeros(32), "got a 1D array"),
    (np.full((2, 32, 32), np.nan), "every voxel is NaN or Inf"),
    (np.full((2, 32, 32), 7.0), "constant"),
    (np.arange(128.0).reshape(2, 8, 8), "smaller than the network's minimum"),
])
def test_bad_inputs_give_clear_errors(image, message, tiny_settings):
    with pytest.raises(InputError, match=message):
        denoise(image, preset=tiny_settings)


def test_partly_nan_volume_is_refused_with_a_count(knee_crop, tiny_settings):
    noisy = knee_crop.copy()
    noisy[0, 0, :3] = np.nan
    with pytest.raises(InputError, match="3 of .* voxels are NaN"):
        denoise(noisy, preset=tiny_settings)


def test_unknown_options_are_refused(knee_crop):
    with pytest.raises(InputError, match="unknown method"):
        denoise(knee_crop, method="magic")
    with pytest.raises(InputError, match="unknown preset"):
        denoise(knee_crop, preset="huge")
    with pytest.raises(InputError, match="unknown noise type"):
        denoise(knee_crop, noise="pink")


def test_cancel_stops_the_run(knee_crop, tiny_settings):
    with pytest.raises(Cancelled):
        denoise(knee_crop, preset=tiny_settings, cancel=lambda: True)


def test_correlated_noise_uses_pixel_shuffle(knee_crop, tiny_settings):
    result = denoise(knee_crop, noise="correlated", preset=tiny_settings, device="cpu")
    config = result.bundle.networks["bsn"].config
    assert (config.pd_train, config.pd_infer, config.r3_passes) == (4, 2, 8)


def test_offered_presets_are_the_defined_ones():
    from DiffDenoiseLib.options import PRESETS
    from DiffDenoiseLib.pipelines.bsn import BSN_PRESETS

    assert tuple(BSN_PRESETS) == PRESETS
