"""DICOM series: read one from a folder (evenly spaced slices, known pixel size), write one slice per file
with the input's study tags and the provenance, and recognise a series DiffDenoise wrote (the only folder an
overwrite may replace)."""

from __future__ import annotations

import errno
import json
import uuid
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

from ..errors import InputError
from ..provenance import Provenance
from .volume import Volume, itk_error_line, volume_to_image

# DICOM tags carried from an input series to the denoised output, so it files under the same study.
DICOM_TAGS_KEPT = (
    "0010|0010", "0010|0020", "0010|0030", "0010|0040", "0008|0020", "0008|0030", "0008|0050",
    "0008|0060", "0020|000d", "0020|0010", "0008|103e", "0018|0050",
)
DICOM_DERIVATION = "0008|2111"  # Derivation Description: where a DICOM output keeps its provenance (JSON)
DICOM_DERIVATION_TAG = 0x00082111


def read_dicom_series(folder: Path, series_id: str | None) -> tuple[sitk.Image, dict[str, str]]:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"no DICOM series found in folder {folder} (point to a folder of .dcm files)")
    if series_id is None:
        if len(series_ids) > 1:
            raise InputError(f"folder {folder} holds {len(series_ids)} DICOM series; pick one with --series "
                             f"(series_id= in Python): one of {', '.join(series_ids)}")
        series_id = series_ids[0]
    elif series_id not in series_ids:
        raise InputError(f"series {series_id} not in {folder} (found: {', '.join(series_ids)})")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    if not reader.HasMetaDataKey(0, "0028|0030") and not reader.HasMetaDataKey(0, "0018|1164"):
        raise InputError(f"the DICOM series in {folder} has no PixelSpacing (0028,0030): its pixel size is unknown, "
                         "so the slice plane and the output geometry would be guesses; export the series again "
                         "with its spacing, or convert it to NIfTI/NRRD with the right spacing")
    _check_even_slices(reader, image, folder)
    metadata = {key: reader.GetMetaData(0, key) for key in DICOM_TAGS_KEPT if reader.HasMetaDataKey(0, key)}
    return image, metadata


SLICE_SPACING_TOLERANCE = 0.01  # relative: slice steps may differ by 1% (rounded positions), not by a slice


def _check_even_slices(reader: sitk.ImageSeriesReader, image: sitk.Image, folder: Path) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing or duplicated slice): ITK would average
    the spacing and every output slice position would move."""
    count = len(reader.GetFileNames())
    if count < 3 or not all(reader.HasMetaDataKey(i, "0020|0032") for i in range(count)):
        return
    normal = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)[:, 2]
    positions = [np.array(reader.GetMetaData(i, "0020|0032").split("\\"), dtype=np.float64) for i in range(count)]
    steps = np.diff(np.sort([float(position @ normal) for position in positions]))
    typical = float(np.median(steps))
    if typical <= 0 or steps.max() - steps.min() > SLICE_SPACING_TOLERANCE * typical:
        raise InputError(f"the DICOM series in {folder} has unevenly spaced slices (steps from {steps.min():.4g} to "
                         f"{steps.max():.4g} mm: a missing or duplicated slice?); its geometry cannot be kept "
                         "exactly: export the complete series, or resample it to even spacing first")



def is_replaceable_series(folder: Path) -> bool:
    """True when ``folder`` holds nothing but a DICOM series DiffDenoise wrote (``*.dcm`` slices whose Derivation
    Description holds its provenance): the only folder ``--overwrite`` may replace. Anything else (notes,
    other images, sub-folders, a scanner's own series) is never deleted."""
    entries = list(folder.iterdir())
    return bool(entries) and all(entry.is_file() and not entry.is_symlink() and entry.suffix.lower() == ".dcm"
                                 and _written_by_diffdenoise(entry) for entry in entries)


def _written_by_diffdenoise(slice_file: Path) -> bool:
    try:
        dataset = pydicom.dcmread(slice_file, stop_before_pixels=True, specific_tags=[DICOM_DERIVATION_TAG])
        record = json.loads(str(dataset.get(DICOM_DERIVATION_TAG).value))
    except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError):
        return False
    return isinstance(record, dict) and "bundle_sha256" in record



def _dicom_pixels(image: sitk.Image) -> tuple[sitk.Image, dict[str, str]]:
    """Pixels GDCM can store, plus the tags that say how: integers as they are, floats as unsigned 16-bit
    with RescaleSlope/Intercept (GDCM applies the inverse rescale; it needs an integer intercept)."""
    if image.GetPixelID() in (sitk.sitkInt8, sitk.sitkUInt8, sitk.sitkInt16, sitk.sitkUInt16):
        return image, {}
    array = sitk.GetArrayViewFromImage(image)
    intercept = float(np.floor(array.min()))
    slope = max(float(array.max()) - intercept, 1e-6) / 65535.0
    pixels = sitk.Cast(image, sitk.sitkFloat64)
    return pixels, {"0028|1053": f"{slope:.12g}", "0028|1052": f"{intercept:.0f}", "0028|0100": "16",
                    "0028|0101": "16", "0028|0102": "15", "0028|0103": "0"}


def write_dicom_slices(folder: Path, volume: Volume, description: str, provenance: Provenance | None,
                        single_file: Path | None = None) -> None:
    image = volume_to_image(volume)
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise InputError("DICOM output takes 2D or 3D images; write 4D series as NIfTI or NRRD")
    if single_file is not None and image.GetSize()[2] != 1:
        raise InputError(f"a single .dcm file holds one slice, this volume has {image.GetSize()[2]}: "
                         "give a folder name to write a DICOM series")
    pixel_image, rescale_tags = _dicom_pixels(image)
    direction = image.GetDirection()
    series_uid = f"2.25.{uuid.uuid4().int}"
    tags = {key: value for key, value in volume.metadata.items() if key in DICOM_TAGS_KEPT}
    tags.update({
        "0020|000e": series_uid,
        "0008|103e": f"{volume.metadata.get('0008|103e', '').strip()} {description}".strip()[:64],
        "0020|0037": "\\".join(f"{v:.10g}" for v in (*direction[0:9:3], *direction[1:9:3])),
        "0028|0030": f"{image.GetSpacing()[1]:.10g}\\{image.GetSpacing()[0]:.10g}",
        "0018|0050": f"{image.GetSpacing()[2]:.10g}",
        "0008|0008": "DERIVED\\SECONDARY",
        **rescale_tags,
        **({DICOM_DERIVATION: json.dumps(provenance.as_dict())} if provenance else {}),
    })
    tags.setdefault("0020|000d", f"2.25.{uuid.uuid4().int}")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for index in range(pixel_image.GetSize()[2]):
        slice_image = pixel_image[:, :, index]
        for key, value in tags.items():
            slice_image.SetMetaData(key, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, index))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in position))
        slice_image.SetMetaData("0020|0013", str(index + 1))
        slice_image.SetMetaData("0008|0018", f"2.25.{uuid.uuid4().int}")
        writer.SetFileName(str(single_file or folder / f"slice_{index:04d}.dcm"))
        try:
            writer.Execute(slice_image)
        except RuntimeError as error:  # GDCM reports a full disk as an unsupported component type
            raise OSError(errno.EIO, f"GDCM could not write slice {index} ({itk_error_line(error)}): is the disk full?",
                          str(folder)) from None
