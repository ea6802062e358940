"""The PUCA blind-spot network: the blind spot itself, shapes, and its reshaping helpers."""

import pytest
import torch

from DiffDenoiseLib.models import BlindSpotDenoiser, PUCAConfig
from DiffDenoiseLib.models.bsn import patch_shuffle, patch_unshuffle, pd_down, pd_up


def _random_network(config: PUCAConfig) -> BlindSpotDenoiser:
    torch.manual_seed(0)
    network = BlindSpotDenoiser(config).eval()
    for name, parameter in network.named_parameters():
        if name.endswith(("beta", "gamma")):  # zero at init: randomise so every block really contributes
            parameter.data.normal_()
    return network


@pytest.mark.parametrize("pd", [1, 2])
@pytest.mark.parametrize("pixel", [(0, 0), (5, 7), (18, 14), (36, 28), (35, 1), (1, 28)])
def test_output_pixel_ignores_its_own_input_pixel(pd, pixel):
    network = _random_network(PUCAConfig(width=8, encoder_blocks=(1, 1), middle_blocks=1,
                                         decoder_blocks=(1, 1), pd_train=pd, pd_infer=pd))
    image = torch.randn(1, 1, 37, 29)
    changed = image.clone()
    changed[0, 0, pixel[0], pixel[1]] += 10.0
    with torch.no_grad():
        difference = (network(changed) - network(image)).abs()[0, 0]
    assert difference[pixel] == 0.0
    assert difference.sum() > 0  # the change does reach the neighbours: the test can fail


def test_a_network_without_mask_would_fail_the_blind_spot_check():
    network = _random_network(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)))
    network.net.head.mask.fill_(1.0)
    image = torch.randn(1, 1, 24, 24)
    changed = image.clone()
    changed[0, 0, 10, 10] += 10.0
    with torch.no_grad():
        assert (network(changed) - network(image))[0, 0, 10, 10].abs() > 0


@pytest.mark.parametrize("shape", [(16, 16), (17, 45), (64, 33)])
def test_any_size_comes_back_the_same_size(shape):
    network = BlindSpotDenoiser(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)))
    network.train()
    assert network(torch.randn(2, 1, *shape)).shape == (2, 1, *shape)


def test_reshaping_helpers_are_inverse():
    x = torch.randn(2, 3, 16, 24)
    assert torch.equal(patch_shuffle(patch_unshuffle(x)), x)
    assert torch.equal(pd_up(pd_down(x, 2), 2), x)
    assert patch_unshuffle(x).shape == (2, 12, 8, 12)


def test_r3_refinement_is_deterministic():
    network = _random_network(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,),
                                         pd_train=4, pd_infer=2, r3_passes=3))
    image = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(network(image), network(image))
