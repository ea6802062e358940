"""What our pipeline and the peers cost: seconds per slice at 256 and 512 px, training seconds per step of each
stage of each preset, and how the whole pipeline's time and peak memory grow with slice count and slice size.

Inference and training-step times do not depend on the weights, so the networks are trained for a few steps
only; stage times for a preset's full budget are estimated as (measured seconds per step) x (its steps).
The growth curve runs each point as a separate process, whose peak resident memory is measured.

    python -m benchmarks.cost point --preset quick --slices 4 --size 256 --steps 20   (one growth point, JSON)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.presets import PRESETS

from .datasets import DATASETS
from .peers import bm3d_available, bm3d_slices, nlm_slices

# Starts a command and prints its stdout, then its peak RSS in KiB as the last line: Linux carries a process's
# peak RSS across fork and exec, so a child of a large process would report at least its parent's size.
LAUNCHER = ("import resource, subprocess, sys; "
            "run = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, text=True); print(run.stdout); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(run.returncode)")


def measured_run(command: list[str]) -> tuple[str, float, float]:
    """Run ``command``; its stdout, its peak resident memory in GB and its wall time in seconds."""
    started = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True)
    if run.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{run.stderr[-2000:]}")
    *output, peak = run.stdout.rstrip("\n").split("\n")
    return "\n".join(output), int(peak) / 1024 ** 2, time.perf_counter() - started  # ru_maxrss is in KiB


def noisy_knee_slices(count: int, size: int, seed: int = 0) -> np.ndarray:
    """``count`` knee slices resampled to ``size`` x ``size``, with Gaussian noise (0.1 of the range)."""
    knee = DATASETS["knee"].central_slices(count)
    while len(knee) < count:  # more slices than the knee has: repeat it
        knee = np.concatenate([knee, knee])[:count]
    resized = zoom(knee, (1, size / knee.shape[1], size / knee.shape[2]), order=1)
    return add_noise(resized, "gaussian", 0.1, seed=seed)


def pipeline_timings(preset: str, image: np.ndarray, steps: int, outputs: tuple[str, ...] = ("srds",)) -> dict:
    """``denoise`` timings of ``preset``'s networks trained for ``steps`` steps per stage (by default with SRDS
    on every slice, for its time per slice)."""
    return denoise(image, preset=preset, steps=steps, outputs=outputs).timings


def peer_speed(size: int, slices: int = 1) -> dict[str, float]:
    """Seconds per slice of the classical peers at ``size`` px (their benchmark settings)."""
    image = noisy_knee_slices(slices, size)
    sigma = float(np.std(image - gaussian_filter(image, (0, 1, 1))))
    runs = {"Gaussian blur": lambda: gaussian_filter(image, (0, 1, 1)),
            "NLM": lambda: nlm_slices(image, 0.8 * sigma, sigma)}
    if bm3d_available():
        runs["BM3D"] = lambda: bm3d_slices(image, sigma)
    seconds = {}
    for method, run in runs.items():
        started = time.perf_counter()
        run()
        seconds[method] = (time.perf_counter() - started) / slices
    return seconds


STAGES = (("BSN", "train_bsn_s", "bsn_inference_s"), ("diffusion + SRDS", "train_diffusion_s", "srds_s"),
          ("distilled NAFNet", "train_nafnet_s", "nafnet_inference_s"))


def speed_and_training(presets: tuple[str, ...], steps: int, sizes: tuple[int, int],
                       slices: int = 1) -> tuple[list, list]:
    """Per-slice seconds at both ``sizes`` (px) of every method, and training seconds per step of every stage."""
    peers = {size: peer_speed(size, slices) for size in sizes}
    speed = [(method, "", *(peers[size][method] for size in sizes)) for method in peers[sizes[0]]]
    training = []
    for preset in presets:
        timings = {size: pipeline_timings(preset, noisy_knee_slices(slices, size), steps) for size in sizes}
        for stage, train_key, inference_key in STAGES:
            speed.append((stage, f"{preset} preset", *(timings[size][inference_key] / slices for size in sizes)))
            per_step = timings[sizes[0]][train_key] / steps
            budget = {"BSN": PRESETS[preset].bsn, "diffusion + SRDS": PRESETS[preset].diffusion,
                      "distilled NAFNet": PRESETS[preset].distillation}[stage].training.steps
            training.append((preset, stage, budget, per_step, per_step * budget))
    return speed, training


def growth(preset: str, steps: int, base_slices: int, base_size: int) -> list:
    """The whole pipeline (``steps`` training steps per stage) at 1x, 2x and 4x the slice count and the slice
    side, each in its own process: training and inference seconds, and peak memory."""
    points = [("slices", f, base_slices * f, base_size) for f in (1, 2, 4)]
    points += [("size", f, base_slices, base_size * f) for f in (1, 2, 4)]
    rows = []
    for axis, factor, slices, size in points:
        output, peak_gb, _ = measured_run([sys.executable, "-m", "benchmarks.cost", "point", "--preset", preset,
                                           "--slices", str(slices), "--size", str(size), "--steps", str(steps)])
        timings = json.loads(output.strip().splitlines()[-1])
        training = sum(timings[key] for _, key, _ in STAGES)
        inference = sum(timings[key] for _, _, key in STAGES)
        rows.append((axis, factor, slices, size, training, inference, timings["total_s"], peak_gb))
    return rows


@dataclass
class Cost:
    """The cost tables: per-slice seconds (method, setting, seconds at each of ``sizes``), per-stage training
    (preset, stage, steps, seconds per step, estimated stage seconds) and growth points (axis, factor, slices,
    size, training s, inference s, total s, peak GB)."""

    sizes: tuple[int, int]
    speed: list[tuple[str, str, float, float]]
    training: list[tuple[str, str, int, float, float]]
    growth: list[tuple[str, int, int, int, float, float, float, float]]


def measure_cost(presets: tuple[str, ...], steps: int, sizes: tuple[int, int], growth_preset: str,
                 growth_base: tuple[int, int]) -> Cost:
    """Every cost table: ``presets`` timed over ``steps`` steps per stage at slice sides ``sizes``, growth from
    ``growth_base`` (slices, side)."""
    speed, training = speed_and_training(presets, steps, sizes)
    return Cost(sizes, speed, training, growth(growth_preset, steps, *growth_base))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    point = commands.add_parser("point", help="one growth point: the pipeline's timings as JSON on stdout")
    point.add_argument("--preset", default="quick", choices=list(PRESETS))
    point.add_argument("--slices", type=int, required=True)
    point.add_argument("--size", type=int, required=True)
    point.add_argument("--steps", type=int, required=True)
    args = parser.parse_args()
    print(json.dumps(pipeline_timings(args.preset, noisy_knee_slices(args.slices, args.size), args.steps, outputs=())))


if __name__ == "__main__":
    main()
