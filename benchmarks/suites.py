"""What each ``python -m benchmarks run --suite NAME`` runs.

- ``quick`` (under 30 minutes on 2 CPU cores: one case per modality, five noise types, shortened training) and
  ``full`` (every dataset and noise with the standard preset: many hours on a CPU, meant for a GPU): the scalar
  cases with the supervised ceiling, figures, the DWI part and the cost part.
- ``grid-quick`` and ``grid-standard``: issue 27's grid. The four dev volumes (24 central slices; 256 x 256
  for the LIDC CT and the T1) and the head CT slice, each noise of its modality at the grid's level, our
  pipeline at the quick or standard preset, judged against the issue's targets for that preset
  (:func:`.report.target_table`), one case per noise seed; ``--ablations`` adds the ablation rows.

Every suite writes the same case files (:mod:`.scalar`) and the same combined CSV.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from DiffDenoiseLib.pipelines.ddm2 import DDM2Settings
from DiffDenoiseLib.presets import DDM2_PRESETS, PRESETS, PipelineSettings

from .datasets import DATASETS, GRID_NOISES


@dataclass(frozen=True)
class Suite:
    """What one ``python -m benchmarks run --suite NAME`` runs.

    Attributes:
        name: the suite's name on the command line.
        folder: its results folder under ``benchmarks/results`` (the default ``--out``).
        stem: the name of its combined page and CSV (``<stem>.md``, ``<stem>.csv``) and of its case folder
            (``<stem>_cases``).
        settings: our pipeline's settings in the scalar cases; the supervised ceiling gets its distillation stage.
        cases: (dataset, noise) pairs of the scalar part; noises are keys of ``datasets.NOISES`` or
            ``datasets.GRID_NOISES``.
        slices: central slices taken from each volume (None: all).
        seeds: the noise seeds run by default, one case each.
        targets: whose targets the combined page judges the cases by: issue 27's ``quick`` or ``standard``.
        ceiling: whether each case also trains the supervised ceiling (clean targets).
        ablations: whether each case also runs the ablations by default.
        page: whether the suite writes its section of docs/results.md (figures, tables, DWI and cost parts).
        dwi_settings, dwi_neighbours, dwi_max_b, mppca_radii: the DWI part (``ddm2_benchmark.run_benchmark``);
            None: the suite has no DWI part.
        cost_presets, cost_steps: presets whose stage speeds are timed, over this many training steps each;
            empty: the suite has no cost part.
        speed_sizes: the two slice sides (px) of the seconds-per-slice table.
        growth_preset, growth_base: preset and (slices, side) of the 1x point of the cost-growth curves.
    """

    name: str
    folder: str
    stem: str
    settings: PipelineSettings
    cases: tuple[tuple[str, str], ...]
    slices: int | None
    seeds: tuple[int, ...] = (0,)
    targets: str = "quick"
    ceiling: bool = True
    ablations: bool = False
    page: bool = True
    dwi_settings: str | DDM2Settings | None = None
    dwi_neighbours: int | None = None
    dwi_max_b: float | None = None
    mppca_radii: tuple[int, ...] = (2,)
    cost_presets: tuple[str, ...] = ()
    cost_steps: int = 10
    speed_sizes: tuple[int, int] = (256, 512)
    growth_preset: str = "quick"
    growth_base: tuple[int, int] = (4, 128)

    @property
    def parts(self) -> tuple[str, ...]:
        """The parts this suite has: always ``scalar``; ``dwi`` and ``cost`` where it defines them."""
        return ("scalar", *(("dwi",) if self.dwi_settings is not None else ()),
                *(("cost",) if self.cost_presets else ()))


def with_steps(settings: PipelineSettings, bsn: int, diffusion: int, distillation: int) -> PipelineSettings:
    """``settings`` with other training step counts for its three stages."""
    def stage(config, steps: int):  # a stage's settings with its training at ``steps``
        return replace(config, training=replace(config.training, steps=steps))

    return replace(settings, bsn=stage(settings.bsn, bsn), diffusion=stage(settings.diffusion, diffusion),
                   distillation=stage(settings.distillation, distillation))


def describe(settings: PipelineSettings) -> str:
    """Training steps and sampling of ``settings``, for the reports."""
    lgbpn = f" (LG-BPN {settings.bsn.lgbpn_steps()})" if settings.bsn.lgbpn_step_share != 1 else ""
    return (f"training steps BSN {settings.bsn.training.steps}{lgbpn}, diffusion {settings.diffusion.training.steps}, "
            f"NAFNet {settings.distillation.training.steps}; SRDS {settings.sampling.pairs} pair(s) x "
            f"{settings.sampling.steps} DDIM steps")


GRID_DATA = ("knee", "mni", "lidc", "t1", "ct")  # the dev volumes, then the one-slice head CT


def grid_cases(datas: tuple[str, ...] = GRID_DATA, noises: tuple[str, ...] = tuple(GRID_NOISES)) -> tuple:
    """(dataset, noise) pairs of issue 27's grid in its order, each noise only where its modality has it
    (Rician on magnitude MR only)."""
    return tuple((data, noise) for data in GRID_DATA if data in datas for noise in GRID_NOISES
                 if noise in noises and GRID_NOISES[noise] in DATASETS[data].noises)


def grid_suite(preset: str) -> Suite:
    """Issue 27's grid at ``preset`` (its results in ``benchmarks/results/issue27_<preset>``)."""
    return Suite(f"grid-{preset}", f"issue27_{preset}", f"diffdenoise_{preset}", PRESETS[preset], grid_cases(),
                 slices=24, seeds=(0, 1, 2), targets=preset, ceiling=False, page=False)


QUICK_STEPS = (300, 800, 300)  # BSN, diffusion, NAFNet (the quick preset: 900, 600, 400)
QUICK_DWI = replace(DDM2_PRESETS["quick"],
                    stage1_training=replace(DDM2_PRESETS["quick"].stage1_training, steps=400),
                    diffusion_training=replace(DDM2_PRESETS["quick"].diffusion_training, steps=800))

SUITES: dict[str, Suite] = {
    "quick": Suite(
        "quick", "suite_quick", "suite_quick", with_steps(PRESETS["quick"], *QUICK_STEPS),
        (("mni", "rician 0.05"), ("knee", "correlated 0.1"), ("ct", "poisson 30"), ("xray", "gaussian 0.05"),
         ("ultrasound", "gamma L=4")),
        slices=4, dwi_settings=QUICK_DWI, dwi_max_b=1000.0, mppca_radii=(2,),
        cost_presets=("quick", "standard"), cost_steps=10, speed_sizes=(256, 512), growth_preset="quick",
        growth_base=(4, 128)),
    "full": Suite(
        "full", "suite_full", "suite_full", PRESETS["standard"],
        tuple((data.name, noise) for data in DATASETS.values() for noise in data.noises),
        slices=24, targets="standard", dwi_settings="standard", dwi_max_b=None,
        mppca_radii=(2, 5), cost_presets=("quick", "standard", "full"), cost_steps=10, speed_sizes=(256, 512),
        growth_preset="standard", growth_base=(8, 128)),
    "grid-quick": grid_suite("quick"),
    "grid-standard": grid_suite("standard"),
}
