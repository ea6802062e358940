"""The bad-input catalogue: every quirk of a real scan, through the public entry points.

Each case gives a correct result or one clear error that says what to do, and never modifies the input.
Also in the catalogue, tested where their subject lives: unreadable files of each format (test_io.py); altered,
pickle-based, foreign and future bundles (test_bundle.py); scalar vs DWI bundles (test_ddm2.py); Slicer label
maps and output == input (test_slicer_logic.py); the CLI's one-line errors and exit codes (test_cli.py); every
path a run writes, cohorts, signals, bundles and options (test_data_safety.py); multi-component images,
precision, DICOM/NIfTI geometry and DWI metadata (test_faithful_data.py).
"""

import subprocess
import sys

import numpy as np
import pytest
from helpers import make_tiny_ddm2

from DiffDenoiseLib.bundle import load_bundle, save_bundle
from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.denoise_dwi import denoise_dwi
from DiffDenoiseLib.errors import BundleError, InputError
from DiffDenoiseLib.io import Geometry, Volume, read_dwi, read_volume, write_dwi, write_volume
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.preprocessing import match_dtype


@pytest.fixture(scope="module")
def noisy(knee_crop) -> np.ndarray:
    return add_noise(knee_crop, "gaussian", 0.1, seed=0)


@pytest.fixture(scope="module")
def bsn_bundle(noisy):
    from helpers import make_tiny_settings

    return denoise(noisy, method="bsn", preset=make_tiny_settings(), device="cpu").bundle


def _bsn(image: np.ndarray, settings) -> np.ndarray:
    """The quickest whole run (BSN only: the same checks, scaling and slicing as every method)."""
    before = image.copy()
    denoised = denoise(image, method="bsn", preset=settings, device="cpu").denoised
    np.testing.assert_array_equal(image, before)  # the input is never modified
    return denoised


@pytest.mark.parametrize("shape,message", [
    ((64,), "got a 1D array"),
    ((2, 3, 64, 64), "4D series: denoise each 3D volume, or use DDM2 mode"),
    ((1, 2, 3, 64, 64), "got a 5D array"),
])
def test_arrays_that_are_not_2d_or_3d_are_refused(shape, message, tiny_settings):
    with pytest.raises(InputError, match=message):
        denoise(np.random.default_rng(0).random(shape), preset=tiny_settings)


@pytest.mark.parametrize("pick", [lambda v: v[0], lambda v: v, lambda v: v[:1], lambda v: v[:2]],
                         ids=["2D", "3D", "one-slice volume", "two-slice volume"])
def test_2d_images_and_volumes_of_any_slice_count_are_denoised(pick, noisy, tiny_settings):
    image = pick(noisy)
    denoised = _bsn(image, tiny_settings)
    assert denoised.shape == image.shape and denoised.dtype == np.float32 and np.isfinite(denoised).all()


@pytest.mark.parametrize("value,count", [(np.nan, 1), (np.inf, 3), (-np.inf, 1), (np.nan, "all")])
def test_nan_and_inf_are_refused_with_a_count_by_every_entry_point(value, count, noisy, bsn_bundle, small_dwi):
    image = noisy.copy()
    if count == "all":
        image[:] = value
        message = "every voxel is NaN or Inf"
    else:
        image[0, 5, :count] = value
        message = f"{count} of {image.size} voxels are NaN or Inf: replace them"
    with pytest.raises(InputError, match=message):
        denoise(image)
    with pytest.raises(InputError, match=message.split(" of ")[-1]):
        apply_bundle(bsn_bundle, image)
    series = small_dwi.volume.array[:4].astype(np.float32)
    series[1, 2, 3, 4] = value
    with pytest.raises(InputError, match="NaN or Inf"):
        denoise_dwi(series, small_dwi.bvals[:4], preset=make_tiny_ddm2())


@pytest.mark.parametrize("image,message", [
    (np.zeros((3, 64, 64), np.int16), "constant \\(every voxel is 0.0\\): there is nothing to denoise"),
    (np.full((3, 64, 64), 7.5), "constant"),
    (np.zeros((0, 64, 64)), "empty"),
    (np.ones((3, 64, 64), bool), "boolean \\(a mask\\?\\)"),
    (np.ones((3, 64, 64), np.complex64) * (1 + 1j), "complex-valued image: denoise the magnitude"),
    (np.linspace(0, 1e-44, 3 * 64 * 64, dtype=np.float32).reshape(3, 64, 64), "outside what float32 arithmetic"),
    (np.linspace(-3e38, 3e38, 3 * 64 * 64, dtype=np.float32).reshape(3, 64, 64), "multiply the image by a constant"),
])
def test_constant_empty_boolean_and_complex_images_are_refused(image, message):
    with pytest.raises(InputError, match=message):
        denoise(image)


@pytest.mark.parametrize("dtype,offset", [(np.uint8, 0), (np.uint16, 0), (np.int16, -1024), (np.int32, -1024),
                                          (np.float64, -0.5)])
def test_integer_unsigned_negative_and_float64_data(dtype, offset, noisy, tiny_settings):
    # Outputs are float32 in the input's units; files keep the input's type by default, rounded and clipped
    # to its range (CLI --output-dtype input), or float32 (--output-dtype float32).
    scale = 250 / noisy.max() if dtype == np.uint8 else 1.0
    image = np.clip(noisy * scale + offset, *((0, 255) if dtype == np.uint8 else (-np.inf, np.inf))).astype(dtype)
    denoised = _bsn(image, tiny_settings)
    assert denoised.dtype == np.float32 and np.isfinite(denoised).all()
    # the data type changes nothing: the same values as float32 give the same result
    np.testing.assert_allclose(denoised, _bsn(image.astype(np.float32), tiny_settings), rtol=1e-5,
                               atol=1e-4 * float(np.ptp(image)))
    stored = match_dtype(denoised, dtype)
    assert stored.dtype == dtype
    if np.issubdtype(dtype, np.integer):
        assert stored.min() >= np.iinfo(dtype).min and stored.max() <= np.iinfo(dtype).max


@pytest.mark.parametrize("scale,offset", [(1e-30, 0.0), (1e30, 0.0), (1.0, -3000.0)])
def test_results_follow_the_intensity_units(scale, offset, noisy, tiny_settings):
    # Robust normalisation: denoising k * x + c gives k * denoise(x) + c, whatever the units.
    reference = _bsn(noisy.astype(np.float64), tiny_settings)
    scaled = _bsn(noisy.astype(np.float64) * scale + offset, tiny_settings)
    np.testing.assert_allclose((scaled.astype(np.float64) - offset) / scale, reference, rtol=1e-3,
                               atol=1e-3 * float(np.ptp(noisy)))


def test_images_with_exactly_flat_regions_give_finite_results(noisy, tiny_settings):
    # Masked, padded or skull-stripped images: the noise level is exactly 0 over much of the intensity range.
    masked = np.where(noisy > np.percentile(noisy, 60), noisy, 0.0).astype(np.float32)
    result = denoise(masked, preset=tiny_settings, device="cpu")
    assert np.isfinite(result.denoised).all()


def test_slices_smaller_than_the_networks_are_refused(tiny_settings, noisy, bsn_bundle):
    with pytest.raises(InputError, match="8x8 px are smaller than the network's minimum of .*pick another slice axis"):
        denoise(noisy[:, :8, :8], preset=tiny_settings)
    with pytest.raises(InputError, match="smaller than the network's minimum"):
        apply_bundle(bsn_bundle, noisy[:, :2, :2])
    with pytest.raises(InputError, match="4x64 px are smaller"):  # thin along the chosen axis
        denoise(noisy, preset=tiny_settings, slice_axis=2)


def test_anisotropic_non_ras_file_is_sliced_along_its_coarse_axis_and_keeps_its_geometry(tmp_path, noisy):
    # A sagittal-like acquisition: 4 thick slices along x (numpy axis 2), axes permuted and flipped vs RAS.
    direction = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    geometry = Geometry((4.0, 0.7, 0.7), (30.0, -12.5, 8.0), tuple(direction.ravel()))
    source, output = tmp_path / "sagittal.nrrd", tmp_path / "out.nii.gz"
    write_volume(source, Volume(np.ascontiguousarray(np.moveaxis(noisy, 0, 2)).astype(np.int16), geometry))
    assert read_volume(source).geometry.slice_axis() == 2
    run = subprocess.run([sys.executable, "-m", "DiffDenoiseLib.cli", "--no-progress", "denoise", str(source),
                          str(output), "--method", "bsn", "--steps", "2", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    written = read_volume(output)
    assert written.array.shape == (64, 64, 4) and written.array.dtype == np.int16
    for field in ("spacing", "origin", "direction"):
        np.testing.assert_allclose(getattr(written.geometry, field), getattr(geometry, field), atol=1e-5)


def test_dwi_series_problems_are_refused_clearly(small_dwi, tmp_path):
    series, bvals = small_dwi.volume.array, small_dwi.bvals
    with pytest.raises(InputError, match="at least 3 volumes"):
        denoise_dwi(series[:2], bvals[:2], preset=make_tiny_ddm2())
    with pytest.raises(InputError, match="4D diffusion series"):
        denoise_dwi(series[0], bvals, preset=make_tiny_ddm2())
    with pytest.raises(InputError, match="64 b-values for 65 volumes: give one b-value per volume"):
        denoise_dwi(series, bvals[:-1], preset=make_tiny_ddm2())
    path = tmp_path / "dwi.nii.gz"
    write_dwi(path, small_dwi)
    (tmp_path / "dwi.bval").unlink()
    with pytest.raises(InputError, match="missing dwi.bval for dwi.nii.gz: pass it with --bval"):
        read_dwi(path)
    (tmp_path / "dwi.bval").write_text(" ".join(["1000"] * 64) + "\n")
    with pytest.raises(InputError, match="64 b-values but 65 gradient directions"):
        read_dwi(path)


@pytest.mark.parametrize("name", ["cut.nii.gz", "cut.nii", "cut.mha"])
def test_truncated_image_files_are_refused(tmp_path, name, noisy):
    path = tmp_path / name
    write_volume(path, Volume(noisy, Geometry.identity(3)))
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(InputError, match="cannot read"):
        read_volume(path)


def test_truncated_bundle_is_refused(tmp_path, bsn_bundle):
    path = save_bundle(tmp_path / "model.safetensors", bsn_bundle)
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    with pytest.raises(BundleError, match="model.safetensors"):
        load_bundle(path)
