"""The blind-spot estimate alone against it blended with its empirical Wiener filtering.

    python -m benchmarks.bsn_wiener [--data mni knee lidc t1 ct] [--noise "gaussian 0.1" ...] [--seeds 0]
        [--preset quick] [--steps 300] [--slices 24] [--out benchmarks/results/bsn_wiener]

Per volume, noise and seed: one ``denoise(method="bsn")`` run on the seeded noisy volume (the BSN output
combined with the noisy pixel, then blended with its Wiener filtering, the weight fitted on a recorrupted
copy: :mod:`DiffDenoiseLib.wiener`), and its bundle applied again without the weight (the combination with
the noisy pixel alone, same network and noise model), both scored against the clean volume (PSNR, SSIM,
detail PSNR); the fitted weight is tabled beside the blend, and the seconds column of the first row is the
apply time alone. Resumable, and tabled in ``bsn_wiener.md`` (:mod:`.bsn_pairs`).
"""

from __future__ import annotations

from dataclasses import replace

from DiffDenoiseLib.denoise import apply_bundle, denoise

from . import bsn_pairs
from .datasets import DATASETS, NOISES

PAIR = bsn_pairs.Pair("bsn_wiener", "The blind-spot estimate alone and blended with its Wiener filtering",
                      "wiener", ("False", "True"), ("noisy pixel only", "blended with Wiener"), shown="weight")
DEFAULT_NOISES = ("gaussian 0.1", "poisson 30", "correlated 0.1", "rician 0.05")


def run_case(case: bsn_pairs.Case) -> list[dict]:
    """One trained BSN, scored with the blend and, applied again without its weight, without it."""
    trained = denoise(case.noisy, method="bsn", preset=case.settings, seed=case.seed,
                      spacing=DATASETS[case.data].spacing)
    record = trained.bundle.record
    blended = case.row(PAIR, True, trained, f"{record.bsn.wiener_weight:.3f}")
    # the same network and noise fit, without the blend
    plain = trained.bundle.with_record(replace(record, bsn=replace(record.bsn, wiener_weight=None)))
    return [case.row(PAIR, False, apply_bundle(plain, case.noisy), ""), blended]


def main(argv: list[str] | None = None) -> None:
    bsn_pairs.main(PAIR, run_case, argv, __doc__.splitlines()[0], ("mni", "knee", "lidc", "t1", "ct"),
                   DEFAULT_NOISES, NOISES)


if __name__ == "__main__":
    main()
