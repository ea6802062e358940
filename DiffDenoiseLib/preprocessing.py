"""Input checks, intensity normalisation and volume <-> slice-stack conversion."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .noise.analysis import robust_range

LOW_PERCENTILE, HIGH_PERCENTILE = 0.5, 99.5
FLOAT32_EXACT = 2.0 ** 24  # float32 holds every integer up to here; above, unit steps are rounded


def check_image(image: np.ndarray) -> None:
    """Refuse what cannot be denoised as a 2D image or 3D volume, with a message saying what to do."""
    if image.ndim not in (2, 3):
        hint = " (a 4D series: denoise each 3D volume, or use DDM2 mode for diffusion MRI)" if image.ndim == 4 else ""
        raise InputError(f"expected a 2D image or a 3D volume, got a {image.ndim}D array of shape "
                         f"{image.shape}{hint}")
    check_values(image)


def check_values(image: np.ndarray) -> None:
    """Refuse non-numeric, complex, empty, non-finite or constant arrays (any dimensionality)."""
    if image.dtype == np.bool_:
        raise InputError("the image is boolean (a mask?): there is no noise to remove; convert it to a numeric type "
                         "if it really is an image")
    if not np.issubdtype(image.dtype, np.number):
        raise InputError(f"unsupported data type {image.dtype}: expected a numeric image")
    if np.issubdtype(image.dtype, np.complexfloating):
        raise InputError("complex-valued image: denoise the magnitude (np.abs) or each channel separately")
    if image.size == 0:
        raise InputError(f"the image is empty (shape {image.shape})")
    finite = np.isfinite(image)
    if not finite.all():
        bad = int(image.size - finite.sum())
        what = "every voxel is" if bad == image.size else f"{bad} of {image.size} voxels are"
        raise InputError(f"{what} NaN or Inf: replace them (e.g. with 0 or the background value) and retry")
    low, high = float(image.min()), float(image.max())
    if low == high:
        raise InputError(f"the image is constant (every voxel is {low}): there is nothing to denoise")


def check_slice_size(slices: np.ndarray, min_size: int) -> None:
    """Refuse slices smaller than a network can process."""
    if min(slices.shape[-2:]) < min_size:
        raise InputError(f"slices of {slices.shape[-2]}x{slices.shape[-1]} px are smaller than the network's "
                         f"minimum of {min_size}x{min_size}: resample or pad the image, or pick another slice axis")


@dataclass(frozen=True)
class IntensityScaling:
    """Linear map of the robust intensity range [low, high] onto [0, 1] (and back)."""

    low: float
    high: float

    @classmethod
    def fit(cls, image: np.ndarray) -> IntensityScaling:
        low, high = robust_range(image, LOW_PERCENTILE, HIGH_PERCENTILE)
        # normalisation runs in float32: a span it cannot divide by would give inf or 0 everywhere
        if not np.finfo(np.float32).tiny <= high - low <= np.finfo(np.float32).max:
            raise InputError(f"the intensity range {low:g} to {high:g} is outside what float32 arithmetic can "
                             "normalise: multiply the image by a constant (e.g. 1e6 or 1e-6) and retry")
        return cls(low, high)

    @property
    def precise(self) -> bool:
        """True when the intensities exceed float32's 24-bit precision (uint32 near 3e9, int64, a large offset
        on float64 data): then the offset is removed and restored in float64, or float32 would round it."""
        return max(abs(self.low), abs(self.high)) >= FLOAT32_EXACT

    def normalise(self, image: np.ndarray) -> np.ndarray:
        """The image mapped to [0, 1] over its robust range, float32 (subtracted in float64 when needed)."""
        work = np.float64 if self.precise or image.dtype.itemsize > 4 else np.float32
        normalised = np.empty(image.shape, dtype=np.float32)
        for index in np.ndindex(image.shape[:1]) if image.ndim > 2 else [Ellipsis]:  # one slab at a time: memory
            normalised[index] = (image[index].astype(work) - self.low) / (self.high - self.low)
        return normalised

    def denormalise(self, image: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`normalise`: float32, or float64 when :attr:`precise` (float32 would round)."""
        dtype = np.float64 if self.precise else np.float32
        return (image.astype(dtype) * (self.high - self.low) + self.low).astype(dtype)


def to_slices(volume: np.ndarray, axis: int = 0) -> np.ndarray:
    """A 2D image or 3D volume as a (N, 1, H, W) stack of 2D slices taken along ``axis``."""
    if volume.ndim == 2:
        return volume[None, None]
    return np.moveaxis(volume, axis, 0)[:, None]


def from_slices(slices: np.ndarray, shape: tuple[int, ...], axis: int = 0) -> np.ndarray:
    """Inverse of :func:`to_slices` for a single-channel stack."""
    if len(shape) == 2:
        return slices[0, 0]
    return np.ascontiguousarray(np.moveaxis(slices[:, 0], 0, axis))


def match_dtype(image: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float result to ``dtype``: integers are rounded and clipped to the type's range."""
    dtype = np.dtype(dtype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(image), info.min, info.max).astype(dtype)
    return image.astype(dtype)
