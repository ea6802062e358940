"""The main job, as one call: denoise a 2D image or 3D volume, learning from the image itself.

This is the function the CLI, the Slicer logic and the batch script all call::

    from DiffDenoiseLib.denoise import denoise
    result = denoise(volume_array, preset="quick")     # full DiffDenoise: BSN -> diffusion -> SRDS -> NAFNet
    clean = result.denoised                            # float32, same shape as the input
    save_bundle("knee.safetensors", result.bundle)     # reuse on other scans with apply_bundle
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from .bundle import INFERENCE_NETWORK, ModelBundle
from .context import MIN_CONTEXT_SLICES, choose_context
from .devices import resolve_device
from .diffusion import NoiseSchedule
from .errors import BundleError, InputError
from .inference import predict_slices, slices_per_call
from .noise import MIN_ANALYSIS_SIZE, NoiseAnalysis, estimate_noise, residual_outliers
from .noise_model import FAMILIES, NoiseModel, exact_floor, fit_noise_model, with_family
from .noise_normalisation import NoiseNormaliser
from .options import DenoiseOptions
from .pipelines.bsn import train_bsn
from .pipelines.diffdenoise import (
    BUNDLE_DEFAULT_PREDICTION,
    GENERATES,
    SamplingSettings,
    diffusion_condition,
    distillation_indices,
    distillation_inputs,
    recorrupt,
    sample_srds,
    to_diffusion_data,
    train_diffusion,
    train_distillation,
)
from .posterior import combine_with_noisy
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
from .progress import CancelCheck, ProgressCallback
from .training import TrainConfig, checkpointed, training_record
from .wiener import blend, blend_weight, blend_with_filtering, wiener_filter


@dataclass
class Denoised:
    """A denoised image and the optional extra outputs, in the input's shape and units: float32, or float64
    for a denoised image whose intensities exceed float32's precision (uint32 near 3e9: see
    :attr:`.preprocessing.IntensityScaling.precise`).

    ``outliers`` flags, per slice along the slice axis, where the removed part was far from the noise level
    compared with the other slices (:func:`.noise.residual_outliers`): slices to inspect.
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


def _family_request(noise: str) -> str:
    """The noise family a ``noise`` choice asks for, or ``auto`` (measured)."""
    return noise if noise in FAMILIES else "auto"


def _with_overrides(settings: PipelineSettings, options: DenoiseOptions,
                    checkpoint_dir: str | Path | None) -> PipelineSettings:
    training = {"seed": options.seed, "device": options.device} | (
        {"steps": options.steps} if options.steps is not None else {})
    sampling = {k: v for k, v in (("pairs", options.srds_pairs), ("steps", options.ddim_steps),
                                  ("distill_slices", options.distill_slices)) if v is not None}
    bsn = {"wiener_depth": options.wiener_depth} if options.wiener_depth is not None else {}

    def stage_training(config: TrainConfig, stage: str) -> TrainConfig:
        return checkpointed(replace(config, **training), checkpoint_dir, stage)

    return replace(
        settings,
        bsn=replace(settings.bsn, training=stage_training(settings.bsn.training, "bsn"), **bsn),
        diffusion=replace(settings.diffusion, training=stage_training(settings.diffusion.training, "diffusion")),
        sampling=replace(settings.sampling, **sampling),
        distillation=replace(settings.distillation, training=stage_training(settings.distillation.training, "nafnet")),
    )


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
    method, preset, seed, outputs = options.method, options.preset, options.seed, options.outputs
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
    half_width = slice_context.half_width
    settings = _with_overrides(pipeline_settings(preset, noise_kind).with_context(slice_context), options,
                               checkpoint_dir)
    torch_device = resolve_device(options.device)  # fail early on an unavailable device, before any training
    check_slice_size(slices, max(settings.bsn.network.min_size, settings.diffusion.network_config.min_size))
    timings = {"analysis_s": time.perf_counter() - started}
    training: dict[str, dict] = {}
    networks: dict[str, torch.nn.Module] = {}

    def stage_done(name: str, network: torch.nn.Module, config: object, summary: object) -> None:
        networks[name] = network
        training[name] = training_record(config, summary)
        timings[f"train_{name}_s"] = summary.seconds

    predictions = targets = uncertainty = noise_model = estimates = output_weight = None
    conditioning = settings.diffusion.conditioning
    if method == "bsn" or conditioning != "identity":
        bsn, summary = train_bsn(slices, settings.bsn, progress, cancel)
        stage_done("bsn", bsn, settings.bsn.training, summary)
        clock = time.perf_counter()

        def run_bsn(images: np.ndarray) -> np.ndarray:
            return predict_slices(bsn, images, torch_device, slices_per_call(torch_device), progress=progress,
                                  cancel=cancel, stage="bsn inference", context=half_width)

        estimates = bsn_estimates(run_bsn, slices, settings, noise_kind, options.noise, scaling, seed,
                                  recorrupted=method != "bsn" and conditioning == "recorrupted")
        predictions, noise_model = estimates.output, estimates.noise_model
        timings["bsn_inference_s"] = time.perf_counter() - clock
    output = predictions if predictions is not None else slices
    if method != "bsn":
        normaliser = None if noise_model is None else NoiseNormaliser.from_noise_model(noise_model)
        condition = diffusion_condition(conditioning, slices, predictions, normaliser, half_width)
        diffusion_targets, diffusion_training_condition, training_signal = slices, condition, predictions
        if conditioning == "recorrupted":
            diffusion_targets, training_signal = estimates.twin, estimates.recorrupted_output
            diffusion_training_condition = diffusion_condition(conditioning, estimates.recorrupted, training_signal,
                                                               normaliser, half_width)
        diffusion_targets = to_diffusion_data(diffusion_targets, training_signal, normaliser)
        diffusion, summary = train_diffusion(diffusion_targets, diffusion_training_condition, settings.diffusion,
                                             progress, cancel)
        stage_done("diffusion", diffusion, settings.diffusion.training, summary)
        every_slice = method == "diffusion" or bool({"uncertainty", "srds"} & set(outputs))
        sampled = distillation_indices(len(slices), None if every_slice else settings.sampling.distill_slices)
        clock = time.perf_counter()
        targets, uncertainty = sample_srds(diffusion, condition[sampled], settings.diffusion.schedule,
                                           settings.sampling, torch_device, seed, progress, cancel, normaliser,
                                           None if predictions is None else predictions[sampled],
                                           settings.diffusion.prediction)
        timings["srds_s"] = time.perf_counter() - clock
        output = targets
        if method == "diffusion":

            def final_stage(noisy: np.ndarray, signal: np.ndarray) -> np.ndarray:  # SRDS of the output blend's copy
                return sample_srds(diffusion, diffusion_condition(conditioning, noisy, signal, normaliser, half_width),
                                   settings.diffusion.schedule, settings.sampling, torch_device, seed, progress,
                                   cancel, normaliser, signal, settings.diffusion.prediction)[0]

        else:
            # without a BSN (the identity-conditioning ablation) the NAFNet corrects the noisy slice
            distillation = settings.distillation if predictions is not None else replace(settings.distillation,
                                                                                         from_bsn=False)
            nafnet, summary = train_distillation(distillation_inputs(slices, predictions, distillation, sampled),
                                                 targets, distillation, progress, cancel)
            stage_done("nafnet", nafnet, distillation.training, summary)
            clock = time.perf_counter()

            def run_nafnet(noisy: np.ndarray, signal: np.ndarray | None) -> np.ndarray:
                return predict_slices(nafnet, noisy, torch_device, slices_per_call(torch_device), progress=progress,
                                      cancel=cancel, context=half_width,
                                      leading=signal if distillation.from_bsn else None)

            output, final_stage = run_nafnet(slices, predictions), run_nafnet
            timings["nafnet_inference_s"] = time.perf_counter() - clock
        if settings.blend_with_bsn and estimates is not None and estimates.recorrupted is not None:
            clock = time.perf_counter()
            output_weight = output_blend_weight(final_stage, estimates)
            output = blend(output, predictions, output_weight)
            timings["output_blend_s"] = time.perf_counter() - clock

    denoised = scaling.denormalise(from_slices(_unbiased(noise_model, output), image.shape, axis))
    stages = {"bsn": predictions, "srds": targets, "uncertainty": uncertainty}
    extras = _extras(image, denoised, tuple(outputs), stages, scaling, axis, noise_model)
    bundle = ModelBundle(method=method, networks=networks, inference_network=INFERENCE_NETWORK[method], metadata={
        "normalization": {"mode": "robust_percentiles", "low_percentile": LOW_PERCENTILE,
                          "high_percentile": HIGH_PERCENTILE, "training_range": [scaling.low, scaling.high]},
        "noise": {"requested": options.noise, "used": noise_kind, **asdict(analysis),
                  **({"model": noise_model.describe()} if noise_model else {})},
        **({"bsn": {"posterior": settings.bsn.posterior, "wiener_weight": estimates.wiener_weight,
                    "wiener_depth": estimates.wiener_depth}}
           if estimates is not None else {}),
        "preset": preset if isinstance(preset, str) else "custom",
        "slice_axis": slice_axis,
        "context": asdict(slice_context),
        **({"distillation": {"from_bsn": distillation.from_bsn}} if method == "diffdenoise" else {}),
        **({"output_blend": {"weight": output_weight}} if output_weight is not None else {}),
        "training": training,
        **({} if method == "bsn" else {
            "diffusion": {"schedule": asdict(settings.diffusion.schedule), "prediction": settings.diffusion.prediction,
                          "conditioning": settings.diffusion.conditioning, "generates": GENERATES,
                          "noise_normalisation": normaliser.describe() if normaliser else None},
            "sampling": asdict(settings.sampling) | {"seed": seed}}),
    })
    timings["total_s"] = time.perf_counter() - started
    return DenoiseResult(denoised, extras, {k: round(v, 3) for k, v in timings.items()},
                         residual_outliers(slices[:, 0], output[:, 0]), bundle, analysis)


@dataclass
class BsnEstimates:
    """What the BSN stage hands on: its estimate of the slices (combined with the noisy pixel and blended with
    its Wiener filtering, as the settings ask), the fitted noise model, and with a recorrupted copy (the
    diffusion stage's training pairs) that copy, its independent twin and the same estimate of the copy."""

    output: np.ndarray
    noise_model: NoiseModel
    wiener_weight: float | None = None  # the estimate's share in its blend with the Wiener filtering
    wiener_depth: int = 1  # slices the Wiener patches span
    recorrupted: np.ndarray | None = None
    twin: np.ndarray | None = None
    recorrupted_output: np.ndarray | None = None


def bsn_estimates(run_bsn: Callable[[np.ndarray], np.ndarray], slices: np.ndarray, settings: PipelineSettings,
                  noise_kind: str, noise: str, scaling: IntensityScaling, seed: int,
                  recorrupted: bool) -> BsnEstimates:
    """The BSN stage's estimates of (N, 1, H, W) normalised slices, ``run_bsn`` being the trained network's
    inference. A recorrupted copy is made when ``recorrupted`` asks for it or the Wiener blend needs it to fit
    its weight (:mod:`.wiener`); the copy carries 1 + alpha^2 times the noise variance."""
    raw = run_bsn(slices)
    noise_model = _fitted_noise(slices, raw, noise_kind, noise, scaling)
    posterior, use_wiener = settings.bsn.posterior, settings.bsn.wiener
    output = combine_with_noisy(slices, raw, noise_model) if posterior else raw
    if not (recorrupted or use_wiener):
        return BsnEstimates(output, noise_model)
    alpha = settings.diffusion.recorruption_alpha
    copy, twin = recorrupt(slices, noise_model, output, alpha, seed)
    factor = 1 + alpha**2
    copy_output = run_bsn(copy)
    copy_output = combine_with_noisy(copy, copy_output, noise_model, factor) if posterior else copy_output
    weight, depth = None, settings.bsn.wiener_patch_depth(len(slices))
    if use_wiener:
        copy_filtered = wiener_filter(copy, copy_output, noise_model, factor, depth=depth)
        weight = blend_weight(copy_output, copy_filtered, twin)
        output = blend_with_filtering(slices, output, noise_model, weight, depth)
        copy_output = blend(copy_output, copy_filtered, weight)
    return BsnEstimates(output, noise_model, weight, depth, copy, twin, copy_output)


def output_blend_weight(run_stage: Callable[[np.ndarray, np.ndarray], np.ndarray], estimates: BsnEstimates) -> float:
    """The share of a later stage in its blend with the BSN estimate, ``w * stage + (1 - w) * estimate``: fitted
    as the Wiener blend's weight is, on the recorrupted copy against its twin, with ``run_stage`` mapping
    noisy slices and their BSN estimate to that stage's output. The later stages see the noisy slice beside
    the estimate, so their errors differ from the estimate's, and a mix beats both where neither is better
    everywhere. The whole copy runs (not a subset of slices): the networks read each slice's neighbours."""
    signal = estimates.recorrupted_output
    return blend_weight(run_stage(estimates.recorrupted, signal), signal, estimates.twin)


def _fitted_noise(slices: np.ndarray, bsn_output: np.ndarray, noise_kind: str, noise: str,
                  scaling: IntensityScaling) -> NoiseModel:
    """The noise model of normalised (N, 1, H, W) slices, fitted with the (blind) BSN output as the signal
    estimate; ``noise`` is the requested noise (it may name the family)."""
    fitted = fit_noise_model(slices[:, 0], bsn_output[:, 0], noise_kind == "correlated")
    return with_family(fitted, _family_request(noise), scaling.normalise(np.zeros(1))[0], exact_floor(slices))


def _unbiased(noise_model: NoiseModel | None, estimate: np.ndarray) -> np.ndarray:
    """A stage's output with the noise's bias taken out (Rician noise; see :meth:`NoiseModel.unbiased`).
    The networks learn the noisy image's mean, and the later stages are trained on the earlier ones' biased
    outputs, so only what is handed to the user is corrected."""
    return estimate if noise_model is None else noise_model.unbiased(estimate)


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
            extras[name] = scaling.denormalise(from_slices(_unbiased(noise_model, stages[name]), image.shape, axis))
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
    if bundle.metadata.get("modality") == "dwi":
        raise BundleError("this is a DDM2 bundle for 4D diffusion MRI: apply it with `diffdenoise ddm2 --model` "
                          "(apply_dwi_bundle)")
    DenoiseOptions(method=bundle.method, device=device, outputs=tuple(outputs))  # checks them as for training
    started = time.perf_counter()
    check_image(image)
    axis = bundle.metadata.get("slice_axis", 0) if slice_axis is None else slice_axis
    axis = axis if image.ndim == 3 else 0
    torch_device = resolve_device(device)
    scaling = IntensityScaling.fit(image)
    slices = to_slices(scaling.normalise(image), axis)
    from_bsn = bundle.metadata.get("distillation", {}).get("from_bsn", False)
    used = ("bsn", bundle.inference_network) if bundle.inference_network == "diffusion" or from_bsn \
        else (bundle.inference_network,)
    check_slice_size(slices, max(bundle.networks[name].min_size for name in used if name in bundle.networks))
    half_width = bundle.metadata.get("context", {}).get("half_width", 0)
    if half_width and len(slices) <= max(half_width, MIN_CONTEXT_SLICES - 1):
        raise InputError(f"this bundle was trained on volumes and reads {half_width} neighbouring slice(s) on "
                         f"each side; this image has {len(slices)} slice(s) along the slice axis: denoise it "
                         "with `diffdenoise denoise` (trained on the image itself) instead")
    stages: dict[str, np.ndarray | None] = {}
    noise_model = None
    diffusion = bundle.metadata.get("diffusion", {})
    if bundle.inference_network == "diffusion" and diffusion.get("generates") != GENERATES:
        raise InputError("this diffusion bundle was trained by an older DiffDenoise whose diffusion network "
                         "generated whole slices; this version's sampler expects deviations from the BSN "
                         "output: train the bundle again (bundles of the default method, diffdenoise, still work)")
    if bundle.inference_network == "bsn" or from_bsn or (bundle.inference_network == "diffusion"
                                                         and diffusion["conditioning"] != "identity"):
        stages["bsn"] = predict_slices(bundle.networks["bsn"], slices, torch_device, slices_per_call(torch_device),
                                       progress=progress, cancel=cancel, stage="bsn inference", context=half_width)
        # bundles before these settings: the BSN output alone, or without the Wiener blend
        stage = bundle.metadata.get("bsn", {})
        posterior, weight = stage.get("posterior", False), stage.get("wiener_weight")
        if posterior or weight is not None:
            noise = bundle.metadata.get("noise", {})
            # the noise of this image, not of the training image: a cohort's scans differ in noise level
            noise_model = _fitted_noise(slices, stages["bsn"], noise.get("used", "iid"), noise.get("requested", "auto"),
                                        scaling)
            if posterior:
                stages["bsn"] = combine_with_noisy(slices, stages["bsn"], noise_model)
            if weight is not None:  # the training image's weight: refitting it would cost another BSN pass
                depth = min(stage.get("wiener_depth", 1), len(slices))  # bundles before 3D patches: 2D ones
                stages["bsn"] = blend_with_filtering(slices, stages["bsn"], noise_model, weight, depth)
    if bundle.inference_network == "diffusion":
        normaliser = diffusion.get("noise_normalisation")
        normaliser = NoiseNormaliser.from_metadata(normaliser) if normaliser else None
        condition = diffusion_condition(diffusion["conditioning"], slices, stages.get("bsn"), normaliser,
                                        half_width)
        sampling = dict(bundle.metadata["sampling"])
        seed = sampling.pop("seed", 0)
        schedule = NoiseSchedule(**diffusion["schedule"])
        output, stages["uncertainty"] = sample_srds(bundle.networks["diffusion"], condition, schedule,
                                                    SamplingSettings(**sampling), torch_device, seed, progress, cancel,
                                                    normaliser, stages.get("bsn"),
                                                    diffusion.get("prediction", BUNDLE_DEFAULT_PREDICTION))
        stages["srds"] = output
    elif bundle.inference_network == "bsn":
        output = stages["bsn"]
    else:
        network = bundle.networks[bundle.inference_network]
        output = predict_slices(network, slices, torch_device, slices_per_call(torch_device), progress=progress,
                                cancel=cancel, context=half_width, leading=stages["bsn"] if from_bsn else None)
    output_weight = bundle.metadata.get("output_blend", {}).get("weight")  # bundles before the blend: none
    if output_weight is not None:
        output = blend(output, stages["bsn"], output_weight)
    denoised = scaling.denormalise(from_slices(_unbiased(noise_model, output), image.shape, axis))
    extras = _extras(image, denoised, tuple(outputs), stages, scaling, axis, noise_model)
    return Denoised(denoised, extras, {"total_s": round(time.perf_counter() - started, 3)},
                    residual_outliers(slices[:, 0], output[:, 0]))
