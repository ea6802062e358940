"""Speed of the quick preset's networks on this machine: a training step and an inference pass, median times.

    python -m benchmarks.network_speed [--repeats 9] [--threads N] [--out benchmarks/results/network_speed]

Each network (the blind-spot networks PUCA and LG-BPN, alone and with two neighbouring slices per side, and the
distilled NAFNet) is timed at a training step (AdamW, 8 x 64 x 64 patches, as the presets train) and an
inference pass without gradients (2 x 256 x 256 slices, one pass, no self-ensemble), twice: with the dilated
depthwise convolutions' gradients as :class:`DiffDenoiseLib.models.blocks.DepthwiseConv2d` computes them on the
CPU, and with PyTorch's own (``native``). The two runs alternate step by step, so a machine that slows down
slows both. ``network_speed.md`` and ``.csv`` hold the medians and the CPU they ran on.
"""

from __future__ import annotations

import argparse
import copy
import csv
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from unittest import mock

import torch
from torch import nn

from DiffDenoiseLib.models import NAFNet
from DiffDenoiseLib.models.blocks import DepthwiseConv2d
from DiffDenoiseLib.pipelines.bsn import build_bsn, for_noise
from DiffDenoiseLib.presets import PRESETS
from DiffDenoiseLib.runtime.devices import cpu_model

FIELDS = ("network", "context_slices", "native_step_s", "step_s", "native_pass_s", "pass_s")
TRAIN_BATCH, INFERENCE_BATCH = (8, 64), (2, 256)  # (images, side) per training step and per inference pass


def networks(context_slices: int) -> dict[str, nn.Module]:
    """The quick preset's networks reading ``context_slices`` neighbouring slices per side, without their
    self-ensemble (one pass each)."""
    quick = PRESETS["quick"]
    bsn = replace(quick.bsn, network=replace(quick.bsn.network, context_slices=context_slices, self_ensemble=1))
    nafnet = replace(quick.distillation.network, in_channels=1 + 2 * context_slices, self_ensemble=1)
    return {"PUCA": build_bsn(for_noise(bsn, "iid").network),
            "LG-BPN": build_bsn(for_noise(bsn, "correlated").network),
            "NAFNet (distilled)": NAFNet(nafnet)}


@contextmanager
def native_gradients() -> Iterator[None]:
    """Within: dilated depthwise convolutions take PyTorch's own gradients."""
    with mock.patch.object(DepthwiseConv2d, "forward", nn.Conv2d.forward):
        yield


def training_step(network: nn.Module, channels: int) -> Callable[[], None]:
    """One AdamW step of ``network`` on a fixed random batch."""
    optimiser = torch.optim.AdamW(network.parameters(), 1e-3)
    count, side = TRAIN_BATCH
    batch = torch.randn(count, channels, side, side)

    def step() -> None:
        network.train()
        optimiser.zero_grad()
        output = network(batch).float()
        output.sub(batch[:, :output.shape[1]]).square().mean().backward()  # as the BSN trains: to the noisy slice
        optimiser.step()
    return step


def inference_pass(network: nn.Module, channels: int) -> Callable[[], None]:
    """One pass of ``network`` over fixed random slices, without gradients."""
    count, side = INFERENCE_BATCH
    slices = torch.randn(count, channels, side, side)

    def run() -> None:
        network.eval()
        with torch.no_grad():
            network(slices)
    return run


def paired_medians(ours: Callable[[], None], native: Callable[[], None], repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``native``, run alternately ``repeats`` times after two warm-up runs each."""
    times: dict[bool, list[float]] = {True: [], False: []}
    for index in range(repeats + 2):
        for is_native, run in ((False, ours), (True, native)):
            with native_gradients() if is_native else nullcontext():
                start = time.perf_counter()
                run()
                if index >= 2:
                    times[is_native].append(time.perf_counter() - start)
    return statistics.median(times[True]), statistics.median(times[False])


def measure(repeats: int) -> list[dict[str, str]]:
    """Every network's median step and pass, native gradients and ours."""
    rows = []
    for context_slices in (0, 2):
        channels = 1 + 2 * context_slices
        for name, network in networks(context_slices).items():
            twin = copy.deepcopy(network)  # the native run trains its own copy: the same work from the same start
            native_pass, one_pass = paired_medians(inference_pass(network, channels), inference_pass(twin, channels),
                                                   repeats)
            native_step, step = paired_medians(training_step(network, channels), training_step(twin, channels),
                                               repeats)
            rows.append({"network": name, "context_slices": str(context_slices),
                         "native_step_s": f"{native_step:.3f}", "step_s": f"{step:.3f}",
                         "native_pass_s": f"{native_pass:.3f}", "pass_s": f"{one_pass:.3f}"})
            print(rows[-1], flush=True)
    return rows


def write_results(folder: Path, rows: list[dict[str, str]], repeats: int) -> None:
    """``network_speed.csv`` and ``network_speed.md`` in ``folder``."""
    with open(folder / "network_speed.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    count, side = TRAIN_BATCH
    passes, pass_side = INFERENCE_BATCH
    lines = ["# Speed of the quick preset's networks (written by benchmarks.network_speed)", "",
             f"Median of {repeats} runs, {torch.get_num_threads()} threads, CPU: {cpu_model()}, torch "
             f"{torch.__version__}. Training step: AdamW on {count} x {side} x {side} patches; pass: {passes} x "
             f"{pass_side} x {pass_side} slices without gradients. Native: PyTorch's own gradients of the "
             "dilated depthwise convolutions.", "",
             "| network | neighbours per side | training step, native (s) | training step (s) | step ratio | "
             "pass, native (s) | pass (s) |", "|---|---|---|---|---|---|---|"]
    for row in rows:
        ratio = float(row["step_s"]) / float(row["native_step_s"])
        lines.append(f"| {row['network']} | {row['context_slices']} | {row['native_step_s']} | {row['step_s']} | "
                     f"{ratio:.2f} | {row['native_pass_s']} | {row['pass_s']} |")
    (folder / "network_speed.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, help="CPU threads (default: as PyTorch chose)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/network_speed"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    args.out.mkdir(parents=True, exist_ok=True)
    write_results(args.out, measure(args.repeats), args.repeats)


if __name__ == "__main__":
    main()
