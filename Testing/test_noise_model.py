"""The recorruption noise model: fitted level function and colouring match the noise they were fitted to."""

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from DiffDenoiseLib.io import read_volume
from DiffDenoiseLib.noise.model import NoiseModel, exact_floor, fit_noise_model, with_family
from DiffDenoiseLib.noise.simulate import correlated_gaussian
from DiffDenoiseLib.pipelines.diffdenoise import recorrupt

SHAPE = (8, 160, 160)


def smooth_phantom() -> np.ndarray:
    """(8, 160, 160) float32 image: flat discs of several intensities on a dark ramp; the discs hold flat
    32-px blocks, the scale at which correlated noise is analysed."""
    yy, xx = np.mgrid[:160, :160]
    image = np.broadcast_to(0.05 + 0.1 * xx / 160, SHAPE).copy()
    for index, (cy, cx, value) in enumerate([(40, 40, 0.3), (40, 118, 0.5), (118, 40, 0.7), (118, 118, 0.9)]):
        image[:, (yy - cy) ** 2 + (xx - cx) ** 2 < 32**2] = value + 0.01 * index
    return image.astype(np.float32)


def lag1(noise: np.ndarray) -> float:
    return float(np.corrcoef(noise[..., 1:].ravel(), noise[..., :-1].ravel())[0, 1])


def test_level_function_follows_signal_dependent_noise():
    clean = smooth_phantom()
    noisy = (np.random.default_rng(0).poisson(clean * 40) / 40).astype(np.float32)  # variance = signal / 40
    model = fit_noise_model(noisy, clean, correlated=False)
    for signal in (0.3, 0.5, 0.7, 0.9):
        assert model.std(np.array(signal)) == pytest.approx(np.sqrt(signal / 40), rel=0.12)
    assert model.kernel.shape == (1, 1)  # i.i.d.: white


def test_correlated_model_draws_noise_with_the_same_correlation_and_level():
    clean = smooth_phantom()
    noise = 0.1 * correlated_gaussian(SHAPE, 1.0, np.random.default_rng(1))
    model = fit_noise_model(clean + noise.astype(np.float32), clean, correlated=True)
    drawn = model.draw(clean, np.random.default_rng(2))
    assert drawn.std() == pytest.approx(0.1, rel=0.08)
    assert lag1(drawn) == pytest.approx(lag1(noise), abs=0.05)
    assert model.describe()["neighbour_correlation"] == pytest.approx(lag1(noise), abs=0.05)


def test_correlated_level_holds_on_a_finely_textured_volume_whose_estimate_misses_texture(shared_data):
    """The 0.67 mm T1 has no background in its crop, and a BSN estimate misses its finest texture. The mean power
    of the estimate's residual in the flattest 30 % of the blocks measured 1.5 times the noise's with a
    2-px blur as the estimate (1.32 times with the quick preset's LG-BPN, which cost the Wiener blend 0.66 dB
    of its BSN estimate); the flattest 5 % of the blocks measure it."""
    path = shared_data / "mri" / "mr_brain_t1w_studyforrest_0p67mm_crop48.nii.gz"
    if not path.exists():
        pytest.skip(f"{path.name} is absent")
    clean = read_volume(path).array[12:36, 64:320, 9:265].astype(np.float32)  # the benchmarks' 24 x 256 x 256
    clean /= np.percentile(clean, 99.5)
    noise = (0.1 * correlated_gaussian(clean.shape, 1.0, np.random.default_rng(0))).astype(np.float32)
    estimate = ndimage.gaussian_filter(clean, (0, 2, 2))
    model = fit_noise_model(clean + noise, estimate, correlated=True)
    assert model.variances[0] == pytest.approx(noise.var(), rel=0.05)
    assert model.describe()["neighbour_correlation"] == pytest.approx(lag1(noise), abs=0.05)


def test_correlated_level_leaves_out_a_masked_background():
    """A background set exactly to 0 (a mask; a magnitude image clipped at 0) is the flattest region there is and
    holds no noise."""
    clean = smooth_phantom()
    noise = (0.1 * correlated_gaussian(SHAPE, 1.0, np.random.default_rng(5))).astype(np.float32)
    noisy, estimate = np.maximum(clean + noise, 0), clean.copy()
    noisy[:, :64], estimate[:, :64] = 0.0, 0.0
    model = fit_noise_model(noisy, estimate, correlated=True)
    assert model.variances[0] == pytest.approx(noise[:, 64:].var(), rel=0.1)


def test_recorruption_with_the_fitted_model_decorrelates_correlated_noise():
    # White z of the right level leaves the pair's noise correlated at short lags; the fitted colouring does not.
    clean = smooth_phantom()
    noise = (0.1 * correlated_gaussian(SHAPE, 1.0, np.random.default_rng(3))).astype(np.float32)
    noisy = (clean + noise)[:, None]
    signal = clean[:, None]

    def pair_correlation(model: NoiseModel) -> float:
        first, second = recorrupt(noisy, model, signal, alpha=0.5, seed=4)
        a, b = first - signal, second - signal
        return float(np.corrcoef(a[..., 1:].ravel(), b[..., :-1].ravel())[0, 1])

    assert abs(pair_correlation(fit_noise_model(noisy[:, 0], clean, correlated=True))) < 0.05
    assert pair_correlation(NoiseModel.white(0.1)) > 0.2


def test_noise_free_regions_get_no_recorruption_noise():
    clean = smooth_phantom()
    model = fit_noise_model(clean, clean, correlated=True)
    drawn = model.draw(clean, np.random.default_rng(0))
    assert np.all(np.isfinite(drawn)) and np.abs(drawn).max() == 0


def _phantom_noise(clean: np.ndarray, family: str, rng: np.random.Generator) -> np.ndarray:
    if family == "poisson":
        return (rng.poisson(clean * 40) / 40).astype(np.float32)  # variance = signal / 40
    if family == "gamma":
        return (clean * rng.gamma(4.0, 0.25, clean.shape)).astype(np.float32)  # speckle, 4 looks
    if family == "rician":
        return np.hypot(clean + 0.05 * rng.standard_normal(clean.shape),
                        0.05 * rng.standard_normal(clean.shape)).astype(np.float32)
    return (clean + 0.05 * rng.standard_normal(clean.shape)).astype(np.float32)


@pytest.mark.parametrize("family, expected", [("gaussian", "gaussian"), ("rician", "gaussian"),
                                              ("poisson", "poisson"), ("gamma", "gamma")])
def test_the_family_is_read_from_the_shape_of_the_level_function(family, expected):
    clean = smooth_phantom()
    noisy = _phantom_noise(clean, family, np.random.default_rng(0))
    model = with_family(fit_noise_model(noisy, clean, correlated=False), "auto", zero=0.0)
    assert model.family == expected
    if expected == "poisson":
        assert model.gain == pytest.approx(1 / 40, rel=0.15) and abs(model.offset) < 0.05
    if expected == "gamma":
        assert model.gain == pytest.approx(1 / 4, rel=0.15)


def test_poisson_counts_start_at_an_exact_floor_and_a_noise_free_background_stays_noise_free():
    """An empty background has exactly zero counts: the zero count lies there, whatever the intercept of the
    level function says, and the split adds no noise to it."""
    clean = smooth_phantom()
    clean[:, :, :48] = 0.0  # an empty background: zero counts, no noise
    noisy = _phantom_noise(clean, "poisson", np.random.default_rng(0))
    floor = exact_floor(noisy)
    assert floor == 0.0
    assert exact_floor(_phantom_noise(smooth_phantom(), "gaussian", np.random.default_rng(0))) is None
    measured = fit_noise_model(noisy, clean, correlated=False)
    # the level function's lowest bin measured too much: its intercept would put the zero count elsewhere
    measured = replace(measured, variances=measured.variances + 0.002 * (measured.variances > 0))
    for floor_given, exact in ((None, False), (floor, True)):
        model = with_family(measured, "poisson", zero=0.0, floor=floor_given)
        first, second = model.split(noisy, clean, 0.5, np.random.default_rng(1))
        background = noisy == 0
        assert (model.offset == 0.0) is exact
        assert bool(np.all(first[background] == 0) and np.all(second[background] == 0)) is exact


def test_the_levels_at_an_exact_floor_do_not_choose_the_family():
    """The level function the quick preset measured on the studyforrest T1 with Poisson noise (peak 30, noise
    seed 2; normalised units, the zero count at 0). Its lowest level is the zero-count background, almost
    noise-free: compared there too, gamma won, and its split shared noise between the diffusion stage's copy
    and target (SRDS 5.8 dB below the BSN)."""
    intensities = np.array([-0.00099, 0.05354, 0.17754, 0.30101, 0.38410, 0.49144, 0.57182, 0.68665])
    std = np.array([0.00055, 0.04370, 0.07558, 0.09473, 0.10647, 0.11593, 0.12634, 0.13723])
    model = with_family(NoiseModel(intensities, std**2, np.ones((1, 1))), "auto", zero=0.0, floor=0.0)
    assert model.family == "poisson"
    assert model.gain == pytest.approx(0.028, rel=0.05) and model.offset == 0.0


@pytest.mark.parametrize("family", ["poisson", "gamma"])
def test_the_family_split_gives_independent_halves_where_gaussian_recorruption_does_not(family):
    """Both splits give halves of the right variance that are uncorrelated; only the exact split makes them
    independent: the Gaussian split of skewed noise leaves the third-order cross moment E[a b^2] (a, b the
    halves' noises), which is what a network trained on the pair can learn from."""
    rng = np.random.default_rng(1)
    clean = np.full((8, 256, 256), 0.3, dtype=np.float32)
    noisy = _phantom_noise(clean, family, rng)
    variance = float(np.var(noisy - clean))
    skewness = float(np.mean((noisy - clean) ** 3.0) / variance**1.5)
    gaussian_moment = skewness / (5 * np.sqrt(1.25))  # E[n^3] / (std(a) var(b)) for a = n + z/2, b = n - 2z
    exact = with_family(NoiseModel(np.array([0.3]), np.array([variance]), np.ones((1, 1))), family, zero=0.0)
    gaussian = NoiseModel(np.array([0.3]), np.array([variance]), np.ones((1, 1)))
    for model in (exact, gaussian):
        first, second = model.split(noisy, clean, 0.5, np.random.default_rng(2))
        a, b = (first - clean).ravel().astype(np.float64), (second - clean).ravel().astype(np.float64)
        assert abs(np.corrcoef(a, b)[0, 1]) < 0.02
        assert np.var(a) == pytest.approx(1.25 * variance, rel=0.05)
        assert np.var(b) == pytest.approx(5.0 * variance, rel=0.05)
        assert abs(a.mean()) < 0.01 and abs(b.mean()) < 0.02  # both copies are unbiased
        # normalised third-order cross moment: 0 for independent zero-mean halves
        moment = np.mean(a * b * b) / (np.std(a) * np.var(b))
        if model is exact:
            assert abs(moment) < 0.3 * gaussian_moment
        else:
            assert moment == pytest.approx(gaussian_moment, rel=0.3)


@pytest.mark.parametrize("gain_error", [0.997, 1.0, 1.003, 1.01])
def test_thinning_exact_counts_with_a_slightly_misfitted_gain_keeps_the_halves_independent(gain_error):
    """Counts of 0 to 8 (the knee's dark tissue at Poisson peak 30), split with a gain fitted up to 1 % off,
    as the noise model fits it from the image: no whole count may stay in both halves (a floor of k / 1.003
    keeps k - 1 + 0.997 in both: their errors correlated 0.86 there)."""
    rng = np.random.default_rng(3)
    gain = 1 / 30
    mean_counts = rng.uniform(0.5, 8.0, size=(4, 128, 128))
    clean = (gain * mean_counts).astype(np.float32)
    noisy = (gain * rng.poisson(mean_counts)).astype(np.float32)
    model = NoiseModel(np.array([0.1]), np.array([gain * 0.1]), np.ones((1, 1)), "poisson", gain * gain_error, 0.0)
    first, second = model.split(noisy, clean, 0.5, np.random.default_rng(4))
    a, b, n = ((half - clean).astype(np.float64) for half in (first, second, noisy))
    assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.02
    assert np.var(a) / np.var(n) == pytest.approx(1.25, rel=0.03)
    assert np.var(b) / np.var(n) == pytest.approx(5.0, rel=0.03)
