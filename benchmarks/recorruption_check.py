"""Is Gaussian recorruption why SRDS ends at or below its BSN on Poisson noise? The cheap check.

    python -m benchmarks.recorruption_check [--data knee ct] [--peak 30] [--steps 300 800 300] [--seeds 0]
        [--out benchmarks/results/recorruption_check]

The same clean image gets Poisson noise (``peak`` counts at the top of its robust range) and, separately,
Gaussian noise with exactly the same signal-dependent variance at every pixel (heteroscedastic Gaussian:
same mean, same variance, no skewness). The same ``denoise`` run (quick networks at the given budget, same
seed) goes over the Gaussian twin and over the Poisson image with the Gaussian recorruption split
(``--noise gaussian``), and over the Poisson image with binomial thinning (``--noise poisson``). If SRDS trails
its BSN on the Poisson image with the Gaussian split but not on the twin, the skewness of the noise, which
Gaussian recorruption cannot split into independent halves, is the cause, and thinning should remove it; if
it trails on both, the cause is elsewhere (the signal-dependent level, or the sampler). One CSV per finished run
(resumable); ``recorruption_check.md`` gathers them.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.noise.analysis import robust_range
from DiffDenoiseLib.presets import PRESETS, PipelineSettings
from DiffDenoiseLib.runtime.devices import cpu_model

from .datasets import DATASETS
from .suites import QUICK_STEPS, describe, with_steps
from .volume_ablation import read_rows, scores, write_rows

FIELDS = ("data", "noise", "seed", "method", "psnr_db", "ssim", "detail_psnr_db")


def poisson_pair(clean: np.ndarray, peak: float, seed: int) -> dict[str, np.ndarray]:
    """Poisson noise of ``peak`` counts at the top of the robust range, and Gaussian noise of the same
    per-pixel variance (both from ``seed``, float32)."""
    low, high = robust_range(clean)
    scale = high - low
    counts = np.clip((clean.astype(np.float64) - low) / scale, 0, None) * peak
    rng = np.random.default_rng(seed)
    poisson = rng.poisson(counts) / peak * scale + low
    gaussian = clean + np.sqrt(counts) / peak * scale * rng.standard_normal(clean.shape)
    return {f"poisson {peak:g}": poisson.astype(np.float32),
            f"gaussian, Poisson {peak:g} variance": gaussian.astype(np.float32)}


def run(data: str, noise: str, split: str, noisy: np.ndarray, clean: np.ndarray, seed: int,
        settings: PipelineSettings) -> list[dict]:
    """BSN, SRDS and distilled scores of one ``denoise`` run on ``noisy`` with the ``split`` noise family."""
    low, high = robust_range(clean)
    result = denoise(noisy, noise=split, preset=settings, seed=seed, spacing=DATASETS[data].spacing,
                     outputs=("bsn", "srds"))
    images = {"noisy": noisy, "BSN": result.extras["bsn"], "diffusion + SRDS": result.extras["srds"],
              "DiffDenoise (distilled NAFNet)": result.denoised}
    return [{"data": data, "noise": f"{noise}, {split} split", "seed": seed, "method": method,
             **scores(clean, image, high - low)} for method, image in images.items()]


def write_report(folder: Path, settings: PipelineSettings) -> None:
    """``recorruption_check.md``: per run, the BSN, SRDS (and its margin over the BSN) and distilled scores."""
    lines = ["# Poisson against Gaussian noise of the same variance (written by benchmarks.recorruption_check)", "",
             f"Budget: {describe(settings)}. CPU: {cpu_model()}. PSNR dB / SSIM / detail PSNR dB.", "",
             "| data | noise | seed | noisy | BSN | SRDS | SRDS - BSN (dB) | distilled |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.csv")):
        rows = {row["method"]: row for row in read_rows(path)}
        cells = [f"{r['psnr_db']} / {r['ssim']} / {r['detail_psnr_db']}" for r in rows.values()]
        margin = float(rows["diffusion + SRDS"]["psnr_db"]) - float(rows["BSN"]["psnr_db"])
        first = rows["noisy"]
        lines.append(f"| {first['data']} | {first['noise']} | {first['seed']} | {' | '.join(cells[:3])} | "
                     f"{margin:+.2f} | {cells[3]} |")
    (folder / "recorruption_check.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["knee", "ct"], choices=sorted(DATASETS))
    parser.add_argument("--peak", type=float, default=30.0)
    parser.add_argument("--steps", nargs=3, type=int, default=list(QUICK_STEPS), metavar=("BSN", "DIFFUSION", "NAFNET"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/recorruption_check"))
    args = parser.parse_args(argv)
    settings = with_steps(PRESETS["quick"], *args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    for data in args.data:
        if not DATASETS[data].available:
            print(f"{data}: skipped ({DATASETS[data].file} is absent)")
            continue
        clean = DATASETS[data].central_slices(args.slices)
        for seed in args.seeds:
            images = poisson_pair(clean, args.peak, seed)
            runs = [(noise, split, image) for (noise, image), splits in zip(images.items(), (("gaussian", "poisson"),
                                                                                         ("gaussian",)), strict=True)
                    for split in splits]
            for noise, split, noisy in runs:
                path = args.out / f"{data}_{noise.replace(' ', '_').replace(',', '')}_{split}_split_seed{seed}.csv"
                if path.exists():
                    continue
                write_rows(path, run(data, noise, split, noisy, clean, seed, settings), FIELDS)
                write_report(args.out, settings)
                print(f"done: {path.name}", flush=True)


if __name__ == "__main__":
    main()
