"""NAFNet: any input size, residual denoiser, and the time-conditioned variant used for diffusion."""

import pytest
import torch

from DiffDenoiseLib.models import NAFNet, NAFNetConfig, build_network


def test_denoiser_keeps_any_size_and_starts_near_the_identity():
    network = NAFNet(NAFNetConfig(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1))).eval()
    for shape in [(1, 1, 17, 33), (2, 1, 64, 48)]:
        image = torch.rand(shape)
        with torch.no_grad():
            output = network(image)
        assert output.shape == image.shape
    # zero-initialised block scales: a fresh denoiser changes its input only through the outer convolutions
    assert (output - image).abs().mean() < image.abs().mean()


def test_time_conditioned_network_uses_the_timestep():
    config = NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,), in_channels=2,
                          residual="none", time_conditioned=True)
    torch.manual_seed(0)
    network = build_network("nafnet", config.__dict__).eval()
    for name, parameter in network.named_parameters():
        if name.endswith(("beta", "gamma")):
            torch.nn.init.normal_(parameter)
    x = torch.rand(2, 2, 16, 16)
    with torch.no_grad():
        early, late = network(x, torch.tensor([1, 1])), network(x, torch.tensor([900, 900]))
    assert early.shape == (2, 1, 16, 16) and not torch.allclose(early, late)
    with pytest.raises(ValueError, match="time-conditioned"):
        network(x)
