"""How well the noise analysis tells noise of each slice's own from noise shared between slices.

    python -m benchmarks.slice_correlation [--data mni knee lidc t1] [--seeds 0 1 2] [--slices 24]
        [--out benchmarks/results/slice_correlation]

Per dev volume (central slices as the issue-27 grid crops them), noise and seed:
:func:`DiffDenoiseLib.noise.analysis.slice_correlation` of the noisy volume. The noises of a slice's own are the
grid's families plus a weaker Gaussian and an in-plane correlation of 2 px; the shared ones are Gaussian noise
filtered along z by 0.5 and 0.7 slice, white in-plane or correlated over 1 px. The verdict: every own-noise case
below :data:`DiffDenoiseLib.context.SLICE_CORRELATION_THRESHOLD` (the neighbours are read whole), every shared
one above it (their blind spot is masked). The volume as read (its own acquisition noise, no noise added) is
measured too: where that noise is shared between slices and strong enough, the added noise's label is not the
whole truth. Seconds per case; writes ``slice_correlation.csv`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from DiffDenoiseLib.context import SLICE_CORRELATION_THRESHOLD
from DiffDenoiseLib.noise.analysis import slice_correlation
from DiffDenoiseLib.noise.simulate import add_noise

from .datasets import DATASETS

OUT = Path(__file__).parent / "results" / "slice_correlation"
LEVEL = 0.1  # noise std relative to the robust range for the filtered Gaussian noises, as the grid's correlated 0.1
# name -> (add_noise kind, level, in-plane correlation px) for noise of each slice's own
OWN_NOISES: dict[str, tuple[str, float, float]] = {
    "gaussian 0.1": ("gaussian", 0.1, 1.0), "gaussian 0.05": ("gaussian", 0.05, 1.0),
    "rician 0.05": ("rician", 0.05, 1.0), "poisson 30": ("poisson", 30.0, 1.0),
    "correlated 0.1 (1 px)": ("correlated", 0.1, 1.0), "correlated 0.1 (2 px)": ("correlated", 0.1, 2.0),
}
# name -> (in-plane px, through-plane slices) of Gaussian noise shared between slices
SHARED_NOISES: dict[str, tuple[float, float]] = {
    "shared 0.5 slice": (0.0, 0.5), "shared 0.5 slice, 1 px in-plane": (1.0, 0.5),
    "shared 0.7 slice": (0.0, 0.7), "shared 0.7 slice, 1 px in-plane": (1.0, 0.7),
}
AS_READ = "none added (the volume as read)"


def noisy_volume(clean: np.ndarray, noise: str, seed: int) -> np.ndarray:
    """``clean`` with ``noise`` (:data:`AS_READ`, or a key of :data:`OWN_NOISES` or :data:`SHARED_NOISES`) of noise
    seed ``seed``."""
    if noise == AS_READ:
        return clean
    if noise in OWN_NOISES:
        kind, level, correlation = OWN_NOISES[noise]
        return add_noise(clean, kind, level, seed=seed, correlation_sigma=correlation)
    in_plane, through_plane = SHARED_NOISES[noise]
    return add_noise(clean, "correlated", LEVEL, seed=seed, correlation_sigma=in_plane,
                     through_plane_sigma=through_plane)


def measure(datas: list[str], seeds: list[int], slices: int) -> list[dict]:
    """One row per volume, noise and seed with the measured correlation and whether the decision is right (the
    volume as read has no label: None)."""
    rows = []
    for data in datas:
        clean = DATASETS[data].central_slices(slices)
        for noise in (AS_READ, *OWN_NOISES, *SHARED_NOISES):
            for seed in seeds[:1] if noise == AS_READ else seeds:
                value = slice_correlation(noisy_volume(clean, noise, seed))
                shared = noise in SHARED_NOISES
                right = None if noise == AS_READ else value is not None and (
                    value > SLICE_CORRELATION_THRESHOLD) == shared
                rows.append({"data": data, "noise": noise, "seed": seed, "shared": shared,
                             "correlation": f"{float('nan') if value is None else value:.3f}", "decision_right": right})
    return rows


def report(rows: list[dict], slices: int) -> str:
    """The table: per noise, each volume's range over the seeds, and the verdict."""
    datas = list(dict.fromkeys(row["data"] for row in rows))
    seeds = sorted({int(row["seed"]) for row in rows})
    lines = [f"`python -m benchmarks.slice_correlation`: noise correlation between adjacent slices as the noise "
             f"analysis measures it, central {slices} slices of each volume, noise seeds "
             f"{' '.join(map(str, seeds))} (min to max); the neighbours' blind spot is masked above "
             f"{SLICE_CORRELATION_THRESHOLD:g}.", "",
             f"| noise | shared between slices | {' | '.join(datas)} | decision right |",
             f"|---|---|{'---|' * len(datas)}---|"]
    for noise in dict.fromkeys(row["noise"] for row in rows):
        cells = []
        mine = [row for row in rows if row["noise"] == noise]
        for data in datas:
            values = [float(row["correlation"]) for row in mine if row["data"] == data]
            cells.append(f"{min(values):+.3f} to {max(values):+.3f}")
        if noise == AS_READ:
            lines.append(f"| {noise} | as acquired | {' | '.join(cells)} | - |")
            continue
        right = sum(row["decision_right"] for row in mine)
        lines.append(f"| {noise} | {'yes' if mine[0]['shared'] else 'no'} | {' | '.join(cells)} "
                     f"| {right} of {len(mine)} |")
    own = [float(row["correlation"]) for row in rows if not row["shared"] and row["noise"] != AS_READ]
    shared = [float(row["correlation"]) for row in rows if row["shared"]]
    lines += ["", f"Noise of each slice's own: at most {max(own):+.3f}; shared: at least {min(shared):+.3f}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=["mni", "knee", "lidc", "t1"], choices=sorted(DATASETS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    missing = [data for data in args.data if not DATASETS[data].available]
    if missing:
        parser.error(f"{', '.join(missing)} not in ../shared/data: leave them out with --data")
    rows = measure(args.data, args.seeds, args.slices)
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "slice_correlation.csv.part", "w", newline="") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (args.out / "slice_correlation.csv.part").replace(args.out / "slice_correlation.csv")
    (args.out / "slice_correlation.md").write_text(report(rows, args.slices))
    print((args.out / "slice_correlation.md").read_text())


if __name__ == "__main__":
    main()
