"""Networks of the project, built from their stored architecture configs."""

from __future__ import annotations

from torch import nn

from .bsn import BlindSpotDenoiser, PUCAConfig
from .lgbpn import LGBPN, LGBPNConfig
from .nafnet import NAFNet, NAFNetConfig

# architecture name -> (network class, config class); bundles store the name and the config fields.
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    BlindSpotDenoiser.architecture: (BlindSpotDenoiser, PUCAConfig),
    LGBPN.architecture: (LGBPN, LGBPNConfig),
    NAFNet.architecture: (NAFNet, NAFNetConfig),
}


def build_network(architecture: str, config: dict) -> nn.Module:
    """Construct a network from its architecture name and config dict (as stored in a bundle)."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})")
    network_class, config_class = ARCHITECTURES[architecture]
    return network_class(config_class(**config))


__all__ = ["ARCHITECTURES", "BlindSpotDenoiser", "LGBPN", "LGBPNConfig", "NAFNet", "NAFNetConfig", "PUCAConfig",
           "build_network"]
