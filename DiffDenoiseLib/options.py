"""Choices every front end offers (library, CLI, Slicer panel); cheap to import (no torch)."""

METHODS = ("bsn",)
NOISE_CHOICES = ("auto", "iid", "correlated")
PRESETS = ("quick", "standard", "full")  # the keys of pipelines.bsn.BSN_PRESETS
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
