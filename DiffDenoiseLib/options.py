"""Choices every front end offers (library, CLI, Slicer panel); cheap to import (no torch)."""

METHODS = ("diffdenoise", "diffusion", "bsn")  # full pipeline (default), SRDS output without distillation, BSN
NOISE_CHOICES = ("auto", "iid", "correlated")
PRESETS = ("quick", "standard", "full")  # the keys of presets.PRESETS
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# input - output; SRDS pair disagreement; the BSN output (the diffusion condition); the SRDS output
EXTRA_OUTPUTS = ("residual", "uncertainty", "bsn", "srds")
