"""Device choice and the precision settings that are fast on it."""

from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import InputError
from ..options import DEVICE_CHOICES


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device that is absent is an error."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' requested but no CUDA GPU is available: use --device auto or cpu")
    if name == "mps" and not torch.backends.mps.is_available():
        raise InputError("device 'mps' requested but Apple MPS is not available: use --device auto or cpu")
    if name not in DEVICE_CHOICES and not name.startswith("cuda:"):
        raise InputError(f"unknown device '{name}': use one of {', '.join(DEVICE_CHOICES)}")
    return torch.device(name)


def cpu_model() -> str:
    """The CPU's model name (timings mean nothing without it)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_device(device: torch.device) -> str:
    """Where the networks of a run on ``device`` ran, for its timings: the GPU's name, or the CPU's with its
    threads."""
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    if device.type == "mps":
        return "Apple GPU (MPS)"
    return f"CPU {cpu_model()}, {torch.get_num_threads()} threads"


@functools.cache
def cpu_has_amx_bf16() -> bool:
    """True on CPUs with AMX-BF16 tiles, where bfloat16 convolutions beat float32 (docs/decisions.md)."""
    try:
        with open("/proc/cpuinfo") as handle:
            return "amx_bf16" in handle.read()
    except OSError:
        return False


@dataclass(frozen=True)
class Precision:
    """How to run a network on a device: autocast dtype (None = float32) and memory format."""

    autocast_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self, device: torch.device) -> torch.autocast:
        return torch.autocast(device.type, dtype=self.autocast_dtype or torch.float32,
                              enabled=self.autocast_dtype is not None)


def has_dilated_depthwise_conv(model: nn.Module) -> bool:
    """True when ``model`` holds a depthwise convolution with dilation > 1 (the blind-spot networks do)."""
    return any(isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels and max(m.dilation) > 1
               for m in model.modules())


def choose_precision(device: torch.device, network: nn.Module | None = None,
                     mixed_precision: bool = True) -> Precision:
    """How to run ``network`` on ``device``: CUDA: bf16 (fp16 on older GPUs); CPU: bf16 + channels_last only
    with AMX (slower without); else float32.

    On the CPU, networks with dilated depthwise convolutions (the blind-spot networks) always run in float32:
    PyTorch 2.13's bf16 CPU kernels return wrong weight gradients for these convolutions and gain little or
    nothing there (docs/decisions.md, "Where the code's choices were measured").
    """
    if not mixed_precision or (device.type == "cpu" and network is not None and has_dilated_depthwise_conv(network)):
        return Precision(None, False)
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Precision(dtype, True)
    if device.type == "cpu" and cpu_has_amx_bf16():
        return Precision(torch.bfloat16, True)
    return Precision(None, False)
