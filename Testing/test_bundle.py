"""Model bundles: exact round trip, integrity check, and refusal of anything pickle-based or foreign."""

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from DiffDenoiseLib.bundle import load_bundle, read_bundle_metadata, save_bundle
from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.errors import BundleError


@pytest.fixture(scope="module")
def trained(knee_crop):
    from DiffDenoiseLib.models import PUCAConfig
    from DiffDenoiseLib.pipelines.bsn import BsnSettings
    from DiffDenoiseLib.training import TrainConfig

    settings = BsnSettings(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)),
                           TrainConfig(steps=4, batch_size=2, patch_size=32))
    return denoise(knee_crop, preset=settings, device="cpu")


def test_round_trip_reproduces_outputs_exactly(tmp_path, trained, knee_crop):
    path = save_bundle(tmp_path / "model", trained.bundle)
    assert path.name == "model.safetensors"
    loaded = load_bundle(path)
    again = apply_bundle(loaded, knee_crop, device="cpu")
    np.testing.assert_array_equal(again, trained.denoised)
    metadata = read_bundle_metadata(path)
    assert metadata["method"] == "bsn" and metadata["networks"]["bsn"]["architecture"] == "puca"
    assert metadata["normalization"]["mode"] == "robust_percentiles"
    assert metadata["noise"]["used"] in ("iid", "correlated")
    assert metadata["training"]["bsn"]["summary"]["steps"] == 4
    assert len(metadata["weights_sha256"]) == 64 and metadata["package_version"]


def test_altered_weights_are_detected(tmp_path, trained):
    path = save_bundle(tmp_path / "model.safetensors", trained.bundle)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    first = sorted(tensors)[0]
    tensors[first] = tensors[first] + 1.0
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(BundleError, match="SHA-256"):
        load_bundle(path)


def test_pickle_checkpoints_are_never_loaded(tmp_path):
    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    for name in ("evil.pt", "evil.safetensors"):
        (tmp_path / name).write_bytes(pickle.dumps({"state_dict": Payload()}))
        with pytest.raises(BundleError):
            load_bundle(tmp_path / name)
    torch.save({"w": torch.zeros(2)}, tmp_path / "torch.pth")
    with pytest.raises(BundleError, match="never unpickles"):
        load_bundle(tmp_path / "torch.pth")
    assert not (tmp_path / "pwned").exists()


def test_foreign_or_future_bundles_are_refused(tmp_path, trained):
    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(BundleError, match="not a DiffDenoise bundle"):
        load_bundle(tmp_path / "plain.safetensors")
    path = save_bundle(tmp_path / "m.safetensors", trained.bundle)
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = json.loads(handle.metadata()["diffdenoise"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
    metadata["format_version"] = 99
    save_file(tensors, str(path), metadata={"diffdenoise": json.dumps(metadata)})
    with pytest.raises(BundleError, match="upgrade DiffDenoise"):
        load_bundle(path)
    with pytest.raises(BundleError, match="not found"):
        load_bundle(tmp_path / "missing.safetensors")
