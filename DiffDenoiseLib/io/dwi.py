"""4D diffusion-weighted series: FSL b-values and gradient files beside any 4D image, NRRD DWI with the
gradients in its header (as Slicer reads them), and the conversion between FSL's voxel-axis directions and
world (LPS) directions."""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path

import nrrd
import numpy as np

from ..errors import InputError
from ..provenance import Provenance
from .atomic import atomic_target
from .formats import check_output_format, dwi_sidecars, image_suffix, is_nrrd
from .images import read_volume, write_image_at
from .volume import DataWarning, DiffusionVolume, Geometry, Volume

UNIT_TOLERANCE = 0.01  # |g| within 1% of 1 counts as a unit gradient direction (rounded text files)


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


def read_dwi(path: str | os.PathLike, bval_path: str | os.PathLike | None = None,
             bvec_path: str | os.PathLike | None = None) -> DiffusionVolume:
    """Read a 4D diffusion series: NRRD DWI (gradients in the header) or NIfTI and other formats with FSL
    b-values/vectors (default: ``<stem>.bval`` / ``<stem>.bvec``)."""
    path = Path(path)
    if is_nrrd(path) and bval_path is None and bvec_path is None:
        return _read_nrrd_dwi(path)
    default_bval, default_bvec = dwi_sidecars(path)
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
              overwrite: bool = False, on_written: Callable[[], object] | None = None) -> None:
    """Write a 4D series: ``.nrrd`` / ``.nhdr`` as NRRD DWI (gradients in the header, as Slicer reads them),
    anything else plus ``<stem>.bval`` / ``<stem>.bvec`` next to it (FSL layout, one row per axis).
    ``provenance`` is recorded as in :func:`write_volume`; existing files are refused unless ``overwrite``;
    ``on_written`` as in :func:`write_volume`."""
    path = Path(path)
    if is_nrrd(path):
        _write_nrrd_dwi(path, dwi, provenance, overwrite, on_written)
        return
    path = Path(os.path.abspath(path))
    check_output_format(path, dwi.volume.array.shape, dwi.volume.array.dtype)
    with atomic_target(path, overwrite, on_placed=on_written) as target:  # image, .bval, .bvec move together
        write_image_at(target, dwi.volume, "DiffDenoise output", provenance, is_series=False)
        bval_path, bvec_path = dwi_sidecars(target)
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


def _write_nrrd_dwi(path: Path, dwi: DiffusionVolume, provenance: Provenance | None, overwrite: bool,
                    on_written: Callable[[], object] | None) -> None:
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
    with atomic_target(path, overwrite, on_placed=on_written) as target:
        detached = {"detached_header": True} if image_suffix(path) == ".nhdr" else {}
        nrrd.write(str(target), np.ascontiguousarray(np.moveaxis(array, 0, -1)), header, index_order="C",
                   **detached)
