"""Read and write medical images with their geometry (SimpleITK, nibabel-compatible NIfTI, pydicom checks).

Arrays follow the SimpleITK / Slicer numpy convention: the slowest axis first, so a 3D volume is
``(z, y, x)``, a 2D image ``(y, x)`` and a 4D series ``(v, z, y, x)``. Geometry follows ITK: spacing and
origin in (x, y, z[, t]) order, direction cosines row-major, physical space LPS.

Every writer is atomic: files are written under a temporary name in the target folder and moved into
place only when complete, so a failed or cancelled run never leaves a partial output behind.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import shutil
import signal
import tempfile
import threading
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.misc import is_dicom

from .errors import InputError
from .provenance import Provenance

UNIT_TOLERANCE = 0.01  # |g| within 1% of 1 counts as a unit gradient direction (rounded text files)


class DataWarning(UserWarning):
    """Something about an input file a user should know: it was read, but not exactly as stored."""


VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff", ".dcm")
_TWO_FILE_SUFFIXES = (".nhdr", ".mhd")
# DICOM tags carried from an input series to the denoised output, so it files under the same study.
_DICOM_TAGS_KEPT = (
    "0010|0010", "0010|0020", "0010|0030", "0010|0040", "0008|0020", "0008|0030", "0008|0050",
    "0008|0060", "0020|000d", "0020|0010", "0008|103e", "0018|0050",
)
_DICOM_DERIVATION = "0008|2111"  # Derivation Description: where a DICOM output keeps its provenance (JSON)
_DICOM_DERIVATION_TAG = 0x00082111
_IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
             ".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".png": "PNGImageIO", ".tif": "TIFFImageIO",
             ".tiff": "TIFFImageIO", ".dcm": "GDCMImageIO"}
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


def split_image_name(path: str | os.PathLike) -> tuple[str, str]:
    """A file name as (stem, extension) the way the readers and writers see it: ``scan.NII.GZ`` -> ``("scan",
    ".NII.GZ")`` (the extension in the name's own case), ``series`` -> ``("series", "")``."""
    name = Path(path).name
    cut = len(name) - len(_suffix(Path(name)))
    return name[:cut], name[cut:]


def writes_series(path: Path) -> bool:
    """Whether writing an image to ``path`` makes a DICOM series folder: an existing folder, or no extension."""
    return path.is_dir() or _suffix(path) == ""


def read_volume(path: str | os.PathLike, series_id: str | None = None) -> Volume:
    """Read an image file or a DICOM series folder.

    Supports NIfTI, NRRD/NHDR, MHA/MHD, PNG/TIFF, a single DICOM file and a folder holding a DICOM series
    (``series_id`` picks one when the folder holds several). Colour PNG/TIFF/DICOM images are converted to
    luminance (alpha dropped; gray + alpha: the gray); any other image with several components per voxel
    (vectors, tensors, echoes, real/imaginary) is refused. Raises :class:`InputError` with a fix when the path
    cannot be read; warns (:class:`DataWarning`) when a NIfTI file's qform and sform disagree.
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
        if _png_colour_type(path) == _PNG_GRAY_ALPHA:
            raise InputError(f"cannot read {path}: a gray + alpha PNG, which ITK cannot read; save it as plain "
                             "gray (e.g. Pillow: Image.open(path).convert('L').save(...))") from None
        raise InputError(f"cannot read {path}: {_last_line(error)} "
                         "(is the file complete and in a supported format?)") from None
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        colour = (path.is_dir() or _suffix(path) in (*_SIDECAR_SUFFIXES, ".dcm")) and components in (2, 3, 4)
        if not colour:
            raise InputError(f"{path} has {components} components per voxel (a vector, tensor, multi-echo or "
                             "real/imaginary image), not one scalar: extract the component or the magnitude to "
                             "denoise (e.g. SimpleITK VectorIndexSelectionCast) and denoise each separately; for a "
                             "diffusion-weighted series use `diffdenoise ddm2`")
        image = _to_luminance(image)
    return Volume(sitk.GetArrayFromImage(image), Geometry.from_image(image), metadata)


@contextlib.contextmanager
def _lowercase_nifti_name(path: Path) -> Iterator[Path]:
    """``path``, or for a NIfTI file named ``.Nii`` or ``.NII.GZ`` a link to it named in lowercase (the NIfTI
    library refuses other names) in a temporary folder, removed afterwards; the file itself is untouched."""
    suffix = _suffix(path)
    if suffix not in (".nii", ".nii.gz") or path.name.endswith(suffix):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="diffdenoise-read-") as folder:
        link = Path(folder) / f"image{suffix}"
        try:
            link.symlink_to(path.resolve())
        except OSError:  # no symbolic links here (Windows without the privilege): let ITK try the name
            link = path
        yield link


def _last_line(error: Exception) -> str:
    """The informative part of an ITK error (its last line; the rest is the C++ source location)."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else "unknown reason"


def _read_file(path: Path) -> tuple[sitk.Image, dict[str, str]]:
    suffix = _suffix(path)
    dicom = suffix == ".dcm" or (suffix not in VOLUME_SUFFIXES and is_dicom(str(path)))
    if suffix not in VOLUME_SUFFIXES and not dicom:
        raise InputError(
            f"unsupported file type '{path.name}': use one of {', '.join(VOLUME_SUFFIXES)} or a DICOM folder"
        )
    metadata, header = {}, None
    if suffix in (".nii", ".nii.gz"):
        header = _check_nifti_complete(path)
        metadata = _disagreeing_nifti_forms(path, header)
    reader = sitk.ImageFileReader()
    if suffix in _IMAGE_IO:  # by our reading of the extension: ITK's own fails on scan.NII.GZ or scan.MHD
        reader.SetImageIO(_IMAGE_IO[suffix])
    with _lowercase_nifti_name(path) as readable:
        reader.SetFileName(str(readable))
        image = reader.Execute()
    if header is not None and image.GetDimension() == 2:
        image = _placed_nifti_slice(image, header)
    if dicom:
        metadata = {key: reader.GetMetaData(key) for key in _DICOM_TAGS_KEPT if reader.HasMetaDataKey(key)}
        if not reader.HasMetaDataKey("0028|0030") and not reader.HasMetaDataKey("0018|1164"):
            warnings.warn(f"{path.name} has no PixelSpacing (0028,0030): its pixel size is unknown, 1 mm is "
                          "assumed and written to the output", DataWarning, stacklevel=3)
    return image, metadata


def _placed_nifti_slice(image: sitk.Image, header: nib.Nifti1Header) -> sitk.Image:
    """A 2D NIfTI image as a one-slice volume when its affine places it out of the z = 0 plane (ITK reads 2D
    images in 2D and drops the affine's third row: the origin's z and any tilt)."""
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ header.get_best_affine()  # NIfTI is RAS, ITK LPS
    if np.allclose(lps[2, [0, 1, 3]], 0) and np.allclose(lps[:2, 2], 0):
        return image  # lies in z = 0, axis-aligned: the 2D image loses nothing
    columns = lps[:3, :3]
    spacing = np.linalg.norm(columns, axis=0)
    spacing[spacing == 0] = 1.0
    volume = sitk.JoinSeries(image)
    volume.SetSpacing(spacing.tolist())
    volume.SetOrigin(lps[:3, 3].tolist())
    volume.SetDirection((columns / spacing).ravel().tolist())
    return volume


_NIFTI_FORMS = "nifti_qform_sform"  # Volume.metadata key: both orientations of a NIfTI input, when they disagree


def _disagreeing_nifti_forms(path: Path, header: nib.Nifti1Header) -> dict[str, str]:
    """When a NIfTI file's qform and sform are both set and disagree, warn and keep both (JSON, in RAS as
    stored), so a NIfTI output can carry them exactly as the input had them."""
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    qform, sform = header.get_qform(), header.get_sform()
    if qcode <= 0 or scode <= 0 or np.allclose(qform, sform, atol=1e-4):
        return {}
    warnings.warn(f"{path.name}: its qform and sform disagree (origin {np.round(qform[:3, 3], 3).tolist()} vs "
                  f"{np.round(sform[:3, 3], 3).tolist()} mm): it is processed as ITK places it; a NIfTI output keeps "
                  "both as in the input, other formats hold one placement", DataWarning, stacklevel=4)
    return {_NIFTI_FORMS: json.dumps({"qform": qform.tolist(), "qform_code": qcode, "sform": sform.tolist(),
                                      "sform_code": scode})}


_PNG_GRAY_ALPHA = 4  # PNG IHDR colour type


def _png_colour_type(path: Path) -> int | None:
    """The colour type byte of a PNG's IHDR chunk (None for other files)."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(26)
    except OSError:
        return None
    return head[25] if len(head) == 26 and head.startswith(b"\x89PNG") else None


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as stream:
        return stream.read(2) == b"\x1f\x8b"


def _nifti_header(path: Path) -> nib.Nifti1Header:
    """The NIfTI-1 or -2 header, by content, not name: ITK reads an uncompressed file named .nii.gz too."""
    opener = gzip.open if _is_gzip(path) else open
    with opener(path, "rb") as stream:
        raw = stream.read(540)
    for header_class, size in ((nib.Nifti1Header, 348), (nib.Nifti2Header, 540)):
        for order in ("<", ">"):
            if len(raw) >= size and int(np.frombuffer(raw[:4], dtype=f"{order}i4")[0]) == size:
                # the fixed header only (from_fileobj would also read the extensions, past these bytes)
                return header_class(binaryblock=raw[:size], endianness=order, check=False)
    raise ValueError("not a NIfTI-1 or NIfTI-2 header")


def _check_nifti_complete(path: Path) -> nib.Nifti1Header:
    """Refuse a NIfTI file shorter than its header says (SimpleITK would fill the missing voxels with zeros);
    returns the header."""
    try:
        header = _nifti_header(path)
        needed = int(header["vox_offset"]) + int(np.prod(header.get_data_shape())) * header.get_data_dtype().itemsize
        if _is_gzip(path):  # the uncompressed length is only known by decompressing (a stream: no copy)
            with gzip.open(path, "rb") as stream:
                size = sum(iter(lambda: len(stream.read(1 << 24)), 0))
        else:
            size = path.stat().st_size
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as error:
        raise InputError(f"cannot read {path}: {error} (is the file complete and in a supported format?)") from None
    if size < needed:
        raise InputError(f"cannot read {path}: it holds {size} of the {needed} bytes its header describes "
                         "(the file is truncated: copy or export it again)")
    return header


def _read_dicom_series(folder: Path, series_id: str | None) -> tuple[sitk.Image, dict[str, str]]:
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
    metadata = {key: reader.GetMetaData(0, key) for key in _DICOM_TAGS_KEPT if reader.HasMetaDataKey(0, key)}
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


def _to_luminance(image: sitk.Image) -> sitk.Image:
    """RGB(A) -> Rec. 601 luminance (float32, alpha ignored); gray + alpha -> the gray channel."""
    channels = sitk.GetArrayFromImage(image).astype(np.float32)
    if channels.shape[-1] == 2:
        gray = np.ascontiguousarray(channels[..., 0])
    else:
        gray = (channels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
    result = sitk.GetImageFromArray(gray)
    result.CopyInformation(image)
    return result


def volume_to_image(volume: Volume) -> sitk.Image:
    """The volume as a SimpleITK image with its geometry (float64 kept: NIfTI, NRRD and MetaImage store it)."""
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    if len(volume.geometry.spacing) != image.GetDimension():
        raise InputError(f"geometry has {len(volume.geometry.spacing)} dimensions but the array has "
                         f"{image.GetDimension()}")
    volume.geometry.apply_to(image)
    return image


def is_replaceable_series(folder: Path) -> bool:
    """True when ``folder`` holds nothing but a DICOM series DiffDenoise wrote (``*.dcm`` slices whose Derivation
    Description holds its provenance): the only folder ``--overwrite`` may replace. Anything else (notes,
    other images, sub-folders, a scanner's own series) is never deleted."""
    entries = list(folder.iterdir())
    return bool(entries) and all(entry.is_file() and not entry.is_symlink() and entry.suffix.lower() == ".dcm"
                                 and _written_by_diffdenoise(entry) for entry in entries)


def _written_by_diffdenoise(slice_file: Path) -> bool:
    try:
        dataset = pydicom.dcmread(slice_file, stop_before_pixels=True, specific_tags=[_DICOM_DERIVATION_TAG])
        record = json.loads(str(dataset.get(_DICOM_DERIVATION_TAG).value))
    except (OSError, ValueError, AttributeError, pydicom.errors.InvalidDicomError):
        return False
    return isinstance(record, dict) and "bundle_sha256" in record


@contextlib.contextmanager
def atomic_target(path: Path, overwrite: bool = False, replaceable: frozenset[str] = frozenset()) -> Iterator[Path]:
    """Yield a path inside a hidden temporary folder next to ``path``; move the results into place on success.

    Nothing that exists is replaced unless ``overwrite`` is set (or its name is in ``replaceable``), and even
    then a folder only when it holds nothing but a DICOM series DiffDenoise wrote (:func:`is_replaceable_series`).
    Multi-file outputs (NHDR/MHD header + data, PNG + JSON sidecar) move data first and the header last.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=path.parent))
    try:
        yield staging / path.name
        produced = sorted(staging.iterdir(), key=lambda p: p.name == path.name)
        for item in produced:  # every check first: a refusal leaves nothing half-moved
            _check_replaceable(path.parent / item.name, item.is_dir(), overwrite or item.name in replaceable)
        with _signals_held():  # Ctrl-C or SIGTERM between two moves would leave an image without its sidecar
            for item in produced:
                destination = path.parent / item.name
                if item.is_dir() and destination.is_dir():  # an old series: moved aside, deleted with the staging
                    os.replace(destination, staging / ".replaced")
                move_into_place(item, destination, overwrite or item.is_dir() or item.name in replaceable)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def move_into_place(source: Path, destination: Path, overwrite: bool) -> None:
    """Rename a finished file to its final name. Without ``overwrite`` the move cannot replace a file that
    another run put there meanwhile: a hard link is created (atomic, fails if the name exists), then the
    temporary name is removed; where the disk has no hard links, a check before the rename."""
    if overwrite:
        os.replace(source, destination)
        return
    try:
        os.link(source, destination)
    except FileExistsError:
        raise InputError(f"{destination} appeared while this run worked (another run writing the same path?): "
                         "it was left as it is; choose a new output name") from None
    except OSError:  # no hard links on this file system (FAT, some network shares)
        if os.path.lexists(destination):
            raise InputError(f"{destination} appeared while this run worked: it was left as it is") from None
        os.replace(source, destination)
        return
    source.unlink()


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM (delivered on exit) for a few renames; a no-op off the main thread or POSIX."""
    held = {signal.SIGINT, signal.SIGTERM}
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _check_replaceable(destination: Path, is_series: bool, overwrite: bool) -> None:
    if not os.path.lexists(destination) or (is_series and destination.is_dir() and not any(destination.iterdir())):
        return  # nothing there, or an empty folder: nothing to lose
    if not overwrite:
        raise InputError(f"{destination} already exists (it appeared while this run worked): nothing was "
                         "replaced; choose a new output name, or pass --overwrite")
    if destination.is_dir() != is_series or (is_series and not is_replaceable_series(destination)):
        raise InputError(f"{destination} exists and is not a {'DICOM series folder' if is_series else 'file'}: "
                         "it was left as it is; choose a new output name")


def output_files(path: str | os.PathLike, dwi: bool = False) -> list[Path]:
    """Every file (or DICOM series folder) that writing an image to ``path`` creates: the image itself, the
    data file of a two-file format (``.mhd`` -> ``.zraw``, ``.nhdr`` -> ``.raw.gz``), the provenance sidecar of
    PNG/TIFF (``<stem>.json``) and, for a non-NRRD diffusion series (``dwi``), its ``.bval`` and ``.bvec``."""
    path = Path(path)
    suffix = _suffix(path)
    stem = split_image_name(path)[0]
    files = [path]
    if suffix == ".mhd":
        files.append(path.with_name(stem + ".zraw"))
    elif suffix == ".nhdr":
        files.append(path.with_name(stem + ".raw.gz"))
    elif suffix in _SIDECAR_SUFFIXES:
        files.append(_sidecar(path))
    if dwi and not _is_nrrd(path):
        files.extend(_dwi_sidecars(path))
    return files


def input_files(path: str | os.PathLike) -> list[Path]:
    """The files an input consists of, all to be kept safe from the run's outputs: the image file, the data
    files its MHD/NHDR header names, same-stem sidecars that exist (``.json``, ``.bval``, ``.bvec``); for a
    DICOM folder, the folder and every file in it."""
    path = Path(path)
    if path.is_dir():
        return [path, *path.iterdir()]
    files = [path]
    suffix = _suffix(path)
    if suffix in _TWO_FILE_SUFFIXES and path.is_file():
        files.extend(_header_data_files(path))
    if suffix in VOLUME_SUFFIXES:
        stem = split_image_name(path)[0]
        files.extend(side for side in (path.with_name(stem + ext) for ext in (".json", ".bval", ".bvec"))
                     if side.exists())
    return files


def _header_data_files(header: Path) -> list[Path]:
    """Data files named by an MHD (``ElementDataFile``) or NHDR (``data file``) header: one name, a ``LIST``
    of names on the following lines, or a ``%d`` pattern (all files it can match are kept safe)."""
    try:
        lines = header.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for number, line in enumerate(lines):
        key, separator, value = line.partition("=" if header.suffix.lower() == ".mhd" else ":")
        if not separator or key.strip().lower() not in ("elementdatafile", "data file", "datafile"):
            continue
        value = value.strip()
        if value.upper().startswith("LIST"):
            return [header.with_name(name.strip()) for name in lines[number + 1:] if name.strip()]
        if value.upper() == "LOCAL" or not value:
            return []
        name = value.split()[0] if "%" in value else value
        if "%" in name:  # printf pattern: keep every existing file with the pattern's fixed prefix and suffix
            prefix, _, rest = name.partition("%")
            ending = rest.lstrip("0123456789.-+ #").lstrip("diuxX")
            folder = (header.parent / prefix).parent
            start = Path(prefix).name
            return [f for f in folder.glob("*") if f.name.startswith(start) and f.name.endswith(ending)]
        return [header.with_name(name) if not Path(name).is_absolute() else Path(name)]
    return []


def check_output_format(path: str | os.PathLike, shape: tuple[int, ...] | None = None,
                        dtype: np.dtype | str | None = None, geometry: Geometry | None = None) -> None:
    """Refuse, before any work, an output the format of ``path`` cannot hold: an unknown extension, a
    non-8/16-bit-unsigned or multi-slice PNG, a multi-slice single ``.dcm``, a 4D image in a 2D/3D-only format,
    a non-orthogonal direction in NIfTI. ``shape`` (numpy order), ``dtype`` and ``geometry`` are checked when
    given."""
    path = Path(path)
    suffix = _suffix(path)
    if suffix not in VOLUME_SUFFIXES and (suffix or (path.exists() and not path.is_dir())):
        raise InputError(f"unsupported output type '{path.name}': use one of {', '.join(VOLUME_SUFFIXES)} "
                         "or a folder name for a DICOM series")
    if dtype is not None and suffix in (".tif", ".tiff") and np.dtype(dtype).itemsize > 4 \
            and np.issubdtype(dtype, np.integer):
        raise InputError(f"{path.name}: TIFF stores integers of up to 32 bits and this output is {np.dtype(dtype)}: "
                         "write .nrrd or .nii.gz instead")
    if dtype is not None and suffix == ".png" and np.dtype(dtype) not in (np.uint8, np.uint16):
        raise InputError(f"{path.name}: PNG stores 8- or 16-bit unsigned integers and this output is "
                         f"{np.dtype(dtype)}: write .tif, .nrrd or .nii.gz instead")
    if shape is None:
        return
    slices = 1 if len(shape) == 2 else int(np.prod(shape[:-2]))
    if suffix == ".png" and slices != 1:
        raise InputError(f"{path.name}: a PNG holds one 2D image and this output has {slices} slices: write "
                         ".tif (a stack), .nrrd or .nii.gz instead")
    if suffix == ".dcm" and slices != 1:
        raise InputError(f"a single .dcm file holds one slice and this output has {slices}: give a folder name "
                         "(no extension) to write a DICOM series")
    if len(shape) > 3 and suffix not in (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd"):
        raise InputError(f"{path.name}: a {len(shape)}D image needs NIfTI, NRRD or MetaImage (.nii.gz, .nrrd, .mha)")
    if geometry is not None and suffix in (".nii", ".nii.gz"):
        size = len(geometry.spacing)
        direction = np.asarray(geometry.direction, dtype=np.float64).reshape(size, size)
        if not np.allclose(direction.T @ direction, np.eye(size), atol=1e-4):
            raise InputError(f"{path.name}: NIfTI cannot store this image's non-orthogonal (sheared) axes and would "
                             "move its voxels: write .nrrd or .mha, which keep the geometry exactly")


def write_volume(path: str | os.PathLike, volume: Volume, description: str = "DiffDenoise output",
                 provenance: Provenance | None = None, overwrite: bool = False,
                 shared_sidecar: bool = False) -> None:
    """Write ``volume`` with its geometry; the format follows the extension (a path without one: DICOM series).

    PNG stores 8- or 16-bit unsigned integers only: cast first (the CLI keeps the input's data type).
    DICOM outputs store float data as 16-bit integers with RescaleSlope/Intercept.

    ``provenance`` is recorded as: ``DiffDenoise_<field>`` header fields (NRRD, MetaImage); the ``descrip``
    summary line plus the whole record as JSON in a comment extension (NIfTI); JSON in Derivation Description
    (0008,2111) of every slice (DICOM); a ``<stem>.json`` sidecar (PNG, TIFF). :func:`read_provenance` reads
    it back. An existing file is refused unless ``overwrite``; a folder is only ever replaced when it holds
    nothing but a DICOM series. ``shared_sidecar``: the PNG/TIFF sidecar may replace the one an earlier write
    of the same run made (``img.png`` and ``img.tif`` of one cohort share ``img.json``).
    """
    path = Path(os.path.abspath(path))  # "." or "out/.." name a real folder
    check_output_format(path, volume.array.shape, volume.array.dtype)
    shared = frozenset({_sidecar(path).name}) if shared_sidecar and _suffix(path) in _SIDECAR_SUFFIXES else frozenset()
    with atomic_target(path, overwrite, shared) as target:
        _write_image(target, volume, description, provenance, is_series=writes_series(path))


def _write_image(target: Path, volume: Volume, description: str, provenance: Provenance | None,
                 is_series: bool) -> None:
    """Write the image (and its data file or sidecar) at ``target``, a path in a staging folder."""
    suffix = _suffix(target)
    if is_series:
        target.mkdir()
        _write_dicom_slices(target, volume, description, provenance)
    elif suffix == ".dcm":
        _write_dicom_slices(target.parent, volume, description, provenance, single_file=target)
    else:
        if suffix in (".tif", ".tiff") and volume.array.dtype == np.float64:  # TIFF floats are 32-bit
            volume = volume.with_array(volume.array.astype(np.float32))
        image = volume_to_image(volume)
        if suffix in _SIDECAR_SUFFIXES and image.GetDimension() == 3 and image.GetSize()[2] == 1:
            image = image[:, :, 0]
        if provenance is not None and suffix in _KEY_VALUE_SUFFIXES:
            for key, value in provenance.header_fields().items():
                image.SetMetaData(key, value)
        if provenance is not None and suffix in (".nii", ".nii.gz"):
            image.SetMetaData("ITK_FileNotes", provenance.summary())  # ITK writes it to descrip
        # ITK picks its writer by a lowercase extension (scan.NII.GZ fails): write so, then take the user's name
        lowercase = target.with_name(split_image_name(target)[0] + suffix)
        try:
            sitk.WriteImage(image, str(lowercase), useCompression=suffix in _KEY_VALUE_SUFFIXES)
        except RuntimeError as error:  # ITK reports a full disk or a failed write this way
            raise OSError(errno.EIO, f"ITK could not write it ({_last_line(error)}): is the disk full?",
                          target.name) from None
        if suffix in (".nii", ".nii.gz") and (provenance is not None or _NIFTI_FORMS in volume.metadata):
            _finish_nifti(lowercase, provenance, volume.metadata.get(_NIFTI_FORMS))
        os.replace(lowercase, target)
        if provenance is not None and suffix in _SIDECAR_SUFFIXES:
            _sidecar(target).write_text(json.dumps(provenance.as_dict(), indent=2))


def _sidecar(path: Path) -> Path:
    return path.with_name(split_image_name(path)[0] + ".json")


def _finish_nifti(path: Path, provenance: Provenance | None, forms: str | None) -> None:
    """What ITK cannot write into a NIfTI file: the provenance record as a JSON comment extension, and the
    input's qform and sform both as they were (``forms``, when they disagree; ITK writes one into both)."""
    image = nib.load(path)
    header = image.header.copy()
    if provenance is not None:
        header.extensions.append(nib.nifti1.Nifti1Extension("comment", json.dumps(provenance.as_dict()).encode()))
    if forms is not None:
        stored = json.loads(forms)
        header.set_qform(np.array(stored["qform"]), int(stored["qform_code"]))
        header.set_sform(np.array(stored["sform"]), int(stored["sform_code"]))
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
    tags = {key: value for key, value in volume.metadata.items() if key in _DICOM_TAGS_KEPT}
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
        try:
            writer.Execute(slice_image)
        except RuntimeError as error:  # GDCM reports a full disk as an unsupported component type
            raise OSError(errno.EIO, f"GDCM could not write slice {index} ({_last_line(error)}): is the disk full?",
                          str(folder)) from None


def read_bvals_bvecs(bval_path: str | os.PathLike, bvec_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read FSL b-values (one row) and gradient directions (3 rows or 3 columns); NaN directions become 0 and
    directions that are not unit length are normalised with a warning (FSL keeps the b-value in the .bval)."""
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
    bvecs = np.nan_to_num(bvecs, nan=0.0)
    norms = np.linalg.norm(bvecs, axis=1)
    off = (norms > 0) & (np.abs(norms - 1) > UNIT_TOLERANCE)
    if off.any():
        warnings.warn(f"{bvec_path}: {int(off.sum())} gradient directions are not unit length (|g| from "
                      f"{norms[off].min():.3g} to {norms[off].max():.3g}); they were normalised, the b-values are "
                      "taken from the .bval file as given", DataWarning, stacklevel=2)
        bvecs = np.divide(bvecs, norms[:, None], out=np.zeros_like(bvecs), where=norms[:, None] > 0)
    return bvals, bvecs


def _dwi_sidecars(path: Path) -> tuple[Path, Path]:
    stem = split_image_name(path)[0]
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


def write_dwi(path: str | os.PathLike, dwi: DiffusionVolume, provenance: Provenance | None = None,
              overwrite: bool = False) -> None:
    """Write a 4D series: ``.nrrd`` / ``.nhdr`` as NRRD DWI (gradients in the header, as Slicer reads them),
    anything else plus ``<stem>.bval`` / ``<stem>.bvec`` next to it (FSL layout, one row per axis).
    ``provenance`` is recorded as in :func:`write_volume`; existing files are refused unless ``overwrite``."""
    path = Path(path)
    if _is_nrrd(path):
        _write_nrrd_dwi(path, dwi, provenance, overwrite)
        return
    path = Path(os.path.abspath(path))
    check_output_format(path, dwi.volume.array.shape, dwi.volume.array.dtype)
    with atomic_target(path, overwrite) as target:  # image, .bval and .bvec move into place together
        _write_image(target, dwi.volume, "DiffDenoise output", provenance, is_series=False)
        bval_path, bvec_path = _dwi_sidecars(target)
        np.savetxt(bval_path, dwi.bvals[None, :], fmt="%.10g")
        np.savetxt(bvec_path, dwi.bvecs.T, fmt="%.10g")


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


def _write_nrrd_dwi(path: Path, dwi: DiffusionVolume, provenance: Provenance | None, overwrite: bool) -> None:
    array = dwi.volume.array
    if array.ndim != 4:
        raise InputError(f"a DWI has 4 dimensions (volumes, z, y, x), got shape {array.shape}")
    geometry = dwi.volume.geometry
    dimension = len(geometry.spacing)
    direction = np.asarray(geometry.direction, dtype=np.float64).reshape(dimension, dimension)[:3, :3]
    spacing = np.asarray(geometry.spacing[:3], dtype=np.float64)
    reference_b = float(np.max(dwi.bvals)) if np.max(dwi.bvals) > 0 else 1.0
    # unit directions scaled by sqrt(b / b_max): NRRD encodes each volume's b-value in its gradient's length
    norms = np.linalg.norm(dwi.bvecs, axis=1, keepdims=True)
    unit = np.divide(dwi.bvecs, norms, out=np.zeros_like(dwi.bvecs, dtype=np.float64), where=norms > 0)
    gradients = fsl_to_world_bvecs(unit, direction) * np.sqrt(np.maximum(dwi.bvals, 0) / reference_b)[:, None]
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
    with atomic_target(path, overwrite) as target:
        detached = {"detached_header": True} if _suffix(path) == ".nhdr" else {}
        nrrd.write(str(target), np.ascontiguousarray(np.moveaxis(array, 0, -1)), header, index_order="C",
                   **detached)
