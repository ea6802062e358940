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
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from . import __version__
from .context import MAX_HALF_WIDTH, context_channels
from .diffusion import PREDICTIONS, NoiseSchedule
from .errors import BundleError, InputError
from .io import move_into_place
from .models import ARCHITECTURES, build_network
from .pipelines.diffdenoise import BUNDLE_DEFAULT_PREDICTION, CONDITIONINGS, SamplingSettings, condition_channels

FORMAT = "diffdenoise-bundle"
FORMAT_VERSION = 2  # 2: the hash covers the settings as well as the weights
SUFFIX = ".safetensors"
_METADATA_KEY = "diffdenoise"
# informational fields outside the hash: when and by which version it was saved, and the hash itself
_UNHASHED = ("created", "package_version", "bundle_sha256")
# the network `apply` runs for a bundle of each method (ddm2 and stage1: diffusion MRI bundles)
INFERENCE_NETWORK = {"diffdenoise": "nafnet", "diffusion": "diffusion", "bsn": "bsn", "ddm2": "diffusion",
                     "stage1": "stage1"}


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


def save_bundle(path: str | os.PathLike, bundle: ModelBundle, overwrite: bool = False) -> Path:
    """Write ``bundle`` to ``path`` (``.safetensors`` is appended if missing) atomically; returns the path.
    An existing file is refused unless ``overwrite``."""
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
        move_into_place(Path(temporary), path, overwrite)
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
    if not _is_int(version):
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
    validate_metadata(metadata, name)
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


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class _MetadataCheck:
    """Checks of one bundle's metadata, each refusing it with :class:`BundleError` naming the file ``name``."""

    name: str

    def need(self, condition: bool, what: str) -> None:
        if not condition:
            raise BundleError(f"{self.name}: {what}; the bundle was edited or written by another tool: re-save it")

    def builds(self, settings_class: type, values: dict, where: str) -> None:
        try:
            settings_class(**values)
        except (TypeError, ValueError) as error:
            self.need(False, f"{where} settings are invalid ({error})")

    def positive_ints(self, section: dict, keys: tuple[str, ...], where: str) -> None:
        for key in keys:
            self.need(_is_int(section.get(key)) and section[key] >= 1, f"{where} {key} must be a whole number >= 1, "
                      f"got {section.get(key)!r}")


def validate_metadata(metadata: dict, name: str = "bundle") -> None:
    """Refuse settings of the wrong type or out of range with :class:`BundleError` (a bundle made by hand or
    edited and rehashed would otherwise fail deep inside a run)."""
    check = _MetadataCheck(name)
    method, networks = metadata.get("method"), metadata.get("networks")
    check.need(isinstance(method, str) and method in INFERENCE_NETWORK,
               f"unknown method {method!r} (known: {', '.join(INFERENCE_NETWORK)})")
    check.need(isinstance(networks, dict) and bool(networks), "'networks' must be a non-empty mapping of network "
               "specs")
    for network_name, spec in networks.items():
        check.need(isinstance(spec, dict) and isinstance(spec.get("architecture"), str)
                   and isinstance(spec.get("config"), dict), f"network {network_name!r} needs an architecture name "
                   "and a config mapping")
    inference = metadata.get("inference_network")
    check.need(inference == INFERENCE_NETWORK[method] and inference in networks,
               f"a {method} bundle runs network {INFERENCE_NETWORK[method]!r}, but inference_network is "
               f"{inference!r} (networks: {', '.join(networks)})")
    if metadata.get("modality") == "dwi":
        _check_ddm2(check, metadata)
        return
    _check_slicing(check, metadata)
    if inference == "diffusion":
        _check_diffusion(check, metadata)


def _check_ddm2(check: _MetadataCheck, metadata: dict) -> None:
    """A DDM2 bundle's settings: Stage I neighbours, the sampler and its schedule."""
    ddm2 = metadata.get("ddm2")
    check.need(isinstance(ddm2, dict) and isinstance(ddm2.get("schedule"), dict), "'ddm2' settings are missing")
    check.positive_ints(ddm2, ("neighbours", "sampler_steps"), "ddm2")
    check.need(ddm2.get("sampler") in ("accelerated", "full"), f"unknown ddm2 sampler {ddm2.get('sampler')!r}")
    check.need(_is_int(ddm2.get("seed")), "ddm2 seed must be a whole number")
    check.need("stage1" in metadata["networks"], "a DDM2 bundle needs its 'stage1' network")
    check.builds(NoiseSchedule, ddm2["schedule"], "ddm2 schedule")


def _check_slicing(check: _MetadataCheck, metadata: dict) -> None:
    """A scalar bundle's slice axis, context (matching what its networks read), distillation and normalisation."""
    networks = metadata["networks"]
    axis = metadata.get("slice_axis", 0)
    check.need(_is_int(axis) and axis in (0, 1, 2), f"slice_axis must be 0, 1 or 2, got {axis!r}")
    context = metadata.get("context", {"half_width": 0, "blind": False})
    check.need(isinstance(context, dict) and _is_int(context.get("half_width"))
               and 0 <= context["half_width"] <= MAX_HALF_WIDTH and isinstance(context.get("blind"), bool),
               f"'context' needs a half_width from 0 to {MAX_HALF_WIDTH} and a blind flag, got {context!r}")
    half_width = context["half_width"]
    bsn_reads = networks.get("bsn", {}).get("config", {}).get("context_slices", 0)
    check.need(bsn_reads == half_width, f"the BSN reads {bsn_reads!r} neighbouring slices, the bundle's context is "
               f"{half_width}")
    distillation = metadata.get("distillation", {"from_bsn": False})
    check.need(isinstance(distillation, dict) and isinstance(distillation.get("from_bsn"), bool),
               f"'distillation' needs a from_bsn flag, got {distillation!r}")
    check.need(not distillation["from_bsn"] or "bsn" in networks, "a NAFNet distilled from the BSN output needs "
               "the 'bsn' network")
    expected = distillation["from_bsn"] + context_channels(half_width)
    nafnet_reads = networks.get("nafnet", {}).get("config", {}).get("in_channels", expected)
    check.need(nafnet_reads == expected, f"the NAFNet reads {nafnet_reads!r} channels, its inputs (context, BSN "
               f"output) are {expected}")
    normalization = metadata.get("normalization")
    check.need(isinstance(normalization, dict) and all(isinstance(v, int | float) and math.isfinite(v) for v in
                                                       normalization.get("training_range", [0.0])),
               "'normalization' must be a mapping with a finite training_range")


def _check_diffusion(check: _MetadataCheck, metadata: dict) -> None:
    """A diffusion bundle's schedule, conditioning (and the networks it needs) and sampling settings."""
    diffusion, sampling, networks = metadata.get("diffusion"), metadata.get("sampling"), metadata["networks"]
    check.need(isinstance(diffusion, dict) and isinstance(diffusion.get("schedule"), dict)
               and isinstance(diffusion.get("conditioning"), str), "'diffusion' settings (schedule, conditioning) "
               "are missing")
    check.need(isinstance(sampling, dict), "'sampling' settings are missing")
    check.positive_ints(sampling, ("pairs", "steps"), "sampling")
    check.need(_is_int(sampling.get("seed", 0)), "sampling seed must be a whole number")
    check.builds(NoiseSchedule, diffusion["schedule"], "diffusion schedule")
    check.builds(SamplingSettings, {k: v for k, v in sampling.items() if k != "seed"}, "sampling")
    check.need(diffusion["conditioning"] == "identity" or "bsn" in networks,
               f"conditioning {diffusion['conditioning']!r} needs the 'bsn' network")
    check.need(diffusion["conditioning"] in CONDITIONINGS, f"unknown conditioning {diffusion['conditioning']!r}")
    check.need(diffusion.get("prediction", BUNDLE_DEFAULT_PREDICTION) in PREDICTIONS,
               f"unknown diffusion prediction {diffusion.get('prediction')!r}")
    expected = 1 + condition_channels(diffusion["conditioning"], metadata.get("context", {}).get("half_width", 0))
    check.need(networks["diffusion"]["config"].get("in_channels") == expected,
               f"the diffusion network must read {expected} channels for its conditioning and context")
