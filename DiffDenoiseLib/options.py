"""Choices every front end offers (library, CLI, Slicer panel); cheap to import (no torch)."""

METHODS = ("diffdenoise", "diffusion", "bsn")  # full pipeline (default), SRDS output without distillation, BSN
# auto: measured; iid / correlated: the blind-spot network (family measured); gaussian, poisson, gamma (speckle):
# i.i.d. noise of that family (its exact recorruption split); rician: i.i.d., split as Gaussian, its bias
# taken out of the output
NOISE_CHOICES = ("auto", "iid", "correlated", "gaussian", "poisson", "gamma", "rician")
PRESETS = ("quick", "standard", "full")  # the keys of presets.PRESETS
DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")
# input - output; SRDS pair disagreement; the BSN output (the diffusion condition); the SRDS output
EXTRA_OUTPUTS = ("residual", "uncertainty", "bsn", "srds")
# neighbouring slices per side every network reads (auto: chosen from the volume; 0: each slice alone)
CONTEXT_CHOICES = ("auto", "0", "1", "2", "3", "4")  # up to context.MAX_HALF_WIDTH
