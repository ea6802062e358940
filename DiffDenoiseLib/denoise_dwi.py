"""DDM2 mode as one call: denoise a 4D diffusion-weighted series, learning from the series itself.

    from DiffDenoiseLib.io import read_dwi
    from DiffDenoiseLib.denoise_dwi import denoise_dwi
    dwi = read_dwi("dwi.nii.gz")                       # + dwi.bval / dwi.bvec
    result = denoise_dwi(dwi.volume.array, dwi.bvals, preset="quick")
    result.denoised                                    # (volumes, z, y, x) float32, every volume, b0s included
    print(result.summary())                            # matched steps, untouched slices, outliers

Stages I-III hand over in memory (:mod:`.pipelines.ddm2`); the trained networks and everything needed to
reuse them on another series of the protocol go into one bundle (:func:`apply_dwi_bundle`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .bundle import ModelBundle
from .bundle_record import INFERENCE_NETWORK, DDM2Record
from .diffusion import NoiseSchedule
from .errors import BundleError, InputError
from .options import DWIOptions
from .pipelines.ddm2 import (
    SHELL_TOLERANCE,
    DDM2Settings,
    StateMatch,
    VolumeScaling,
    choose_neighbours,
    gradient_directions,
    match_states,
    neighbour_volumes,
    sample_ddm2,
    shell_loss_weights,
    shell_of,
    slices_of,
    stage1_inputs,
    train_stage1,
    train_stage3,
)
from .preprocessing import check_slice_size, check_values
from .presets import ddm2_settings
from .runtime.devices import resolve_device
from .runtime.inference import predict_slices, slices_per_call
from .runtime.progress import CancelCheck, ProgressCallback
from .runtime.training import for_run, training_record

MIN_VOLUMES = 3
# A series with more than this fraction of its slices matched to step 0 has no noise the diffusion stage can
# model: sampling would start at the chain's end, the setting where DDM2's users report blank outputs.
LOW_NOISE_FRACTION = 0.5
VOLUME_SCALING = "each volume's minimum and 99.9th percentile to [-1, 1]"  # recorded in bundles


@dataclass
class DWIDenoiseResult:
    """Output of :func:`denoise_dwi` / :func:`apply_dwi_bundle`; per-slice arrays are (volumes, z).

    ``matched_steps``: each slice's Markov-chain step (0 = no measurable noise, slice returned unchanged, see
    ``untouched``); ``outliers``: slices the sampler hardly changed (check them); ``stage1``: the Stage I
    output in input units; ``notes``: what the run decided on its own (a series too clean for the diffusion
    stage returns its Stage I output).
    """

    denoised: np.ndarray
    stage1: np.ndarray
    matched_steps: np.ndarray
    untouched: np.ndarray
    outliers: np.ndarray
    timings: dict[str, float] = field(default_factory=dict)
    bundle: ModelBundle | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for logs: matched steps, slices left as they were, outlier slices."""
        steps = self.matched_steps
        lines = [*self.notes,
                 f"matched Markov-chain steps: median {int(np.median(steps))}, range {steps.min()}-{steps.max()}"]
        for name, mask, meaning in (("untouched", self.untouched, "matched step 0: no measurable noise, "
                                     "returned unchanged"),
                                    ("outliers", self.outliers, "little noise removed: inspect them")):
            if mask.any():
                where = ", ".join(f"v{v}/z{z}" for v, z in np.argwhere(mask)[:10])
                more = f" and {int(mask.sum()) - 10} more" if mask.sum() > 10 else ""
                lines.append(f"{int(mask.sum())} slice(s) {name} ({meaning}): {where}{more}")
        return "\n".join(lines)


def check_series(series: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray | None = None) -> None:
    """Refuse what DDM2 cannot denoise, with a message that says what to do."""
    if series.ndim != 4:
        raise InputError(f"DDM2 needs a 4D diffusion series (volumes, z, y, x); got a {series.ndim}D array of "
                         f"shape {series.shape}")
    check_values(series)
    if len(series) < MIN_VOLUMES:
        raise InputError(f"DDM2 needs at least {MIN_VOLUMES} volumes (each is predicted from others); this "
                         f"series has {len(series)}")
    bvals = np.asarray(bvals)
    if bvals.ndim != 1 or len(bvals) != len(series):
        raise InputError(f"{bvals.size} b-values for {len(series)} volumes: give one b-value per volume "
                         "(FSL .bval file)")
    check_bvalues(bvals)
    if bvecs is not None and np.shape(bvecs) != (len(series), 3):
        raise InputError(f"b-vectors of shape {np.shape(bvecs)} for {len(series)} volumes: give one (x, y, z) "
                         "direction per volume (FSL .bvec file)")


# Clinical b-values are 0-30000 s/mm^2; a largest b-value below this is almost surely in ms/um^2 (1.0 = 1000).
MIN_PLAUSIBLE_MAX_B = 10.0


def check_bvalues(bvals: np.ndarray) -> None:
    """Refuse NaN, infinite or negative b-values, and b-values that look like ms/um^2 instead of s/mm^2 (the
    b0 volumes and the weighted ones would fall into one shell)."""
    bvals = np.asarray(bvals, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(bvals) | (bvals < 0))
    if bad.size:
        raise InputError(f"b-values must be finite and >= 0; volume(s) {', '.join(map(str, bad[:10]))} have "
                         f"{', '.join(str(bvals[i]) for i in bad[:10])}: fix the .bval file")
    largest = float(bvals.max(initial=0.0))
    if 0 < largest < MIN_PLAUSIBLE_MAX_B:
        raise InputError(f"the largest b-value is {largest:g}: b-values look like ms/um^2, DDM2 expects s/mm^2; "
                         "multiply them by 1000 (e.g. 1.0 -> 1000)")


def low_noise_reason(steps: np.ndarray) -> str | None:
    """Why a series is too clean for the diffusion stage (more than :data:`LOW_NOISE_FRACTION` of its slices
    matched to step 0), or None."""
    untouched = float(np.mean(np.asarray(steps) == 0))
    if untouched > LOW_NOISE_FRACTION:
        return f"{untouched:.0%} of the series' slices show no measurable noise (Markov-chain step 0)"
    return None


def _with_overrides(settings: DDM2Settings, options: DWIOptions, checkpoint_dir: str | Path | None) -> DDM2Settings:
    """``settings`` with the run's options: seed, device and steps of both training stages (each checkpointed in
    ``checkpoint_dir``) and the Stage I and sampler choices where given."""
    choices = {k: v for k, v in (("neighbours", options.neighbours), ("sampler", options.sampler),
                                 ("sampler_steps", options.sampler_steps)) if v is not None}
    return replace(settings, stage1_training=for_run(settings.stage1_training, options, checkpoint_dir, "stage1"),
                   diffusion_training=for_run(settings.diffusion_training, options, checkpoint_dir, "stage3"),
                   **choices)


def denoise_dwi(series: np.ndarray, bvals: np.ndarray, options: DWIOptions | None = None, *,
                bvecs: np.ndarray | None = None, checkpoint_dir: str | Path | None = None,
                progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
                **option_values: Any) -> DWIDenoiseResult:
    """Denoise a 4D diffusion series ``(volumes, z, y, x)`` with DDM2, trained on the series itself.

    Args:
        series: the noisy series, every volume (b0s included); never modified.
        bvals: one b-value per volume. Each shell's volumes predict each other in Stage I (see
            :func:`.pipelines.ddm2.neighbour_volumes`; how many, unless the options or preset say:
            :func:`.pipelines.ddm2.choose_neighbours`); every slice is matched to its own noise level.
        bvecs: (volumes, 3) gradient directions, any frame: with them a weighted volume's Stage I neighbours are
            the volumes of its shell nearest in direction (without, nearest in acquisition order, which for a
            well-spread scheme averages unrelated directions and erases the anisotropy: docs/decisions.md).
        options: how it runs (:class:`.options.DWIOptions`: method, preset, device, seed, steps, neighbours,
            sampler, sampler_steps); any of its fields can instead be given as a keyword (``option_values``).
            ``preset`` may be explicit :class:`.pipelines.ddm2.DDM2Settings`.
        checkpoint_dir: a folder for the checkpoints of both training stages (``stage1.pt``, ``stage3.pt``);
            a killed run started again with it resumes there, as in :func:`.denoise.denoise`.
        progress, cancel: progress callback and cancel check, as in :func:`.denoise.denoise`.

    Raises:
        InputError: an option's value, or the series or its b-values, cannot be used.
        TypeError: a keyword that is not an option.
    """
    options = DWIOptions.of(options, option_values)
    method, preset, seed = options.method, options.preset, options.seed
    started = time.perf_counter()
    check_series(series, bvals, bvecs)
    settings = _with_overrides(ddm2_settings(preset), options, checkpoint_dir)
    if settings.neighbours is None:
        settings = replace(settings, neighbours=choose_neighbours(bvals, series.shape))
    torch_device = resolve_device(options.device)
    prepared = _prepare(series, bvals, settings.neighbours, bvecs)
    check_slice_size(prepared.slices, max(settings.stage1_config.min_size, settings.diffusion_config.min_size))
    networks, training, timings = {}, {}, {}
    stage1, summary = train_stage1(prepared.slices, prepared.inputs, prepared.weights, settings, progress, cancel)
    networks["stage1"], training["stage1"] = stage1, training_record(settings.stage1_training, summary)
    timings["train_stage1_s"] = summary.seconds
    stage1_output, match, timings["stage1_inference_and_matching_s"] = _stage1_and_match(
        stage1, prepared, settings.schedule, torch_device, progress, cancel)
    notes = []
    if method == "ddm2" and (reason := low_noise_reason(match.steps)):
        notes.append(f"{reason}: DDM2's diffusion stage has nothing to remove, so the result is its Stage I "
                     "output (trained on the series) and the bundle a Stage I bundle")
        warnings.warn(notes[-1], stacklevel=2)
        method = "stage1"
    if method == "ddm2":
        diffusion, summary = train_stage3(prepared.slices, match, prepared.inputs, prepared.weights, settings,
                                          progress, cancel)
        networks["diffusion"], training["diffusion"] = diffusion, training_record(settings.diffusion_training, summary)
        timings["train_stage3_s"] = summary.seconds
    record = DDM2Record(preset if isinstance(preset, str) else "custom", settings.neighbours, settings.schedule,
                        settings.sampler, settings.sampler_steps, seed, SHELL_TOLERANCE, VOLUME_SCALING,
                        shells=tuple(sorted(set(shell_of(bvals).tolist()))), training=training,
                        neighbour_order="acquisition" if gradient_directions(bvecs) is None else "direction")
    bundle = ModelBundle(method, networks, INFERENCE_NETWORK[method], record.to_json())
    result = _finish(bundle, record, prepared, stage1_output, match, torch_device, progress, cancel)
    result.notes = notes
    result.timings = {**{k: round(v, 3) for k, v in timings.items()}, **result.timings,
                      "total_s": round(time.perf_counter() - started, 3)}
    return result


def apply_dwi_bundle(bundle: ModelBundle, series: np.ndarray, bvals: np.ndarray, *,
                     bvecs: np.ndarray | None = None, device: str = "auto",
                     sampler: str | None = None, sampler_steps: int | None = None,
                     progress: ProgressCallback | None = None, cancel: CancelCheck | None = None) -> DWIDenoiseResult:
    """Denoise a series of the same protocol with a trained DDM2 (or Stage I) bundle, without training.

    Every slice is matched to its own noise level again, so series noisier or cleaner than the training one
    start from their own steps. ``sampler`` / ``sampler_steps`` override the bundle's. ``bvecs`` are needed
    when the bundle chose Stage I neighbours by gradient direction (as :func:`denoise_dwi` does when given them).
    """
    DWIOptions(device=device, sampler=sampler, sampler_steps=sampler_steps)  # checks them as for training
    record = bundle.record
    if not isinstance(record, DDM2Record):
        raise BundleError(f"this is a '{bundle.method}' bundle for scalar images, not a DDM2 bundle: apply it "
                          "with `diffdenoise apply` (per 3D volume)")
    started = time.perf_counter()
    check_series(series, bvals, bvecs)
    if record.neighbour_order == "direction" and gradient_directions(bvecs) is None:
        raise InputError("this DDM2 bundle picks each volume's Stage I neighbours by gradient direction: give the "
                         "series' b-vectors (bvecs=..., or the .bvec file)")
    record = record.with_sampler(sampler, sampler_steps)
    bundle = bundle.with_record(record)  # the result's bundle says how this series was sampled
    torch_device = resolve_device(device)
    prepared = _prepare(series, bvals, record.neighbours, bvecs if record.neighbour_order == "direction" else None)
    check_slice_size(prepared.slices, max(net.min_size for net in bundle.networks.values()))
    stage1_output, match, matching_s = _stage1_and_match(bundle.networks["stage1"], prepared,
                                                         record.schedule, torch_device, progress, cancel)
    result = _finish(bundle, record, prepared, stage1_output, match, torch_device, progress, cancel)
    result.timings = {"stage1_inference_and_matching_s": round(matching_s, 3), **result.timings,
                      "total_s": round(time.perf_counter() - started, 3)}
    return result


@dataclass
class _PreparedSeries:
    """A series in model units: its per-shell scaling, (V * Z, 1, H, W) slices, their Stage I inputs and their
    training loss weights."""

    series: np.ndarray
    scaling: VolumeScaling
    slices: np.ndarray
    inputs: np.ndarray
    weights: np.ndarray


def _prepare(series: np.ndarray, bvals: np.ndarray, neighbours: int, bvecs: np.ndarray | None) -> _PreparedSeries:
    scaling = VolumeScaling.fit(series, bvals)
    scaled = scaling.forward(series)
    chosen = neighbour_volumes(bvals, neighbours, bvecs)
    return _PreparedSeries(series, scaling, slices_of(scaled), stage1_inputs(scaled, chosen),
                           shell_loss_weights(scaled, bvals, chosen))


def _stage1_and_match(stage1: torch.nn.Module, prepared: _PreparedSeries, schedule: NoiseSchedule,
                      device: torch.device, progress: ProgressCallback | None,
                      cancel: CancelCheck | None) -> tuple[np.ndarray, StateMatch, float]:
    """Stage I output of every slice, its Stage II match, and the seconds both took."""
    clock = time.perf_counter()
    stage1_output = predict_slices(stage1, prepared.inputs, device, slices_per_call(device), progress=progress,
                                   cancel=cancel, stage="stage I inference")
    return stage1_output, match_states(prepared.slices, stage1_output, schedule), time.perf_counter() - clock


def _finish(bundle: ModelBundle, record: DDM2Record, prepared: _PreparedSeries, stage1_output: np.ndarray,
            match: StateMatch, device: torch.device, progress: ProgressCallback | None,
            cancel: CancelCheck | None) -> DWIDenoiseResult:
    """Sample every slice from its matched step with the bundle's diffusion network as its ``record`` says (a
    Stage I bundle returns the Stage I output), back in the input's units."""
    series = prepared.series
    grid = series.shape[:2]
    stage1 = prepared.scaling.inverse(stage1_output.reshape(series.shape))
    steps = match.steps.reshape(grid)
    if bundle.method == "stage1":
        no = np.zeros(grid, dtype=bool)
        return DWIDenoiseResult(stage1, stage1, steps, no, no, {}, bundle)
    clock = time.perf_counter()
    sampled = sample_ddm2(bundle.networks["diffusion"], prepared.slices, prepared.inputs, match.steps,
                          record.schedule, record.sampler, record.sampler_steps, device, record.seed,
                          slices_per_call(device), progress, cancel)
    timings = {"sampling_s": round(time.perf_counter() - clock, 3)}
    denoised = prepared.scaling.inverse(sampled.denoised.reshape(series.shape))
    untouched = sampled.untouched.reshape(grid)
    denoised[untouched] = series[untouched]  # exactly the input, not its float32 round trip
    return DWIDenoiseResult(denoised, stage1, steps, untouched, sampled.outliers.reshape(grid), timings, bundle)
