"""What our pipeline and the peers cost: seconds per slice at 256 and 512 px, training seconds per step of each
stage of each preset, and how the whole pipeline's time and peak memory grow with slice count and slice size.

Inference and training-step times do not depend on the weights, so the networks are trained for a few steps
only; stage times for a preset's full budget are estimated as (measured seconds per step) x (its steps).
The growth curve runs each point as a separate process, whose peak resident memory is measured.

    python -m benchmarks.cost point --preset quick --slices 4 --size 256 --steps 20   (one growth point, JSON)
    python -m benchmarks.cost preset --preset full --slices 24 --size 256 --steps 100 --out DIR
        (one preset's stages, timed over --steps and estimated for its whole budget: cost_<preset>.md and .json;
        for a budget, the full preset's, that no session can run whole)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter, zoom

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.presets import PRESETS

from .datasets import DATASETS
from .peers import bm3d_available, bm3d_slices, nlm_slices
from .volume_ablation import machine

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


def stage_training(preset: str, timings: dict, steps: int) -> list[tuple[str, str, int, float, float]]:
    """(preset, stage, the preset's training steps, seconds per step measured over ``steps``, estimated seconds
    for the preset's steps) of each stage, from the ``timings`` of a run trained for ``steps`` steps per stage."""
    settings = PRESETS[preset]
    budgets = {"BSN": settings.bsn, "diffusion + SRDS": settings.diffusion, "distilled NAFNet": settings.distillation}
    rows = []
    for stage, train_key, _ in STAGES:
        per_step = timings[train_key] / steps
        budget = budgets[stage].training.steps
        rows.append((preset, stage, budget, per_step, per_step * budget))
    return rows


def speed_and_training(presets: tuple[str, ...], steps: int, sizes: tuple[int, int],
                       slices: int = 1) -> tuple[list, list]:
    """Per-slice seconds at both ``sizes`` (px) of every method, and training seconds per step of every stage."""
    peers = {size: peer_speed(size, slices) for size in sizes}
    speed = [(method, "", *(peers[size][method] for size in sizes)) for method in peers[sizes[0]]]
    training = []
    for preset in presets:
        timings = {size: pipeline_timings(preset, noisy_knee_slices(slices, size), steps) for size in sizes}
        for stage, _, inference_key in STAGES:
            speed.append((stage, f"{preset} preset", *(timings[size][inference_key] / slices for size in sizes)))
        training += stage_training(preset, timings[sizes[0]], steps)
    return speed, training


def preset_cost_page(preset: str, steps: int, slices: int, size: int) -> tuple[str, dict]:
    """One preset's cost on ``slices`` noisy knee slices of ``size`` px, its stages trained for ``steps`` steps
    each: a markdown page (per-step training seconds, the estimate for the preset's budget, inference seconds per
    slice, where it ran) and the raw timings."""
    timings = pipeline_timings(preset, noisy_knee_slices(slices, size), steps)
    training = stage_training(preset, timings, steps)
    inference = {stage: timings[key] / slices for stage, _, key in STAGES}
    lines = [f"Preset {preset}: each stage trained for {steps} steps on {slices} noisy knee slices of {size} x {size} "
             f"px (Gaussian 0.1), the first steps' warm-up included; the whole budget estimated as (seconds per "
             f"step) x (its steps). {machine()}. `python -m benchmarks.cost preset --preset {preset} --slices "
             f"{slices} --size {size} --steps {steps}`", "",
             "| stage | preset's steps | s/step | estimated training s | inference s/slice |",
             "|---|---|---|---|---|"]
    lines += [f"| {stage} | {budget} | {per_step:.4f} | {estimate:.0f} | {inference[stage]:.3f} |"
              for _, stage, budget, per_step, estimate in training]
    stages = sum(row[4] for row in training) + sum(inference.values()) * slices
    rest = timings["total_s"] - sum(timings[key] for _, train_key, inference_key in STAGES
                                    for key in (train_key, inference_key))
    lines += ["", f"Estimated training and inference of the three stages on these {slices} slices: {stages:.0f} s "
              f"({stages / 3600:.1f} h); the rest of this run (noise analysis, Wiener filtering, blend fits) took "
              f"{rest:.0f} s."]
    return "\n".join(lines) + "\n", timings


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
    whole = commands.add_parser("preset", help="one preset's stages timed and estimated for its whole budget")
    whole.add_argument("--preset", default="full", choices=list(PRESETS))
    whole.add_argument("--slices", type=int, default=24)
    whole.add_argument("--size", type=int, default=256)
    whole.add_argument("--steps", type=int, default=100)
    whole.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "preset_cost")
    args = parser.parse_args()
    if args.command == "preset":
        page, timings = preset_cost_page(args.preset, args.steps, args.slices, args.size)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"cost_{args.preset}.md").write_text(page, encoding="utf-8")
        (args.out / f"cost_{args.preset}.json").write_text(json.dumps(timings, indent=1), encoding="utf-8")
        print(page)
        return
    print(json.dumps(pipeline_timings(args.preset, noisy_knee_slices(args.slices, args.size), args.steps, outputs=())))


if __name__ == "__main__":
    main()
