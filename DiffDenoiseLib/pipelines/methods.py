"""The methods of DiffDenoise (``bsn``, ``diffusion``, ``diffdenoise``) as registered pipeline objects.

Each :class:`Method` trains its stages on the normalised slices of one image (:meth:`Method.train`) and runs a
trained bundle on the slices of another (:meth:`Method.apply`). The front doors in :mod:`..denoise` validate
the image and the options, normalise and slice, pick the method from :data:`METHODS` and assemble the result
and the bundle. A method is added by subclassing :class:`Method` and decorating it with :func:`register`
(docs/layout.md, "How to add a method"); DDM2, whose input is a 4D series with b-values, has its own front door
(:mod:`..denoise_dwi`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

from ..bundle_record import BsnRecord, DiffusionRecord, ScalarRecord
from ..diffusion import NoiseSchedule
from ..errors import InputError
from ..noise.model import FAMILIES, NoiseModel, exact_floor, fit_noise_model, with_family
from ..noise.normalisation import NoiseNormaliser
from ..posterior import combine_with_noisy
from ..preprocessing import IntensityScaling
from ..runtime.inference import predict_slices, slices_per_call
from ..runtime.progress import CancelCheck, ProgressCallback
from ..runtime.training import training_record
from ..sure import sure_blend_weight
from ..wiener import blend, blend_weight, blend_with_filtering, wiener_filter
from .bsn import train_bsn
from .diffdenoise import (
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

if TYPE_CHECKING:
    from ..bundle import ModelBundle
    from ..presets import PipelineSettings


@dataclass
class Run:
    """What the stages of one run share: the normalised (N, 1, H, W) slices, how networks run on them (device,
    neighbouring slices read, progress and cancel), the noise (``noise_kind``: ``iid`` or ``correlated``;
    ``noise_request``: the ``noise`` option, which may name a family), and what each stage hands on: its
    outputs in ``stages`` (``bsn``, ``srds``, ``uncertainty``), the fitted noise model, the current output,
    the trained networks with their training records, timings, and what the stages record in the bundle
    (:class:`..bundle_record.ScalarRecord`'s fields of the same names)."""

    slices: np.ndarray
    scaling: IntensityScaling
    device: torch.device
    half_width: int
    noise_kind: str = "iid"
    noise_request: str = "auto"
    seed: int = 0
    progress: ProgressCallback | None = None
    cancel: CancelCheck | None = None
    stages: dict[str, np.ndarray | None] = field(default_factory=dict)
    noise_model: NoiseModel | None = None
    output: np.ndarray | None = None
    networks: dict[str, nn.Module] = field(default_factory=dict)
    training: dict[str, dict] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    bsn: BsnRecord | None = None
    diffusion: DiffusionRecord | None = None
    from_bsn: bool | None = None
    output_blend_weight: float | None = None

    def predict(self, network: nn.Module, images: np.ndarray, stage: str = "denoise",
                leading: np.ndarray | None = None) -> np.ndarray:
        """``network`` over (N, 1, H, W) ``images`` seen with their neighbouring slices (``leading``: channels
        in front of them, see :func:`..runtime.inference.predict_slices`)."""
        return predict_slices(network, images, self.device, slices_per_call(self.device), progress=self.progress,
                              cancel=self.cancel, stage=stage, context=self.half_width, leading=leading)

    def trained(self, name: str, network: nn.Module, config: object, summary: object) -> None:
        """Keep a trained stage's network, its training record and its training time."""
        self.networks[name] = network
        self.training[name] = training_record(config, summary)
        self.timings[f"train_{name}_s"] = summary.seconds

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        """Record the seconds the block takes as timing ``name``."""
        clock = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - clock


class Method:
    """One way to denoise: the stages it trains on an image and runs from a bundle."""

    name: ClassVar[str]

    def train(self, run: Run, settings: PipelineSettings, outputs: tuple[str, ...]) -> None:
        """Train the stages on ``run.slices`` and leave the denoised slices in ``run.output``; ``outputs`` are
        the extra outputs asked for (a stage may need to run on every slice for them)."""
        raise NotImplementedError

    def apply(self, run: Run, bundle: ModelBundle, record: ScalarRecord) -> None:
        """Run ``bundle``'s networks on ``run.slices`` as its ``record`` says and leave the denoised slices in
        ``run.output``."""
        raise NotImplementedError

    def networks_read(self, record: ScalarRecord) -> tuple[str, ...]:
        """The networks of ``bundle`` that :meth:`apply` runs (their minimum input size bounds the image's)."""
        raise NotImplementedError


METHODS: dict[str, Method] = {}


def register(method_class: type[Method]) -> type[Method]:
    """Class decorator: make ``method_class`` the method of its ``name``."""
    METHODS[method_class.name] = method_class()
    return method_class


def _uses_bsn(settings: PipelineSettings) -> bool:
    """Whether the diffusion stage is conditioned on the BSN estimate (all but the identity ablation)."""
    return settings.diffusion.conditioning != "identity"


@register
class BsnMethod(Method):
    """The blind-spot network alone (with its posterior combination and Wiener blend)."""

    name = "bsn"

    def train(self, run: Run, settings: PipelineSettings, outputs: tuple[str, ...]) -> None:
        train_bsn_stage(run, settings, recorrupted=False)
        run.output = run.stages["bsn"]

    def apply(self, run: Run, bundle: ModelBundle, record: ScalarRecord) -> None:
        apply_bsn_stage(run, bundle, record)
        run.output = run.stages["bsn"]

    def networks_read(self, record: ScalarRecord) -> tuple[str, ...]:
        return ("bsn",)


@register
class DiffusionMethod(Method):
    """The BSN, then the conditional diffusion model sampled with SRDS on every slice, blended with the BSN
    estimate."""

    name = "diffusion"

    def train(self, run: Run, settings: PipelineSettings, outputs: tuple[str, ...]) -> None:
        estimates = train_bsn_stage(run, settings, _recorrupts(settings)) if _uses_bsn(settings) else None
        sampler, _ = train_diffusion_stage(run, settings, estimates, every_slice=True)

        def srds(noisy: np.ndarray, signal: np.ndarray) -> np.ndarray:  # SRDS of the output blend's copy
            return sampler.sample(run, sampler.condition(run, noisy, signal), signal)[0]

        blend_with_bsn(run, settings, estimates, srds)

    def apply(self, run: Run, bundle: ModelBundle, record: ScalarRecord) -> None:
        if record.diffusion.generates != GENERATES:
            raise InputError("this diffusion bundle was trained by an older DiffDenoise whose diffusion network "
                             "generated whole slices; this version's sampler expects deviations from the BSN "
                             "output: train the bundle again (bundles of the default method, diffdenoise, still "
                             "work)")
        if record.diffusion.conditioning != "identity":
            apply_bsn_stage(run, bundle, record)
        sampler, signal = Sampler.of_record(bundle.networks["diffusion"], record.diffusion), run.stages.get("bsn")
        run.stages["srds"], run.stages["uncertainty"] = sampler.sample(run, sampler.condition(run, run.slices,
                                                                                               signal), signal)
        run.output = run.stages["srds"]

    def networks_read(self, record: ScalarRecord) -> tuple[str, ...]:
        return ("bsn", "diffusion")


@register
class DiffDenoiseMethod(Method):
    """The whole pipeline: BSN, diffusion with SRDS on a subset of slices, and the NAFNet distilled from SRDS,
    blended with the BSN estimate; a bundle runs only the BSN and the NAFNet."""

    name = "diffdenoise"

    def train(self, run: Run, settings: PipelineSettings, outputs: tuple[str, ...]) -> None:
        estimates = train_bsn_stage(run, settings, _recorrupts(settings)) if _uses_bsn(settings) else None
        _, sampled = train_diffusion_stage(run, settings, estimates,
                                           every_slice=bool({"uncertainty", "srds"} & set(outputs)))
        estimate = run.stages.get("bsn")
        # without a BSN (the identity-conditioning ablation) the NAFNet corrects the noisy slice
        distillation = settings.distillation if estimate is not None else replace(settings.distillation,
                                                                                  from_bsn=False)
        nafnet, summary = train_distillation(distillation_inputs(run.slices, estimate, distillation, sampled),
                                             run.stages["srds"], distillation, run.progress, run.cancel)
        run.trained("nafnet", nafnet, distillation.training, summary)
        run.from_bsn = distillation.from_bsn

        def run_nafnet(noisy: np.ndarray, signal: np.ndarray | None) -> np.ndarray:
            return run.predict(nafnet, noisy, leading=signal if distillation.from_bsn else None)

        with run.timed("nafnet_inference_s"):
            run.output = run_nafnet(run.slices, estimate)
        blend_with_bsn(run, settings, estimates, run_nafnet)

    def apply(self, run: Run, bundle: ModelBundle, record: ScalarRecord) -> None:
        if record.from_bsn:
            apply_bsn_stage(run, bundle, record)
        run.output = run.predict(bundle.networks["nafnet"], run.slices,
                                 leading=run.stages["bsn"] if record.from_bsn else None)

    def networks_read(self, record: ScalarRecord) -> tuple[str, ...]:
        return ("bsn", "nafnet") if record.from_bsn else ("nafnet",)


def _recorrupts(settings: PipelineSettings) -> bool:
    """Whether the diffusion stage trains on a recorrupted copy of the slices and its twin."""
    return settings.diffusion.conditioning == "recorrupted"


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


def train_bsn_stage(run: Run, settings: PipelineSettings, recorrupted: bool) -> BsnEstimates:
    """Train the BSN on ``run.slices`` and hand on its estimates (:func:`bsn_estimates`) as ``run.stages["bsn"]``
    and ``run.noise_model``."""
    network, summary = train_bsn(run.slices, settings.bsn, run.progress, run.cancel)
    run.trained("bsn", network, settings.bsn.training, summary)
    with run.timed("bsn_inference_s"):
        estimates = bsn_estimates(lambda images: run.predict(network, images, stage="bsn inference"), run.slices,
                                  settings, run.noise_kind, run.noise_request, run.scaling, run.seed, recorrupted)
    run.stages["bsn"], run.noise_model = estimates.output, estimates.noise_model
    run.bsn = BsnRecord(settings.bsn.posterior, estimates.wiener_weight, estimates.wiener_depth)
    return estimates


def bsn_estimates(run_bsn: Callable[[np.ndarray], np.ndarray], slices: np.ndarray, settings: PipelineSettings,
                  noise_kind: str, noise: str, scaling: IntensityScaling, seed: int,
                  recorrupted: bool) -> BsnEstimates:
    """The BSN stage's estimates of (N, 1, H, W) normalised slices, ``run_bsn`` being the trained network's
    inference. The estimate's share in its blend with its Wiener filtering (:mod:`..wiener`) is fitted with SURE
    on the slices for i.i.d. noise (one more BSN pass, on the slices plus a probe: :mod:`..sure`) and on a
    recorrupted copy against its twin for correlated noise, whose colouring is not known closely enough for
    SURE. The copy, made for that or when ``recorrupted`` asks for it, carries 1 + alpha^2 times the noise
    variance."""
    raw = run_bsn(slices)
    noise_model = fitted_noise(slices, raw, noise_kind, noise, scaling)
    posterior, use_wiener = settings.bsn.posterior, settings.bsn.wiener
    depth = settings.bsn.wiener_patch_depth(len(slices))

    def estimate(noisy: np.ndarray, network_output: np.ndarray, factor: float = 1.0) -> np.ndarray:
        return combine_with_noisy(noisy, network_output, noise_model, factor) if posterior else network_output

    def both(noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # the estimate and its Wiener filtering
        combined = estimate(noisy, run_bsn(noisy))
        return combined, wiener_filter(noisy, combined, noise_model, depth=depth)

    output = estimate(slices, raw)
    weight = filtered = None
    if use_wiener:
        filtered = wiener_filter(slices, output, noise_model, depth=depth)
        if noise_kind != "correlated":
            weight = sure_blend_weight(slices, output, filtered, both, noise_model,
                                       np.random.default_rng((seed, _PROBE_STREAM, _WIENER_PROBE)))
    if not (recorrupted or (use_wiener and weight is None)):  # no copy wanted, none needed for the weight
        return BsnEstimates(blend(output, filtered, weight) if use_wiener else output, noise_model, weight, depth)
    alpha = settings.diffusion.recorruption_alpha
    copy, twin = recorrupt(slices, noise_model, output, alpha, seed)
    factor = 1 + alpha**2
    copy_output = estimate(copy, run_bsn(copy), factor)
    if use_wiener:
        copy_filtered = wiener_filter(copy, copy_output, noise_model, factor, depth=depth)
        if weight is None:
            weight = blend_weight(copy_output, copy_filtered, twin)
        output, copy_output = blend(output, filtered, weight), blend(copy_output, copy_filtered, weight)
    return BsnEstimates(output, noise_model, weight, depth, copy, twin, copy_output)


def apply_bsn_stage(run: Run, bundle: ModelBundle, record: ScalarRecord) -> None:
    """A bundle's BSN estimate of ``run.slices`` as ``run.stages["bsn"]``, combined with the noisy pixel and
    blended with its Wiener filtering where the bundle was trained so (bundles before these settings: the BSN
    output alone, or without the Wiener blend); the noise model is fitted to this image, not taken from the
    training image: a cohort's scans differ in noise level."""
    estimate = run.predict(bundle.networks["bsn"], run.slices, stage="bsn inference")
    stage = record.bsn or BsnRecord()
    if stage.posterior or stage.wiener_weight is not None:
        run.noise_model = fitted_noise(run.slices, estimate, run.noise_kind, run.noise_request, run.scaling)
        estimate = refined_bsn_output(run.slices, estimate, run.noise_model, stage)
    run.stages["bsn"] = estimate


def refined_bsn_output(noisy: np.ndarray, raw: np.ndarray, noise_model: NoiseModel, stage: BsnRecord) -> np.ndarray:
    """The BSN stage's estimate of (N, 1, H, W) ``noisy`` slices from its network's ``raw`` output: combined with
    the noisy pixel and blended with its Wiener filtering as ``stage`` records."""
    estimate = combine_with_noisy(noisy, raw, noise_model) if stage.posterior else raw
    if stage.wiener_weight is not None:  # the training image's weight: refitting it would cost another BSN pass
        depth = min(stage.wiener_depth, len(noisy))  # bundles before 3D patches: 2D ones
        estimate = blend_with_filtering(noisy, estimate, noise_model, stage.wiener_weight, depth)
    return estimate


def fitted_noise(slices: np.ndarray, bsn_output: np.ndarray, noise_kind: str, noise: str,
                 scaling: IntensityScaling) -> NoiseModel:
    """The noise model of normalised (N, 1, H, W) slices, fitted with the (blind) BSN output as the signal
    estimate; ``noise`` is the requested noise (it may name the family, else it is measured)."""
    fitted = fit_noise_model(slices[:, 0], bsn_output[:, 0], noise_kind == "correlated")
    family = noise if noise in FAMILIES else "auto"
    return with_family(fitted, family, scaling.normalise(np.zeros(1))[0], exact_floor(slices))


@dataclass
class Sampler:
    """A trained diffusion network and how it is sampled: SRDS with these settings and seed, conditioned as it
    was trained, in the noise-normalised units of ``normaliser`` (None: the identity ablation)."""

    network: nn.Module
    conditioning: str
    schedule: NoiseSchedule
    sampling: SamplingSettings
    prediction: str
    normaliser: NoiseNormaliser | None
    seed: int

    @classmethod
    def of_record(cls, network: nn.Module, record: DiffusionRecord) -> Sampler:
        """The sampler of a diffusion bundle's ``network`` as its record says it was trained."""
        normaliser = record.noise_normalisation
        return cls(network, record.conditioning, record.schedule, record.sampling, record.prediction,
                   NoiseNormaliser.from_metadata(normaliser) if normaliser else None, record.seed)

    def record(self) -> DiffusionRecord:
        """What a bundle records of this sampler."""
        return DiffusionRecord(self.schedule, self.conditioning, self.sampling, self.seed, self.prediction,
                               GENERATES, self.normaliser.describe() if self.normaliser else None)

    def condition(self, run: Run, noisy: np.ndarray, signal: np.ndarray | None) -> np.ndarray:
        """The network's condition for ``noisy`` slices and their BSN estimate ``signal``."""
        return diffusion_condition(self.conditioning, noisy, signal, self.normaliser, run.half_width)

    def sample(self, run: Run, condition: np.ndarray, signal: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """SRDS from ``condition``: the denoised slices and the spread of the pairs (uncertainty)."""
        return sample_srds(self.network, condition, self.schedule, self.sampling, run.device, self.seed,
                           run.progress, run.cancel, self.normaliser, signal, self.prediction)


def train_diffusion_stage(run: Run, settings: PipelineSettings, estimates: BsnEstimates | None,
                          every_slice: bool) -> tuple[Sampler, np.ndarray]:
    """Train the diffusion model (on the recorrupted copy and its twin where the settings say so, else on the
    slices) and sample SRDS on every slice or on the distillation subset: ``run.stages["srds"]`` and
    ``["uncertainty"]`` for the sampled slices, whose indices are returned with the sampler."""
    conditioning, estimate = settings.diffusion.conditioning, run.stages.get("bsn")
    normaliser = None if run.noise_model is None else NoiseNormaliser.from_noise_model(run.noise_model)
    condition = diffusion_condition(conditioning, run.slices, estimate, normaliser, run.half_width)
    targets, training_condition, signal = run.slices, condition, estimate
    if conditioning == "recorrupted":
        targets, signal = estimates.twin, estimates.recorrupted_output
        training_condition = diffusion_condition(conditioning, estimates.recorrupted, signal, normaliser,
                                                 run.half_width)
    network, summary = train_diffusion(to_diffusion_data(targets, signal, normaliser), training_condition,
                                       settings.diffusion, settings.sampling.steps, run.progress, run.cancel)
    run.trained("diffusion", network, settings.diffusion.training, summary)
    sampler = Sampler(network, conditioning, settings.diffusion.schedule, settings.sampling,
                      settings.diffusion.prediction, normaliser, run.seed)
    sampled = distillation_indices(len(run.slices), None if every_slice else settings.sampling.distill_slices)
    with run.timed("srds_s"):
        run.stages["srds"], run.stages["uncertainty"] = sampler.sample(
            run, condition[sampled], None if estimate is None else estimate[sampled])
    run.output = run.stages["srds"]
    run.diffusion = sampler.record()
    return sampler, sampled


_PROBE_STREAM = 0x53555245  # "SURE": the blends' probes, random streams apart from the recorruption's
_WIENER_PROBE = 1  # the Wiener blend's probe: a stream apart from the output blend's


def blend_with_bsn(run: Run, settings: PipelineSettings, estimates: BsnEstimates | None,
                   final_stage: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> None:
    """Blend ``run.output`` with the BSN estimate where the settings ask for it and a BSN was trained, as
    ``w * output + (1 - w) * estimate``; ``final_stage`` maps noisy slices and their BSN estimate to the last
    stage's output. The later stages see the noisy slice beside the estimate, so their errors differ from the
    estimate's, and a mix beats both where neither is better everywhere. ``w`` is fitted with SURE
    (:func:`sure_output_weight`); for correlated noise, whose colouring is not known closely enough for SURE
    (docs/decisions.md, "The output blend's weight"), on the recorrupted copy (:func:`copy_output_weight`;
    none: no blend)."""
    correlated = run.noise_kind == "correlated"
    if not settings.blend_with_bsn or estimates is None or (correlated and estimates.recorrupted is None):
        return
    with run.timed("output_blend_s"):
        weight = copy_output_weight(estimates, final_stage) if correlated else sure_output_weight(run, final_stage)
    run.output = blend(run.output, run.stages["bsn"], weight)
    run.output_blend_weight = weight


def sure_output_weight(run: Run, final_stage: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """The later stage's share in the output blend that minimises SURE on ``run.slices`` (:mod:`..sure`): one
    more pass of the BSN stage and of ``final_stage`` on the whole volume plus a probe (the networks read each
    slice's neighbours)."""
    def both_stages(noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        raw = run.predict(run.networks["bsn"], noisy, stage="bsn inference")
        estimate = refined_bsn_output(noisy, raw, run.noise_model, run.bsn)
        return final_stage(noisy, estimate), estimate

    return sure_blend_weight(run.slices, run.output, run.stages["bsn"], both_stages, run.noise_model,
                             np.random.default_rng((run.seed, _PROBE_STREAM)))


def copy_output_weight(estimates: BsnEstimates,
                       final_stage: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> float:
    """The later stage's share in the output blend fitted as the Wiener blend's is: least squares on the
    recorrupted copy against its twin, ``final_stage`` run once more, on the whole copy."""
    signal = estimates.recorrupted_output
    return blend_weight(final_stage(estimates.recorrupted, signal), signal, estimates.twin)
