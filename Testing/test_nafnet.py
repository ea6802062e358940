"""NAFNet: any input size, residual denoiser, and the time-conditioned variant used for diffusion."""

import pytest
import torch

from DiffDenoiseLib.models import NAFNet, NAFNetConfig, build_network
from DiffDenoiseLib.models.blocks import DepthwiseConv2d


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


@pytest.mark.parametrize(("dilation", "channels_last", "bias"), [(2, True, True), (2, False, True), (9, False, False)])
def test_dilated_depthwise_gradients_are_pytorchs(dilation: int, channels_last: bool, bias: bool) -> None:
    """The CPU's own gradients of a dilated depthwise convolution (blocks.DepthwiseConv2d) equal PyTorch's, for
    the input, the kernel and the bias, in either memory layout."""
    torch.manual_seed(0)
    conv = DepthwiseConv2d(6, dilation=dilation)
    if not bias:
        conv.bias = None
    x = torch.randn(2, 6, 23, 20)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    output = conv(x)
    expected = torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=dilation, dilation=dilation, groups=6)
    torch.testing.assert_close(output, expected)
    upstream = torch.randn_like(output)
    wanted = [t for t in (x, conv.weight, conv.bias) if t is not None]
    ours = torch.autograd.grad(output, wanted, upstream)
    theirs = torch.autograd.grad(expected, wanted, upstream)
    assert output.grad_fn is not expected.grad_fn and type(output.grad_fn) is not type(expected.grad_fn)
    for mine, reference in zip(ours, theirs, strict=True):
        torch.testing.assert_close(mine, reference, rtol=1e-5, atol=1e-5)
