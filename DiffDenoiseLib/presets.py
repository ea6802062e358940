"""Named settings of the whole pipeline: what each stage trains, and for how long.

Budgets measured on 2 CPU cores for a 24x256x256 volume are in docs/usage.md ("Presets"). ``quick`` is for a
first look (whole pipeline about 10 minutes on a laptop CPU), ``standard`` for results (about an hour on
a CPU, minutes on a GPU), ``full`` is paper-scale and meant for a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .context import SliceContext
from .diffusion import NoiseSchedule
from .errors import InputError
from .models import NAFNetConfig, PUCAConfig
from .pipelines.bsn import BsnSettings, for_noise
from .pipelines.ddm2 import DDM2Settings
from .pipelines.diffdenoise import DiffusionSettings, DistillationSettings, SamplingSettings
from .runtime.training import TrainConfig


@dataclass
class PipelineSettings:
    """Settings of every stage of DiffDenoise; with ``blend_with_bsn`` the output of the last stage (SRDS or the
    distilled NAFNet) is blended with the BSN estimate, the weight fitted on the recorrupted copy as the
    Wiener blend's (:mod:`.wiener`), so the pipeline keeps what its first stage got right."""

    bsn: BsnSettings
    diffusion: DiffusionSettings
    sampling: SamplingSettings
    distillation: DistillationSettings
    blend_with_bsn: bool = True

    def with_context(self, context: SliceContext) -> PipelineSettings:
        """These settings with every network reading ``context``'s neighbouring slices (:mod:`.context`)."""
        half_width = context.half_width
        bsn = replace(self.bsn, network=replace(self.bsn.network, context_slices=half_width,
                                                blind_context=context.blind))
        return replace(self, bsn=bsn, diffusion=replace(self.diffusion, context_slices=half_width),
                       distillation=replace(self.distillation, context_slices=half_width))


def _nafnet(width: int, encoder: tuple[int, ...], middle: int, decoder: tuple[int, ...],
            self_ensemble: int = 1) -> NAFNetConfig:
    return NAFNetConfig(width=width, encoder_blocks=encoder, middle_blocks=middle, decoder_blocks=decoder,
                        self_ensemble=self_ensemble)


# The BSN and the distilled NAFNet average their output over the 8 flips and turns of the input, at 8x their
# inference cost: the BSN gained on every dev case measured (benchmarks.self_ensemble, docs/decisions.md
# "Self-ensemble"). The quick preset's BSN averages 4 (its two 8-way passes took a fifth of the whole run on an
# AVX2 CPU), and its diffusion and NAFNet stages train for fewer steps, which the blend with the BSN estimate
# absorbs: docs/decisions.md, "The quick preset's budget".
ENSEMBLE = 8
QUICK_BSN_ENSEMBLE = 4


PRESETS: dict[str, PipelineSettings] = {
    "quick": PipelineSettings(
        # learning rate and steps: benchmarks.bsn_learning_rate (5e-3 above 2e-3 on every volume measured; 900
        # steps above 600 on the knee and MNI). The LG-BPN trains 600, about the PUCA's time: docs/decisions.md,
        # "The quick preset's BSN steps"
        BsnSettings(PUCAConfig(width=32, encoder_blocks=(1, 1), middle_blocks=2, decoder_blocks=(1, 1),
                               self_ensemble=QUICK_BSN_ENSEMBLE),
                    TrainConfig(steps=900, batch_size=8, patch_size=64, learning_rate=5e-3),
                    lgbpn_step_share=2 / 3),
        DiffusionSettings(_nafnet(16, (1, 1, 1), 1, (1, 1, 1)),
                          TrainConfig(steps=600, batch_size=8, patch_size=64, learning_rate=1e-3)),
        SamplingSettings(steps=1, pairs=1),
        DistillationSettings(_nafnet(16, (1, 1, 1), 1, (1, 1, 1), ENSEMBLE),
                             TrainConfig(steps=400, batch_size=8, patch_size=64, learning_rate=1e-3)),
    ),
    "standard": PipelineSettings(
        BsnSettings(PUCAConfig(width=48, encoder_blocks=(1, 1), middle_blocks=2, decoder_blocks=(1, 1),
                               self_ensemble=ENSEMBLE),
                    TrainConfig(steps=3000, batch_size=8, patch_size=64, learning_rate=1e-3)),
        DiffusionSettings(_nafnet(32, (1, 1, 1), 1, (1, 1, 1)),
                          TrainConfig(steps=6000, batch_size=8, patch_size=64, learning_rate=1e-3)),
        SamplingSettings(steps=1, pairs=4),
        DistillationSettings(_nafnet(32, (1, 1, 1), 2, (1, 1, 1), ENSEMBLE),
                             TrainConfig(steps=2000, batch_size=8, patch_size=64, learning_rate=1e-3)),
    ),
    "full": PipelineSettings(
        BsnSettings(PUCAConfig(width=128, encoder_blocks=(3, 4), middle_blocks=4, decoder_blocks=(4, 3),
                               self_ensemble=ENSEMBLE),
                    TrainConfig(steps=50000, batch_size=8, patch_size=128, learning_rate=3e-4)),
        DiffusionSettings(_nafnet(64, (2, 2, 2), 2, (2, 2, 2)),
                          TrainConfig(steps=100000, batch_size=16, patch_size=128, learning_rate=2e-4),
                          NoiseSchedule("linear", 1000)),
        SamplingSettings(steps=50, pairs=4),
        DistillationSettings(_nafnet(32, (2, 2, 4, 8), 12, (2, 2, 2, 2), ENSEMBLE),
                             TrainConfig(steps=50000, batch_size=8, patch_size=256, learning_rate=1e-3,
                                         betas=(0.9, 0.9))),
    ),
}


def pipeline_settings(preset: str | PipelineSettings, noise_kind: str) -> PipelineSettings:
    """The settings of a preset name (or given settings) with the blind-spot stage adapted to the noise type."""
    if isinstance(preset, PipelineSettings):
        settings = preset
    elif preset in PRESETS:
        settings = PRESETS[preset]
    else:
        raise InputError(f"unknown preset '{preset}': use one of {', '.join(PRESETS)}")
    return replace(settings, bsn=for_noise(settings.bsn, noise_kind))


# DDM2 for 4D diffusion MRI (budgets for a 104x104 x 2 slices x 97 volumes series in the README).
DDM2_PRESETS: dict[str, DDM2Settings] = {
    "quick": DDM2Settings(
        _nafnet(16, (1, 1, 1), 1, (1, 1, 1)), TrainConfig(steps=1000, batch_size=8, patch_size=64),
        _nafnet(16, (1, 1, 1), 1, (1, 1, 1)), TrainConfig(steps=2000, batch_size=8, patch_size=64),
    ),
    "standard": DDM2Settings(
        _nafnet(32, (1, 1, 1), 1, (1, 1, 1)), TrainConfig(steps=3000, batch_size=8, patch_size=64),
        _nafnet(32, (1, 1, 1), 1, (1, 1, 1)), TrainConfig(steps=6000, batch_size=8, patch_size=64),
    ),
    # The paper's iteration counts (Stage I 1e4 at batch 32, Stage III 1e5): for a GPU.
    "full": DDM2Settings(
        _nafnet(32, (2, 2, 2), 2, (2, 2, 2)), TrainConfig(steps=10000, batch_size=32, patch_size=128,
                                                          learning_rate=1e-4, optimizer="adam"),
        _nafnet(64, (2, 2, 2), 2, (2, 2, 2)), TrainConfig(steps=100000, batch_size=16, patch_size=128,
                                                          learning_rate=1e-4, optimizer="adam"),
    ),
}


def ddm2_settings(preset: str | DDM2Settings) -> DDM2Settings:
    """The DDM2 settings of a preset name (or the given settings)."""
    if isinstance(preset, DDM2Settings):
        return preset
    if preset not in DDM2_PRESETS:
        raise InputError(f"unknown preset '{preset}': use one of {', '.join(DDM2_PRESETS)}")
    return DDM2_PRESETS[preset]
