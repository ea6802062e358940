"""Read and write medical images with their geometry (SimpleITK, nibabel-compatible NIfTI, pydicom checks).

Arrays follow the SimpleITK / Slicer numpy convention: the slowest axis first, so a 3D volume is
``(z, y, x)``, a 2D image ``(y, x)`` and a 4D series ``(v, z, y, x)``. Geometry follows ITK: spacing and
origin in (x, y, z[, t]) order, direction cosines row-major, physical space LPS.

Every writer is atomic: files are written under a temporary name in the target folder and moved into
place only when complete, so a failed or cancelled run never leaves a partial output behind.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import SimpleITK as sitk
from pydicom.misc import is_dicom

from .errors import InputError
from .provenance import Provenance

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff", ".dcm")
_TWO_FILE_SUFFIXES = (".nhdr", ".mhd")
# DICOM tags carried from an input series to the denoised output, so it files under the same study.
_DICOM_TAGS_KEPT = (
    "0010|0010", "0010|0020", "0010|0030", "0010|0040", "0008|0020", "0008|0030", "0008|0050",
    "0008|0060", "0020|000d", "0020|0010", "0008|103e", "0018|0050",
)
_DICOM_DERIVATION = "0008|2111"  # Derivation Description: where a DICOM output keeps its provenance (JSON)
_KEY_VALUE_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")  # formats with free key/value header fields
_SIDECAR_SUFFIXES = (".png", ".tif", ".tiff")  # no header fields: provenance goes to <stem>.json beside them


@dataclass
class Geometry:
    """Where the voxels sit in patient space (ITK conventions, LPS, millimetres)."""

    spacing: tuple[float, ...]
    origin: tuple[float, ...]
    direction: tuple[float, ...]

    @classmethod
    def identity(cls, ndim: int) -> Geometry:
        """Unit spacing, zero origin and identity direction for an image of ``ndim`` dimensions."""
        return cls((1.0,) * ndim, (0.0,) * ndim, tuple(np.eye(ndim).ravel().tolist()))

    @classmethod
    def from_image(cls, image: sitk.Image) -> Geometry:
        return cls(tuple(image.GetSpacing()), tuple(image.GetOrigin()), tuple(image.GetDirection()))

    def apply_to(self, image: sitk.Image) -> None:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)

    def with_series_axis(self) -> Geometry:
        """This 3D geometry with a 4th (volume) axis of unit spacing appended, for (v, z, y, x) series."""
        direction = np.eye(4)
        direction[:3, :3] = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        return Geometry((*self.spacing, 1.0), (*self.origin, 0.0), tuple(direction.ravel().tolist()))

    def slice_axis(self) -> int:
        """Numpy axis to slice a 3D volume along: the one with the coarsest spacing (the acquisition plane)."""
        if len(self.spacing) < 3:
            return 0
        xyz = self.spacing[:3]
        # numpy axis 0 is z; prefer it on ties so isotropic volumes are processed axially.
        return 2 - int(np.argmax(xyz)) if max(xyz) > min(xyz) * 1.01 else 0


@dataclass
class Volume:
    """An image array with its geometry and the source metadata worth carrying to outputs."""

    array: np.ndarray
    geometry: Geometry
    metadata: dict[str, str] = field(default_factory=dict)

    def with_array(self, array: np.ndarray) -> Volume:
        """A new volume with the same geometry and metadata and another array of the same shape."""
        if array.shape != self.array.shape:
            raise InputError(f"array shape {array.shape} does not match the volume's {self.array.shape}")
        return Volume(array, self.geometry, dict(self.metadata))


@dataclass
class DiffusionVolume:
    """A 4D diffusion-weighted series ``(v, z, y, x)`` with FSL-style b-values and gradient directions."""

    volume: Volume
    bvals: np.ndarray
    bvecs: np.ndarray


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def read_volume(path: str | os.PathLike, series_id: str | None = None) -> Volume:
    """Read an image file or a DICOM series folder.

    Supports NIfTI, NRRD/NHDR, MHA/MHD, PNG/TIFF, a single DICOM file and a folder holding a DICOM series
    (``series_id`` picks one when the folder holds several). Colour PNG/TIFF images are converted to
    luminance. Raises :class:`InputError` with a fix when the path cannot be read.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path} (check the path)")
    try:
        if path.is_dir():
            image, metadata = _read_dicom_series(path, series_id)
        else:
            image, metadata = _read_file(path)
    except RuntimeError as error:  # SimpleITK reports unreadable or truncated files this way
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(f"cannot read {path}: {first_line} "
                         "(is the file complete and in a supported format?)") from None
    if image.GetNumberOfComponentsPerPixel() > 1:
        image = _to_luminance(image)
    return Volume(sitk.GetArrayFromImage(image), Geometry.from_image(image), metadata)


def _read_file(path: Path) -> tuple[sitk.Image, dict[str, str]]:
    suffix = _suffix(path)
    dicom = suffix == ".dcm" or (suffix not in VOLUME_SUFFIXES and is_dicom(str(path)))
    if suffix not in VOLUME_SUFFIXES and not dicom:
        raise InputError(
            f"unsupported file type '{path.name}': use one of {', '.join(VOLUME_SUFFIXES)} or a DICOM folder"
        )
    if suffix in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    image = reader.Execute()
    metadata = {}
    if dicom:
        metadata = {key: reader.GetMetaData(key) for key in _DICOM_TAGS_KEPT if reader.HasMetaDataKey(key)}
    return image, metadata


def _check_nifti_complete(path: Path) -> None:
    """Refuse a NIfTI file shorter than its header says: SimpleITK would fill the missing voxels with zeros."""
    try:
        header = nib.load(path).header
        needed = int(header["vox_offset"]) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        if path.suffix == ".gz":  # the uncompressed length is only known by decompressing (a stream: no copy)
            with gzip.open(path, "rb") as stream:
                size = sum(iter(lambda: len(stream.read(1 << 24)), 0))
        else:
            size = path.stat().st_size
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise InputError(f"cannot read {path}: {error} (is the file complete and in a supported format?)") from None
    if size < needed:
        raise InputError(f"cannot read {path}: it holds {size} of the {needed} bytes its header describes "
                         "(the file is truncated: copy or export it again)")


def _read_dicom_series(folder: Path, series_id: str | None) -> tuple[sitk.Image, dict[str, str]]:
    series_ids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise InputError(f"no DICOM series found in folder {folder} (point to a folder of .dcm files)")
    if series_id is None:
        if len(series_ids) > 1:
            raise InputError(f"folder {folder} holds {len(series_ids)} DICOM series; pick one with "
                             f"series_id (one of: {', '.join(series_ids)})")
        series_id = series_ids[0]
    elif series_id not in series_ids:
        raise InputError(f"series {series_id} not in {folder} (found: {', '.join(series_ids)})")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series_id))
    reader.MetaDataDictionaryArrayUpdateOn()
    image = reader.Execute()
    metadata = {key: reader.GetMetaData(0, key) for key in _DICOM_TAGS_KEPT if reader.HasMetaDataKey(0, key)}
    return image, metadata


def _to_luminance(image: sitk.Image) -> sitk.Image:
    channels = sitk.GetArrayFromImage(image).astype(np.float32)
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)[: channels.shape[-1]]
    gray = (channels[..., : weights.size] @ (weights / weights.sum())).astype(np.float32)
    result = sitk.GetImageFromArray(gray)
    result.CopyInformation(image)
    return result


def volume_to_image(volume: Volume) -> sitk.Image:
    """The volume as a SimpleITK image with its geometry."""
    array = volume.array
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    if len(volume.geometry.spacing) != image.GetDimension():
        raise InputError(f"geometry has {len(volume.geometry.spacing)} dimensions but the array has "
                         f"{image.GetDimension()}")
    volume.geometry.apply_to(image)
    return image


@contextlib.contextmanager
def atomic_target(path: Path) -> Iterator[Path]:
    """Yield a path inside a hidden temporary folder next to ``path``; move the results into place on success.

    Multi-file outputs (NHDR/MHD header + data, DICOM series folders) move data first and the header last.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield staging / path.name
        produced = staging / path.name
        if produced.is_dir():
            if path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            os.replace(produced, path)
        else:
            for item in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
                os.replace(item, path.parent / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_volume(path: str | os.PathLike, volume: Volume, description: str = "DiffDenoise output",
                 provenance: Provenance | None = None) -> None:
    """Write ``volume`` with its geometry; the format follows the extension (a path without one: DICOM series).

    PNG stores 8- or 16-bit unsigned integers only: cast first (the CLI keeps the input's data type).
    DICOM outputs store float data as 16-bit integers with RescaleSlope/Intercept.

    ``provenance`` is recorded as: ``DiffDenoise_<field>`` header fields (NRRD, MetaImage); the ``descrip``
    summary line plus the whole record as JSON in a comment extension (NIfTI); JSON in Derivation Description
    (0008,2111) of every slice (DICOM); a ``<stem>.json`` sidecar (PNG, TIFF). :func:`read_provenance` reads
    it back.
    """
    path = Path(path)
    suffix = _suffix(path)
    is_series = path.is_dir() or suffix == ""
    if not is_series and suffix not in VOLUME_SUFFIXES:
        raise InputError(f"unsupported output type '{path.name}': use one of {', '.join(VOLUME_SUFFIXES)} "
                         "or a folder name for a DICOM series")
    if suffix == ".png" and volume.array.dtype not in (np.uint8, np.uint16):
        raise InputError(f"PNG stores 8/16-bit unsigned integers, not {volume.array.dtype}: "
                         "write .nrrd/.nii.gz instead, or keep the input's data type")
    with atomic_target(path) as target:
        if is_series:
            target.mkdir()
            _write_dicom_slices(target, volume, description, provenance)
        elif suffix == ".dcm":
            _write_dicom_slices(target.parent, volume, description, provenance, single_file=target)
        else:
            image = volume_to_image(volume)
            if suffix in _SIDECAR_SUFFIXES and image.GetDimension() == 3 and image.GetSize()[2] == 1:
                image = image[:, :, 0]
            if provenance is not None and suffix in _KEY_VALUE_SUFFIXES:
                for key, value in provenance.header_fields().items():
                    image.SetMetaData(key, value)
            if provenance is not None and suffix in (".nii", ".nii.gz"):
                image.SetMetaData("ITK_FileNotes", provenance.summary())  # ITK writes it to descrip
            sitk.WriteImage(image, str(target), useCompression=suffix in _KEY_VALUE_SUFFIXES)
            if provenance is not None and suffix in (".nii", ".nii.gz"):
                _add_nifti_record(target, provenance)
            if provenance is not None and suffix in _SIDECAR_SUFFIXES:
                _sidecar(target).write_text(json.dumps(provenance.as_dict(), indent=2))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name[:len(path.name) - len(_suffix(path))] + ".json")


def _add_nifti_record(path: Path, provenance: Provenance) -> None:
    """Append the provenance record to a NIfTI file as a JSON comment extension (ITK cannot write extensions)."""
    image = nib.load(path)
    header = image.header.copy()
    header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(provenance.as_dict()).encode()))
    # the stored values (keeps ITK's scaling and data type), copied: a .nii is memory-mapped and rewritten here
    data = np.array(image.dataobj.get_unscaled())
    nib.save(nib.Nifti1Image(data, None, header), path)


def read_provenance(path: str | os.PathLike) -> Provenance | None:
    """The provenance record :func:`write_volume` stored in an output file or DICOM folder; None if it has none."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.dcm"))
        if not files:
            return None
        path = files[0]
    suffix = _suffix(path)
    if suffix in _SIDECAR_SUFFIXES:
        sidecar = _sidecar(path)
        return Provenance.from_dict(json.loads(sidecar.read_text())) if sidecar.is_file() else None
    if suffix in (".nii", ".nii.gz"):
        for extension in nib.load(path).header.extensions:
            if extension.get_code() == 6:  # comment
                with contextlib.suppress(ValueError):
                    record = json.loads(extension.get_content())
                    if isinstance(record, dict) and "method" in record:
                        return Provenance.from_dict(record)
        return None
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    header = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    if _DICOM_DERIVATION in header:
        with contextlib.suppress(ValueError):
            return Provenance.from_dict(json.loads(header[_DICOM_DERIVATION]))
    return Provenance.from_header_fields(header)


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


def _write_dicom_slices(folder: Path, volume: Volume, description: str, provenance: Provenance | None,
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
    tags = dict(volume.metadata)
    tags.update({
        "0020|000e": series_uid,
        "0008|103e": f"{volume.metadata.get('0008|103e', '').strip()} {description}".strip()[:64],
        "0020|0037": "\\".join(f"{v:.10g}" for v in (*direction[0:9:3], *direction[1:9:3])),
        "0028|0030": f"{image.GetSpacing()[1]:.10g}\\{image.GetSpacing()[0]:.10g}",
        "0018|0050": f"{image.GetSpacing()[2]:.10g}",
        "0008|0008": "DERIVED\\SECONDARY",
        **rescale_tags,
        **({_DICOM_DERIVATION: json.dumps(provenance.as_dict())} if provenance else {}),
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
        writer.Execute(slice_image)


def read_bvals_bvecs(bval_path: str | os.PathLike, bvec_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL b-values (one row) and gradient directions (3 rows or 3 columns); NaN directions become 0."""
    try:
        bvals = np.loadtxt(bval_path, dtype=np.float64, ndmin=1).ravel()
        bvecs = np.loadtxt(bvec_path, dtype=np.float64, ndmin=2)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot read b-values/vectors ({error}); expected FSL .bval/.bvec text files") from None
    if bvecs.shape[0] == 3 and bvecs.shape[1] != 3:
        bvecs = bvecs.T
    elif bvecs.shape == (3, 3):
        bvecs = bvecs.T  # FSL writes one row per axis
    if bvecs.ndim != 2 or bvecs.shape[1] != 3:
        raise InputError(f"{bvec_path}: expected 3 rows of gradient components, got shape {bvecs.shape}")
    if len(bvals) != len(bvecs):
        raise InputError(f"{len(bvals)} b-values but {len(bvecs)} gradient directions: the .bval and .bvec "
                         "files must describe the same volumes")
    return bvals, np.nan_to_num(bvecs, nan=0.0)


def _dwi_sidecars(path: Path) -> tuple[Path, Path]:
    stem = path.name[: -len(_suffix(path))] if _suffix(path) else path.name
    return path.with_name(stem + ".bval"), path.with_name(stem + ".bvec")


def _is_nrrd(path: Path) -> bool:
    return _suffix(path) in (".nrrd", ".nhdr")


def read_dwi(path: str | os.PathLike, bval_path: str | os.PathLike | None = None,
             bvec_path: str | os.PathLike | None = None) -> DiffusionVolume:
    """Read a 4D diffusion series: NRRD DWI (gradients in the header) or NIfTI and other formats with FSL
    b-values/vectors (default: ``<stem>.bval`` / ``<stem>.bvec``)."""
    path = Path(path)
    if _is_nrrd(path) and bval_path is None and bvec_path is None:
        return _read_nrrd_dwi(path)
    default_bval, default_bvec = _dwi_sidecars(path)
    bval_path, bvec_path = Path(bval_path or default_bval), Path(bvec_path or default_bvec)
    for sidecar, flag in ((bval_path, "--bval"), (bvec_path, "--bvec")):
        if not sidecar.exists():
            raise InputError(f"missing {sidecar.name} for {path.name}: pass it with {flag}")
    volume = read_volume(path)
    if volume.array.ndim != 4:
        raise InputError(f"{path.name} is {volume.array.ndim}D; a diffusion series must be 4D (x, y, z, volumes)")
    bvals, bvecs = read_bvals_bvecs(bval_path, bvec_path)
    if len(bvals) != volume.array.shape[0]:
        raise InputError(f"{path.name} has {volume.array.shape[0]} volumes but {bval_path.name} lists "
                         f"{len(bvals)} b-values")
    return DiffusionVolume(volume, bvals, bvecs)


def write_dwi(path: str | os.PathLike, dwi: DiffusionVolume, provenance: Provenance | None = None) -> None:
    """Write a 4D series: ``.nrrd`` / ``.nhdr`` as NRRD DWI (gradients in the header, as Slicer reads them),
    anything else plus ``<stem>.bval`` / ``<stem>.bvec`` next to it (FSL layout, one row per axis).
    ``provenance`` is recorded as in :func:`write_volume`."""
    path = Path(path)
    if _is_nrrd(path):
        _write_nrrd_dwi(path, dwi, provenance)
        return
    bval_path, bvec_path = _dwi_sidecars(path)
    write_volume(path, dwi.volume, provenance=provenance)
    for sidecar, rows in ((bval_path, dwi.bvals[None, :]), (bvec_path, dwi.bvecs.T)):
        with atomic_target(sidecar) as target:
            np.savetxt(target, rows, fmt="%.10g")


# NRRD gradients are physical directions; FSL bvecs are in voxel axes, with x negated when the voxel-to-world
# matrix has a positive determinant (FSL's radiological voxel convention).
def _fsl_sign(direction: np.ndarray) -> np.ndarray:
    return np.array([-1.0 if np.linalg.det(direction) > 0 else 1.0, 1.0, 1.0])


def world_to_fsl_bvecs(vectors_lps: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """(N, 3) gradient directions in LPS world space -> FSL bvecs for an image with ITK ``direction`` (3x3)."""
    return (vectors_lps @ direction) * _fsl_sign(direction)


def fsl_to_world_bvecs(bvecs: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Inverse of :func:`world_to_fsl_bvecs`."""
    return (bvecs * _fsl_sign(direction)) @ direction.T


_NRRD_TO_LPS = {"left-posterior-superior": np.array([1.0, 1.0, 1.0]),
                "right-anterior-superior": np.array([-1.0, -1.0, 1.0])}


def _read_nrrd_dwi(path: Path) -> DiffusionVolume:
    try:
        data, header = nrrd.read(str(path), index_order="C")
    except (nrrd.NRRDError, OSError, ValueError) as error:
        raise InputError(f"cannot read {path.name} as NRRD ({error}); is the file complete?") from None
    gradient_keys = sorted(k for k in header if k.startswith("DWMRI_gradient_"))
    if not gradient_keys or "DWMRI_b-value" not in header:
        raise InputError(f"{path.name} has no DWMRI_b-value / DWMRI_gradient_NNNN fields: not a NRRD DWI file "
                         "(for NIfTI, pass --bval and --bvec)")
    space = header.get("space", "left-posterior-superior")
    if space not in _NRRD_TO_LPS or data.ndim != 4:
        raise InputError(f"{path.name}: expected a 4D DWI in LPS or RAS space, got {data.ndim}D in '{space}'")
    kinds = header.get("kinds", ["list", "domain", "domain", "domain"])
    list_axis = 3 - next(i for i, kind in enumerate(kinds) if kind not in ("domain", "space"))  # C order
    series = np.moveaxis(data, list_axis, 0)
    if len(gradient_keys) != len(series):
        raise InputError(f"{path.name} has {len(series)} volumes but {len(gradient_keys)} gradients")
    to_lps = _NRRD_TO_LPS[space]
    axes = np.array([row for row in header["space directions"] if np.all(np.isfinite(row))]) * to_lps  # x, y, z
    spacing = np.linalg.norm(axes, axis=1)
    direction = (axes / spacing[:, None]).T  # columns: unit vectors of the voxel axes
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=np.float64) * to_lps
    frame = np.asarray(header.get("measurement frame", np.eye(3)), dtype=np.float64).T  # NRRD lists columns
    gradients = np.array([np.array(header[k].split(), dtype=np.float64) for k in gradient_keys])
    norms = np.linalg.norm(gradients, axis=1)
    bvals = float(header["DWMRI_b-value"]) * norms ** 2
    unit = np.divide(gradients, norms[:, None], out=np.zeros_like(gradients), where=norms[:, None] > 0)
    bvecs = world_to_fsl_bvecs((unit @ frame.T) * to_lps, direction)
    geometry = Geometry(tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist()))
    return DiffusionVolume(Volume(series, geometry.with_series_axis()), bvals, bvecs)


def _write_nrrd_dwi(path: Path, dwi: DiffusionVolume, provenance: Provenance | None) -> None:
    array = dwi.volume.array
    if array.ndim != 4:
        raise InputError(f"a DWI has 4 dimensions (volumes, z, y, x), got shape {array.shape}")
    geometry = dwi.volume.geometry
    dimension = len(geometry.spacing)
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    spacing = np.asarray(geometry.spacing[:3], dtype=np.float64)
    reference_b = float(np.max(dwi.bvals)) if np.max(dwi.bvals) > 0 else 1.0
    gradients = fsl_to_world_bvecs(dwi.bvecs, direction) * np.sqrt(np.maximum(dwi.bvals, 0) / reference_b)[:, None]
    header = {
        "space": "left-posterior-superior",
        "space directions": np.vstack([np.full(3, np.nan), (direction * spacing).T]),
        "kinds": ["list", "domain", "domain", "domain"],
        "space origin": np.asarray(geometry.origin[:3], dtype=np.float64),
        "measurement frame": np.eye(3),
        "encoding": "gzip",
        "modality": "DWMRI",
        "DWMRI_b-value": f"{reference_b:.10g}",
        **{f"DWMRI_gradient_{i:04d}": " ".join(f"{c:.10g}" for c in g) for i, g in enumerate(gradients)},
        **(provenance.header_fields() if provenance else {}),
    }
    if array.dtype == np.float64:
        array = array.astype(np.float32)
    with atomic_target(path) as target:
        detached = {"detached_header": True} if _suffix(path) == ".nhdr" else {}
        nrrd.write(str(target), np.ascontiguousarray(np.moveaxis(array, 0, -1)), header, index_order="C",
                   **detached)
