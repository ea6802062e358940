"""The one training loop of the project: random patches from slices, any network, any loss.

Features every stage gets for free: optimizer and learning-rate schedule from :class:`TrainConfig`,
progress callback, cancel check, checkpoints every N steps with exact resume (model, optimizer, schedule,
patch sampler and RNG state), seed, device ``auto``, mixed precision where it is fast, and
DistributedDataParallel under ``torchrun`` (:mod:`.distributed`).
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import pickle
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from ..errors import Cancelled, InputError
from ..options import DenoiseOptions, DWIOptions
from . import distributed
from .devices import choose_precision, resolve_device
from .progress import CancelCheck, ProgressCallback, report

LossFunction = Callable[[nn.Module, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    """Optimisation settings of one training run (stored in bundles as the training summary)."""

    steps: int = 1000
    batch_size: int = 8
    patch_size: int = 64
    learning_rate: float = 1e-3
    optimizer: Literal["adam", "adamw"] = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    augment: bool = True  # random flips and 90-degree rotations of each patch
    seed: int = 0
    device: str = "auto"
    mixed_precision: bool = True
    channels_last: bool = True  # use channels_last where the precision policy allows it
    checkpoint_every: int = 0  # steps between checkpoints (0 = none)
    checkpoint_path: str | None = None

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.steps < 1 or self.batch_size < 1 or self.patch_size < 4:
            raise InputError("training needs steps >= 1, batch_size >= 1 and patch_size >= 4")


CHECKPOINT_FIELDS = ("checkpoint_every", "checkpoint_path")  # where and how often a run saves: not its settings


def checkpointed(config: TrainConfig, directory: str | Path | None, stage: str) -> TrainConfig:
    """``config`` checkpointing to ``directory/<stage>.pt`` every 10% of its steps (at most every 100 steps),
    so a killed run started again with the same directory resumes there; unchanged without a directory."""
    if directory is None:
        return config
    if Path(directory).exists() and not Path(directory).is_dir():
        raise InputError(f"checkpoint folder {directory} is a file: give a folder name (it is created if missing)")
    return replace(config, checkpoint_path=str(Path(directory) / f"{stage}.pt"),
                   checkpoint_every=max(1, min(100, config.steps // 10)))


def for_run(config: TrainConfig, options: DenoiseOptions | DWIOptions, directory: str | Path | None,
            stage: str) -> TrainConfig:
    """A stage's ``config`` with a run's seed and device, its step count where the options give one, and
    checkpointing to ``directory/<stage>.pt`` (:func:`checkpointed`)."""
    steps = {"steps": options.steps} if options.steps is not None else {}
    return checkpointed(replace(config, seed=options.seed, device=options.device, **steps), directory, stage)


def fit_patch_size(config: TrainConfig, multiple: int, minimum: int | None = None) -> TrainConfig:
    """``config`` with its patch size rounded down to a multiple of ``multiple`` that a network accepts, and
    at least ``minimum`` (default ``multiple``)."""
    patch = config.patch_size
    return replace(config, patch_size=max(multiple if minimum is None else minimum, patch - patch % multiple))


@dataclass
class TrainSummary:
    """What a training run did; goes into the model bundle."""

    steps: int
    final_loss: float
    seconds: float
    device: str
    resumed_from_step: int = 0
    loss_curve: list[float] = field(default_factory=list)  # mean loss per 5% of the run
    processes: int = 1  # torchrun processes that trained together (each step saw processes x batch patches)
    precision: str = "float32"  # the autocast dtype the steps ran in


def training_record(config: TrainConfig, summary: TrainSummary) -> dict:
    """What a bundle stores of one training run: its settings (without where its checkpoints were kept) and
    summary."""
    settings = {k: v for k, v in asdict(config).items() if k not in CHECKPOINT_FIELDS}
    return {"config": settings, "summary": asdict(summary)}


class PatchSampler:
    """Draws random (augmented) patches from a stack of slices, reproducibly from its own generator.

    ``slices`` is (N, C, H, W): every channel is cropped and augmented together, so paired data (input and
    target as channels) stays aligned. Patches larger than a slice are reduced to the slice size.
    """

    def __init__(self, slices: torch.Tensor, patch_size: int, batch_size: int, augment: bool, seed: int) -> None:
        if slices.ndim != 4:
            raise InputError(f"patch sampler needs (N, C, H, W) slices, got shape {tuple(slices.shape)}")
        self.slices = slices
        self.patch = min(patch_size, slices.shape[-2], slices.shape[-1])
        self.batch_size = batch_size
        self.augment = augment
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self) -> torch.Tensor:
        n, _, height, width = self.slices.shape
        g = self.generator
        index = torch.randint(n, (self.batch_size,), generator=g)
        top = torch.randint(height - self.patch + 1, (self.batch_size,), generator=g)
        left = torch.randint(width - self.patch + 1, (self.batch_size,), generator=g)
        transform = torch.randint(8, (self.batch_size,), generator=g)
        patches = []
        for i, y, x, t in zip(index.tolist(), top.tolist(), left.tolist(), transform.tolist(), strict=True):
            patch = self.slices[i, :, y:y + self.patch, x:x + self.patch]
            if self.augment:
                patch = torch.rot90(patch, t % 4, dims=(1, 2))
                if t >= 4:
                    patch = patch.flip(-1)
            patches.append(patch)
        return torch.stack(patches)


def _learning_rate_factor(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[config.optimizer]
    return optimizer_class(model.parameters(), lr=config.learning_rate, betas=config.betas,
                           weight_decay=config.weight_decay)


def _config_fingerprint(config: TrainConfig, model: nn.Module, slices: torch.Tensor) -> str:
    """Settings and data that must match for a checkpoint to resume this run (not device or checkpoint cadence)."""
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("device", "mixed_precision", "channels_last", *CHECKPOINT_FIELDS)}
    settings["parameters"] = [list(p.shape) for p in model.parameters()]
    settings["data_sha256"] = hashlib.sha256(memoryview(slices.contiguous().numpy()).cast("B")).hexdigest()
    settings["checkpoint_format"] = 3  # RNG states per process, data hash
    if distributed.world_size() > 1:  # each process resumes its own patch stream
        settings["processes"] = distributed.world_size()
    return json.dumps(settings, sort_keys=True)


def _save_checkpoint(path: Path, state: dict) -> None:
    """Write atomically under a unique temporary name, so a crash while saving keeps the previous checkpoint
    and two runs sharing a folder never move each other's half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except RuntimeError as error:  # torch reports a full disk as a failed stream write
        raise OSError(errno.EIO, f"could not write the checkpoint ({str(error).splitlines()[0]}): is the disk full?",
                      str(path)) from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint's state (tensors and plain values only: ``weights_only``, never arbitrary pickles)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"checkpoint {path} is damaged or incomplete ({reason}): delete it and run again "
                         "(that stage starts over)") from None
    if not isinstance(state, dict) or "fingerprint" not in state:
        raise InputError(f"checkpoint {path} was not written by DiffDenoise: delete it or use another folder")
    return state


def train(model: nn.Module, slices: torch.Tensor | np.ndarray, loss_fn: LossFunction, config: TrainConfig,
          progress: ProgressCallback | None = None, cancel: CancelCheck | None = None,
          stage: str = "train") -> TrainSummary:
    """Train ``model`` in place on random patches of ``slices`` (N, C, H, W) minimising ``loss_fn(model, batch)``.

    Resumes from ``config.checkpoint_path`` when it exists and was written by the same settings; writes it
    every ``config.checkpoint_every`` steps and when cancelled (then raises :class:`Cancelled`). With the same
    seed, an interrupted and resumed run ends with the same weights as an uninterrupted one.
    The model is left on the training device in eval mode.
    """
    device = distributed.local_device(resolve_device(config.device))
    precision = choose_precision(device, model, config.mixed_precision)
    channels_last = precision.channels_last and config.channels_last
    rank = distributed.rank()
    torch.manual_seed(config.seed + rank)  # each process draws its own patches, time steps and noise
    slices = torch.as_tensor(slices, dtype=torch.float32)
    sampler = PatchSampler(slices, config.patch_size, config.batch_size, config.augment, config.seed + rank)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    # Under torchrun, DDP starts every process from rank 0's weights and averages the gradients.
    trained = (nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
               if distributed.active() else model)
    if not distributed.is_main():
        progress = None  # one process reports
    optimizer = _make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _learning_rate_factor(config))
    scaler = torch.amp.GradScaler(device.type, enabled=precision.autocast_dtype == torch.float16)
    checkpoint = Path(config.checkpoint_path) if config.checkpoint_path else None
    fingerprint = _config_fingerprint(config, model, slices) if checkpoint is not None else ""
    start_step, losses = 0, []
    if checkpoint is not None and checkpoint.exists():
        state = _load_checkpoint(checkpoint)
        if state.get("fingerprint") != fingerprint:
            raise InputError(f"checkpoint {checkpoint} was written by a run with other settings or on other "
                             "data: delete it or use another checkpoint folder")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.generator.set_state(state["sampler_rng"][rank])
        torch.set_rng_state(state["torch_rng"][rank])
        start_step, losses = int(state["step"]), list(state["losses"])

    def save_state(step: int) -> None:
        """Checkpoint (collective under torchrun: every process adds its RNG states; rank 0 writes)."""
        sampler_rngs, torch_rngs = distributed.gather(sampler.generator.get_state()), distributed.gather(
            torch.get_rng_state())
        if checkpoint is not None and distributed.is_main():
            _save_checkpoint(checkpoint, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "sampler_rng": sampler_rngs, "torch_rng": torch_rngs, "step": step, "losses": losses,
                "fingerprint": fingerprint})

    model.train()
    started = time.perf_counter()
    for step in range(start_step, config.steps):
        if cancel is not None and cancel():
            if checkpoint is not None:
                save_state(step)
            raise Cancelled(f"cancelled during {stage} at step {step}/{config.steps}")
        batch = sampler.sample().to(device)
        if channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with precision.autocast(device):
            loss = loss_fn(trained, batch)
        if not torch.isfinite(loss):
            raise InputError(f"{stage}: the loss became {loss.item()} at step {step}; lower the learning rate "
                             "or check the input for extreme values")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        losses.append(float(loss.detach()))
        report(progress, stage, step + 1, config.steps, losses[-1])
        if checkpoint is not None and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
            save_state(step + 1)
    model.eval()
    chunks = np.array_split(np.asarray(losses), min(20, len(losses)))
    return TrainSummary(
        steps=config.steps,
        final_loss=float(np.mean(losses[-max(1, len(losses) // 20):])),
        seconds=round(time.perf_counter() - started, 2),
        device=str(device),
        resumed_from_step=start_step,
        loss_curve=[round(float(c.mean()), 6) for c in chunks],
        processes=distributed.world_size(),
        precision=str(precision.autocast_dtype or torch.float32).removeprefix("torch."),
    )
