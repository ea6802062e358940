"""Each slice alone against each slice with its neighbours: the 2D-against-volume ablation of DiffDenoise.

    python -m benchmarks.volume_ablation [--data mni knee lidc t1] [--noise "gaussian 0.1"] [--contexts 0 1 2]
        [--preset quick] [--steps 300 800 300] [--seeds 0] [--slices 24] [--out benchmarks/results/volume_ablation]

The same noisy volume (central ``--slices`` slices; 256 x 256 in-plane for the CT and T1 volumes) goes through
one ``denoise`` run per through-plane context (``--contexts``: neighbouring slices per side, 0 = each slice
alone), same preset, budget and seed; the BSN, SRDS and distilled outputs are scored (PSNR, SSIM, detail
PSNR against the clean volume's robust range). Every finished run is kept as ``<case>.csv`` in the output
folder, so an interrupted benchmark started again with the same folder goes on where it stopped; the table
of every finished run is rewritten to ``volume_ablation.md`` after each one. A quality ablation: the CSVs keep
each run's seconds, but timings belong to ``benchmarks.cost`` (on an idle machine).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import torch

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.metrics import detail_psnr, psnr, ssim
from DiffDenoiseLib.presets import PRESETS, PipelineSettings
from DiffDenoiseLib.runtime.devices import cpu_model, describe_device

from .datasets import DATASETS, NOISES
from .scalar import noisy_case
from .suites import QUICK_STEPS, describe, with_steps

FIELDS = ("data", "noise", "seed", "context", "chosen", "method", "psnr_db", "ssim", "detail_psnr_db",
          "total_seconds")
STAGES = (("BSN", "bsn"), ("diffusion + SRDS", "srds"), ("DiffDenoise (distilled NAFNet)", None))


def machine() -> str:
    """Where a run's networks ran, for its timings: the GPU when there is one (``device auto`` trains on it) and
    the CPU with its threads, which runs the rest."""
    cpu = describe_device(torch.device("cpu"))
    return f"{describe_device(torch.device('cuda'))}; {cpu}" if torch.cuda.is_available() else cpu


def case_name(data: str, noise: str, seed: int, context: str) -> str:
    return f"{data}_{noise.replace(' ', '_').replace('=', '')}_seed{seed}_context{context}"


def run_case(data: str, noise: str, seed: int, context: str, settings: PipelineSettings, slices: int) -> list[dict]:
    """One ``denoise`` run at ``context`` on the seeded noisy volume; a row per stage."""
    dataset = DATASETS[data]
    clean = dataset.central_slices(slices)
    kind, level = NOISES[noise]
    noisy, data_range, _ = noisy_case(clean, kind, level, seed)
    result = denoise(noisy, preset=settings, seed=seed, context=context if context == "auto" else int(context),
                     spacing=dataset.spacing, outputs=("bsn", "srds"))
    chosen = result.bundle.record.context
    rows = []
    for method, extra in (("noisy", "noisy"), *STAGES):
        image = noisy if extra == "noisy" else result.denoised if extra is None else result.extras[extra]
        rows.append({"data": data, "noise": noise, "seed": seed, "context": context,
                     "chosen": f"{chosen.half_width}{' blind' if chosen.blind else ''}", "method": method,
                     **scores(clean, image, data_range), "total_seconds": f"{result.timings['total_s']:.0f}"})
    return rows


def scores(clean: np.ndarray, image: np.ndarray, data_range: float) -> dict[str, str]:
    """PSNR, SSIM and detail PSNR of ``image`` against ``clean``, formatted as the benchmark CSVs keep them."""
    return {"psnr_db": f"{psnr(clean, image, data_range):.3f}", "ssim": f"{ssim(clean, image, data_range):.4f}",
            "detail_psnr_db": f"{detail_psnr(clean, image, data_range):.3f}"}


def write_rows(path: Path, rows: list[dict], fields: tuple[str, ...] = FIELDS) -> None:
    """Rows as CSV, written under a temporary name and then moved (a half-written case never counts as done)."""
    partial = path.with_suffix(".csv.part")
    with open(partial, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fields)
        writer.writeheader()
        writer.writerows(rows)
    partial.replace(path)


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_report(folder: Path, settings: PipelineSettings, slices: int) -> None:
    """``volume_ablation.md``: every finished run of the folder, one line per case and context."""
    rows = [row for path in sorted(folder.glob("*.csv")) for row in read_rows(path)]
    lines = ["# Each slice alone against each slice with its neighbours (written by benchmarks.volume_ablation)",
             "", f"Budget: {describe(settings)}. CPU: {cpu_model()}. Central {slices} slices.",
             "PSNR dB / SSIM / detail PSNR dB; context = neighbouring slices per side (chosen: what the run "
             "used; blind = their blind spot masked).", "",
             "| data | noise | seed | context (chosen) | noisy | BSN | SRDS | distilled |",
             "|---|---|---|---|---|---|---|---|"]
    runs: dict[tuple, dict[str, dict]] = {}
    for row in rows:
        key = (row["data"], row["noise"], row["seed"], row["context"], row["chosen"])
        runs.setdefault(key, {})[row["method"]] = row
    for (data, noise, seed, context, chosen), methods in runs.items():
        cells = [f"{m['psnr_db']} / {m['ssim']} / {m['detail_psnr_db']}" for m in
                 (methods[name] for name in ("noisy", *(stage for stage, _ in STAGES)))]
        lines.append(f"| {data} | {noise} | {seed} | {context} ({chosen}) | {' | '.join(cells)} |")
    (folder / "volume_ablation.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["mni", "knee", "lidc", "t1"], choices=sorted(DATASETS))
    parser.add_argument("--noise", nargs="+", default=["gaussian 0.1"], choices=sorted(NOISES))
    parser.add_argument("--contexts", nargs="+", default=["0", "auto"])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--steps", nargs=3, type=int, default=list(QUICK_STEPS), metavar=("BSN", "DIFFUSION", "NAFNET"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/volume_ablation"))
    args = parser.parse_args(argv)
    settings = with_steps(PRESETS[args.preset], *args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    for data in args.data:
        if not DATASETS[data].available:
            print(f"{data}: skipped ({DATASETS[data].file} is absent)")
            continue
        for noise in args.noise:
            for seed in args.seeds:
                for context in args.contexts:
                    path = args.out / f"{case_name(data, noise, seed, context)}.csv"
                    if path.exists():
                        continue
                    write_rows(path, run_case(data, noise, seed, context, settings, args.slices))
                    write_report(args.out, settings, args.slices)
                    print(f"done: {path.name}", flush=True)
    write_report(args.out, settings, args.slices)

if __name__ == "__main__":
    main()
