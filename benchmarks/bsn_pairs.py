"""What the two-way BSN benchmarks share (``bsn_posterior``, ``rician_bias``, ``self_ensemble``,
``bsn_wiener``, ``bsn_wiener_depth``): per volume, noise and seed, the quick BSN run two ways on the same
seeded noisy volume (the same seed trains the same network); each finished case kept as ``<case>.csv``, so an
interrupted run started again with the same folder goes on where it stopped; and a markdown table of every
finished case with the gain of the second way over the first."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from DiffDenoiseLib.denoise import DenoiseResult
from DiffDenoiseLib.presets import PRESETS, PipelineSettings
from DiffDenoiseLib.runtime.devices import cpu_model

from .datasets import DATASETS, NOISES
from .scalar import noisy_case
from .volume_ablation import read_rows, scores, write_rows

SCORED = ("psnr_db", "ssim", "detail_psnr_db", "seconds")


@dataclass(frozen=True)
class Pair:
    """A two-way benchmark: ``field`` tells its two runs apart (``values``: first, second in the CSV, as
    text), ``labels`` head their table columns, ``shown`` is a field of the second run tabled beside it."""

    name: str
    title: str
    field: str
    values: tuple[str, str]
    labels: tuple[str, str]
    shown: str | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return ("data", "noise", "seed", "steps", self.field, *((self.shown,) if self.shown else ()), *SCORED)


@dataclass(frozen=True)
class Case:
    """One seeded noisy volume and the BSN settings both runs start from."""

    data: str
    noise: str
    seed: int
    steps: int
    clean: np.ndarray
    noisy: np.ndarray
    data_range: float
    settings: PipelineSettings

    def row(self, pair: Pair, value: object, result: DenoiseResult, shown: object = None) -> dict:
        """The CSV row of one run: the case, which way it ran, its scores against the clean volume."""
        return {"data": self.data, "noise": self.noise, "seed": self.seed, "steps": self.steps, pair.field: value,
                **({pair.shown: shown} if pair.shown else {}), **scores(self.clean, result.denoised, self.data_range),
                "seconds": f"{result.timings['total_s']:.0f}"}


def make_case(data: str, noise: str, seed: int, preset: str, steps: int, slices: int) -> Case:
    """``slices`` central slices of ``data`` with seeded ``noise``; the preset with its BSN at ``steps``."""
    clean = DATASETS[data].central_slices(slices)
    noisy, data_range, _ = noisy_case(clean, *NOISES[noise], seed)
    settings = PRESETS[preset]
    settings = replace(settings, bsn=replace(settings.bsn, training=replace(settings.bsn.training, steps=steps)))
    return Case(data, noise, seed, steps, clean, noisy, data_range, settings)


def write_report(folder: Path, pair: Pair, preset: str) -> None:
    """``<name>.md``: per finished case, both runs and the gain of the second over the first."""
    first, second = pair.labels
    shown = f" {pair.shown} |" if pair.shown else ""
    lines = [f"# {pair.title} (written by benchmarks.{pair.name})", "",
             f"The {preset} preset's BSN, its step count as given; PSNR dB / SSIM / detail PSNR dB against the clean "
             f"volume. CPU: {cpu_model()}.", "",
             f"| data | noise | seed | steps | {first} |{shown} {second} | gain dB | SSIM gain |",
             "|---|---|---|---|---|" + ("---|" if pair.shown else "") + "---|---|---|"]
    for path in sorted(folder.glob("*.csv")):
        one, two = sorted(read_rows(path), key=lambda row: row[pair.field] == pair.values[1])
        text = [f"{r['psnr_db']} / {r['ssim']} / {r['detail_psnr_db']}" for r in (one, two)]
        lines.append(f"| {one['data']} | {one['noise']} | {one['seed']} | {one['steps']} | {text[0]} |"
                     + (f" {two[pair.shown]} |" if pair.shown else "")
                     + f" {text[1]} | {float(two['psnr_db']) - float(one['psnr_db']):+.2f} | "
                     f"{float(two['ssim']) - float(one['ssim']):+.4f} |")
    (folder / f"{pair.name}.md").write_text("\n".join(lines) + "\n")


def main(pair: Pair, run_case: Callable[[Case], list[dict]], argv: list[str] | None, description: str,
         data: Sequence[str], noises: Sequence[str], noise_choices: Sequence[str]) -> None:
    """The command line of a two-way benchmark: every (seed, volume, noise) case not yet in ``--out``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--data", nargs="+", default=list(data), choices=sorted(data))
    parser.add_argument("--noise", nargs="+", default=list(noises), choices=sorted(noise_choices))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results") / pair.name)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for volume in args.data:
            for noise in args.noise:
                if noise.startswith("rician") and noise not in DATASETS[volume].noises:
                    continue  # Rician noise is magnitude MR noise
                path = args.out / f"{volume}_{noise.replace(' ', '_')}_seed{seed}_steps{args.steps}.csv"
                if not path.exists():
                    case = make_case(volume, noise, seed, args.preset, args.steps, args.slices)
                    write_rows(path, run_case(case), pair.fields)
                    print(path.read_text().splitlines()[-1], flush=True)
                write_report(args.out, pair, args.preset)
