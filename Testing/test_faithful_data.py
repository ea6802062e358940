"""Faithful data: what is read is what the file holds, and what is written keeps it (catalogue ids in brackets,
docs: robustness-findings.md). Multi-component images, integer precision, DICOM and NIfTI geometry, DWI
gradients and b-values."""

from __future__ import annotations

import json
import shutil
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from DiffDenoiseLib import cli
from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.denoise_dwi import check_bvalues
from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.io import (
    DataWarning,
    Geometry,
    Volume,
    read_bvals_bvecs,
    read_dwi,
    read_volume,
    write_dwi,
    write_volume,
)
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.preprocessing import IntensityScaling, match_dtype

GEOMETRY = Geometry((0.5, 0.5, 0.9), (10.0, -20.0, 5.0), tuple(np.eye(3).ravel()))


@pytest.fixture(scope="module")
def noisy(knee_crop) -> np.ndarray:
    return add_noise(knee_crop, "gaussian", 0.1, seed=0)


# --- multi-component images (F17, F11) -------------------------------------------------------------------


@pytest.mark.parametrize("name,components", [("twochan.mha", 2), ("tensor6.nrrd", 6)])
def test_vector_images_are_refused_not_collapsed(tmp_path, name, components):
    path = tmp_path / name
    data = np.random.default_rng(0).random((4, 16, 16, components)).astype(np.float32)
    sitk.WriteImage(sitk.GetImageFromArray(data, isVector=True), str(path))
    with pytest.raises(InputError, match=f"has {components} components per voxel .* not one scalar"):
        read_volume(path)


def test_colour_png_becomes_luminance_and_gray_alpha_png_is_explained(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (16, 16, 3)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(rgb, isVector=True), str(tmp_path / "rgb.png"))
    gray = read_volume(tmp_path / "rgb.png").array
    np.testing.assert_allclose(gray, rgb @ np.array([0.299, 0.587, 0.114]), atol=1e-3)
    from PIL import Image  # matplotlib's imaging library, here only to make the test file

    Image.fromarray(np.dstack([rgb[..., 0], rgb[..., 1]]), "LA").save(tmp_path / "la.png")
    with pytest.raises(InputError, match="gray \\+ alpha PNG, which ITK cannot read"):
        read_volume(tmp_path / "la.png")


# --- precision (F29) -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype,offset", [(np.uint32, 3_000_000_000), (np.int32, 2_000_000_000),
                                          (np.int64, 10 ** 12), (np.float64, 1e8)])
def test_large_offsets_keep_their_precision(noisy, tiny_settings, dtype, offset):
    # README: denoising k x + c gives k f(x) + c; near 3e9 float32 steps are 256 units
    base = np.rint(noisy * 1000 / noisy.max()).astype(np.int64)
    shifted = (base + offset).astype(dtype)
    reference = denoise(base.astype(np.float32), method="bsn", preset=tiny_settings, device="cpu").denoised
    result = denoise(shifted, method="bsn", preset=tiny_settings, device="cpu").denoised
    assert result.dtype == np.float64
    np.testing.assert_allclose(result - offset, reference, atol=0.02)
    stored = match_dtype(result, dtype)
    assert len(np.unique(stored)) > 100  # not 2 distinct values
    np.testing.assert_allclose(stored.astype(np.float64) - offset, np.rint(reference), atol=1)


def test_normalisation_is_exact_near_the_top_of_uint32():
    image = (np.arange(4096, dtype=np.uint32).reshape(64, 64) + 4_000_000_000).astype(np.uint32)
    scaling = IntensityScaling.fit(image)
    assert scaling.precise
    np.testing.assert_allclose(scaling.denormalise(scaling.normalise(image)), image, atol=1e-3)


# --- DICOM geometry (F6, F5, F1) -------------------------------------------------------------------------


def _series(tmp_path, noisy, name="series"):
    folder = tmp_path / name
    write_volume(folder, Volume(np.rint(noisy * 100).astype(np.int16), GEOMETRY))
    return folder


def test_dicom_series_with_a_missing_slice_is_refused(tmp_path, knee_crop):
    volume = np.tile(np.rint(knee_crop * 100).astype(np.int16), (2, 1, 1))  # 8 slices
    folder = tmp_path / "gap"
    write_volume(folder, Volume(volume, GEOMETRY))
    (folder / "slice_0004.dcm").unlink()
    with pytest.raises(InputError, match="unevenly spaced slices .* a missing or duplicated slice"):
        read_volume(folder)


def test_dicom_series_without_pixel_spacing_is_refused(tmp_path, noisy):
    folder = _series(tmp_path, noisy)
    for path in folder.iterdir():
        dataset = pydicom.dcmread(path)
        del dataset[0x00280030]
        dataset.save_as(path)
    with pytest.raises(InputError, match="has no PixelSpacing"):
        read_volume(folder)


def test_dicom_series_geometry_is_kept(tmp_path, noisy):
    read = read_volume(_series(tmp_path, noisy))
    np.testing.assert_allclose(read.geometry.spacing, GEOMETRY.spacing, atol=1e-6)
    np.testing.assert_allclose(read.geometry.origin, GEOMETRY.origin, atol=1e-6)


# --- NIfTI geometry (F21, F32, F19) ----------------------------------------------------------------------


def test_disagreeing_qform_and_sform_are_both_kept_with_a_warning(tmp_path, noisy):
    qform = np.diag([0.8, 0.8, 3.0, 1.0])
    qform[:3, 3] = (10, -20, 5)
    sform = np.diag([1.6, 1.6, 6.0, 1.0])
    sform[:3, 3] = (100, 100, 100)
    image = nib.Nifti1Image(np.rint(noisy * 100).astype(np.int16).T, None)
    image.set_qform(qform, 1)
    image.set_sform(sform, 2)
    source, output = tmp_path / "qs.nii.gz", tmp_path / "out.nii.gz"
    nib.save(image, source)
    with pytest.warns(DataWarning, match="qform and sform disagree"):
        volume = read_volume(source)
    write_volume(output, volume.with_array(volume.array))
    header = nib.load(output).header
    np.testing.assert_allclose(header.get_qform(), qform, atol=1e-4)
    np.testing.assert_allclose(header.get_sform(), sform, atol=1e-4)
    assert (int(header["qform_code"]), int(header["sform_code"])) == (1, 2)


def test_uncompressed_file_named_nii_gz_is_read(tmp_path, noisy):
    plain = tmp_path / "plain.nii"
    write_volume(plain, Volume(noisy, GEOMETRY))
    shutil.copy(plain, tmp_path / "fake.nii.gz")
    np.testing.assert_array_equal(read_volume(tmp_path / "fake.nii.gz").array, read_volume(plain).array)


def test_non_orthogonal_geometry_is_not_coerced_into_nifti(capsys, tmp_path, noisy, tiny_settings):
    sheared = Geometry((1.0, 1.0, 3.0), (0.0, 0.0, 0.0), (1.0, 0.3, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    source = tmp_path / "nonortho.nrrd"
    write_volume(source, Volume(noisy, sheared))
    code = cli.main(["--no-progress", "denoise", str(source), str(tmp_path / "out.nii.gz"), "--method", "bsn",
                     "--steps", "500"])
    assert code == 2 and "NIfTI cannot store this image's non-orthogonal" in capsys.readouterr().err


# --- DWI b-values and gradients (D3, D4, D6, D7) ---------------------------------------------------------


@pytest.mark.parametrize("bvals,message", [
    ([0, 1000, np.nan, 1000], "finite and >= 0; volume\\(s\\) 2 have nan"),  # D6
    ([0, 1000, -1000, 1000], "volume\\(s\\) 2 have -1000"),  # D7
    ([0, 1.0, 1.0, 1.0], "look like ms/um\\^2, DDM2 expects s/mm\\^2; multiply them by 1000"),  # D4
])
def test_implausible_b_values_are_refused(bvals, message):
    with pytest.raises(InputError, match=message):
        check_bvalues(np.array(bvals, dtype=np.float64))


def test_non_unit_gradients_are_normalised_so_nrrd_b_values_stay_right(tmp_path, small_dwi):  # D3
    base = tmp_path / "dwi.nii.gz"
    write_dwi(base, small_dwi)
    np.savetxt(tmp_path / "dwi.bvec", (2 * small_dwi.bvecs).T, fmt="%.10g")
    with pytest.warns(DataWarning, match="not unit length"):
        bvals, bvecs = read_bvals_bvecs(tmp_path / "dwi.bval", tmp_path / "dwi.bvec")
    weighted = bvals > 0
    np.testing.assert_allclose(np.linalg.norm(bvecs[weighted], axis=1), 1.0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DataWarning)
        dwi = read_dwi(base)
    write_dwi(tmp_path / "out.nrrd", dwi)
    np.testing.assert_allclose(read_dwi(tmp_path / "out.nrrd").bvals, small_dwi.bvals, rtol=1e-5)


def test_provenance_of_a_dicom_output_keeps_only_dicom_tags(tmp_path, noisy):
    volume = Volume(noisy.astype(np.int16), GEOMETRY, {"nifti_qform_sform": json.dumps({}), "0010|0010": "Doe"})
    write_volume(tmp_path / "series", volume)
    dataset = pydicom.dcmread(sorted((tmp_path / "series").iterdir())[0])
    assert str(dataset.PatientName) == "Doe"


def test_2d_nifti_keeps_its_place_in_space(tmp_path, noisy):  # F27
    affine = np.diag([0.7, 0.7, 2.0, 1.0])
    affine[:3, 3] = (-30.0, 12.0, 5.0)
    source = tmp_path / "true2d.nii.gz"
    nib.save(nib.Nifti1Image(noisy[0].T.astype(np.float32), affine), source)
    volume = read_volume(source)
    assert volume.array.shape == (1, 64, 64)
    write_volume(tmp_path / "out.nii.gz", volume)
    np.testing.assert_allclose(nib.load(tmp_path / "out.nii.gz").affine, affine, atol=1e-5)


@pytest.mark.parametrize("name", ["OUT.NII.GZ", "out.Nii", "out.MHD", "out.MHA", "out.NRRD"])
def test_upper_case_extensions_are_written_and_read(tmp_path, noisy, name):
    volume = Volume(noisy.astype(np.int16), GEOMETRY)
    write_volume(tmp_path / name, volume)
    read = read_volume(tmp_path / name)
    np.testing.assert_array_equal(read.array, volume.array)
    np.testing.assert_allclose(read.geometry.origin, GEOMETRY.origin, atol=1e-5)
