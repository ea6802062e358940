import numpy as np
import pytest

from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.metrics import cnr, detail_psnr, psnr, snr, ssim


def test_psnr_matches_its_definition():
    reference = np.zeros((8, 8))
    reference[0, 0] = 1.0
    test = reference + 0.1
    assert psnr(reference, test) == pytest.approx(10 * np.log10(1 / 0.01))


def test_ssim_is_one_for_identical_volumes_and_lower_with_noise():
    rng = np.random.default_rng(0)
    volume = rng.random((3, 32, 32))
    assert ssim(volume, volume) == pytest.approx(1.0)
    assert ssim(volume, volume + 0.3 * rng.standard_normal(volume.shape)) < 0.9


def test_detail_psnr_penalises_blur_not_smooth_errors(knee_crop):
    from scipy.ndimage import gaussian_filter

    clean = knee_crop.astype(np.float64)
    blurred = gaussian_filter(clean, sigma=(0, 1.5, 1.5))
    # a smooth intensity error with the same mean squared error as the blur
    ramp = np.broadcast_to(np.linspace(-1, 1, clean.shape[-1]), clean.shape)
    shifted = clean + ramp * np.sqrt(np.mean((blurred - clean) ** 2) / np.mean(ramp ** 2))
    assert psnr(clean, blurred) == pytest.approx(psnr(clean, shifted), abs=0.01)
    assert detail_psnr(clean, shifted) > detail_psnr(clean, blurred) + 20
    with np.errstate(divide="ignore"):  # identical images: zero error, infinite PSNR
        assert detail_psnr(clean, clean) == np.inf


def test_snr_and_cnr_from_regions():
    image = np.zeros((10, 10))
    image[:5] = 10.0
    image[5:, :5] = 4.0
    image[5:, 5:] = np.tile([-1.0, 1.0], (5, 3))[:, :5]
    signal = np.zeros_like(image, bool)
    signal[:5] = True
    other = np.zeros_like(image, bool)
    other[5:, :5] = True
    background = np.zeros_like(image, bool)
    background[5:, 5:] = True
    sd = image[background].std(ddof=1)
    assert snr(image, signal, background) == pytest.approx(10.0 / sd)
    assert cnr(image, signal, other, background) == pytest.approx(6.0 / sd)


def test_mismatched_shapes_are_refused():
    with pytest.raises(InputError, match="shapes differ"):
        psnr(np.zeros((4, 4)), np.zeros((4, 5)))
