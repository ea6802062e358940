"""Data shipped with the package (see README.md in this folder for sources and licenses)."""

from pathlib import Path

SAMPLE_KNEE = Path(__file__).with_name("knee_t2_crop.nii.gz")
