"""The two benchmark suites: ``quick`` (under 30 minutes on 2 CPU cores: one case per modality, five noise
types, shortened training) and ``full`` (every dataset and noise with the standard preset: many hours on a CPU,
meant for a GPU)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from DiffDenoiseLib.pipelines.ddm2 import DDM2Settings
from DiffDenoiseLib.presets import DDM2_PRESETS, PRESETS, PipelineSettings

from .datasets import DATASETS


@dataclass(frozen=True)
class Suite:
    """What one ``python -m benchmarks run --suite NAME`` runs.

    Attributes:
        settings: our pipeline's settings in the scalar cases; the supervised ceiling gets its distillation stage.
        cases: (dataset, noise) pairs of the scalar part.
        slices: central slices taken from each volume (None: all).
        dwi_settings, dwi_neighbours, dwi_max_b, mppca_radii: the DWI part (``ddm2_benchmark.run_benchmark``).
        cost_presets, cost_steps: presets whose stage speeds are timed, over this many training steps each.
        speed_sizes: the two slice sides (px) of the seconds-per-slice table.
        growth_preset, growth_base: preset and (slices, side) of the 1x point of the cost-growth curves.
    """

    name: str
    settings: PipelineSettings
    cases: tuple[tuple[str, str], ...]
    slices: int | None
    dwi_settings: str | DDM2Settings
    dwi_neighbours: int
    dwi_max_b: float | None
    mppca_radii: tuple[int, ...]
    cost_presets: tuple[str, ...]
    cost_steps: int
    speed_sizes: tuple[int, int]
    growth_preset: str
    growth_base: tuple[int, int]


def with_steps(settings: PipelineSettings, bsn: int, diffusion: int, distillation: int) -> PipelineSettings:
    """``settings`` with other training step counts for its three stages."""
    def stage(config, steps: int):  # a stage's settings with its training at ``steps``
        return replace(config, training=replace(config.training, steps=steps))

    return replace(settings, bsn=stage(settings.bsn, bsn), diffusion=stage(settings.diffusion, diffusion),
                   distillation=stage(settings.distillation, distillation))


def describe(settings: PipelineSettings) -> str:
    """Training steps and sampling of ``settings``, for the reports."""
    return (f"training steps BSN {settings.bsn.training.steps}, diffusion {settings.diffusion.training.steps}, "
            f"NAFNet {settings.distillation.training.steps}; SRDS {settings.sampling.pairs} pair(s) x "
            f"{settings.sampling.steps} DDIM steps")


QUICK_STEPS = (300, 800, 300)  # BSN, diffusion, NAFNet (the quick preset: 600, 2000, 600)
QUICK_DWI = replace(DDM2_PRESETS["quick"],
                    stage1_training=replace(DDM2_PRESETS["quick"].stage1_training, steps=400),
                    diffusion_training=replace(DDM2_PRESETS["quick"].diffusion_training, steps=800))

SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick", with_steps(PRESETS["quick"], *QUICK_STEPS),
        (("mni", "rician 0.05"), ("knee", "correlated 0.1"), ("ct", "poisson 30"), ("xray", "gaussian 0.05"),
         ("ultrasound", "gamma L=4")),
        slices=4, dwi_settings=QUICK_DWI, dwi_neighbours=2, dwi_max_b=1000.0, mppca_radii=(2,),
        cost_presets=("quick", "standard"), cost_steps=10, speed_sizes=(256, 512), growth_preset="quick",
        growth_base=(4, 128)),
    "full": Suite(
        "full", PRESETS["standard"],
        tuple((data.name, noise) for data in DATASETS.values() for noise in data.noises),
        slices=24, dwi_settings="standard", dwi_neighbours=6, dwi_max_b=None, mppca_radii=(2, 5),
        cost_presets=("quick", "standard", "full"), cost_steps=10, speed_sizes=(256, 512),
        growth_preset="standard", growth_base=(8, 128)),
}
