"""What a file name says: its format, the files writing it creates, the files an input consists of, and
whether a format can hold a given output (checked before any work)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .volume import Geometry

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".png", ".tif", ".tiff", ".dcm")
TWO_FILE_SUFFIXES = (".nhdr", ".mhd")
IMAGE_IO = {".nii.gz": "NiftiImageIO", ".nii": "NiftiImageIO", ".nrrd": "NrrdImageIO", ".nhdr": "NrrdImageIO",
             ".mha": "MetaImageIO", ".mhd": "MetaImageIO", ".png": "PNGImageIO", ".tif": "TIFFImageIO",
             ".tiff": "TIFFImageIO", ".dcm": "GDCMImageIO"}
KEY_VALUE_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")  # formats with free key/value header fields
SIDECAR_SUFFIXES = (".png", ".tif", ".tiff")  # no header fields: provenance goes to <stem>.json beside them


def image_suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def split_image_name(path: str | os.PathLike) -> tuple[str, str]:
    """A file name as (stem, extension) the way the readers and writers see it: ``scan.NII.GZ`` -> ``("scan",
    ".NII.GZ")`` (the extension in the name's own case), ``series`` -> ``("series", "")``."""
    name = Path(path).name
    cut = len(name) - len(image_suffix(Path(name)))
    return name[:cut], name[cut:]


def writes_series(path: Path) -> bool:
    """Whether writing an image to ``path`` makes a DICOM series folder: an existing folder, or no extension."""
    return path.is_dir() or image_suffix(path) == ""



def sidecar_path(path: Path) -> Path:
    return path.with_name(split_image_name(path)[0] + ".json")


def dwi_sidecars(path: Path) -> tuple[Path, Path]:
    stem = split_image_name(path)[0]
    return path.with_name(stem + ".bval"), path.with_name(stem + ".bvec")


def is_nrrd(path: Path) -> bool:
    return image_suffix(path) in (".nrrd", ".nhdr")


def output_files(path: str | os.PathLike, dwi: bool = False) -> list[Path]:
    """Every file (or DICOM series folder) that writing an image to ``path`` creates: the image itself, the
    data file of a two-file format (``.mhd`` -> ``.zraw``, ``.nhdr`` -> ``.raw.gz``), the provenance sidecar of
    PNG/TIFF (``<stem>.json``) and, for a non-NRRD diffusion series (``dwi``), its ``.bval`` and ``.bvec``."""
    path = Path(path)
    suffix = image_suffix(path)
    stem = split_image_name(path)[0]
    files = [path]
    if suffix == ".mhd":
        files.append(path.with_name(stem + ".zraw"))
    elif suffix == ".nhdr":
        files.append(path.with_name(stem + ".raw.gz"))
    elif suffix in SIDECAR_SUFFIXES:
        files.append(sidecar_path(path))
    if dwi and not is_nrrd(path):
        files.extend(dwi_sidecars(path))
    return files


def input_files(path: str | os.PathLike) -> list[Path]:
    """The files an input consists of, all to be kept safe from the run's outputs: the image file, the data
    files its MHD/NHDR header names, same-stem sidecars that exist (``.json``, ``.bval``, ``.bvec``); for a
    DICOM folder, the folder and every file in it."""
    path = Path(path)
    if path.is_dir():
        return [path, *path.iterdir()]
    files = [path]
    suffix = image_suffix(path)
    if suffix in TWO_FILE_SUFFIXES and path.is_file():
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
    suffix = image_suffix(path)
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
