"""The main job, as one call: denoise a 2D image or 3D volume, learning from the image itself.

This is the function the CLI (and the batch script, which runs it) and the Slicer logic call::

    from DiffDenoiseLib.denoise import denoise
    result = denoise(volume_array, preset="quick")     # full DiffDenoise: BSN -> diffusion -> SRDS -> NAFNet
    clean = result.denoised                            # float32, same shape as the input
    save_bundle("knee.safetensors", result.bundle)     # reuse on other scans with apply_bundle
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .bundle import ModelBundle
from .bundle_record import INFERENCE_NETWORK, DDM2Record, NoiseRecord, ScalarRecord
from .context import MIN_CONTEXT_SLICES, SliceContext, choose_context
from .errors import BundleError, InputError
from .noise.analysis import MIN_ANALYSIS_SIZE, NoiseAnalysis, estimate_noise, residual_outliers
from .noise.model import NoiseModel
from .options import DenoiseOptions
from .pipelines.methods import METHODS, Run
from .preprocessing import (
    HIGH_PERCENTILE,
    LOW_PERCENTILE,
    IntensityScaling,
    check_image,
    check_slice_size,
    from_slices,
    to_slices,
)
from .presets import PipelineSettings, pipeline_settings
from .runtime.devices import resolve_device
from .runtime.progress import CancelCheck, ProgressCallback
from .runtime.training import for_run
from .wiener import blend


@dataclass
class Denoised:
    """A denoised image and the optional extra outputs, in the input's shape and units: float32, or float64
    for a denoised image whose intensities exceed float32's precision (uint32 near 3e9: see
    :attr:`.preprocessing.IntensityScaling.precise`).

    ``outliers`` flags, per slice along the slice axis, where the removed part was far from the noise level
    compared with the other slices (:func:`.noise.analysis.residual_outliers`): slices to inspect.
    """

    denoised: np.ndarray
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # "residual", "uncertainty" when asked for
    timings: dict[str, float] = field(default_factory=dict)
    outliers: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def summary(self) -> str:
        """One line for logs and the run summary: the outlier slices, if any."""
        if not self.outliers.any():
            return f"outlier slices: none of {len(self.outliers)}"
        flagged = np.flatnonzero(self.outliers)
        listed = ", ".join(map(str, flagged[:20])) + (f" and {len(flagged) - 20} more" if len(flagged) > 20 else "")
        return (f"outlier slices ({len(flagged)} of {len(self.outliers)}; removed much more or less than their noise "
                f"compared with the other slices, inspect them): {listed}")


@dataclass
class DenoiseResult(Denoised):
    """Output of :func:`denoise`: also the trained bundle and the noise analysis."""

    bundle: ModelBundle | None = None
    noise: NoiseAnalysis | None = None


def _noise_kind(image: np.ndarray, noise: str) -> tuple[NoiseAnalysis, Literal["iid", "correlated"]]:
    analysis = estimate_noise(image)
    if noise in ("auto", "correlated"):
        return analysis, analysis.kind if noise == "auto" else noise  # type: ignore[return-value]
    return analysis, "iid"  # a named family is pixel-independent noise


def _with_overrides(settings: PipelineSettings, options: DenoiseOptions,
                    checkpoint_dir: str | Path | None) -> PipelineSettings:
    """``settings`` with the run's options: seed, device and steps of every training stage (each checkpointed in
    ``checkpoint_dir``), the sampling choices and the Wiener patch depth where given."""
    sampling = {k: v for k, v in (("pairs", options.srds_pairs), ("steps", options.ddim_steps),
                                  ("distill_slices", options.distill_slices)) if v is not None}
    bsn = {"wiener_depth": options.wiener_depth} if options.wiener_depth is not None else {}

    def stage(section: object, name: str) -> object:
        return replace(section, training=for_run(section.training, options, checkpoint_dir, name))

    return replace(settings, bsn=replace(stage(settings.bsn, "bsn"), **bsn),
                   diffusion=stage(settings.diffusion, "diffusion"), sampling=replace(settings.sampling, **sampling),
                   distillation=stage(settings.distillation, "nafnet"))


def denoise(image: np.ndarray, options: DenoiseOptions | None = None, *, slice_axis: int = 0,
            spacing: tuple[float, ...] | None = None, checkpoint_dir: str | Path | None = None,
            progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
            **option_values: Any) -> DenoiseResult:
    """Denoise ``image`` (2D, or 3D processed as 2D slices along ``slice_axis``, each seen with its
    neighbouring slices) without clean data.

    Args:
        image: the noisy image; it is never modified.
        options: how it runs (:class:`.options.DenoiseOptions`: method, noise, preset, device, seed, steps,
            srds_pairs, ddim_steps, distill_slices, context, outputs); any of its fields can instead be given
            as a keyword (``option_values``), replacing the value in ``options``. ``preset`` may be explicit
            :class:`.presets.PipelineSettings`.
        slice_axis: numpy axis of a 3D volume to slice along (use the coarsest one; see ``Geometry.slice_axis``).
        spacing: voxel spacing in numpy axis order (mm), for the slice spacing relative to the in-plane one.
        checkpoint_dir: a folder for one checkpoint per training stage (``bsn.pt``, ``diffusion.pt``,
            ``nafnet.pt``), written every 10% of a stage and on cancel. Run again with the same folder, image
            and settings, a killed or cancelled run resumes from there (finished stages are not retrained) and
            ends with the same result as an uninterrupted run; checkpoints of other data or settings are refused.
        progress: called with :class:`ProgressEvent` during every stage.
        cancel: polled often; when it returns True the run stops with :class:`Cancelled`.

    Returns:
        :class:`DenoiseResult` with float32 images of the input's shape, in the input's intensity units.

    Raises:
        InputError: an option's value, or the image, cannot be used (the message says how to fix it).
        TypeError: a keyword that is not an option.
    """
    options = DenoiseOptions.of(options, option_values)
    if image.ndim == 3 and slice_axis not in (0, 1, 2):
        raise InputError(f"slice_axis must be 0, 1 or 2, got {slice_axis}")
    started = time.perf_counter()
    check_image(image)
    scaling = IntensityScaling.fit(image)
    axis = slice_axis if image.ndim == 3 else 0
    slices = to_slices(scaling.normalise(image), axis)
    check_slice_size(slices, MIN_ANALYSIS_SIZE)
    analysis, noise_kind = _noise_kind(slices[:, 0], options.noise)
    slice_context = choose_context(options.context, len(slices) if image.ndim == 3 else 1, analysis.slice_correlation,
                                   _spacing_ratio(spacing, axis) if image.ndim == 3 else None)
    settings = _with_overrides(pipeline_settings(options.preset, noise_kind).with_context(slice_context), options,
                               checkpoint_dir)
    device = resolve_device(options.device)  # fail early on an unavailable device, before any training
    check_slice_size(slices, max(settings.bsn.network.min_size, settings.diffusion.network_config.min_size))
    run = Run(slices, scaling, device, slice_context.half_width, noise_kind, options.noise, options.seed, progress,
              cancel)
    run.timings["analysis_s"] = time.perf_counter() - started
    METHODS[options.method].train(run, settings, tuple(options.outputs))
    output = _unbiased(run.noise_model, run.output, run.stages.get("bsn"))
    denoised = scaling.denormalise(from_slices(output, image.shape, axis))
    extras = _extras(image, denoised, tuple(options.outputs), run.stages, scaling, axis, run.noise_model)
    record = _training_record(run, options, analysis, slice_axis, slice_context)
    bundle = ModelBundle(options.method, run.networks, INFERENCE_NETWORK[options.method], record.to_json())
    run.timings["total_s"] = time.perf_counter() - started
    return DenoiseResult(denoised, extras, {k: round(v, 3) for k, v in run.timings.items()},
                         residual_outliers(slices[:, 0], run.output[:, 0]), bundle, analysis)


def _training_record(run: Run, options: DenoiseOptions, analysis: NoiseAnalysis, slice_axis: int,
                     slice_context: SliceContext) -> ScalarRecord:
    """What the bundle of a trained run records: how images are normalised and sliced, the noise, and what each
    stage recorded in ``run``."""
    return ScalarRecord(
        preset=options.preset if isinstance(options.preset, str) else "custom",
        normalization={"mode": "robust_percentiles", "low_percentile": LOW_PERCENTILE,
                       "high_percentile": HIGH_PERCENTILE, "training_range": [run.scaling.low, run.scaling.high]},
        noise=NoiseRecord(options.noise, run.noise_kind, asdict(analysis),
                          run.noise_model.describe() if run.noise_model else None),
        slice_axis=slice_axis, context=slice_context, training=run.training, bsn=run.bsn, diffusion=run.diffusion,
        from_bsn=run.from_bsn, output_blend_weight=run.output_blend_weight)


def _unbiased(noise_model: NoiseModel | None, estimate: np.ndarray, bsn: np.ndarray | None) -> np.ndarray:
    """A stage's output with the noise's bias taken out (Rician noise; see :meth:`NoiseModel.unbiased`), out
    of the ``bsn`` estimate where the run has one, the stage's departure from it kept as it is.
    The networks learn the noisy image's mean, and the later stages are trained on the earlier ones' biased
    outputs, so only what is handed to the user is corrected."""
    return estimate if noise_model is None else noise_model.unbiased(estimate, bsn)


def _spacing_ratio(spacing: tuple[float, ...] | None, axis: int) -> float | None:
    """Slice spacing over the mean in-plane spacing of a volume (None when the spacing is unknown)."""
    if spacing is None:
        return None
    in_plane = [value for index, value in enumerate(spacing) if index != axis]
    return float(spacing[axis]) / float(np.mean(in_plane))


def _extras(image: np.ndarray, denoised: np.ndarray, outputs: tuple[str, ...], stages: dict[str, np.ndarray | None],
            scaling: IntensityScaling, axis: int, noise_model: NoiseModel | None) -> dict[str, np.ndarray]:
    """The requested extra outputs in the input's units, the stage outputs with the noise's bias taken out;
    ``stages`` holds normalised (N, 1, H, W) slices."""
    extras = {}
    for name in outputs:
        if name == "residual":
            extras[name] = np.subtract(image, denoised, dtype=np.float64).astype(np.float32)
            continue
        if stages.get(name) is None:
            raise InputError(f"this run has no '{name}' output (a distilled bundle runs only its BSN and NAFNet)")
        if name == "uncertainty":
            extras[name] = (from_slices(stages[name], image.shape, axis) * (scaling.high - scaling.low)
                            ).astype(np.float32)
        else:
            extras[name] = scaling.denormalise(from_slices(_unbiased(noise_model, stages[name], stages.get("bsn")),
                                                          image.shape, axis))
    return extras


def apply_bundle(bundle: ModelBundle, image: np.ndarray, *, device: str = "auto", slice_axis: int | None = None,
                 outputs: tuple[str, ...] = (), progress: ProgressCallback | None = None,
                 cancel: CancelCheck | None = None) -> Denoised:
    """Denoise ``image`` with a trained bundle.

    A ``diffdenoise`` bundle runs its BSN and distilled NAFNet (one forward pass each per slice; only the
    NAFNet for bundles distilled without the BSN output), a ``bsn`` bundle its BSN; a ``diffusion`` bundle runs
    the BSN and then SRDS with the sampling settings it was trained with.
    The image is normalised by its own robust intensity range (as in training), so bundles transfer between
    scans of one protocol whose intensity scale differs. ``slice_axis`` defaults to the bundle's.
    """
    record = bundle.record
    if isinstance(record, DDM2Record):
        raise BundleError("this is a DDM2 bundle for 4D diffusion MRI: apply it with `diffdenoise ddm2 --model` "
                          "(apply_dwi_bundle)")
    DenoiseOptions(method=bundle.method, device=device, outputs=tuple(outputs))  # checks them as for training
    started = time.perf_counter()
    check_image(image)
    axis = record.slice_axis if slice_axis is None else slice_axis
    axis = axis if image.ndim == 3 else 0
    torch_device = resolve_device(device)
    scaling = IntensityScaling.fit(image)
    slices = to_slices(scaling.normalise(image), axis)
    method = METHODS[bundle.method]
    check_slice_size(slices, max(bundle.networks[name].min_size for name in method.networks_read(record)
                                 if name in bundle.networks))
    half_width = record.context.half_width
    if half_width and len(slices) <= max(half_width, MIN_CONTEXT_SLICES - 1):
        raise InputError(f"this bundle was trained on volumes and reads {half_width} neighbouring slice(s) on "
                         f"each side; this image has {len(slices)} slice(s) along the slice axis: denoise it "
                         "with `diffdenoise denoise` (trained on the image itself) instead")
    run = Run(slices, scaling, torch_device, half_width, record.noise.used, record.noise.requested,
              progress=progress, cancel=cancel)
    method.apply(run, bundle, record)
    if record.output_blend_weight is not None:  # bundles before the blend: none
        run.output = blend(run.output, run.stages["bsn"], record.output_blend_weight)
    output = _unbiased(run.noise_model, run.output, run.stages.get("bsn"))
    denoised = scaling.denormalise(from_slices(output, image.shape, axis))
    extras = _extras(image, denoised, tuple(outputs), run.stages, scaling, axis, run.noise_model)
    return Denoised(denoised, extras, {"total_s": round(time.perf_counter() - started, 3)},
                    residual_outliers(slices[:, 0], run.output[:, 0]))
