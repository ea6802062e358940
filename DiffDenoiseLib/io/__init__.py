"""Read and write medical images with their geometry (SimpleITK, nibabel-compatible NIfTI, pydicom checks).

Arrays follow the SimpleITK / Slicer numpy convention: the slowest axis first, so a 3D volume is
``(z, y, x)``, a 2D image ``(y, x)`` and a 4D series ``(v, z, y, x)``. Geometry follows ITK: spacing and
origin in (x, y, z[, t]) order, direction cosines row-major, physical space LPS.

Every writer is atomic: files are written under a temporary name in the target folder and moved into
place only when complete, so a failed or cancelled run never leaves a partial output behind.

Modules: ``volume`` (the in-memory types), ``formats`` (what a file name means and what a format can hold),
``images`` (one image or volume, any format), ``dicom`` (series folders), ``dwi`` (4D diffusion series with
their gradients), ``atomic`` (moving finished outputs into place). The names below are the public API.
"""

from .atomic import atomic_target, move_into_place, signals_held
from .dicom import is_replaceable_series
from .dwi import fsl_to_world_bvecs, read_bvals_bvecs, read_dwi, world_to_fsl_bvecs, write_dwi
from .formats import (
    VOLUME_SUFFIXES,
    check_output_format,
    input_files,
    output_files,
    split_image_name,
    writes_series,
)
from .images import read_provenance, read_volume, write_volume
from .volume import DataWarning, DiffusionVolume, Geometry, Volume, volume_to_image

__all__ = [
    "VOLUME_SUFFIXES", "DataWarning", "DiffusionVolume", "Geometry", "Volume", "atomic_target",
    "check_output_format", "fsl_to_world_bvecs", "input_files", "is_replaceable_series", "move_into_place",
    "output_files", "read_bvals_bvecs", "read_dwi", "read_provenance", "read_volume", "signals_held",
    "split_image_name", "volume_to_image", "world_to_fsl_bvecs", "write_dwi", "write_volume", "writes_series",
]
