"""The Wiener blend of the blind-spot estimate with 2D patches against patches across neighbouring slices.

    python -m benchmarks.bsn_wiener_depth [--data mni lidc t1] [--noise "gaussian 0.1" ...] [--seeds 0]
        [--preset quick] [--steps 300] [--slices 24] [--out benchmarks/results/bsn_wiener_depth]

Per volume, noise and seed: two ``denoise(method="bsn")`` runs on the seeded noisy volume, the Wiener patches
one slice deep and then the preset's depth across slices (:mod:`DiffDenoiseLib.wiener`), each with its own
blend weight fitted on the recorrupted copy. Both runs share a checkpoint folder, so the second reuses the
first's network: the two rows differ in the filter alone. Only volumes whose neighbouring slices the networks
read (not the knee's 4 mm slices, which take the 2D path) differ. Resumable, and tabled in
``bsn_wiener_depth.md`` (:mod:`.bsn_pairs`).
"""

from __future__ import annotations

import tempfile
from dataclasses import replace

from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.presets import PRESETS

from . import bsn_pairs
from .datasets import DATASETS, NOISES

PRESET_DEPTH = str(PRESETS["quick"].bsn.wiener_depth)
PAIR = bsn_pairs.Pair("bsn_wiener_depth", "The Wiener blend with 2D patches and with patches across slices",
                      "wiener_depth", ("1", PRESET_DEPTH), ("2D patches", f"{PRESET_DEPTH} slices deep"),
                      shown="weight")
DEFAULT_NOISES = ("gaussian 0.1", "poisson 30", "correlated 0.1", "rician 0.05")


def run_case(case: bsn_pairs.Case) -> list[dict]:
    """One trained BSN, its estimate blended with the Wiener filtering of each patch depth."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bsn_wiener_depth_") as checkpoints:
        for depth in PAIR.values:
            settings = replace(case.settings, bsn=replace(case.settings.bsn, wiener_depth=int(depth)))
            result = denoise(case.noisy, method="bsn", preset=settings, seed=case.seed,
                             spacing=DATASETS[case.data].spacing, checkpoint_dir=checkpoints)
            stage = result.bundle.record.bsn
            rows.append(case.row(PAIR, stage.wiener_depth, result, f"{stage.wiener_weight:.3f}"))
    return rows


def main(argv: list[str] | None = None) -> None:
    bsn_pairs.main(PAIR, run_case, argv, __doc__.splitlines()[0], ("mni", "lidc", "t1"), DEFAULT_NOISES, NOISES)


if __name__ == "__main__":
    main()
