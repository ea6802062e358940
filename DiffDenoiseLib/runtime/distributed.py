"""Scale-out with ``torchrun``: one process per GPU (or CPU worker), on one machine or several.

Launched by ``torchrun``, the CLI calls :func:`initialise`; training then runs DistributedDataParallel (each
process draws its own patches, gradients are averaged, so a step sees ``processes x batch`` patches) and
cohort inference gives each process every ``world``-th file. Without ``torchrun`` all of this is a no-op.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from typing import TypeVar

import torch
import torch.distributed as dist

Item = TypeVar("Item")


def launched_by_torchrun() -> bool:
    """True in a process that ``torchrun`` started as part of a group of more than one."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def initialise(device: str = "auto") -> bool:
    """Join the ``torchrun`` process group (NCCL when the processes use CUDA GPUs, gloo otherwise); returns
    whether this run is distributed. Each CUDA process uses the GPU of its ``LOCAL_RANK``."""
    if not launched_by_torchrun() or active():
        return active()
    use_cuda = device not in ("cpu", "mps") and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    # DDP compares the strides of channels_last gradients with its contiguous buckets; for weights with one
    # input channel the two layouts are the same memory, so its per-step warning says nothing here.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return True


def shutdown() -> None:
    """Leave the process group (if this process joined one)."""
    if active():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """True in the one process that reports progress and writes outputs (rank 0, or a plain run)."""
    return rank() == 0


def local_device(device: torch.device) -> torch.device:
    """``device`` pinned to this process's GPU when it is a CUDA device in a distributed run."""
    if active() and device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def shard(items: Sequence[Item]) -> list[Item]:
    """This process's share of ``items``: every ``world_size``-th one, starting at its rank."""
    return list(items[rank()::world_size()])


def gather(value: object) -> list[object]:
    """``value`` from every process, in rank order (collective: every process must call it)."""
    if not active():
        return [value]
    values: list[object] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values
