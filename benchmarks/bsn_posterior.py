"""The blind-spot network alone against it combined with the noisy pixel (:mod:`DiffDenoiseLib.posterior`).

    python -m benchmarks.bsn_posterior [--data mni knee lidc t1] [--noise "gaussian 0.1" ...] [--seeds 0]
        [--preset quick] [--steps 300] [--slices 24] [--out benchmarks/results/bsn_posterior]

Per volume, noise and seed: two ``denoise(method="bsn")`` runs on the same seeded noisy volume, the BSN
combined with the noisy pixel and not (the same seed trains the same network), scored against the clean volume
(PSNR, SSIM, detail PSNR). Rician noise runs on the MR volumes only. Resumable, and tabled in
``bsn_posterior.md`` (:mod:`.bsn_pairs`).
"""

from __future__ import annotations

from dataclasses import replace

from DiffDenoiseLib.denoise import denoise

from . import bsn_pairs
from .datasets import DATASETS, NOISES

PAIR = bsn_pairs.Pair("bsn_posterior", "The blind-spot network with and without the noisy pixel", "posterior",
                      ("False", "True"), ("BSN alone", "BSN + noisy pixel"))
DEFAULT_NOISES = ("gaussian 0.1", "poisson 30", "correlated 0.1", "rician 0.05")


def run_case(case: bsn_pairs.Case) -> list[dict]:
    """The BSN without and with the combination."""
    rows = []
    for posterior in (False, True):
        settings = replace(case.settings, bsn=replace(case.settings.bsn, posterior=posterior))
        result = denoise(case.noisy, method="bsn", preset=settings, seed=case.seed,
                         spacing=DATASETS[case.data].spacing)
        rows.append(case.row(PAIR, posterior, result))
    return rows


def main(argv: list[str] | None = None) -> None:
    bsn_pairs.main(PAIR, run_case, argv, __doc__.splitlines()[0], ("mni", "knee", "lidc", "t1"), DEFAULT_NOISES,
                   NOISES)


if __name__ == "__main__":
    main()
