"""The blind-spot network alone against it combined with the noisy pixel (:mod:`DiffDenoiseLib.posterior`).

    python -m benchmarks.bsn_posterior [--data mni knee lidc t1] [--noise "gaussian 0.1" ...] [--seeds 0]
        [--preset quick] [--steps 300] [--slices 24] [--out benchmarks/results/bsn_posterior]

Per volume, noise and seed: two ``denoise(method="bsn")`` runs on the same seeded noisy volume, the BSN
combined with the noisy pixel and not (the same seed trains the same network), scored against the clean volume
(PSNR, SSIM, detail PSNR). Rician noise runs on the MR volumes only. Each finished case is kept as
``<case>.csv`` (an interrupted run started again with the same folder goes on where it stopped);
``bsn_posterior.md`` tables every finished case.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.presets import PRESETS

from .datasets import DATASETS, NOISES
from .scalar import noisy_case
from .volume_ablation import cpu_model, read_rows, scores, write_rows

FIELDS = ("data", "noise", "seed", "steps", "posterior", "psnr_db", "ssim", "detail_psnr_db", "seconds")
DEFAULT_NOISES = ("gaussian 0.1", "poisson 30", "correlated 0.1", "rician 0.05")


def run_case(data: str, noise: str, seed: int, preset: str, steps: int, slices: int) -> list[dict]:
    """The preset's BSN trained for ``steps`` steps, with and without the combination; their scores."""
    dataset = DATASETS[data]
    clean = dataset.central_slices(slices)
    noisy, data_range, _ = noisy_case(clean, *NOISES[noise], seed)
    settings = PRESETS[preset]
    bsn = replace(settings.bsn, training=replace(settings.bsn.training, steps=steps))
    rows = []
    for posterior in (False, True):
        result = denoise(noisy, method="bsn", preset=replace(settings, bsn=replace(bsn, posterior=posterior)),
                         seed=seed, spacing=dataset.spacing)
        rows.append({"data": data, "noise": noise, "seed": seed, "steps": steps, "posterior": posterior,
                     **scores(clean, result.denoised, data_range),
                     "seconds": f"{result.timings['total_s']:.0f}"})
    return rows


def write_report(folder: Path, preset: str) -> None:
    """``bsn_posterior.md``: per case, the BSN alone, combined, and the gain."""
    lines = ["# The blind-spot network with and without the noisy pixel (written by benchmarks.bsn_posterior)", "",
             f"The {preset} preset's BSN, its step count as given; PSNR dB / SSIM / detail PSNR dB against the clean "
             f"volume. CPU: {cpu_model()}.", "",
             "| data | noise | seed | steps | BSN alone | BSN + noisy pixel | gain dB | SSIM gain |",
             "|---|---|---|---|---|---|---|---|"]
    for path in sorted(folder.glob("*.csv")):
        alone, combined = sorted(read_rows(path), key=lambda row: row["posterior"] == "True")
        scores = [f"{r['psnr_db']} / {r['ssim']} / {r['detail_psnr_db']}" for r in (alone, combined)]
        lines.append(f"| {alone['data']} | {alone['noise']} | {alone['seed']} | {alone['steps']} | {scores[0]} | "
                     f"{scores[1]} | {float(combined['psnr_db']) - float(alone['psnr_db']):+.2f} | "
                     f"{float(combined['ssim']) - float(alone['ssim']):+.4f} |")
    (folder / "bsn_posterior.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["mni", "knee", "lidc", "t1"], choices=sorted(DATASETS))
    parser.add_argument("--noise", nargs="+", default=list(DEFAULT_NOISES), choices=sorted(NOISES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/bsn_posterior"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for data in args.data:
            for noise in args.noise:
                if noise.startswith("rician") and noise not in DATASETS[data].noises:
                    continue
                path = args.out / f"{data}_{noise.replace(' ', '_')}_seed{seed}_steps{args.steps}.csv"
                if not path.exists():
                    write_rows(path, run_case(data, noise, seed, args.preset, args.steps, args.slices), FIELDS)
                    print(path.read_text().splitlines()[-1], flush=True)
                write_report(args.out, args.preset)


if __name__ == "__main__":
    main()
