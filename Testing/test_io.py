"""Round trips of every supported format, keeping geometry, and atomic writes."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.io import (
    DiffusionVolume,
    Geometry,
    Volume,
    read_dwi,
    read_provenance,
    read_volume,
    write_dwi,
    write_volume,
)
from DiffDenoiseLib.provenance import Provenance

# An oblique, anisotropic, off-centre geometry: a round trip that drops any of it fails.
ROTATION = np.array([[0.0, -0.6, 0.8], [1.0, 0.0, 0.0], [0.0, 0.8, 0.6]])
GEOMETRY_3D = Geometry((0.7, 0.8, 3.5), (-12.5, 40.25, 7.0), tuple(ROTATION.ravel()))


def _volume(dtype=np.int16, shape=(5, 12, 10)) -> Volume:
    rng = np.random.default_rng(1)
    return Volume(rng.integers(0, 1000, size=shape).astype(dtype), GEOMETRY_3D)


def _assert_geometry(read: Geometry, written: Geometry, tolerance: float = 1e-5) -> None:
    np.testing.assert_allclose(read.spacing, written.spacing, atol=tolerance)
    np.testing.assert_allclose(read.origin, written.origin, atol=tolerance)
    np.testing.assert_allclose(read.direction, written.direction, atol=tolerance)


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii", "v.nrrd", "v.nhdr", "v.mha", "v.mhd"])
@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_volume_formats_round_trip_with_geometry(tmp_path, name, dtype):
    volume = _volume(dtype)
    write_volume(tmp_path / name, volume)
    back = read_volume(tmp_path / name)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == volume.array.dtype
    _assert_geometry(back.geometry, volume.geometry)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_dicom_series_folder_round_trip(tmp_path):
    volume = _volume(np.int16)
    write_volume(tmp_path / "series", volume)
    assert len(list((tmp_path / "series").glob("*.dcm"))) == 5
    back = read_volume(tmp_path / "series")
    np.testing.assert_array_equal(back.array, volume.array)
    _assert_geometry(back.geometry, volume.geometry, tolerance=1e-4)
    assert "DiffDenoise output" in back.metadata["0008|103e"]  # series description marks derived data


def test_dicom_float_data_is_stored_with_rescale(tmp_path):
    volume = Volume(np.linspace(-3.5, 120.25, 5 * 12 * 10, dtype=np.float32).reshape(5, 12, 10), GEOMETRY_3D)
    write_volume(tmp_path / "series", volume)
    back = read_volume(tmp_path / "series")
    np.testing.assert_allclose(back.array, volume.array, atol=(120.25 + 3.5) / 65535)


def test_single_dicom_file_round_trip(tmp_path):
    volume = _volume(np.int16, shape=(1, 12, 10))
    write_volume(tmp_path / "slice.dcm", volume)
    back = read_volume(tmp_path / "slice.dcm")
    np.testing.assert_array_equal(back.array.reshape(volume.array.shape), volume.array)
    np.testing.assert_allclose(back.geometry.spacing[:2], volume.geometry.spacing[:2], atol=1e-5)
    np.testing.assert_allclose(back.geometry.origin, volume.geometry.origin, atol=1e-4)
    np.testing.assert_allclose(back.geometry.direction, volume.geometry.direction, atol=1e-5)


@pytest.mark.parametrize("name,dtype", [("i.png", np.uint8), ("i.png", np.uint16), ("i.tif", np.float32)])
def test_2d_image_formats_round_trip(tmp_path, name, dtype):
    geometry = Geometry((0.3, 0.4), (1.5, -2.0), (1.0, 0.0, 0.0, 1.0))
    volume = Volume(np.arange(12 * 10).reshape(12, 10).astype(dtype), geometry)
    write_volume(tmp_path / name, volume)
    back = read_volume(tmp_path / name)
    np.testing.assert_array_equal(back.array, volume.array)
    # Picture formats store pixel spacing at most, never origin or direction.
    np.testing.assert_allclose(back.geometry.spacing, geometry.spacing, atol=1e-5)


RECORD = Provenance("diffdenoise", "standard", "0123456789abcdef" * 4, "bundle")


@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii", "v.nrrd", "v.nhdr", "v.mha", "series", "s.dcm", "i.png"])
def test_provenance_is_recorded_in_every_format_without_changing_the_image(tmp_path, name):
    shape = (1, 12, 10) if name in ("s.dcm", "i.png") else (5, 12, 10)
    volume = _volume(np.uint16 if name == "i.png" else np.int16, shape)
    write_volume(tmp_path / name, volume, provenance=RECORD)
    assert read_provenance(tmp_path / name) == RECORD
    back = read_volume(tmp_path / name)
    np.testing.assert_array_equal(back.array.reshape(shape), volume.array)
    if name not in ("s.dcm", "i.png"):  # single slices keep no slice spacing
        _assert_geometry(back.geometry, volume.geometry, tolerance=1e-4)
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]
    write_volume(tmp_path / f"plain_{name}", volume)
    assert read_provenance(tmp_path / f"plain_{name}") is None


def test_provenance_summary_fits_the_nifti_description(tmp_path):
    write_volume(tmp_path / "v.nii.gz", _volume(), provenance=RECORD)
    descrip = nib.load(tmp_path / "v.nii.gz").header["descrip"].item().decode()
    assert descrip == RECORD.summary() and len(descrip) <= 80
    assert descrip.startswith(f"DiffDenoise {RECORD.package_version} diffdenoise standard 0123456789ab ")


@pytest.mark.parametrize("name", ["d.nrrd", "d.nii.gz"])
def test_dwi_outputs_record_provenance(tmp_path, name):
    series = Volume(np.arange(3 * 2 * 4 * 4, dtype=np.int16).reshape(3, 2, 4, 4), GEOMETRY_3D.with_series_axis())
    write_dwi(tmp_path / name, DiffusionVolume(series, np.array([0.0, 1000, 1000]), np.eye(3)), RECORD)
    assert read_provenance(tmp_path / name) == RECORD
    np.testing.assert_array_equal(read_dwi(tmp_path / name).volume.array, series.array)


def test_png_refuses_float_data(tmp_path):
    with pytest.raises(InputError, match="PNG stores"):
        write_volume(tmp_path / "x.png", Volume(np.zeros((4, 4), np.float32), Geometry.identity(2)))
    assert list(tmp_path.iterdir()) == []


def test_dwi_round_trip_keeps_affine_bvals_bvecs_and_volumes(tmp_path, shared_data):
    source = shared_data / "dwi" / "dipy_small_64D" / "small_64D.nii"
    dwi = read_dwi(source)
    assert dwi.volume.array.shape[0] == 65 == len(dwi.bvals) == len(dwi.bvecs)
    assert np.all(np.isfinite(dwi.bvecs))  # the b0's NaN direction is read as 0
    write_dwi(tmp_path / "copy.nii.gz", dwi)
    back = read_dwi(tmp_path / "copy.nii.gz")
    np.testing.assert_array_equal(back.volume.array, dwi.volume.array)
    _assert_geometry(back.volume.geometry, dwi.volume.geometry)
    np.testing.assert_allclose(back.bvals, dwi.bvals)
    np.testing.assert_allclose(back.bvecs, dwi.bvecs)


def test_dwi_with_mismatched_bvals_is_refused(tmp_path):
    dwi = DiffusionVolume(Volume(np.zeros((4, 2, 3, 3), np.int16), Geometry.identity(4)),
                          np.array([0, 1000, 1000, 1000.0]), np.eye(4, 3))
    write_dwi(tmp_path / "d.nii.gz", dwi)
    (tmp_path / "d.bval").write_text("0 1000 1000\n")
    with pytest.raises(InputError, match="b-values but 4 gradient"):
        read_dwi(tmp_path / "d.nii.gz")


def test_real_files_read_with_geometry(shared_data):
    knee = read_volume(shared_data / "mri" / "knee_mese_t2_echo1.nii.gz")
    assert knee.array.shape == (24, 256, 256)
    assert knee.geometry.slice_axis() == 0  # 4 mm slices: slice along z
    ct = read_volume(shared_data / "ct" / "head_ct_693_UNCR.dcm")
    assert ct.array.shape[-2:] == (512, 512)
    assert ct.metadata.get("0008|0060", "").strip() == "CT"
    us = read_volume(shared_data / "ultrasound" / "us_neck.png")
    assert us.array.shape == (597, 568)


@pytest.mark.parametrize("problem", ["missing", "unsupported", "truncated"])
def test_unreadable_inputs_give_clear_errors(tmp_path, problem):
    path = tmp_path / {"missing": "nope.nii.gz", "unsupported": "notes.txt", "truncated": "cut.nrrd"}[problem]
    if problem == "unsupported":
        path.write_text("hello")
    if problem == "truncated":
        write_volume(path, _volume())
        path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputError, match={"missing": "not found", "unsupported": "unsupported file type",
                                          "truncated": "cannot read"}[problem]):
        read_volume(path)


def test_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.nrrd"
    bad = Volume(np.zeros((3, 4, 4), np.float32), Geometry.identity(2))  # geometry of the wrong dimension
    with pytest.raises(InputError):
        write_volume(target, bad)
    assert list(tmp_path.iterdir()) == []


def test_sample_is_shipped_and_small():
    from DiffDenoiseLib.data import SAMPLE_KNEE

    assert Path(SAMPLE_KNEE).stat().st_size < 1_000_000
    assert read_volume(SAMPLE_KNEE).array.shape == (12, 192, 192)
