"""Trained-model bundles: one ``.safetensors`` file, weights plus JSON metadata in its header.

Nothing is ever unpickled: safetensors holds raw tensors only. The metadata records the method, every
network's architecture and config, the normalisation, the noise analysis, the package version and the
training summary, plus ``bundle_sha256``: one SHA-256 over the weights *and* the canonical JSON of every
setting that changes an output (everything but ``created`` and ``package_version``), checked on load, so an
edited setting is refused like an edited weight. Settings are validated for type and range on load too.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .bundle_record import DDM2Record, ScalarRecord, is_int, record_of
from .errors import BundleError, InputError
from .io import move_into_place, signals_held
from .models import ARCHITECTURES, build_network

FORMAT = "diffdenoise-bundle"
FORMAT_VERSION = 2  # 2: the hash covers the settings as well as the weights
SUFFIX = ".safetensors"
_METADATA_KEY = "diffdenoise"
# informational fields outside the hash: when and by which version it was saved, and the hash itself
_UNHASHED = ("created", "package_version", "bundle_sha256")


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

    @property
    def record(self) -> ScalarRecord | DDM2Record:
        """The typed record of the metadata (:mod:`.bundle_record`), checked."""
        return record_of(self.describe())

    def with_record(self, record: ScalarRecord | DDM2Record) -> ModelBundle:
        """This bundle with its settings replaced by ``record``'s (when and by which version it was saved, and
        its file's hash, kept as they were)."""
        kept = {key: self.metadata[key] for key in _UNHASHED if key in self.metadata}
        return replace(self, metadata={**record.to_json(), **kept})


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        # flattened first: a channels_last (1, C, 1, 1) tensor counts as contiguous with a last stride of C
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def _content_digest(tensors: dict[str, torch.Tensor], metadata: dict) -> str:
    """SHA-256 of the weights and the canonical JSON (sorted keys, no spaces) of the hashed settings."""
    settings = {key: value for key, value in metadata.items() if key not in _UNHASHED}
    canonical = json.dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{_weights_digest(tensors)}|{canonical}".encode()).hexdigest()


def _tensors(bundle: ModelBundle) -> dict[str, torch.Tensor]:
    """Every network's weights under ``<network>.<parameter>``, as stored in the file."""
    return {f"{name}.{key}": value.detach().cpu().contiguous()
            for name, net in bundle.networks.items() for key, value in net.state_dict().items()}


def bundle_sha256(bundle: ModelBundle) -> str:
    """The SHA-256 of the bundle's weights and settings: the ``bundle_sha256`` its file records (or will, once
    saved). For a loaded bundle, the hash its file recorded (checked on load), whatever run options were
    applied to it since."""
    return bundle.metadata.get("bundle_sha256") or _content_digest(_tensors(bundle), bundle.describe())


def save_bundle(path: str | os.PathLike, bundle: ModelBundle, overwrite: bool = False,
                on_saved: Callable[[Path], object] | None = None) -> Path:
    """Write ``bundle`` to ``path`` (``.safetensors`` is appended if missing) atomically; returns the path.
    An existing file is refused unless ``overwrite``. ``on_saved(path)`` runs the moment the file is in place,
    before an interrupt can land (as ``on_written`` of :func:`.io.write_volume`)."""
    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_name(path.name + SUFFIX)
    if path.is_dir() or (path.exists() and not overwrite):
        raise BundleError(f"{path} already exists{' and is a folder' if path.is_dir() else ''}: choose another "
                          "bundle name" + ("" if path.is_dir() else ", or pass --overwrite to replace it"))
    tensors = _tensors(bundle)
    metadata = {key: value for key, value in bundle.describe().items() if key not in _UNHASHED}
    metadata["package_version"] = __version__
    metadata["created"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    metadata["bundle_sha256"] = _content_digest(tensors, metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique temporary name: two runs saving one path at once must not move each other's file
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(handle)
    try:
        save_file(tensors, temporary, metadata={_METADATA_KEY: json.dumps(metadata)})
        os.chmod(temporary, 0o644)  # readable by the lab like the images (mkstemp makes it private)
        with signals_held():
            move_into_place(Path(temporary), path, overwrite)
            if on_saved is not None:
                on_saved(path)
    except SafetensorError as error:  # a full disk, as safetensors reports it
        raise OSError(errno.EIO, f"could not write the model bundle ({error}): is the disk full?", str(path)) from None
    except InputError as error:  # another run saved the same path meanwhile
        raise BundleError(str(error)) from None
    finally:
        Path(temporary).unlink(missing_ok=True)
    return path


def read_bundle_metadata(path: str | os.PathLike) -> dict:
    """The JSON metadata of a bundle, without loading the weights."""
    path = Path(path)
    if path.is_dir():
        raise BundleError(f"{path} is a folder, not a model bundle: give the .safetensors file saved with "
                          "--save-model")
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
    try:
        metadata = json.loads(raw)
    except ValueError as error:
        raise BundleError(f"{path.name}: its metadata is not valid JSON ({error}); the file is damaged or was "
                          "edited: re-save or re-download the bundle") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
        raise BundleError(f"{path.name} is not a DiffDenoise bundle (format {found!r})")
    version = metadata.get("format_version")
    if not is_int(version):
        raise BundleError(f"{path.name}: format_version {version!r} is not a whole number; the file was edited or "
                          "damaged: re-save the bundle")
    if version > FORMAT_VERSION:
        raise BundleError(f"{path.name} was written by DiffDenoise {metadata.get('package_version')} "
                          f"(bundle format {version}); upgrade DiffDenoise to read it")
    if version < FORMAT_VERSION:
        raise BundleError(f"{path.name} uses bundle format {version}, whose hash does not cover its settings, so "
                          "edits to them cannot be detected: train and save the model again with this version")
    return metadata


def load_bundle(path: str | os.PathLike) -> ModelBundle:
    """Load and validate a bundle: format, version, hash of weights and settings, setting types and ranges,
    architectures, exact weight names and finite weights."""
    metadata = read_bundle_metadata(path)
    name = Path(path).name
    try:
        with safe_open(str(path), framework="pt") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except (SafetensorError, OSError) as error:
        raise BundleError(f"cannot read the weights of {name}: {error}") from None
    if _content_digest(tensors, metadata) != metadata.get("bundle_sha256"):
        raise BundleError(f"{name}: weights or settings do not match their recorded SHA-256; the file is "
                          "damaged or was altered. Re-save or re-download the bundle.")
    record_of(metadata, name)  # refuses settings of the wrong type or out of range
    for key, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise BundleError(f"{name}: weight {key} holds NaN or Inf values (training diverged or the file was "
                              "damaged): train the model again")
    networks = {}
    for network_name, spec in metadata["networks"].items():
        if spec["architecture"] not in ARCHITECTURES:
            raise BundleError(f"{name} needs architecture '{spec['architecture']}', unknown to "
                              f"DiffDenoise {__version__}; upgrade DiffDenoise")
        try:
            network = build_network(spec["architecture"], spec["config"])
            prefix = f"{network_name}."
            network.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                                    strict=True)
        except (TypeError, ValueError, RuntimeError) as error:
            raise BundleError(f"{name}: network '{network_name}' does not match its stored config "
                              f"({str(error).splitlines()[0]})") from None
        networks[network_name] = network.eval()
    reserved = {"format", "format_version", "package_version", "method", "inference_network", "networks",
                "created", "bundle_sha256"}
    bundle = ModelBundle(metadata["method"], networks, metadata["inference_network"],
                         {k: v for k, v in metadata.items() if k not in reserved})
    bundle.metadata["created"] = metadata.get("created")
    bundle.metadata["bundle_sha256"] = metadata["bundle_sha256"]
    return bundle
