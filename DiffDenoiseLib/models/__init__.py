"""Networks of the project, built from their stored architecture configs."""

from __future__ import annotations

from dataclasses import fields

from torch import nn

from .blind_spot import BlindSpotNetwork
from .lgbpn import LGBPN, LGBPNConfig
from .nafnet import NAFNet, NAFNetConfig
from .puca import PUCA, PUCAConfig

# architecture name -> (network class, config class); bundles store the name and the config fields.
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    PUCA.architecture: (PUCA, PUCAConfig),
    LGBPN.architecture: (LGBPN, LGBPNConfig),
    NAFNet.architecture: (NAFNet, NAFNetConfig),
}


def build_network(architecture: str, config: dict) -> nn.Module:
    """Construct a network from its architecture name and config dict (as stored in a bundle)."""
    if architecture not in ARCHITECTURES:
        raise KeyError(f"unknown architecture '{architecture}' (known: {', '.join(ARCHITECTURES)})")
    network_class, config_class = ARCHITECTURES[architecture]
    _check_config_values(config_class, config)
    return network_class(config_class(**config))


# counts and factors that must be at least 1 (every other whole-number field may be 0)
_AT_LEAST_ONE = ("width", "heads", "radius", "in_channels", "out_channels", "pd_train", "pd_infer", "self_ensemble")


def _check_config_values(config_class: type, config: dict) -> None:
    """Raise ValueError for a config value of the wrong type or range (a hand-edited bundle), before the
    network is built or, worse, fails mid-run (``pd_infer: 0`` would divide by zero at inference)."""
    for spec in fields(config_class):
        if spec.name not in config:
            continue
        value, default = config[spec.name], spec.default
        if isinstance(default, bool):
            ok = isinstance(value, bool)
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value >= (spec.name in _AT_LEAST_ONE)
        elif isinstance(default, float):
            ok = isinstance(value, int | float) and not isinstance(value, bool) and 0.0 <= value <= 1.0
        elif isinstance(default, tuple):
            ok = isinstance(value, list | tuple) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                                         for v in value)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"{spec.name} = {value!r} is not a valid value (default {default!r})")


__all__ = ["ARCHITECTURES", "BlindSpotNetwork", "LGBPN", "LGBPNConfig", "NAFNet", "NAFNetConfig", "PUCA", "PUCAConfig",
           "build_network"]
