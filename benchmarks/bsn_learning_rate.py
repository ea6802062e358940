"""The blind-spot network's learning rate and training steps: the BSN stage, scored, per volume, rate and steps.

    python -m benchmarks.bsn_learning_rate [--data mni knee lidc] [--noise "gaussian 0.1"] [--rates 2e-3 5e-3]
        [--preset quick] [--steps 300] [--seed 0] [--slices 24] [--out benchmarks/results/bsn_learning_rate]

One ``denoise(method="bsn")`` run per volume and rate on the same seeded noisy volume (the preset's BSN, its
steps replaced by ``--steps``, through-plane context as ``auto`` chooses), scored against the clean volume
(PSNR, SSIM, detail PSNR). Each finished run is kept as ``<case>.csv`` (an interrupted run started again
with the same folder goes on where it stopped); ``bsn_learning_rate.md`` tables every finished run.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.presets import PRESETS
from DiffDenoiseLib.runtime.devices import cpu_model

from .datasets import DATASETS, NOISES
from .scalar import noisy_case
from .volume_ablation import scores, write_rows

FIELDS = ("data", "noise", "seed", "steps", "learning_rate", "psnr_db", "ssim", "detail_psnr_db", "train_seconds")


def run_case(data: str, noise: str, seed: int, preset: str, steps: int, rate: float, slices: int) -> dict:
    """The preset's BSN trained for ``steps`` steps at learning rate ``rate``; its scores."""
    dataset = DATASETS[data]
    clean = dataset.central_slices(slices)
    noisy, data_range, _ = noisy_case(clean, *NOISES[noise], seed)
    settings = PRESETS[preset]
    settings = replace(settings, bsn=replace(settings.bsn, training=replace(settings.bsn.training, steps=steps,
                                                                            learning_rate=rate)))
    result = denoise(noisy, method="bsn", preset=settings, seed=seed, spacing=dataset.spacing)
    return {"data": data, "noise": noise, "seed": seed, "steps": steps, "learning_rate": f"{rate:g}",
            **scores(clean, result.denoised, data_range),
            "train_seconds": f"{result.timings['train_bsn_s']:.0f}"}


def write_report(folder: Path, preset: str) -> None:
    """``bsn_learning_rate.md``: one row per finished run."""
    rows = [row for path in sorted(folder.glob("*.csv")) for row in csv.DictReader(path.open(newline=""))]
    lines = ["# Learning rate and training steps of the blind-spot network (written by benchmarks.bsn_learning_rate)",
             "",
             f"The {preset} preset's BSN stage as `denoise(method=\"bsn\")` ran it in the code of each run (the "
             "300-step rows: the network alone, before its noisy-pixel combination and Wiener blend), its step count "
             f"as given; PSNR dB / SSIM / detail PSNR dB against the clean volume. CPU: {cpu_model()}.", "",
             "| data | noise | seed | steps | learning rate | PSNR dB | SSIM | detail PSNR dB | training s |",
             "|---|---|---|---|---|---|---|---|---|",
             *(f"| {r['data']} | {r['noise']} | {r['seed']} | {r['steps']} | {r['learning_rate']} | {r['psnr_db']} | "
               f"{r['ssim']} | {r['detail_psnr_db']} | {r['train_seconds']} |" for r in rows)]
    (folder / "bsn_learning_rate.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["mni", "knee", "lidc"], choices=sorted(DATASETS))
    parser.add_argument("--noise", default="gaussian 0.1", choices=sorted(NOISES))
    parser.add_argument("--rates", nargs="+", type=float, default=[2e-3, 5e-3])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bsn_learning_rate"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for data in args.data:
        for rate in args.rates:
            path = args.out / f"{data}_{args.noise.replace(' ', '_')}_seed{args.seed}_steps{args.steps}_lr{rate:g}.csv"
            if not path.exists():
                write_rows(path, [run_case(data, args.noise, args.seed, args.preset, args.steps, rate, args.slices)],
                           FIELDS)
                print(path.read_text().splitlines()[-1], flush=True)
            write_report(args.out, args.preset)


if __name__ == "__main__":
    main()
