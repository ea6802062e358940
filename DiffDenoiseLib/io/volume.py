"""Images in memory: an array with its geometry (ITK conventions) and a diffusion series with its gradients,
and the bridge to SimpleITK images."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import InputError


class DataWarning(UserWarning):
    """Something about an input file a user should know: it was read, but not exactly as stored."""


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



def itk_error_line(error: Exception) -> str:
    """The informative part of an ITK error (its last line; the rest is the C++ source location)."""
    text = str(error).strip()
    return text.splitlines()[-1] if text else "unknown reason"
