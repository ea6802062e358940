"""Stages 2-4 of DiffDenoise: conditional diffusion on the noisy slices, SRDS sampling, NAFNet distillation.

All stages work on robust-normalised (N, 1, H, W) slices (about 0..1); the diffusion model sees them mapped to
[-1, 1]. No clean image is used anywhere: the diffusion model learns the distribution of the noisy slices
given the BSN output, and the NAFNet learns to reproduce the SRDS output from the noisy slice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..context import context_channels, stack_context
from ..diffusion import PREDICTIONS, NoiseSchedule, prediction_target, srds_sample
from ..diffusion.ddim import DenoisingModel, Prediction, ddim_timesteps
from ..errors import InputError
from ..models import NAFNet, NAFNetConfig
from ..noise.model import NoiseModel
from ..noise.normalisation import NoiseNormaliser
from ..runtime.devices import choose_precision
from ..runtime.inference import TILE_SIZE, MemoryPlan, run_in_chunks, slices_per_call, tiled
from ..runtime.progress import CancelCheck, ProgressCallback
from ..runtime.training import TrainConfig, TrainSummary, fit_patch_size, train

# what the diffusion network generates (bundle metadata; older bundles lack the key: their diffusion networks
# generated whole slices, and apply refuses them)
GENERATES = "deviation from the BSN output, noise-normalised"
# what the diffusion network of a bundle predicts when its metadata does not say (bundles written before v
# prediction: their networks predicted the noise)
BUNDLE_DEFAULT_PREDICTION = "epsilon"
# conditionings, and whether their condition holds the noisy slice (then also its neighbours, with context)
CONDITIONINGS = {"recorrupted": True, "bsn": False, "identity": True}


def condition_channels(conditioning: str, context_slices: int) -> int:
    """Condition channels of ``conditioning`` (the network also gets x_t): the BSN output (unless
    ``identity``) and the noisy slice with its ``context_slices`` neighbours per side (unless ``bsn``)."""
    noisy = context_channels(context_slices) if CONDITIONINGS[conditioning] else 0
    return (conditioning != "identity") + noisy


@dataclass
class DiffusionSettings:
    """The conditional diffusion stage: network, training, noise schedule and what it is conditioned on.

    Targets and noisy condition channels are noise-normalised around the BSN output
    (:mod:`..noise.normalisation`) whenever there is one, so the model sees noise of one level.

    ``conditioning``:

    * ``recorrupted`` (default): trained on pairs whose noise is independent (Recorrupted-to-Recorrupted,
      Pang et al. 2021): target ``y - z / alpha``, condition ``[BSN(y + alpha z), y + alpha z]`` with ``z``
      drawn from the image's fitted noise model (:mod:`..noise.model`: level per intensity, and spatial
      correlation for correlated noise); sampled with the condition ``[BSN(y), y]``. The BSN output of a
      slice is a deterministic, largely invertible function of that slice, so a network conditioned on
      ``BSN(y)`` while generating ``y`` learns to rebuild ``y``, noise included; with independent noise the
      best it can generate is the clean image, and the noisy slice next to the BSN output gives it the
      detail the blind spot discards (measurements: docs/decisions.md).
    * ``bsn``: the paper's plain pairs (target ``y``, condition ``BSN(y)``), kept for the ablation.
    * ``identity``: conditioned on the noisy slice itself (the paper's other ablation).

    With ``context_slices`` > 0 the noisy channel comes with that many neighbouring slices per side
    (:mod:`..context`), each noise-normalised around its own BSN output.

    ``prediction`` is what the network outputs (:data:`..diffusion.ddim.Prediction`): ``v`` keeps the clean
    estimate well conditioned at the start of sampling, where few DDIM steps take their largest step.

    ``timesteps``: ``sampled`` (default) trains only at the timesteps SRDS's DDIM visits (one step: T - 1 alone,
    where the network's output is its estimate of the mean of what it would generate), so the small network
    spends its training on the steps sampling uses; ``all`` draws them from 0..T-1 as DDPM does. The network
    starts at zero (``NAFNetConfig.zero_start``): sampling starts from the BSN output, and training moves it
    only where the targets support a change (measurements: docs/decisions.md, "SRDS: the timesteps trained").
    """

    network: NAFNetConfig
    training: TrainConfig
    schedule: NoiseSchedule = field(default_factory=NoiseSchedule)
    conditioning: Literal["recorrupted", "bsn", "identity"] = "recorrupted"
    recorruption_alpha: float = 0.5
    context_slices: int = 0
    prediction: Prediction = "v"
    timesteps: Literal["sampled", "all"] = "sampled"

    def __post_init__(self) -> None:
        if self.timesteps not in ("sampled", "all"):
            raise InputError(f"unknown diffusion training timesteps '{self.timesteps}': use sampled or all")
        if self.conditioning not in CONDITIONINGS:
            raise InputError(f"unknown conditioning '{self.conditioning}': use recorrupted, bsn or identity")
        if self.prediction not in PREDICTIONS:
            raise InputError(f"unknown prediction '{self.prediction}': use one of {', '.join(PREDICTIONS)}")

    @property
    def network_config(self) -> NAFNetConfig:
        """The network this stage builds: ``network`` (its width and blocks) with the channels, residual and
        time input the stage needs, derived here rather than written over the given config."""
        channels = condition_channels(self.conditioning, self.context_slices)
        return replace(self.network, in_channels=1 + channels, out_channels=1, residual="none", time_conditioned=True,
                       zero_start=True)


@dataclass
class SamplingSettings:
    """SRDS sampling: DDIM steps, antithetic pairs averaged, slices per network call and distillation data.

    One DDIM step from x_T lands on the network's clean estimate at t = T, the mean of what it would generate
    given the condition: with a ``v`` network it scored above every multi-step setting at CPU budgets (more
    steps add generated noise that the pairs do not average away; ``benchmarks/results/srds_sweep``). With
    one step the pairs barely differ, so the uncertainty map is near zero: sample with more steps for it.

    ``distill_slices`` caps how many evenly spaced slices are sampled to train the NAFNet (None = every slice).
    ``batch_slices`` is how many slices share one network call (their pairs too); 0 picks 1 on a CPU (cache-
    bound, measured fastest) and 8 on a GPU. ``antithetic`` False runs only the +eps trajectory of each pair:
    plain DDIM, the ablation that shows what SRDS's pairs add.
    """

    steps: int = 1
    pairs: int = 1
    distill_slices: int | None = None
    batch_slices: int = 0
    antithetic: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1 or self.pairs < 1:
            raise InputError("SRDS needs at least 1 DDIM step and 1 pair: use srds_pairs and ddim_steps of 1 or more")
        if self.distill_slices is not None and self.distill_slices < 1:
            raise InputError("distill_slices must be at least 1: use 1 or more, or None for every slice")


@dataclass
class DistillationSettings:
    """The distilled NAFNet: a deterministic denoiser trained on (noisy, SRDS output) pairs; with
    ``context_slices`` > 0 it reads the noisy slice's context stack (:mod:`..context`).

    With ``from_bsn`` (default) it also reads the BSN output, as its first channel, and learns a correction
    of it: training starts from the BSN's estimate instead of from the noisy slice (a residual on the noisy
    slice starts as the identity, and at CPU budgets ended with much of the noise still in: docs/decisions.md,
    "Where the code's choices were measured"). Inference then runs
    the BSN and the NAFNet.
    """

    network: NAFNetConfig
    training: TrainConfig
    context_slices: int = 0
    from_bsn: bool = True

    @property
    def network_config(self) -> NAFNetConfig:
        """The network this stage builds: ``network`` with the channels and residual the stage needs."""
        return replace(self.network, in_channels=self.from_bsn + context_channels(self.context_slices),
                       out_channels=1, residual="first", time_conditioned=False)


_RECORRUPTION_STREAM = 0x52325220  # "R2R "


def recorrupt(slices: np.ndarray, noise: NoiseModel, signal: np.ndarray, alpha: float,
              seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split (N, 1, H, W) noisy slices into an input and a target with independent noise
    (:meth:`..noise.model.NoiseModel.split`: for Gaussian noise ``(y + alpha z, y - z / alpha)`` with z drawn
    from ``noise`` around ``signal``, the BSN output; the split that is exact for the family otherwise): the
    target is a noisy copy that the input cannot predict."""
    # A stream of its own: with default_rng(seed), z would equal noise a caller drew with the same seed (e.g. a
    # benchmark's synthetic noise), making y - z / alpha = clean - noise.
    first, second = noise.split(slices[:, 0], signal[:, 0], alpha, np.random.default_rng((seed, _RECORRUPTION_STREAM)))
    return first[:, None], second[:, None]


def diffusion_condition(conditioning: str, slices: np.ndarray, bsn_output: np.ndarray | None,
                        normaliser: NoiseNormaliser | None = None, context_slices: int = 0) -> np.ndarray:
    """The (N, C, H, W) condition channels of ``conditioning`` for (N, 1, H, W) noisy slices and their BSN
    output; with a ``normaliser`` the noisy channels are noise-normalised around the BSN output (as the
    targets are); with ``context_slices`` the noisy slice comes with its neighbours (:mod:`..context`)."""
    if conditioning == "bsn":
        return bsn_output
    if normaliser is not None and bsn_output is not None:
        slices = normaliser.forward(slices, bsn_output)
    slices = stack_context(slices, context_slices)
    return slices if conditioning == "identity" else np.concatenate([bsn_output, slices], axis=1)


def to_diffusion_data(values: np.ndarray, signal: np.ndarray | None,
                      normaliser: NoiseNormaliser | None) -> np.ndarray:
    """What the diffusion model generates for (N, 1, H, W) ``values``: their noise-normalised deviation from the
    BSN output ``signal``; without a BSN (the ``identity`` ablation) their deviation from mid-range."""
    return values - 0.5 if normaliser is None else normaliser.forward(values, signal)


def from_diffusion_data(data: np.ndarray, signal: np.ndarray | None,
                        normaliser: NoiseNormaliser | None) -> np.ndarray:
    """Inverse of :func:`to_diffusion_data` (exact for means, so for the SRDS average too)."""
    return data + 0.5 if normaliser is None else normaliser.inverse(data, signal)


def to_model_range(x: torch.Tensor) -> torch.Tensor:
    """Diffusion data and condition (deviations of about -0.5..0.5, images about 0..1) -> model units (x 2, so
    deviations span about [-1, 1])."""
    return x * 2


def from_model_range(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_model_range`."""
    return x / 2


def diffusion_loss(schedule: NoiseSchedule, prediction: Prediction = "epsilon",
                   timesteps: Sequence[int] | None = None):
    """The DDPM objective on (B, 1 + C, H, W) batches of [noisy slice, condition]: predict the added noise, the
    clean slice or the velocity (``prediction``), by mean squared error, at timesteps drawn uniformly from
    ``timesteps`` (default: all of the schedule's)."""

    alphas_cumprod = schedule.alphas_cumprod()  # once, not on every training step
    choices = torch.arange(schedule.steps) if timesteps is None else torch.as_tensor(list(timesteps))

    def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        x0, condition = to_model_range(batch[:, :1]), to_model_range(batch[:, 1:])
        # Drawn from the CPU generator that training checkpoints, so resumed runs are exact on any device.
        drawn = choices[torch.randint(len(choices), (batch.shape[0],))].to(batch.device)
        noise = torch.randn(x0.shape).to(batch.device, x0.dtype)
        x_t = schedule.add_noise(x0, noise, drawn)
        abar = alphas_cumprod.to(batch.device)[drawn].to(x0.dtype).view(-1, 1, 1, 1)
        target = prediction_target(x0, noise, abar, prediction)
        return F.mse_loss(model(torch.cat([x_t, condition], dim=1), drawn).float(), target.float())

    return loss


def distillation_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Reproduce the SRDS output (the last channel) from the others (the BSN output and the noisy slice's
    context stack)."""
    return F.mse_loss(model(batch[:, :-1]).float(), batch[:, -1:].float())


def train_diffusion(noisy: np.ndarray, condition: np.ndarray, settings: DiffusionSettings, sampling_steps: int,
                    progress: ProgressCallback | None = None,
                    cancel: CancelCheck | None = None) -> tuple[NAFNet, TrainSummary]:
    """Train the conditional diffusion network on (N, 1, H, W) noisy slices and their (N, C, H, W) condition,
    for sampling with ``sampling_steps`` DDIM steps (the timesteps it trains at, unless ``settings.timesteps``
    is ``all``)."""
    timesteps = ddim_timesteps(settings.schedule, sampling_steps) if settings.timesteps == "sampled" else None
    return train_new_nafnet(settings.network_config, settings.training, [noisy, condition],
                            diffusion_loss(settings.schedule, settings.prediction, timesteps),
                            "train diffusion", progress, cancel)


def conditioned_model(network: nn.Module, condition: torch.Tensor, device: torch.device,
                      tile: int = TILE_SIZE) -> DenoisingModel:
    """``model(x_t, t)`` for the samplers: item i of a batch is conditioned on ``condition[i % N]``; slices
    larger than ``tile`` go through the network in overlapping tiles (bounded memory)."""
    precision = choose_precision(device, network)

    def model(x_t: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        repeated = condition.repeat(x_t.shape[0] // condition.shape[0], 1, 1, 1)

        def forward(part: torch.Tensor) -> torch.Tensor:
            with precision.autocast(device):
                return network(part, timesteps).float()

        return tiled(forward, torch.cat([x_t, repeated], dim=1), tile)

    return model


def slice_start_noise(seed: int, index: int, pairs: int, shape: tuple[int, ...]) -> torch.Tensor:
    """The (pairs, C, H, W) SRDS start noise of slice ``index``: drawn on the CPU from ``seed`` and the index
    only, so it does not depend on batching or on the device's random number generator."""
    return torch.randn((pairs, *shape), generator=torch.Generator().manual_seed(seed * 100003 + index))


def sample_srds(network: nn.Module, condition: np.ndarray, schedule: NoiseSchedule, settings: SamplingSettings,
                device: torch.device, seed: int = 0, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None, normaliser: NoiseNormaliser | None = None,
                signal: np.ndarray | None = None,
                prediction: Prediction = "epsilon") -> tuple[np.ndarray, np.ndarray]:
    """SRDS over (N, C, H, W) condition slices; returns (N, 1, H, W) denoised and uncertainty slices in
    normalised intensity units. The model generates :func:`to_diffusion_data` of the slices: it gets the
    ``normaliser`` and the (N, 1, H, W) BSN output ``signal`` they were normalised around, to map its output back;
    ``prediction`` is what the network was trained to output.

    The start noise of slice i depends only on ``seed`` and i, so batching does not change the result. Large
    slices run in tiles, and out of memory the run goes on with fewer slices per call, smaller tiles, then
    on the CPU, as in :func:`..runtime.inference.predict_slices`.
    """
    network.eval()
    plan = MemoryPlan.for_network(network, device, settings.batch_slices or slices_per_call(device, on_cpu=1))

    def sample_chunk(start: int, count: int) -> tuple[np.ndarray, np.ndarray]:
        chunk = torch.from_numpy(np.ascontiguousarray(condition[start:start + count], dtype=np.float32))
        eps = torch.stack([slice_start_noise(seed, start + i, settings.pairs, (1, *chunk.shape[2:]))
                           for i in range(count)], dim=1)
        model = conditioned_model(network.to(plan.device), to_model_range(chunk.to(plan.device)), plan.device,
                                  plan.tile)
        result = srds_sample(model, eps.to(plan.device), schedule, settings.steps, prediction, cancel=cancel,
                             antithetic=settings.antithetic)
        # uncertainty: half of [-1, 1] units = normalised units
        return from_model_range(result.mean).cpu().numpy(), (result.uncertainty / 2).cpu().numpy()

    chunks = run_in_chunks(len(condition), plan, sample_chunk, "srds", progress, cancel)
    mean, uncertainty = (np.concatenate(part) for part in zip(*chunks, strict=True))
    if normaliser is not None:
        uncertainty = uncertainty / normaliser.gain(signal)
    return from_diffusion_data(mean, signal, normaliser), uncertainty


def train_distillation(noisy: np.ndarray, targets: np.ndarray, settings: DistillationSettings,
                       progress: ProgressCallback | None = None,
                       cancel: CancelCheck | None = None) -> tuple[NAFNet, TrainSummary]:
    """Train the NAFNet on (inputs, SRDS output) pairs, with the training loop's flips and rotations; ``noisy``
    is the (N, C, H, W) inputs (:func:`distillation_inputs`), ``targets`` (N, 1, H, W)."""
    return train_new_nafnet(settings.network_config, settings.training, [noisy, targets], distillation_loss,
                            "train nafnet", progress, cancel)


def distillation_inputs(slices: np.ndarray, bsn_output: np.ndarray | None, settings: DistillationSettings,
                        indices: np.ndarray) -> np.ndarray:
    """The distilled NAFNet's (M, C, H, W) inputs for slices ``indices``: the BSN output (with ``from_bsn``),
    then the noisy slice's context stack."""
    stacks = stack_context(slices, settings.context_slices, indices)
    return np.concatenate([bsn_output[indices], stacks], axis=1) if settings.from_bsn else stacks


def train_new_nafnet(config: NAFNetConfig, training: TrainConfig, channels: list[np.ndarray],
                     loss: Callable[[nn.Module, torch.Tensor], torch.Tensor], stage: str,
                     progress: ProgressCallback | None, cancel: CancelCheck | None) -> tuple[NAFNet, TrainSummary]:
    """A fresh NAFNet (seeded by ``training.seed``) trained on (N, C_i, H, W) arrays stacked as channels, so
    they are cropped and augmented together."""
    torch.manual_seed(training.seed)
    network = NAFNet(config)
    training = fit_patch_size(training, network.multiple)
    summary = train(network, np.concatenate(channels, axis=1), loss, training, progress, cancel, stage=stage)
    return network, summary


def distillation_indices(count: int, limit: int | None) -> np.ndarray:
    """Indices of at most ``limit`` evenly spaced slices out of ``count`` (all when ``limit`` is None)."""
    if limit is None or limit >= count:
        return np.arange(count)
    return np.unique(np.linspace(0, count - 1, limit).round().astype(int))
