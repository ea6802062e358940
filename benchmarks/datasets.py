"""The real images of ``../shared/data`` used as clean references, and the noises added to them.

Every loader returns float32 (slices, H, W). None of the images is noise-free (MNI is a 152-subject average,
the others are single acquisitions with high SNR); the added noise dominates what they carry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from skimage.transform import downscale_local_mean

from DiffDenoiseLib.io import read_volume

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# name -> (kind and level for DiffDenoiseLib.noise.add_noise); levels as in its docstring
NOISES: dict[str, tuple[str, float]] = {
    "gaussian 0.05": ("gaussian", 0.05),
    "gaussian 0.1": ("gaussian", 0.1),
    "correlated 0.1": ("correlated", 0.1),
    "poisson 30": ("poisson", 30.0),
    "rician 0.05": ("rician", 0.05),
    "gamma L=4": ("gamma", 4.0),
}
# issue 27's grid names its noises by family alone (its case files carry these names): the level of each
GRID_NOISES: dict[str, str] = {"gaussian": "gaussian 0.1", "rician": "rician 0.05", "poisson": "poisson 30",
                               "correlated": "correlated 0.1"}


def noise_of(name: str) -> tuple[str, float]:
    """The (kind, level) a benchmark noise name stands for: a key of :data:`NOISES` or :data:`GRID_NOISES`."""
    return NOISES[GRID_NOISES.get(name, name)]


def _read(relative: str) -> np.ndarray:
    array = read_volume(SHARED / relative).array.astype(np.float32)
    return array.reshape(-1, *array.shape[-2:])


def _central_crop(volume: np.ndarray, side: int) -> np.ndarray:
    """The central ``side`` x ``side`` pixels of every slice (all of a side shorter than ``side``)."""
    top, left = (max(0, (n - side) // 2) for n in volume.shape[1:])
    return np.ascontiguousarray(volume[:, top:top + side, left:left + side])


def _mni() -> np.ndarray:
    return _read("clean/mni_icbm152_t1_1mm.nii.gz")  # axial slices of the 1 mm template


def _xray() -> np.ndarray:
    return downscale_local_mean(_read("xray/chest_cr_RG1_UNCR.dcm"), (1, 4, 4)).astype(np.float32)  # ~0.7 mm px


@dataclass(frozen=True)
class Dataset:
    """A clean reference image and the noises that make sense for its modality."""

    name: str
    description: str
    file: str
    load: Callable[[], np.ndarray]
    noises: tuple[str, ...]

    @property
    def available(self) -> bool:
        return (SHARED / self.file).exists()

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel spacing (mm) of the loaded (slices, H, W) array, in its axis order."""
        x, y, z = (tuple(read_volume(SHARED / self.file).geometry.spacing) + (1.0, 1.0))[:3]
        return z, y, x

    def central_slices(self, count: int | None) -> np.ndarray:
        """``count`` slices from the middle of the volume (all when None or more than it has)."""
        volume = self.load()
        if count is None or count >= len(volume):
            return volume
        start = (len(volume) - count) // 2
        return volume[start:start + count]


MR_NOISES = ("gaussian 0.05", "gaussian 0.1", "correlated 0.1", "poisson 30", "rician 0.05")
XRAY_CT_NOISES = ("gaussian 0.05", "gaussian 0.1", "correlated 0.1", "poisson 30")

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset("mni", "MNI ICBM152 T1, 1 mm (brain MRI template)", "clean/mni_icbm152_t1_1mm.nii.gz", _mni,
            MR_NOISES),
    Dataset("knee", "knee MRI, 3T multi-echo spin echo T2, first echo", "mri/knee_mese_t2_echo1.nii.gz",
            lambda: _read("mri/knee_mese_t2_echo1.nii.gz"), MR_NOISES),
    Dataset("ct", "head CT slice (NEMA WG04)", "ct/head_ct_693_UNCR.dcm", lambda: _read("ct/head_ct_693_UNCR.dcm"),
            XRAY_CT_NOISES),
    Dataset("xray", "chest radiograph (NEMA WG04), downsampled 4x to 488 x 460", "xray/chest_cr_RG1_UNCR.dcm",
            _xray, XRAY_CT_NOISES),
    Dataset("ultrasound", "B-mode ultrasound of the neck", "ultrasound/us_neck.png",
            lambda: _read("ultrasound/us_neck.png"), ("gamma L=4",)),
    # the two thin-slice real volumes, central 256 x 256 (inside the CT's reconstruction circle)
    Dataset("lidc", "chest CT, LIDC-IDRI-0002, 1.25 mm slices (central 256 x 256)",
            "ct/ct_chest_lidc0002_1p25mm_crop48.nii.gz",
            lambda: _central_crop(_read("ct/ct_chest_lidc0002_1p25mm_crop48.nii.gz"), 256), XRAY_CT_NOISES),
    Dataset("t1", "brain MRI, 3D T1 (studyforrest), 0.67 mm slices (central 256 x 256)",
            "mri/mr_brain_t1w_studyforrest_0p67mm_crop48.nii.gz",
            lambda: _central_crop(_read("mri/mr_brain_t1w_studyforrest_0p67mm_crop48.nii.gz"), 256), MR_NOISES),
)}
