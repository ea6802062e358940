"""Rician noise with and without its bias taken out (:mod:`DiffDenoiseLib.noise.rician`).

    python -m benchmarks.rician_bias [--data mni knee t1] [--noise "rician 0.05"] [--seeds 0]
        [--preset quick] [--steps 300] [--slices 24] [--out benchmarks/results/rician_bias]

Per MR volume, noise and seed: two ``denoise(method="bsn")`` runs on the same seeded noisy volume (the same
seed trains the same network): ``noise="gaussian"`` (the noisy mean the BSN learns, as before the correction)
and ``noise="auto"`` (the family read from the noise level function, the bias taken out when it is Rician).
Each row records the family the run used, so a missed detection shows. Resumable, and tabled in
``rician_bias.md`` (:mod:`.bsn_pairs`).
"""

from __future__ import annotations

from DiffDenoiseLib.denoise import denoise

from . import bsn_pairs
from .datasets import DATASETS, NOISES

PAIR = bsn_pairs.Pair("rician_bias", "Rician noise with and without its bias taken out", "requested",
                      ("gaussian", "auto"), ("as learned (gaussian)", "auto"), shown="family")
MR_VOLUMES = ("mni", "knee", "t1")


def run_case(case: bsn_pairs.Case) -> list[dict]:
    """The BSN's output as learned, and with the family detected (the bias taken out when Rician)."""
    rows = []
    for requested in ("gaussian", "auto"):
        result = denoise(case.noisy, method="bsn", noise=requested, preset=case.settings, seed=case.seed,
                         spacing=DATASETS[case.data].spacing)
        rows.append(case.row(PAIR, requested, result, result.bundle.record.noise.model["family"]))
    return rows


def main(argv: list[str] | None = None) -> None:
    bsn_pairs.main(PAIR, run_case, argv, __doc__.splitlines()[0], MR_VOLUMES, ("rician 0.05",),
                   [noise for noise in NOISES if noise.startswith("rician")])


if __name__ == "__main__":
    main()
