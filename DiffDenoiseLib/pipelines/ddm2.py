"""The three stages of DDM2 (Xiang et al., ICLR 2023) on a 4D diffusion series, in memory.

Every stage works on 2D slices of per-shell scaled series ``(v, z, y, x)`` in the diffusion model's [-1, 1]:

* **Stage I**: a NAFNet predicts each slice from the same slice in ``neighbours`` other volumes of its shell
  (their noise is independent of the slice's, so the network can only learn the signal: Noise2Noise).
* **Stage II**: each slice x is matched to the Markov-chain step t whose noise level sqrt(1 - abar_t) equals
  the std of ``x - sqrt(abar_t) y`` (y = Stage I output), in closed form for every slice and step at once; the
  residual's mean is folded back into y.
* **Stage III**: a time-conditioned NAFNet learns to predict the noisy slice x (J-invariance) from
  ``sqrt(abar_t) y + sqrt(1 - abar_t) shuffle(n)`` and the Stage I inputs, where n is the slice's own noise
  estimate with its pixels randomly permuted.

Inference starts every slice from itself at its matched step and runs the reverse chain to 0: the full
ancestral DDPM chain, or DDIM (eta = 0) over a few of those steps (accelerated).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..diffusion import NoiseSchedule, ddim_sample, ddpm_sample
from ..errors import InputError
from ..models import NAFNet, NAFNetConfig
from ..runtime.progress import CancelCheck, ProgressCallback, report
from ..runtime.training import TrainConfig, TrainSummary
from .diffdenoise import conditioned_model, train_new_nafnet

Sampler = Literal["full", "accelerated"]
Stage3Timesteps = Literal["matched", "chain"]
# b-values closer than this (s/mm^2) belong to one shell (scanners report e.g. 995 and 1005 for b = 1000)
SHELL_TOLERANCE = 100.0
# a slice whose output differs from its input by less than this fraction of its matched noise level had
# little noise removed: flagged as an outlier (DDM2 appendix F, flat RMSE trajectory)
OUTLIER_FRACTION = 0.5


def reverse_warmup_schedule() -> NoiseSchedule:
    """DDM2's schedule: beta = 5e-5 for 300 steps, then linear to 1e-2 at T = 1000 (many steps at low noise)."""
    return NoiseSchedule("reverse_warmup", 1000, beta_start=5e-5, beta_end=1e-2, warmup_steps=300)


@dataclass
class DDM2Settings:
    """Networks, training and sampling of the three DDM2 stages.

    ``neighbours`` volumes form each slice's Stage I input (and Stage III condition; None: chosen from the
    series by :func:`choose_neighbours`, which must happen before the networks are built); ``sampler`` is ``full``
    (ancestral DDPM over every step from the matched one) or ``accelerated`` (DDIM, ``sampler_steps`` steps).
    ``stage3_timesteps``: where Stage III's training draws its steps: ``matched`` (0 to each slice's matched step,
    the only steps sampling visits) or ``chain`` (the whole chain, as the paper's t ~ U(1, T)).
    """

    stage1_network: NAFNetConfig
    stage1_training: TrainConfig
    diffusion_network: NAFNetConfig
    diffusion_training: TrainConfig
    neighbours: int | None = None
    schedule: NoiseSchedule = field(default_factory=reverse_warmup_schedule)
    sampler: Sampler = "accelerated"
    sampler_steps: int = 10
    stage3_timesteps: Stage3Timesteps = "matched"

    def __post_init__(self) -> None:
        if self.neighbours is not None and self.neighbours < 1:
            raise InputError("DDM2 needs at least 1 neighbouring volume per slice: use neighbours of 1 or more")
        if self.sampler not in ("full", "accelerated"):
            raise InputError(f"unknown DDM2 sampler '{self.sampler}': use full or accelerated")
        if self.stage3_timesteps not in ("matched", "chain"):
            raise InputError(f"unknown Stage III timesteps '{self.stage3_timesteps}': use matched or chain")
        if self.sampler_steps < 1:
            raise InputError("the accelerated sampler needs at least 1 step: use sampler_steps of 1 or more")

    def _count(self) -> int:
        if self.neighbours is None:
            raise ValueError("the number of neighbours is chosen from the series (choose_neighbours) before the "
                             "networks are built")
        return self.neighbours

    @property
    def stage1_config(self) -> NAFNetConfig:
        """The Stage I network: ``stage1_network`` (width, blocks) reading the ``neighbours`` volumes."""
        return replace(self.stage1_network, in_channels=self._count(), out_channels=1, residual="mean",
                       time_conditioned=False, zero_start=True)

    @property
    def diffusion_config(self) -> NAFNetConfig:
        """The Stage III network: ``diffusion_network`` reading x_t and the neighbours, time-conditioned."""
        # Residual on x_t: at DDM2's low matched noise levels the clean estimate is x_t plus a small correction.
        return replace(self.diffusion_network, in_channels=1 + self._count(), out_channels=1, residual="first",
                       time_conditioned=True)


@dataclass
class VolumeScaling:
    """Each volume's linear map of [low, high] to the model's [-1, 1], shared by the volumes of a shell.

    One map per shell, not per volume: b0s and b = 3000 volumes differ by an order of magnitude (one map for
    all would leave the weighted volumes near -1), while volumes of one shell must keep their intensity
    relation, since Stage I predicts a volume from others of its shell (per-volume maps from each volume's own
    minimum shifted b0s against each other and cost Stage I dearly on real data: docs/decisions.md).
    """

    low: np.ndarray
    high: np.ndarray

    @classmethod
    def fit(cls, series: np.ndarray, bvals: np.ndarray, high_percentile: float = 99.9) -> VolumeScaling:
        """Per shell: from the shell's minimum to its ``high_percentile`` (robust to a few hot voxels)."""
        flat = series.reshape(len(series), -1)
        constant = np.flatnonzero(flat.max(axis=1) <= flat.min(axis=1))
        if constant.size:
            raise InputError(f"volume(s) {', '.join(map(str, constant[:10]))} of the series are constant; "
                             "remove empty volumes before denoising")
        shells = shell_of(bvals)
        low, high = np.empty(len(series)), np.empty(len(series))
        for shell in np.unique(shells):
            members = shells == shell
            values = flat[members].astype(np.float64)
            bottom, top = values.min(), np.percentile(values, high_percentile)
            # a mostly empty shell can have its percentile at the minimum; its maximum is above (not constant)
            low[members], high[members] = bottom, (top if top > bottom else values.max())
        return cls(low, high)

    def _shape(self, values: np.ndarray, ndim: int) -> np.ndarray:
        return values.reshape(-1, *([1] * (ndim - 1)))

    def forward(self, series: np.ndarray) -> np.ndarray:
        low, high = self._shape(self.low, series.ndim), self._shape(self.high, series.ndim)
        return ((series - low) / (high - low) * 2 - 1).astype(np.float32)

    def inverse(self, series: np.ndarray) -> np.ndarray:
        low, high = self._shape(self.low, series.ndim), self._shape(self.high, series.ndim)
        return ((series.astype(np.float64) + 1) / 2 * (high - low) + low).astype(np.float32)


# Stage I's input volumes: at least the paper's 2, at most this many (each is a channel of every slice's input),
# and no more than fit STAGE1_INPUT_BYTES as float32 (the inputs of every slice are held at once).
MIN_NEIGHBOURS, MAX_NEIGHBOURS = 2, 8
STAGE1_INPUT_BYTES = 2 * 1024 ** 3


def choose_neighbours(bvals: np.ndarray, shape: tuple[int, ...]) -> int:
    """How many volumes predict each slice in Stage I, from what the series offers.

    Every volume of the smallest shell that has more than one volume sees all the others of its shell (usually
    the b0s: their Stage I estimate is the average of the other b0s, and on mdt_b1k_b2k 6 neighbours scored
    46.9 dB on held-out b0s against 41.9 with the paper's 2: docs/decisions.md). Bounded by
    :data:`MIN_NEIGHBOURS`, :data:`MAX_NEIGHBOURS`, the memory of the inputs of the ``shape`` (volumes, z, y, x)
    series and its other volumes; a series without a repeated shell (one b0, one volume per shell) gets the
    paper's 2.
    """
    counts = np.unique(shell_of(bvals), return_counts=True)[1]
    repeated = counts[counts > 1]
    wanted = int(repeated.min()) - 1 if repeated.size else MIN_NEIGHBOURS
    affordable = STAGE1_INPUT_BYTES // (4 * int(np.prod(shape)))
    return int(max(1, min(max(wanted, MIN_NEIGHBOURS), MAX_NEIGHBOURS, affordable, len(bvals) - 1)))


def shell_of(bvals: np.ndarray) -> np.ndarray:
    """Each volume's shell: its b-value rounded to the nearest multiple of :data:`SHELL_TOLERANCE`."""
    return np.round(np.asarray(bvals, dtype=np.float64) / SHELL_TOLERANCE) * SHELL_TOLERANCE


def neighbour_volumes(bvals: np.ndarray, count: int, bvecs: np.ndarray | None = None) -> np.ndarray:
    """The (V, count) volumes whose slices predict each volume's slices in Stage I.

    Volumes of the same shell come first, because they share the contrast: in a diffusion-weighted shell
    with ``bvecs``, those whose gradient is nearest in angle (|cos| largest: g and -g measure the same), whose
    signal is nearest the volume's own; in the b0s, or without gradients, those nearest in acquisition order
    (wrapping around within the shell, alternating after and before: v+1, v-1, v+2, ...). When the shell is
    too small, volumes of the nearest shells fill the rest.
    """
    shells = shell_of(bvals)
    volumes = len(shells)
    if volumes < count + 1:
        raise InputError(f"DDM2 predicts each volume from {count} other volumes, so it needs at least "
                         f"{count + 1}; this series has {volumes}. Use fewer neighbours or a longer series.")
    directions = gradient_directions(bvecs)
    chosen = np.empty((volumes, count), dtype=np.int64)
    for v in range(volumes):
        same = np.flatnonzero(shells == shells[v])
        after = (np.arange(len(same)) - int(np.searchsorted(same, v))) % len(same)  # steps forward, wrapping
        distance = np.minimum(after, len(same) - after)
        keys = [after > len(same) - after, distance]
        if directions is not None and shells[v] > 0 and directions[same].any(axis=1).all():
            keys.append(-np.abs(directions[same] @ directions[v]))  # the last key sorts first
        ranked = [int(same[i]) for i in np.lexsort(keys) if same[i] != v]
        others = np.flatnonzero(shells != shells[v])
        ranked += others[np.lexsort((np.abs(others - v), np.abs(shells[others] - shells[v])))].tolist()
        chosen[v] = ranked[:count]
    return chosen


def gradient_directions(bvecs: np.ndarray | None) -> np.ndarray | None:
    """(V, 3) gradient directions scaled to unit length (zero rows, the b0s', stay zero), or None when there
    are none or none has a direction (all zeros: a series whose gradients are unknown), so that the neighbours
    follow acquisition order."""
    if bvecs is None:
        return None
    bvecs = np.nan_to_num(np.asarray(bvecs, dtype=np.float64))
    norms = np.linalg.norm(bvecs, axis=1, keepdims=True)
    return np.divide(bvecs, norms, out=np.zeros_like(bvecs), where=norms > 0) if norms.any() else None


def slices_of(series: np.ndarray) -> np.ndarray:
    """(V, Z, Y, X) -> (V * Z, 1, Y, X): every axial slice of every volume, volume-major."""
    return series.reshape(-1, 1, *series.shape[2:])


def stage1_inputs(series: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(V * Z, n, Y, X): for every slice, the same slice in its ``neighbours`` volumes."""
    stacked = np.stack([series[neighbours[:, k]] for k in range(neighbours.shape[1])], axis=2)  # V, Z, n, Y, X
    return stacked.reshape(-1, neighbours.shape[1], *series.shape[2:])


def shell_loss_weights(scaled: np.ndarray, bvals: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """(V * Z,) loss weight of every slice: 1 / its shell's mean squared difference to the first neighbour.

    That difference (2 sigma^2 plus the change of contrast between neighbours) sets how large a shell's losses
    are; on real data the weighted shells' is far larger than the b0s' in model units, so unweighted
    training fits the weighted shells and blurs the high-SNR b0s (docs/decisions.md). Weighted, every shell
    counts by how much better than "copy a neighbour" the network does. Mean 1 over the slices.
    """
    per_volume = ((scaled - scaled[neighbours[:, 0]]) ** 2).mean(axis=(1, 2, 3), dtype=np.float64)
    shells = shell_of(bvals)
    level = np.array([per_volume[shells == shell].mean() for shell in shells])
    weights = np.repeat(1 / np.maximum(level, np.finfo(np.float32).tiny), scaled.shape[1])
    return (weights / weights.mean()).astype(np.float32)


def _weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return ((prediction.float() - target.float()) ** 2 * weights.float()).mean()


def stage1_loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Predict the slice (channel 0) from its neighbours' slices (channels 2...), weighted by channel 1."""
    return _weighted_mse(model(batch[:, 2:]), batch[:, :1], batch[:, 1:2])


def _channel(values: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """One value per slice as an (N, 1, H, W) channel, so it is cropped and batched with its slice."""
    return np.broadcast_to(values.astype(np.float32)[:, None, None, None], shape)


def train_stage1(slices: np.ndarray, inputs: np.ndarray, weights: np.ndarray, settings: DDM2Settings,
                 progress: ProgressCallback | None = None,
                 cancel: CancelCheck | None = None) -> tuple[NAFNet, TrainSummary]:
    """Train the slice-from-other-volumes denoiser on (N, 1, H, W) slices, their (N, n, H, W) inputs and
    (N,) loss weights (:func:`shell_loss_weights`)."""
    return train_new_nafnet(settings.stage1_config, settings.stage1_training,
                            [slices, _channel(weights, slices.shape), inputs], stage1_loss, "train stage I",
                            progress, cancel)


@dataclass
class StateMatch:
    """Stage II for (N, 1, H, W) slices: matched step, mean-corrected Stage I output, unit-variance noise."""

    steps: np.ndarray
    signal: np.ndarray
    noise: np.ndarray


def match_states(slices: np.ndarray, stage1_output: np.ndarray, schedule: NoiseSchedule) -> StateMatch:
    """Match every slice x to the step t minimising | std(x - sqrt(abar_t) y) - sqrt(1 - abar_t) |.

    The residual's variance is a quadratic in sqrt(abar_t) (var x - 2 s cov(x, y) + s^2 var y), so all slices
    and all T steps are compared at once. Then (Eq. 4 of the paper) the residual's mean moves into y, and the
    noise estimate is the zero-mean residual divided by the matched step's noise level.
    """
    x = slices.reshape(len(slices), -1).astype(np.float64)
    y = stage1_output.reshape(len(slices), -1).astype(np.float64)
    x_centred, y_centred = x - x.mean(axis=1, keepdims=True), y - y.mean(axis=1, keepdims=True)
    var_x, var_y = (x_centred ** 2).mean(axis=1), (y_centred ** 2).mean(axis=1)
    cov = (x_centred * y_centred).mean(axis=1)
    abar = schedule.alphas_cumprod().numpy()
    s = np.sqrt(abar)[None, :]
    residual_std = np.sqrt(np.maximum(var_x[:, None] - 2 * s * cov[:, None] + s ** 2 * var_y[:, None], 0.0))
    steps = np.argmin(np.abs(residual_std - np.sqrt(1 - abar)[None, :]), axis=1)
    s_matched = np.sqrt(abar[steps])[:, None]
    residual = x - s_matched * y
    mean = residual.mean(axis=1, keepdims=True)
    signal = y + mean / s_matched
    noise = (residual - mean) / np.sqrt(1 - abar[steps])[:, None]
    shape = slices.shape
    return StateMatch(steps.astype(np.int64), signal.reshape(shape).astype(np.float32),
                      noise.reshape(shape).astype(np.float32))


def shuffle_pixels(images: torch.Tensor) -> torch.Tensor:
    """Randomly permute the pixels of each (C, H, W) item (one permutation per item, shared by its channels)."""
    batch, channels, height, width = images.shape
    order = torch.rand(batch, height * width).argsort(dim=1).to(images.device)
    flat = images.reshape(batch, channels, -1)
    return flat.gather(2, order[:, None, :].expand(-1, channels, -1)).reshape(images.shape)


def stage3_loss(schedule: NoiseSchedule, timesteps_from: Stage3Timesteps = "matched"):
    """The J-invariant objective on batches of [x, y, n, matched step, loss weight, condition...] channels.

    t is drawn uniformly from 0..m (m = the slice's matched step: inference never visits steps above m) or,
    with ``timesteps_from="chain"``, from the whole chain as the paper does;
    x_t = sqrt(abar_t) y + sqrt(1 - abar_t) shuffle(n), and the network's clean estimate is compared with the
    noisy slice x, whose noise x_t does not contain.
    """

    def loss(model: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        x, y, noise = batch[:, :1], batch[:, 1:2], batch[:, 2:3]
        matched, weights, condition = batch[:, 3, 0, 0].round().long().cpu(), batch[:, 4:5], batch[:, 5:]
        # drawn on the CPU from the generator that training checkpoints, so resumed runs are exact
        top = matched + 1 if timesteps_from == "matched" else torch.full_like(matched, schedule.steps)
        timesteps = (torch.rand(len(batch)) * top.float()).long().clamp(max=schedule.steps - 1)
        timesteps = timesteps.to(batch.device)
        x_t = schedule.add_noise(y, shuffle_pixels(noise), timesteps)
        prediction = model(torch.cat([x_t, condition], dim=1), timesteps)
        return _weighted_mse(prediction, x, weights)

    return loss


def train_stage3(slices: np.ndarray, match: StateMatch, inputs: np.ndarray, weights: np.ndarray,
                 settings: DDM2Settings, progress: ProgressCallback | None = None,
                 cancel: CancelCheck | None = None) -> tuple[NAFNet, TrainSummary]:
    """Train the time-conditioned network on the slices, their Stage II match, their Stage I inputs and their
    loss weights."""
    return train_new_nafnet(settings.diffusion_config, settings.diffusion_training,
                            [slices, match.signal, match.noise, _channel(match.steps, slices.shape),
                             _channel(weights, slices.shape), inputs],
                            stage3_loss(settings.schedule, settings.stage3_timesteps),
                            "train stage III", progress, cancel)


@dataclass
class SamplingResult:
    """DDM2 inference on (N, 1, H, W) slices in model units.

    ``rmse_trajectory[i]`` is the RMSE between slice i's input and the chain's state after each step (DDM2
    appendix F: it rises well above the noise level for a well-denoised slice and stays flat for an outlier);
    ``outliers`` flags slices whose final RMSE is below :data:`OUTLIER_FRACTION` of their matched noise level;
    ``untouched`` marks slices matched to step 0 (no measurable noise), returned as they came in.
    """

    denoised: np.ndarray
    rmse_trajectory: list[np.ndarray]
    outliers: np.ndarray
    untouched: np.ndarray


def _record_rmse(reference: torch.Tensor, curve: list[torch.Tensor], _t: int, state: torch.Tensor) -> None:
    curve.append((state - reference).pow(2).mean(dim=(1, 2, 3)).sqrt().cpu())


def sample_ddm2(network: nn.Module, slices: np.ndarray, inputs: np.ndarray, steps: np.ndarray,
                schedule: NoiseSchedule, sampler: Sampler, sampler_steps: int, device: torch.device,
                seed: int = 0, batch_size: int = 1, progress: ProgressCallback | None = None,
                cancel: CancelCheck | None = None) -> SamplingResult:
    """Denoise every slice by running the reverse chain from its matched step (slices with equal steps share a
    batch). The full sampler draws its noise from ``seed`` and the slice's matched step only."""
    network.eval().to(device)
    abar = schedule.alphas_cumprod().numpy()
    denoised = slices.astype(np.float32).copy()
    trajectories: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(slices)
    order = [i for i in np.argsort(steps, kind="stable") if steps[i] > 0]
    groups = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    groups = [g for group in groups for g in np.split(np.array(group), np.flatnonzero(np.diff(steps[group])) + 1)]
    done = 0
    for group in groups:
        x = torch.from_numpy(slices[group]).to(device)
        model = conditioned_model(network, torch.from_numpy(inputs[group]).to(device), device)
        start, rmse = int(steps[group[0]]), []
        record = partial(_record_rmse, x, rmse)
        if sampler == "full":
            generator = torch.Generator().manual_seed(seed * 100003 + start)
            output = ddpm_sample(model, x, schedule, start, "x0", generator, on_step=record, cancel=cancel)
        else:
            output = ddim_sample(model, x, schedule, sampler_steps, start, "x0", on_step=record, cancel=cancel)
        denoised[group] = output.cpu().numpy()
        curves = torch.stack(rmse, dim=1).numpy()
        for row, index in enumerate(group):
            trajectories[index] = curves[row]
        done += len(group)
        report(progress, "ddm2 sampling", done, len(order))
    final_rmse = np.array([t[-1] if t.size else 0.0 for t in trajectories])
    untouched = steps == 0
    outliers = ~untouched & (final_rmse < OUTLIER_FRACTION * np.sqrt(1 - abar[steps]))
    return SamplingResult(denoised, trajectories, outliers, untouched)
