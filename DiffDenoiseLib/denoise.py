"""The main job, as one call: denoise a 2D image or 3D volume, learning from the image itself.

This is the function the CLI, the Slicer logic and the batch script all call::

    from DiffDenoiseLib.denoise import denoise
    result = denoise(volume_array, method="bsn", preset="quick")
    clean = result.denoised            # float32, same shape as the input
    save_bundle("knee.safetensors", result.bundle)   # reuse on other scans with apply_bundle
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from .bundle import ModelBundle
from .devices import resolve_device
from .errors import InputError
from .inference import predict_slices
from .noise import MIN_ANALYSIS_SIZE, NoiseAnalysis, estimate_noise
from .options import METHODS, NOISE_CHOICES
from .pipelines.bsn import BsnSettings, bsn_settings, train_bsn
from .preprocessing import (
    HIGH_PERCENTILE,
    LOW_PERCENTILE,
    IntensityScaling,
    check_image,
    check_slice_size,
    from_slices,
    to_slices,
)
from .progress import CancelCheck, ProgressCallback


@dataclass
class DenoiseResult:
    """Output of :func:`denoise`: the denoised image, the trained bundle and what was measured."""

    denoised: np.ndarray
    bundle: ModelBundle
    noise: NoiseAnalysis
    timings: dict[str, float] = field(default_factory=dict)


def _noise_kind(image: np.ndarray, noise: str) -> tuple[NoiseAnalysis, Literal["iid", "correlated"]]:
    if noise not in NOISE_CHOICES:
        raise InputError(f"unknown noise type '{noise}': use one of {', '.join(NOISE_CHOICES)}")
    analysis = estimate_noise(image)
    return analysis, analysis.kind if noise == "auto" else noise  # type: ignore[return-value]


def denoise(image: np.ndarray, *, method: str = "bsn", noise: str = "auto",
            preset: str | BsnSettings = "quick", device: str = "auto", slice_axis: int = 0,
            seed: int = 0, steps: int | None = None, progress: ProgressCallback | None = None,
            cancel: CancelCheck | None = None) -> DenoiseResult:
    """Denoise ``image`` (2D, or 3D processed as 2D slices along ``slice_axis``) without clean data.

    Args:
        image: the noisy image; it is never modified.
        method: ``bsn`` (PUCA blind-spot network trained on the image itself).
        noise: ``auto`` (measured), ``iid`` (pixel-independent) or ``correlated`` (spatially correlated).
        preset: ``quick``, ``standard`` or ``full`` (see the README for their budgets), or explicit settings.
        device: ``auto`` (CUDA > MPS > CPU), ``cpu``, ``cuda`` or ``mps``.
        slice_axis: numpy axis of a 3D volume to slice along (use the coarsest one; see ``Geometry.slice_axis``).
        seed: random seed of training; the same seed and inputs give the same result on the same device.
        steps: training steps, overriding the preset's.
        progress: called with :class:`ProgressEvent` during training and inference.
        cancel: polled often; when it returns True the run stops with :class:`Cancelled`.

    Returns:
        :class:`DenoiseResult` with a float32 image of the input's shape, in the input's intensity units.
    """
    if method not in METHODS:
        raise InputError(f"unknown method '{method}': use one of {', '.join(METHODS)}")
    if image.ndim == 3 and slice_axis not in (0, 1, 2):
        raise InputError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    started = time.perf_counter()
    check_image(image)
    scaling = IntensityScaling.fit(image)
    slices = to_slices(scaling.normalise(image), slice_axis if image.ndim == 3 else 0)
    check_slice_size(slices, MIN_ANALYSIS_SIZE)
    analysis, noise_kind = _noise_kind(slices[:, 0], noise)
    settings = bsn_settings(preset, noise_kind)
    check_slice_size(slices, settings.network.min_size)
    overrides = {"seed": seed, "device": device} | ({"steps": steps} if steps is not None else {})
    settings = replace(settings, training=replace(settings.training, **overrides))
    resolve_device(device)  # fail early on an unavailable device, before any training
    timings = {"analysis_s": time.perf_counter() - started}

    network, summary = train_bsn(slices, settings, progress, cancel)
    timings["train_bsn_s"] = summary.seconds
    bundle = ModelBundle(
        method=method,
        networks={"bsn": network},
        inference_network="bsn",
        metadata={
            "normalization": {"mode": "robust_percentiles", "low_percentile": LOW_PERCENTILE,
                              "high_percentile": HIGH_PERCENTILE, "training_range": [scaling.low, scaling.high]},
            "noise": {"requested": noise, "used": noise_kind, **asdict(analysis)},
            "preset": preset if isinstance(preset, str) else "custom",
            "slice_axis": slice_axis,
            "training": {"bsn": {"config": asdict(settings.training), "summary": asdict(summary)}},
        },
    )
    inference_started = time.perf_counter()
    denoised = apply_bundle(bundle, image, device=device, slice_axis=slice_axis, progress=progress, cancel=cancel)
    timings["inference_s"] = time.perf_counter() - inference_started
    timings["total_s"] = time.perf_counter() - started
    return DenoiseResult(denoised, bundle, analysis, {k: round(v, 3) for k, v in timings.items()})


def apply_bundle(bundle: ModelBundle, image: np.ndarray, *, device: str = "auto", slice_axis: int | None = None,
                 batch_size: int | None = None, progress: ProgressCallback | None = None,
                 cancel: CancelCheck | None = None) -> np.ndarray:
    """Denoise ``image`` with a trained bundle: one forward pass of its inference network per slice.

    The image is normalised by its own robust intensity range (as in training), so bundles transfer between
    scans of one protocol whose intensity scale differs. ``slice_axis`` defaults to the bundle's.
    """
    network = bundle.networks[bundle.inference_network]
    check_image(image)
    axis = bundle.metadata.get("slice_axis", 0) if slice_axis is None else slice_axis
    axis = axis if image.ndim == 3 else 0
    torch_device = resolve_device(device)
    scaling = IntensityScaling.fit(image)
    slices = to_slices(scaling.normalise(image), axis)
    check_slice_size(slices, network.min_size)
    batch = batch_size or (8 if torch_device.type == "cuda" else 2)
    output = predict_slices(network, slices, torch_device, batch, progress=progress, cancel=cancel)
    return scaling.denormalise(from_slices(output, image.shape, axis))
