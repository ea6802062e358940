"""Every method removes noise: on a real thin-slice volume with known noise, at a small budget, each output
clears margins that the noisy input and the best Gaussian blur (tuned against the clean volume) both fail.

The volume: the 12 central axial slices of the MNI T1 template (1 mm, its empty background included), Gaussian
noise of 0.1 of the range, seed 0; the quick networks at 300 / 800 / 300 training steps (a third to a half of
the quick preset's). Measured on an AMD EPYC (2 cores, AVX2): noisy 19.99 dB / SSIM 0.290; best blur 29.60 dB
(sigma 0.8 px), best-SSIM blur 0.805 (sigma 1.6 px); BSN 33.69 / 0.965; SRDS 33.73 / 0.952; distilled NAFNet
33.69 / 0.964 (the diffusion stage trained at the timesteps SRDS visits, commit 270481f). The margins were set
when the BSN scored 31.74 / 0.914 (each slice alone: 30.97 / 0.914), SRDS 31.54 / 0.865 and the distilled
NAFNet 31.13 / 0.837, before the self-ensembles and the Wiener and output blends. About 2 minutes on that CPU.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from benchmarks.datasets import DATASETS, SHARED
from benchmarks.scalar import noisy_case
from benchmarks.suites import with_steps
from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.metrics import psnr, ssim
from DiffDenoiseLib.presets import PRESETS

pytestmark = pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")

SETTINGS = with_steps(PRESETS["quick"], 300, 800, 300)


class Case:
    """The noisy volume, the scores of its best blurs, and one pipeline run with its stage outputs."""

    def __init__(self) -> None:
        self.clean = DATASETS["mni"].central_slices(12)
        self.noisy, self.data_range, _ = noisy_case(self.clean, "gaussian", 0.1, 0)
        blurs = [ndimage.gaussian_filter(self.noisy, sigma) for sigma in (0.6, 0.8, 1.0, 1.3, 1.6, 2.0)]
        self.blur_psnr = max(self.psnr(blur) for blur in blurs)
        self.blur_ssim = max(self.ssim(blur) for blur in blurs)
        self.result = denoise(self.noisy, preset=SETTINGS, seed=0, spacing=DATASETS["mni"].spacing,
                              outputs=("bsn", "srds"))

    def psnr(self, image: np.ndarray) -> float:
        return psnr(self.clean, image, self.data_range)

    def ssim(self, image: np.ndarray) -> float:
        return ssim(self.clean, image, self.data_range)

    def check(self, image: np.ndarray, gain_db: float, least_ssim: float) -> None:
        """``image`` clears both margins, and neither the noisy input nor the best blur clears them."""
        noisy = self.psnr(self.noisy)
        assert self.psnr(image) >= noisy + gain_db and self.ssim(image) >= least_ssim
        assert self.blur_psnr < noisy + gain_db and self.blur_ssim < least_ssim
        assert self.ssim(self.noisy) < least_ssim


@pytest.fixture(scope="module")
def case() -> Case:
    return Case()


def test_the_blind_spot_network_removes_noise(case):
    case.check(case.result.extras["bsn"], gain_db=11.0, least_ssim=0.85)


def test_srds_removes_noise(case):
    case.check(case.result.extras["srds"], gain_db=11.0, least_ssim=0.83)


def test_the_distilled_network_and_its_bundle_remove_noise(case):
    case.check(case.result.denoised, gain_db=10.5, least_ssim=0.815)
    applied = apply_bundle(case.result.bundle, case.noisy).denoised
    assert case.psnr(applied) == pytest.approx(case.psnr(case.result.denoised), abs=0.05)


@pytest.mark.xfail(strict=True, reason="issue 27 target not met yet: SRDS's correction of the BSN estimate adds "
                                       "a little noise (SSIM: SRDS 0.952, distilled 0.964, BSN 0.965)")
def test_the_later_stages_keep_the_blind_spot_networks_ssim(case):
    bsn = case.ssim(case.result.extras["bsn"])
    assert case.ssim(case.result.extras["srds"]) >= bsn and case.ssim(case.result.denoised) >= bsn


def test_the_volume_path_beats_each_slice_alone(case):
    alone = denoise(case.noisy, method="bsn", preset=SETTINGS, seed=0, spacing=DATASETS["mni"].spacing, context=0)
    assert alone.bundle.metadata["context"]["half_width"] == 0
    assert case.result.bundle.metadata["context"]["half_width"] > 0
    assert case.psnr(case.result.extras["bsn"]) >= case.psnr(alone.denoised) + 0.4
