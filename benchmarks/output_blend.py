"""How well the output blend's weight is fitted: the weight DiffDenoise fits with SURE on the image itself,
beside the weight fitted on the recorrupted copy against its twin and the best weight against the clean volume.

    python -m benchmarks.output_blend [--data knee mni lidc t1] [--noise gaussian rician poisson correlated]
        [--seeds 0] [--preset quick] [--steps 900 600 400] [--slices 24] [--out benchmarks/results/output_blend]

Per case (the issue-27 grid's seeded noisy volume, its noise level): one ``denoise`` run of the whole
pipeline. Where it blends the distilled NAFNet's output with the BSN estimate (``w * NAFNet + (1 - w) *
BSN``), the stages' outputs are kept, and the final output (the Rician bias taken out as the pipeline does) is
scored against the clean volume at five weights:

- ``BSN`` (0) and ``NAFNet`` (1);
- ``SURE``: fitted on the image (:mod:`DiffDenoiseLib.sure`), the pipeline's weight for i.i.d. noise;
- ``copy and twin``: least squares of the NAFNet's and the BSN stage's outputs on the recorrupted copy
  against its twin, the pipeline's weight for correlated noise;
- ``best``: the highest PSNR of the final output, weights 0 to 1 in steps of 0.01.

Each finished case is ``<case>.csv`` (an interrupted run started again with the same folder goes on where it
stopped); ``output_blend.md`` tables every finished case.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from unittest import mock

import numpy as np

from DiffDenoiseLib.denoise import denoise, from_slices
from DiffDenoiseLib.metrics import psnr
from DiffDenoiseLib.pipelines import methods
from DiffDenoiseLib.presets import PRESETS, PipelineSettings
from DiffDenoiseLib.runtime.devices import cpu_model
from DiffDenoiseLib.wiener import blend

from .datasets import DATASETS, GRID_NOISES, noise_of
from .scalar import case_name, noisy_case
from .suites import describe, grid_cases, with_steps
from .volume_ablation import read_rows, scores, write_rows

FIELDS = ("data", "noise", "seed", "weight_kind", "weight", "psnr_db", "ssim", "detail_psnr_db")
KINDS = ("BSN", "NAFNet", "SURE", "copy and twin", "best")


def run_case(data: str, noise: str, seed: int, settings: PipelineSettings, slices: int) -> list[dict]:
    """One pipeline run on the seeded noisy volume; a row per weight of :data:`KINDS`."""
    dataset = DATASETS[data]
    clean = dataset.central_slices(slices)
    noisy, data_range, _ = noisy_case(clean, *noise_of(noise), seed)
    kept: dict = {}
    fit_output_blend = methods.blend_with_bsn

    def keep_stages(run, settings, estimates, final_stage):
        nafnet = run.output.copy()
        fit_output_blend(run, settings, estimates, final_stage)
        if run.output_blend_weight is None:
            raise SystemExit("these settings do not blend the output with the BSN estimate: nothing to measure")
        kept.update(run=run, estimates=estimates, nafnet=nafnet, final_stage=final_stage)

    with mock.patch.object(methods, "blend_with_bsn", keep_stages):
        denoise(noisy, preset=settings, seed=seed, spacing=dataset.spacing)
    run, estimates = kept["run"], kept["estimates"]
    fitted = "copy and twin" if run.noise_kind == "correlated" else "SURE"
    if estimates.recorrupted is None:
        raise SystemExit("these settings make no recorrupted copy: nothing to compare the fit with")
    model, bsn, nafnet = run.noise_model, run.stages["bsn"], kept["nafnet"]

    def final(weight: float) -> np.ndarray:
        estimate = blend(nafnet, bsn, weight)
        return run.scaling.denormalise(from_slices(model.unbiased(estimate, bsn), clean.shape, 0))

    run.output = nafnet  # what the pipeline's fit saw
    weights = {"BSN": 0.0, "NAFNet": 1.0, "SURE": methods.sure_output_weight(run, kept["final_stage"]),
               "copy and twin": methods.copy_output_weight(estimates, kept["final_stage"]),
               "best": max(np.linspace(0, 1, 101), key=lambda weight: psnr(clean, final(weight), data_range))}
    if abs(weights[fitted] - run.output_blend_weight) > 1e-6:  # the stages kept are not the ones the pipeline fitted on
        raise RuntimeError(f"refitted {fitted} weight {weights[fitted]:.6f} differs from the run's "
                           f"{run.output_blend_weight:.6f}")
    return [{"data": data, "noise": noise, "seed": seed, "weight_kind": kind, "weight": f"{weight:.2f}",
             **scores(clean, final(weight), data_range)} for kind, weight in weights.items()]


def write_report(folder: Path, settings: PipelineSettings) -> None:
    """``output_blend.md``: per finished case, the final output at each weight."""
    rows = [row for path in sorted(folder.glob("*.csv")) for row in read_rows(path)]
    lines = ["# The output blend's weight: fitted against best (written by benchmarks.output_blend)", "",
             f"Budget: {describe(settings)}. CPU: {cpu_model()}. Per weight: w / PSNR dB / SSIM of the final output "
             "(w * NAFNet + (1 - w) * BSN estimate, the Rician bias taken out) against the clean volume.", "",
             f"| data | noise | seed | {' | '.join(KINDS)} |", "|---|---|---|" + "---|" * len(KINDS)]
    cases: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        cases.setdefault((row["data"], row["noise"], row["seed"]), {})[row["weight_kind"]] = row
    for (data, noise, seed), kinds in cases.items():
        cells = [f"{kinds[k]['weight']} / {kinds[k]['psnr_db']} / {kinds[k]['ssim']}" for k in KINDS]
        lines.append(f"| {data} | {noise} | {seed} | {' | '.join(cells)} |")
    (folder / "output_blend.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["knee", "mni", "lidc", "t1"], choices=sorted(DATASETS))
    parser.add_argument("--noise", nargs="+", default=list(GRID_NOISES), choices=sorted(GRID_NOISES))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--steps", nargs=3, type=int, metavar=("BSN", "DIFFUSION", "NAFNET"),
                        help="training steps of the three stages (default: the preset's)")
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/output_blend"))
    args = parser.parse_args(argv)
    settings = PRESETS[args.preset] if args.steps is None else with_steps(PRESETS[args.preset], *args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    for data, noise in grid_cases(tuple(args.data), tuple(args.noise)):
        if not DATASETS[data].available:
            print(f"{data}: skipped ({DATASETS[data].file} is absent)")
            continue
        for seed in args.seeds:
            path = args.out / f"{case_name(data, noise, seed)}.csv"
            if not path.exists():
                write_rows(path, run_case(data, noise, seed, settings, args.slices), FIELDS)
                write_report(args.out, settings)
                print(f"done: {path.name}", flush=True)
    write_report(args.out, settings)


if __name__ == "__main__":
    main()
