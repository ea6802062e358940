"""The blind-spot network in one pass against averaged over the 8 flips and turns of its input.

    python -m benchmarks.self_ensemble [--data mni knee lidc t1 ct] [--noise "gaussian 0.1" ...] [--seeds 0]
        [--preset quick] [--steps 300] [--slices 24] [--out benchmarks/results/self_ensemble]

Per volume, noise and seed: one ``denoise(method="bsn")`` run on the seeded noisy volume with one pass at
inference, then its bundle applied with the same network averaged over the 8 symmetries of the square
(:func:`DiffDenoiseLib.models.blocks.dihedral_average`), both combined with the noisy pixel and scored against
the clean volume (PSNR, SSIM, detail PSNR); the seconds column of the second row is the apply time alone.
Resumable, and tabled in ``self_ensemble.md`` (:mod:`.bsn_pairs`).
"""

from __future__ import annotations

from dataclasses import replace

from DiffDenoiseLib.denoise import apply_bundle, denoise

from . import bsn_pairs
from .datasets import DATASETS, NOISES

PAIR = bsn_pairs.Pair("self_ensemble", "The blind-spot network in one pass and averaged over 8 flips and turns",
                      "self_ensemble", ("1", "8"), ("one pass", "8 flips and turns"))
DEFAULT_NOISES = ("gaussian 0.1", "poisson 30", "correlated 0.1")


def run_case(case: bsn_pairs.Case) -> list[dict]:
    """One trained BSN, scored without and with the self-ensemble."""
    network = replace(case.settings.bsn.network, self_ensemble=1)
    settings = replace(case.settings, bsn=replace(case.settings.bsn, network=network))
    trained = denoise(case.noisy, method="bsn", preset=settings, seed=case.seed, spacing=DATASETS[case.data].spacing)
    rows = [case.row(PAIR, 1, trained)]
    trained.bundle.networks["bsn"].config.self_ensemble = 8  # the same weights, averaged over the symmetries
    rows.append(case.row(PAIR, 8, apply_bundle(trained.bundle, case.noisy)))
    return rows


def main(argv: list[str] | None = None) -> None:
    bsn_pairs.main(PAIR, run_case, argv, __doc__.splitlines()[0], ("mni", "knee", "lidc", "t1", "ct"),
                   DEFAULT_NOISES, NOISES)


if __name__ == "__main__":
    main()
