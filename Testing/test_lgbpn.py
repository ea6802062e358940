"""LG-BPN: the radius-4 diamond around each pixel is blind, through both branches, PD and padding."""

import pytest
import torch
from helpers import output_change

from DiffDenoiseLib.models import LGBPN, LGBPNConfig


def _random_network(pd: int) -> LGBPN:
    torch.manual_seed(0)
    network = LGBPN(LGBPNConfig(width=8, local_blocks=1, global_blocks=1, pd_train=pd, pd_infer=pd)).eval()
    for name, parameter in network.named_parameters():  # zero-initialised residual scales would hide paths
        if name.endswith(("beta", "gamma", "scale")):
            torch.nn.init.normal_(parameter)
    return network


@pytest.mark.parametrize("pd", [1, 2])
def test_output_never_sees_the_blind_diamond(pd):
    network = _random_network(pd)
    image = torch.randn(1, 1, 37, 41)  # odd sizes: PD and lattice padding are exercised
    radius = network.config.radius * pd
    with torch.no_grad():
        base = network(image)
        for y, x in [(18, 20), (0, 0), (2, 40), (36, 3), (30, 33)]:
            changed_outside = False
            for dy in range(-radius - pd, radius + pd + 1):
                for dx in range(-radius - pd, radius + pd + 1):
                    if not (0 <= y + dy < 37 and 0 <= x + dx < 41):
                        continue
                    probe = image.clone()
                    probe[0, 0, y + dy, x + dx] += 10.0
                    change = (network(probe) - base)[0, 0, y, x].abs().item()
                    if abs(dy) + abs(dx) <= radius:
                        assert change == 0.0, f"pixel ({y},{x}) sees offset ({dy},{dx})"
                    else:
                        changed_outside |= change > 0
            assert changed_outside, "the network should use pixels just outside the blind patch"


def test_the_self_ensemble_keeps_the_diamond_blind():
    network = _random_network(1)
    network.config.self_ensemble = 8
    image = torch.randn(1, 1, 37, 41, requires_grad=True)
    network(image)[0, 0, 18, 20].backward()
    reach = image.grad[0, 0].abs()
    radius = network.config.radius
    diamond = [(18 + dy, 20 + dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
               if abs(dy) + abs(dx) <= radius]
    assert all(reach[p] == 0 for p in diamond)
    assert reach[18 - radius - 1, 20] > 0 and reach[18, 20 + radius + 1] > 0  # just outside, on both axes


def test_a_network_without_the_mask_fails_the_same_check():
    network = _random_network(1)
    network.net.local_head.mask.fill_(1.0)
    assert output_change(network, torch.randn(1, 1, 24, 24), (12, 13))[12, 12] > 0


def test_any_size_and_r3_run_deterministically():
    network = LGBPN(LGBPNConfig(width=8, local_blocks=1, global_blocks=1, r3_passes=2)).eval()
    image = torch.rand(2, 1, 30, 45)
    with torch.no_grad():
        first, second = network(image), network(image)
    assert first.shape == image.shape and torch.equal(first, second)
    assert network.min_size == 15
