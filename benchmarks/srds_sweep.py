"""SRDS pairs and DDIM steps swept on one trained diffusion model: how much of the SRDS output is the
generated noise that the antithetic pair does not cancel (hypothesis 4 of the quality-gap notes).

    python -m benchmarks.srds_sweep [--data mni] [--noise "gaussian 0.1"] [--steps 300 800 300]
        [--prediction v] [--alpha 0.5] [--pairs 1 4 16] [--ddim 1 2 5 10] [--out benchmarks/results/srds_sweep]

One ``denoise(method="diffusion")`` run trains the BSN and the diffusion network on the seeded noisy volume
(quick networks at the given budget; through-plane context as ``auto`` chooses); its bundle is then sampled
again with every (pairs, DDIM steps) setting, and each output scored against the clean volume (PSNR, SSIM,
detail PSNR), beside the BSN output. ``--prediction`` is what the diffusion network is trained to output
(noise, clean slice or velocity), ``--alpha`` the recorruption strength. The network trains at every timestep
(``timesteps="all"``), not only those its own sampling visits as the presets do, so that every step count
sampled afterwards meets timesteps it was trained at. Results:
``DATA_NOISE_PREDICTION[_alphaA].csv`` and ``.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import csv
from dataclasses import replace
from pathlib import Path

from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.diffusion import PREDICTIONS
from DiffDenoiseLib.presets import PRESETS

from .datasets import DATASETS, NOISES
from .scalar import noisy_case
from .suites import QUICK_STEPS, describe, with_steps
from .volume_ablation import cpu_model, scores


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="mni", choices=sorted(DATASETS))
    parser.add_argument("--noise", default="gaussian 0.1", choices=sorted(NOISES))
    parser.add_argument("--steps", nargs=3, type=int, default=list(QUICK_STEPS), metavar=("BSN", "DIFFUSION", "NAFNET"))
    parser.add_argument("--prediction", default="v", choices=PREDICTIONS)
    parser.add_argument("--alpha", type=float, default=None, help="recorruption alpha (preset's by default)")
    parser.add_argument("--pairs", nargs="+", type=int, default=[1, 4, 16])
    parser.add_argument("--ddim", nargs="+", type=int, default=[1, 2, 5, 10])
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/srds_sweep"))
    args = parser.parse_args(argv)
    settings = with_steps(PRESETS["quick"], *args.steps)
    alpha = settings.diffusion.recorruption_alpha if args.alpha is None else args.alpha
    settings = replace(settings, diffusion=replace(settings.diffusion, prediction=args.prediction,
                                                   recorruption_alpha=alpha, timesteps="all"))
    dataset = DATASETS[args.data]
    clean = dataset.central_slices(args.slices)
    kind, level = NOISES[args.noise]
    noisy, data_range, _ = noisy_case(clean, kind, level, args.seed)
    trained = denoise(noisy, method="diffusion", preset=settings, seed=args.seed, spacing=dataset.spacing,
                      outputs=("bsn",))

    def score(setting: str, image) -> dict:
        return {"setting": setting, **scores(clean, image, data_range)}

    rows = [score("noisy", noisy), score("BSN", trained.extras["bsn"])]
    bundle = trained.bundle
    for pairs in args.pairs:
        for steps in args.ddim:
            record = bundle.record
            sampling = replace(record.diffusion.sampling, pairs=pairs, steps=steps)
            bundle = bundle.with_record(replace(record, diffusion=replace(record.diffusion, sampling=sampling)))
            rows.append(score(f"SRDS {pairs} pair(s) x {steps} DDIM steps", apply_bundle(bundle, noisy).denoised))
            print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"{args.data}_{args.noise.replace(' ', '_')}_{args.prediction}"
    name += "" if args.alpha is None else f"_alpha{args.alpha:g}"
    with open(args.out / f"{name}.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ("setting", "psnr_db", "ssim", "detail_psnr_db"))
        writer.writeheader()
        writer.writerows(rows)
    context = bundle.record.context
    lines = ["# SRDS pairs and DDIM steps on one trained model (written by benchmarks.srds_sweep)", "",
             f"{args.data}, {args.noise}, seed {args.seed}, central {args.slices} slices, diffusion network "
             f"predicts {args.prediction}, recorruption alpha {alpha:g}, context "
             f"{context.half_width}{' (blind)' if context.blind else ''}. Budget: {describe(settings)} "
             f"(the sampling settings are swept). CPU: {cpu_model()}.", "",
             "| output | PSNR dB | SSIM | detail PSNR dB |", "|---|---|---|---|",
             *(f"| {r['setting']} | {r['psnr_db']} | {r['ssim']} | {r['detail_psnr_db']} |" for r in rows)]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
