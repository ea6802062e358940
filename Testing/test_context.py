"""Through-plane context: stacks of neighbouring slices, the 3D blind spot, the choice of context, and its
way through training, bundles and ``apply``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from DiffDenoiseLib.bundle import load_bundle, save_bundle
from DiffDenoiseLib.context import (
    MAX_HALF_WIDTH,
    SLICE_CORRELATION_THRESHOLD,
    choose_context,
    context_indices,
    stack_context,
)
from DiffDenoiseLib.data import SAMPLE_KNEE
from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.errors import BundleError, InputError
from DiffDenoiseLib.io import read_volume
from DiffDenoiseLib.models import LGBPN, PUCA, LGBPNConfig, PUCAConfig
from DiffDenoiseLib.noise.analysis import slice_correlation
from DiffDenoiseLib.noise.simulate import add_noise


@given(count=st.integers(3, 40), half_width=st.integers(1, MAX_HALF_WIDTH), data=st.data())
def test_a_stack_never_holds_its_own_slice_twice_and_never_wraps(count, half_width, data):
    index = data.draw(st.integers(0, count - 1))
    row = context_indices(index, half_width, count)
    assert row[0] == index and index not in row[1:]  # a neighbour channel equal to the slice would leak its noise
    assert all(0 <= i < count for i in row)
    for distance in range(1, half_width + 1):  # where both neighbours exist they are the true ones
        if distance <= index < count - distance:
            assert row[2 * distance - 1:2 * distance + 1] == [index - distance, index + distance]


def test_stack_channels_are_the_slice_then_its_neighbours():
    slices = np.arange(5, dtype=np.float32)[:, None, None, None] * np.ones((1, 1, 2, 2), np.float32)
    stacks = stack_context(slices, 2)
    assert stacks.shape == (5, 5, 2, 2)
    assert stacks[2, :, 0, 0].tolist() == [2, 1, 3, 0, 4]
    assert stacks[0, :, 0, 0].tolist() == [0, 1, 1, 2, 2]  # mirrored at the first slice, no wrap to slice 4
    assert stack_context(slices, 0, [1, 3]).shape == (2, 1, 2, 2)
    with pytest.raises(ValueError):
        stack_context(slices[:2], 1)


def _randomised(network: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(0)
    for name, parameter in network.named_parameters():
        if name.endswith(("beta", "gamma", "scale")):  # zero at init: randomise so every block contributes
            parameter.data.normal_()
    return network.eval()


@pytest.mark.parametrize("architecture", ["puca", "lgbpn"])
@pytest.mark.parametrize("blind", [False, True])
@pytest.mark.parametrize("self_ensemble", [1, 8])
def test_3d_receptive_field(architecture, blind, self_ensemble):
    """The output never sees its own voxel; it sees the neighbours' voxel at the same position unless their
    blind spot is masked (noise shared between slices); the same with the flips and turns averaged."""
    if architecture == "puca":
        network = PUCA(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,),
                                               context_slices=2, blind_context=blind, self_ensemble=self_ensemble))
    else:
        network = LGBPN(LGBPNConfig(width=8, local_blocks=1, global_blocks=1, context_slices=2, blind_context=blind,
                                    self_ensemble=self_ensemble))
    network = _randomised(network)
    image = torch.randn(1, 5, 40, 36, requires_grad=True)
    network(image)[0, 0, 20, 21].backward()
    at_pixel = image.grad[0, :, 20, 21].abs()
    assert at_pixel[0] == 0
    if blind:
        assert torch.all(at_pixel == 0)
    else:
        assert torch.all(at_pixel[1:] > 0)
    assert image.grad[0, 0].abs().sum() > 0 and image.grad[0, 1:].abs().sum() > 0  # both are read


@pytest.fixture(scope="module")
def knee_volume() -> np.ndarray:
    """The embedded knee sample: 12 slices of 192 x 192."""
    return read_volume(SAMPLE_KNEE).array.astype(np.float32)


def test_slice_correlation_separates_independent_from_shared_noise(knee_volume):
    own = [slice_correlation(add_noise(knee_volume, kind, level, seed=1, correlation_sigma=in_plane))
           for kind, level, in_plane in (("gaussian", 0.1, 1.0), ("rician", 0.05, 1.0), ("correlated", 0.1, 2.0))]
    shared = [slice_correlation(add_noise(knee_volume, "correlated", 0.1, seed=2, correlation_sigma=in_plane,
                                          through_plane_sigma=through))
              for in_plane, through in ((0.0, 0.5), (1.0, 0.7))]
    assert max(map(abs, own)) < SLICE_CORRELATION_THRESHOLD < min(shared)
    assert 0.15 < shared[0] < 0.35 < shared[1] < 0.65  # a 0.5-slice Gaussian shares 0.25 of the noise, 0.7: 0.54
    assert slice_correlation(knee_volume[:3]) is None and slice_correlation(knee_volume[0]) is None
    assert slice_correlation(knee_volume[:, :24, :24]) is None  # under two 16 px blocks a side: not measurable


def test_slice_correlation_counts_the_noise_not_the_anatomy_of_thin_slices(shared_data):
    """On 0.67 mm slices the anatomy continues into the next slice. In-plane correlated noise of each slice's own
    measured 0.17 there by a residual within each slice, which keeps that anatomy and little of the noise (the
    neighbours were then masked, 2.8 dB lost); the second differences along z measure the noise."""
    path = shared_data / "mri" / "mr_brain_t1w_studyforrest_0p67mm_crop48.nii.gz"
    if not path.exists():
        pytest.skip(f"{path.name} is absent")
    volume = read_volume(path).array[12:36, 64:320, 9:265].astype(np.float32)  # the benchmarks' 24 x 256 x 256
    own = slice_correlation(add_noise(volume, "correlated", 0.1, seed=1))
    shared = add_noise(volume, "correlated", 0.1, seed=2, correlation_sigma=1.0, through_plane_sigma=0.5)
    assert own < SLICE_CORRELATION_THRESHOLD < slice_correlation(shared)


def test_choose_context():
    assert choose_context("auto", 1, None).half_width == 0
    assert choose_context("auto", 2, None).half_width == 0
    chosen = choose_context(2, 10, 0.01)
    assert (chosen.half_width, chosen.blind) == (2, False)
    assert choose_context(2, 10, 0.5).blind and choose_context(2, 10, None).blind
    assert "masked" in choose_context(1, 10, 0.5).reason
    for bad in (-1, MAX_HALF_WIDTH + 1, 1.5, True):
        with pytest.raises(InputError):
            choose_context(bad, 10, 0.0)
    with pytest.raises(InputError, match="at least 3 slices"):
        choose_context(1, 2, None)
    with pytest.raises(InputError, match="smaller context"):
        choose_context(3, 3, 0.0)


def test_denoise_reads_the_context_and_apply_uses_it(knee_crop, tiny_settings, tmp_path):
    noisy = add_noise(knee_crop, "gaussian", 0.1, seed=0)
    result = denoise(noisy, preset=tiny_settings, context=1)
    context = result.bundle.metadata["context"]
    assert context["half_width"] == 1 and not context["blind"]
    assert result.bundle.networks["bsn"].config.context_slices == 1
    assert result.bundle.networks["nafnet"].config.in_channels == 1 + 3  # BSN output, noisy stack
    assert result.bundle.networks["diffusion"].config.in_channels == 1 + 1 + 3  # x_t, BSN output, noisy stack
    assert result.bundle.metadata["bsn"]["wiener_depth"] == 4  # Wiener patches across all 4 slices
    save_bundle(tmp_path / "model.safetensors", result.bundle)
    bundle = load_bundle(tmp_path / "model.safetensors")
    applied = apply_bundle(bundle, noisy)
    np.testing.assert_allclose(applied.denoised, result.denoised, atol=1e-5)
    with pytest.raises(InputError, match="neighbouring slice"):
        apply_bundle(bundle, noisy[0])
    flat = denoise(noisy, preset=tiny_settings, context=0)
    assert flat.bundle.metadata["context"]["half_width"] == 0
    assert flat.bundle.networks["nafnet"].config.in_channels == 2
    assert flat.bundle.metadata["bsn"]["wiener_depth"] == 1


def test_2d_images_keep_the_2d_path(knee_crop, tiny_settings):
    result = denoise(knee_crop[0], preset=tiny_settings)
    assert result.bundle.metadata["context"]["half_width"] == 0
    with pytest.raises(InputError, match="at least 3 slices"):
        denoise(knee_crop[:2], preset=tiny_settings, context=1)


def test_a_bundle_whose_networks_disagree_with_its_context_is_refused(knee_crop, tiny_settings, tmp_path):
    result = denoise(add_noise(knee_crop, "gaussian", 0.1, seed=0), preset=tiny_settings, method="bsn", context=1)
    result.bundle.metadata["context"]["half_width"] = 2
    save_bundle(tmp_path / "model.safetensors", result.bundle)  # consistently hashed, but not consistent
    with pytest.raises(BundleError, match="neighbouring slices"):
        load_bundle(tmp_path / "model.safetensors")


def test_the_distilled_nafnet_corrects_the_bsn_output_and_a_bundle_must_say_so(knee_crop, tiny_settings, tmp_path):
    result = denoise(add_noise(knee_crop, "gaussian", 0.1, seed=0), preset=tiny_settings, context=1)
    assert result.bundle.metadata["distillation"] == {"from_bsn": True}
    result.bundle.metadata["distillation"]["from_bsn"] = False  # the NAFNet would get one channel too few
    save_bundle(tmp_path / "model.safetensors", result.bundle)
    with pytest.raises(BundleError, match="NAFNet reads"):
        load_bundle(tmp_path / "model.safetensors")


def test_choose_context_reads_the_slice_spacing():
    thin, thick, unknown = (choose_context("auto", 24, 0.0, ratio) for ratio in (1.0, 6.4, None))
    assert (thin.half_width, thick.half_width, unknown.half_width) == (2, 0, 0)
    assert "thicker" in thick.reason and "unknown" in unknown.reason
    assert choose_context("auto", 3, 0.0, 1.0).half_width == 2  # a 3-slice volume: both neighbours, mirrored
