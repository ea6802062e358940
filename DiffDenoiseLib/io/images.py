"""Read and write one image or volume with its geometry and provenance: NIfTI (with nibabel's checks and both
of its orientations), NRRD/NHDR, MetaImage, PNG/TIFF, single DICOM files and DICOM series folders."""

from __future__ import annotations

import contextlib
import errno
import gzip
import json
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from pydicom.misc import is_dicom

from ..errors import InputError
from ..provenance import Provenance
from .atomic import atomic_target
from .dicom import DICOM_DERIVATION, DICOM_TAGS_KEPT, read_dicom_series, write_dicom_slices
from .formats import (
    IMAGE_IO,
    KEY_VALUE_SUFFIXES,
    SIDECAR_SUFFIXES,
    VOLUME_SUFFIXES,
    check_output_format,
    image_suffix,
    sidecar_path,
    split_image_name,
    writes_series,
)
from .volume import DataWarning, Geometry, Volume, itk_error_line, volume_to_image


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
            image, metadata = read_dicom_series(path, series_id)
        else:
            image, metadata = _read_file(path)
    except RuntimeError as error:  # SimpleITK reports unreadable or truncated files this way
        if _png_colour_type(path) == _PNG_GRAY_ALPHA:
            raise InputError(f"cannot read {path}: a gray + alpha PNG, which ITK cannot read; save it as plain "
                             "gray (e.g. Pillow: Image.open(path).convert('L').save(...))") from None
        raise InputError(f"cannot read {path}: {itk_error_line(error)} "
                         "(is the file complete and in a supported format?)") from None
    components = image.GetNumberOfComponentsPerPixel()
    if components > 1:
        colour = (path.is_dir() or image_suffix(path) in (*SIDECAR_SUFFIXES, ".dcm")) and components in (2, 3, 4)
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
    suffix = image_suffix(path)
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



def _read_file(path: Path) -> tuple[sitk.Image, dict[str, str]]:
    suffix = image_suffix(path)
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
    if suffix in IMAGE_IO:  # by our reading of the extension: ITK's own fails on scan.NII.GZ or scan.MHD
        reader.SetImageIO(IMAGE_IO[suffix])
    with _lowercase_nifti_name(path) as readable:
        reader.SetFileName(str(readable))
        image = reader.Execute()
    if header is not None and image.GetDimension() == 2:
        image = _placed_nifti_slice(image, header)
    if dicom:
        metadata = {key: reader.GetMetaData(key) for key in DICOM_TAGS_KEPT if reader.HasMetaDataKey(key)}
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


def write_volume(path: str | os.PathLike, volume: Volume, description: str = "DiffDenoise output",
                 provenance: Provenance | None = None, overwrite: bool = False,
                 shared_sidecar: bool = False, on_written: Callable[[], object] | None = None) -> None:
    """Write ``volume`` with its geometry; the format follows the extension (a path without one: DICOM series).

    PNG stores 8- or 16-bit unsigned integers only: cast first (the CLI keeps the input's data type).
    DICOM outputs store float data as 16-bit integers with RescaleSlope/Intercept.

    ``provenance`` is recorded as: ``DiffDenoise_<field>`` header fields (NRRD, MetaImage); the ``descrip``
    summary line plus the whole record as JSON in a comment extension (NIfTI); JSON in Derivation Description
    (0008,2111) of every slice (DICOM); a ``<stem>.json`` sidecar (PNG, TIFF). :func:`read_provenance` reads
    it back. An existing file is refused unless ``overwrite``; a folder is only ever replaced when it holds
    nothing but a DICOM series. ``shared_sidecar``: the PNG/TIFF sidecar may replace the one an earlier write
    of the same run made (``img.png`` and ``img.tif`` of one cohort share ``img.json``). ``on_written()``
    runs the moment the output is in place, before an interrupt can land (:func:`.atomic.atomic_target`).
    """
    path = Path(os.path.abspath(path))  # "." or "out/.." name a real folder
    check_output_format(path, volume.array.shape, volume.array.dtype)
    shares_sidecar = shared_sidecar and image_suffix(path) in SIDECAR_SUFFIXES
    shared = frozenset({sidecar_path(path).name}) if shares_sidecar else frozenset()
    with atomic_target(path, overwrite, shared, on_written) as target:
        write_image_at(target, volume, description, provenance, is_series=writes_series(path))


def write_image_at(target: Path, volume: Volume, description: str, provenance: Provenance | None,
                 is_series: bool) -> None:
    """Write the image (and its data file or sidecar) at ``target``, a path in a staging folder."""
    suffix = image_suffix(target)
    if is_series:
        target.mkdir()
        write_dicom_slices(target, volume, description, provenance)
    elif suffix == ".dcm":
        write_dicom_slices(target.parent, volume, description, provenance, single_file=target)
    else:
        if suffix in (".tif", ".tiff") and volume.array.dtype == np.float64:  # TIFF floats are 32-bit
            volume = volume.with_array(volume.array.astype(np.float32))
        image = volume_to_image(volume)
        if suffix in SIDECAR_SUFFIXES and image.GetDimension() == 3 and image.GetSize()[2] == 1:
            image = image[:, :, 0]
        if provenance is not None and suffix in KEY_VALUE_SUFFIXES:
            for key, value in provenance.header_fields().items():
                image.SetMetaData(key, value)
        if provenance is not None and suffix in (".nii", ".nii.gz"):
            image.SetMetaData("ITK_FileNotes", provenance.summary())  # ITK writes it to descrip
        # ITK picks its writer by a lowercase extension (scan.NII.GZ fails): write so, then take the user's name
        lowercase = target.with_name(split_image_name(target)[0] + suffix)
        try:
            sitk.WriteImage(image, str(lowercase), useCompression=suffix in KEY_VALUE_SUFFIXES)
        except RuntimeError as error:  # ITK reports a full disk or a failed write this way
            raise OSError(errno.EIO, f"ITK could not write it ({itk_error_line(error)}): is the disk full?",
                          target.name) from None
        if suffix in (".nii", ".nii.gz") and (provenance is not None or _NIFTI_FORMS in volume.metadata):
            _finish_nifti(lowercase, provenance, volume.metadata.get(_NIFTI_FORMS))
        os.replace(lowercase, target)
        if provenance is not None and suffix in SIDECAR_SUFFIXES:
            sidecar_path(target).write_text(json.dumps(provenance.as_dict(), indent=2))


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
    suffix = image_suffix(path)
    if suffix in SIDECAR_SUFFIXES:
        sidecar = sidecar_path(path)
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
    if DICOM_DERIVATION in header:
        with contextlib.suppress(ValueError):
            return Provenance.from_dict(json.loads(header[DICOM_DERIVATION]))
    return Provenance.from_header_fields(header)
