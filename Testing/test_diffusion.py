"""Noise schedules, the deterministic DDIM sampler and SRDS (antithetic pairs, uncertainty)."""

import numpy as np
import pytest
import torch
from helpers import LossRecorder

from DiffDenoiseLib.diffusion import (
    PREDICTIONS,
    NoiseSchedule,
    ddim_sample,
    ddim_timesteps,
    prediction_target,
    split_prediction,
    srds_sample,
)
from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.models import NAFNet, NAFNetConfig
from DiffDenoiseLib.noise.model import NoiseModel
from DiffDenoiseLib.noise.normalisation import NoiseNormaliser
from DiffDenoiseLib.pipelines.diffdenoise import (
    DiffusionSettings,
    SamplingSettings,
    conditioned_model,
    diffusion_condition,
    diffusion_loss,
    sample_srds,
)
from DiffDenoiseLib.runtime.training import TrainConfig

SCHEDULE = NoiseSchedule(steps=100)
CPU = torch.device("cpu")


def _network(seed: int = 0) -> NAFNet:
    torch.manual_seed(seed)
    network = NAFNet(NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,), in_channels=2,
                                  residual="none", time_conditioned=True)).eval()
    for name, parameter in network.named_parameters():  # fresh NAFNet blocks are the identity: wake them up
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(parameter, std=0.5)
    return network


def _oracle(clean: torch.Tensor, schedule: NoiseSchedule, prediction: str = "epsilon"):
    """A perfect predictor (of noise, clean image or velocity) for one known clean image: DDIM must then land
    exactly on it."""
    abar = schedule.alphas_cumprod().float()

    def model(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = abar[t].view(-1, 1, 1, 1)
        return prediction_target(clean, (x_t - a.sqrt() * clean) / (1 - a).sqrt(), a, prediction)

    return model


@pytest.mark.parametrize("kind", ["linear", "cosine", "reverse_warmup"])
def test_schedules_lose_signal_monotonically(kind):
    schedule = NoiseSchedule(kind, steps=1000)
    abar = schedule.alphas_cumprod()
    assert abar.shape == (1000,) and (abar.diff() < 0).all() and abar[0] > 0.99 and abar[-1] < 0.05
    if kind == "reverse_warmup":
        assert torch.all(schedule.betas()[:300] == schedule.beta_start)
    with pytest.raises(ValueError, match="unknown noise schedule"):
        NoiseSchedule("square")


def test_ddim_timesteps_descend_from_the_start_to_zero():
    assert ddim_timesteps(SCHEDULE, 4) == [99, 66, 33, 0]
    assert ddim_timesteps(SCHEDULE, 3, start=10) == [10, 5, 0]
    assert ddim_timesteps(SCHEDULE, 50, start=3) == [3, 2, 1, 0]
    with pytest.raises(ValueError, match="outside the schedule"):
        ddim_timesteps(SCHEDULE, 4, start=100)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("steps", [1, 3, 7, 100])
def test_ddim_with_a_perfect_model_recovers_the_clean_image_for_any_step_count(steps, prediction):
    clean = torch.rand(1, 1, 8, 8) * 2 - 1
    start = torch.randn(1, 1, 8, 8)
    result = ddim_sample(_oracle(clean, SCHEDULE, prediction), start, SCHEDULE, steps, prediction=prediction)
    torch.testing.assert_close(result, clean, atol=1e-4, rtol=0)


@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_each_prediction_kind_gives_back_the_clean_image_and_noise_it_was_made_from(prediction):
    x0, noise = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    abar = torch.tensor([0.999, 0.5, 0.001]).view(-1, 1, 1, 1)
    x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * noise
    clean, eps = split_prediction(prediction_target(x0, noise, abar, prediction), x_t, abar, prediction)
    torch.testing.assert_close(clean, x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(eps, noise, atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="unknown prediction"):
        split_prediction(x0, x_t, abar, "score")


def test_ddim_is_deterministic_and_depends_only_on_the_start():
    condition = torch.rand(1, 1, 16, 16)
    model = conditioned_model(_network(), condition, CPU)
    start = torch.randn(1, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    first = ddim_sample(model, start, SCHEDULE, 5)
    torch.manual_seed(123)  # the global RNG must play no part (eta = 0)
    second = ddim_sample(model, start.clone(), SCHEDULE, 5)
    assert torch.equal(first, second)
    assert not torch.allclose(ddim_sample(model, -start, SCHEDULE, 5), first)


def test_srds_pair_is_the_average_of_the_two_trajectories_run_separately():
    condition = torch.rand(2, 1, 16, 16)
    model = conditioned_model(_network(), condition, CPU)
    eps = torch.randn(3, 2, 1, 16, 16, generator=torch.Generator().manual_seed(1))  # 3 pairs, 2 slices
    result = srds_sample(model, eps, SCHEDULE, 4)
    plus = torch.stack([ddim_sample(model, eps[k], SCHEDULE, 4) for k in range(3)])
    minus = torch.stack([ddim_sample(model, -eps[k], SCHEDULE, 4) for k in range(3)])
    torch.testing.assert_close(result.mean, ((plus + minus) / 2).mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.uncertainty, ((plus - minus).abs() / 2).mean(0), atol=1e-5, rtol=0)
    assert result.uncertainty.max() > 0


def test_without_antithetic_pairs_srds_is_the_plain_ddim_average_of_the_plus_trajectories():
    """The ablation setting: the same +eps starts, no -eps half, the spread of the draws as uncertainty."""
    condition = torch.rand(2, 1, 16, 16)
    model = conditioned_model(_network(), condition, CPU)
    eps = torch.randn(3, 2, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    result = srds_sample(model, eps, SCHEDULE, 4, antithetic=False)
    plus = torch.stack([ddim_sample(model, eps[k], SCHEDULE, 4) for k in range(3)])
    torch.testing.assert_close(result.mean, plus.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.uncertainty, (plus - plus.mean(0)).abs().mean(0), atol=1e-5, rtol=0)
    assert not torch.allclose(result.mean, srds_sample(model, eps, SCHEDULE, 4).mean, atol=1e-4)
    single = srds_sample(model, eps[:1], SCHEDULE, 4, antithetic=False)
    torch.testing.assert_close(single.mean, plus[0], atol=1e-5, rtol=0)
    assert single.uncertainty.abs().max() == 0


def test_uncertainty_is_zero_exactly_where_the_trajectories_agree():
    clean = torch.rand(1, 1, 8, 8)
    oracle = _oracle(clean, SCHEDULE)

    def half_known(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        prediction = oracle(x_t, t)
        prediction[..., 4:] = 0  # right half: no knowledge, the result follows the start noise
        return prediction

    eps = torch.randn(1, 1, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    result = srds_sample(half_known, eps, SCHEDULE, 5)
    assert result.uncertainty[..., :4].abs().max() < 1e-4
    assert result.uncertainty[..., 4:].min() > 1e-3
    torch.testing.assert_close(result.mean[..., :4], clean[..., :4], atol=1e-4, rtol=0)


def test_sampling_a_volume_does_not_depend_on_batching():
    condition = np.random.default_rng(0).random((3, 1, 16, 16), dtype=np.float32)
    network = _network()
    one, u_one = sample_srds(network, condition, SCHEDULE, SamplingSettings(steps=3, batch_slices=1), CPU, seed=4)
    three, u_three = sample_srds(network, condition, SCHEDULE, SamplingSettings(steps=3, batch_slices=3), CPU,
                                 seed=4)
    np.testing.assert_allclose(one, three, atol=1e-5)
    np.testing.assert_allclose(u_one, u_three, atol=1e-5)
    other_seed, _ = sample_srds(network, condition, SCHEDULE, SamplingSettings(steps=3), CPU, seed=5)
    assert not np.allclose(one, other_seed)


def test_recorrupted_pairs_have_independent_gaussian_noise():
    from DiffDenoiseLib.pipelines.diffdenoise import recorrupt

    rng = np.random.default_rng(0)
    clean = np.tile(np.linspace(0, 1, 64, dtype=np.float32), (64, 64, 1)).reshape(64, 1, 64, 64)
    noisy = clean + 0.1 * rng.standard_normal(clean.shape).astype(np.float32)
    first, second = recorrupt(noisy, NoiseModel.white(0.1), clean, alpha=0.5, seed=1)
    noise_first, noise_second = (first - clean).ravel(), (second - clean).ravel()
    assert abs(np.corrcoef(noise_first, noise_second)[0, 1]) < 0.01
    assert np.corrcoef(noise_first, (noisy - clean).ravel())[0, 1] > 0.8  # the condition still sees the scan
    np.testing.assert_allclose(noise_first.std(), 0.1 * np.sqrt(1.25), rtol=0.01)
    np.testing.assert_allclose(noise_second.std(), 0.1 * np.sqrt(5.0), rtol=0.01)


def test_recorruption_is_independent_of_noise_drawn_with_the_same_seed():
    # A benchmark draws its synthetic noise with default_rng(seed); if the recorruption reused that stream the
    # target y - z / alpha would be clean - noise (found by the knee benchmark: SRDS error anti-correlated).
    from DiffDenoiseLib.pipelines.diffdenoise import recorrupt

    clean = np.zeros((4, 1, 32, 32), dtype=np.float32)
    noise = 0.1 * np.random.default_rng(0).standard_normal(clean.shape).astype(np.float32)
    first, second = recorrupt(clean + noise, NoiseModel.white(0.1), clean, alpha=0.5, seed=0)
    assert abs(np.corrcoef(noise.ravel(), (second - clean).ravel())[0, 1] - 1 / np.sqrt(5)) < 0.05


@pytest.mark.parametrize("steps", [1, 3])
def test_diffusion_training_draws_only_the_timesteps_sampling_visits(steps):
    torch.manual_seed(0)
    batch = torch.randn(64, 3, 8, 8)
    visited = ddim_timesteps(SCHEDULE, steps)
    sampled, every = LossRecorder(torch.zeros(64, 1, 8, 8)), LossRecorder(torch.zeros(64, 1, 8, 8))
    diffusion_loss(SCHEDULE, "v", visited)(sampled, batch)
    diffusion_loss(SCHEDULE, "v")(every, batch)
    (_, sampled_steps), = sampled.seen
    (_, every_steps), = every.seen
    assert set(sampled_steps.tolist()) == set(visited)
    assert len(set(every_steps.tolist())) > 20  # the default: the whole schedule


def test_diffusion_settings_refuse_unknown_training_timesteps():
    with pytest.raises(InputError, match="sampled or all"):
        DiffusionSettings(NAFNetConfig(), TrainConfig(), timesteps="late")


def test_an_untrained_diffusion_network_samples_the_bsn_output_back():
    """The network starts at zero (it generates deviations from the BSN output): SRDS of an untrained one is the
    BSN output itself, so training moves the output away from it only where the targets ask for that."""
    settings = DiffusionSettings(NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)),
                                 TrainConfig(steps=1))
    network = NAFNet(settings.network_config).eval()
    rng = np.random.default_rng(0)
    signal = rng.random((2, 1, 16, 16), dtype=np.float32)
    noisy = (signal + 0.1 * rng.standard_normal(signal.shape)).astype(np.float32)
    normaliser = NoiseNormaliser(np.array([0.0, 1.0]), np.array([0.1, 0.1]))
    condition = diffusion_condition(settings.conditioning, noisy, signal, normaliser)
    denoised, _ = sample_srds(network, condition, SCHEDULE, SamplingSettings(steps=1), CPU, normaliser=normaliser,
                              signal=signal, prediction=settings.prediction)
    np.testing.assert_allclose(denoised, signal, atol=1e-6)
