"""Trained-model bundles: one ``.safetensors`` file, weights plus JSON metadata in its header.

Nothing is ever unpickled: safetensors holds raw tensors only. The metadata records the method, every
network's architecture and config, the normalisation, the noise analysis, the package version and the
training summary, plus a SHA-256 of the weights that is checked on load.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .errors import BundleError
from .models import ARCHITECTURES, build_network

FORMAT = "diffdenoise-bundle"
FORMAT_VERSION = 1
SUFFIX = ".safetensors"
_METADATA_KEY = "diffdenoise"


@dataclass
class ModelBundle:
    """Trained networks of one method plus what is needed to apply them to new images.

    ``inference_network`` names the network that ``apply`` runs (e.g. the BSN, or the distilled NAFNet).
    """

    method: str
    networks: dict[str, nn.Module]
    inference_network: str
    metadata: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """The full JSON metadata as written to disk (without the weight hash)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "package_version": __version__,
            "method": self.method,
            "inference_network": self.inference_network,
            "networks": {name: {"architecture": net.architecture, "config": net.config_dict()}
                         for name, net in self.networks.items()},
            **self.metadata,
        }


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        # flattened first: a channels_last (1, C, 1, 1) tensor counts as contiguous with a last stride of C
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _tensors(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    """Every network's weights under ``<network>.<parameter>``, as stored in the file."""
    return {f"{name}.{key}": value.detach().cpu().contiguous()
            for name, net in bundle.networks.items() for key, value in net.state_dict().items()}


def bundle_sha256(bundle: ModelBundle) -> str:
    """The SHA-256 of the bundle's weights: the ``weights_sha256`` its file records (or will, once saved)."""
    return _weights_digest(_tensors(bundle))


def save_bundle(path: str | os.PathLike, bundle: ModelBundle) -> Path:
    """Write ``bundle`` to ``path`` (``.safetensors`` is appended if missing) atomically; returns the path."""
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    tensors = _tensors(bundle)
    metadata = bundle.describe()
    metadata["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    metadata["weights_sha256"] = _weights_digest(tensors)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    try:
        save_file(tensors, str(temporary), metadata={_METADATA_KEY: json.dumps(metadata)})
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def read_bundle_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a bundle, without loading the weights."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"model bundle not found: {path}")
    if path.suffix in (".pt", ".pth", ".pkl", ".ckpt", ".bin"):
        raise BundleError(f"{path.name} looks like a pickle-based checkpoint; DiffDenoise never unpickles model "
                          "files (they can run code). Use a .safetensors bundle saved by DiffDenoise.")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(_METADATA_KEY)
    except (SafetensorError, OSError, ValueError) as error:
        raise BundleError(f"{path.name} is not a readable safetensors bundle ({error}); "
                          "use a file saved with --save-model") from None
    if raw is None:
        raise BundleError(f"{path.name} is a safetensors file but not a DiffDenoise bundle (no metadata)")
    metadata = json.loads(raw)
    if metadata.get("format") != FORMAT:
        raise BundleError(f"{path.name} is not a DiffDenoise bundle (format {metadata.get('format')!r})")
    if int(metadata.get("format_version", 0)) > FORMAT_VERSION:
        raise BundleError(f"{path.name} was written by DiffDenoise {metadata.get('package_version')} "
                          f"(bundle format {metadata.get('format_version')}); upgrade DiffDenoise to read it")
    return metadata


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load and validate a bundle: format, version, weight hash, architectures and exact weight names."""
    metadata = read_bundle_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as error:
        raise BundleError(f"cannot read the weights of {Path(path).name}: {error}") from None
    if _weights_digest(tensors) != metadata.get("weights_sha256"):
        raise BundleError(f"{Path(path).name}: weights do not match their recorded SHA-256; the file is "
                          "damaged or was altered. Re-save or re-download the bundle.")
    networks = {}
    for name, spec in metadata["networks"].items():
        if spec["architecture"] not in ARCHITECTURES:
            raise BundleError(f"{Path(path).name} needs architecture '{spec['architecture']}', unknown to "
                              f"DiffDenoise {__version__}; upgrade DiffDenoise")
        try:
            network = build_network(spec["architecture"], spec["config"])
            prefix = f"{name}."
            network.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                    strict=True)
        except (TypeError, ValueError, RuntimeError) as error:
            raise BundleError(f"{Path(path).name}: network '{name}' does not match its stored config "
                              f"({str(error).splitlines()[0]})") from None
        networks[name] = network.eval()
    reserved = {"format", "format_version", "package_version", "method", "inference_network", "networks",
                "created", "weights_sha256"}
    bundle = ModelBundle(metadata["method"], networks, metadata["inference_network"],
                         {k: v for k, v in metadata.items() if k not in reserved})
    bundle.metadata["created"] = metadata.get("created")
    bundle.metadata["weights_sha256"] = metadata["weights_sha256"]
    return bundle
