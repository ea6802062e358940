"""Model bundles: exact round trip, integrity check, and refusal of anything pickle-based or foreign."""

import json
import pickle

import numpy as np
import pytest
import torch
from helpers import make_tiny_settings
from safetensors.torch import save_file

from DiffDenoiseLib.bundle import load_bundle, read_bundle_metadata, save_bundle
from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.errors import BundleError, InputError


@pytest.fixture(scope="module")
def trained(knee_crop):
    return denoise(knee_crop, noise="iid", preset=make_tiny_settings(), device="cpu")


def test_full_pipeline_round_trip_keeps_every_stage(tmp_path, trained, knee_crop):
    path = save_bundle(tmp_path / "model", trained.bundle)
    assert path.name == "model.safetensors"
    loaded = load_bundle(path)
    assert set(loaded.networks) == {"bsn", "diffusion", "nafnet"} and loaded.inference_network == "nafnet"
    for name, network in trained.bundle.networks.items():
        for (key, value), (key_again, value_again) in zip(network.state_dict().items(),
                                                          loaded.networks[name].state_dict().items(), strict=True):
            assert key == key_again and torch.equal(value.cpu(), value_again)
    again = apply_bundle(loaded, knee_crop, device="cpu")
    np.testing.assert_array_equal(again.denoised, trained.denoised)
    metadata = read_bundle_metadata(path)
    assert metadata["method"] == "diffdenoise" and metadata["networks"]["bsn"]["architecture"] == "puca"
    assert metadata["networks"]["diffusion"]["config"]["time_conditioned"] is True
    assert metadata["normalization"]["mode"] == "robust_percentiles"
    assert metadata["noise"]["used"] in ("iid", "correlated")
    assert metadata["diffusion"]["schedule"]["steps"] == 50 and metadata["sampling"]["pairs"] == 1
    assert {stage: metadata["training"][stage]["summary"]["steps"] for stage in metadata["training"]} == {
        "bsn": 4, "diffusion": 4, "nafnet": 4}
    assert len(metadata["bundle_sha256"]) == 64 and metadata["package_version"]


def test_apply_runs_the_bsn_and_the_distilled_nafnet_and_no_diffusion(tmp_path, trained, knee_crop):
    loaded = load_bundle(save_bundle(tmp_path / "model", trained.bundle))
    calls = {name: 0 for name in loaded.networks}
    for name, network in loaded.networks.items():
        network.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
    other_volume = knee_crop[:, ::-1].copy() * 3.0 + 100.0  # a new "scan": other content and intensity scale
    result = apply_bundle(loaded, other_volume, device="cpu")
    assert calls["nafnet"] >= 1 and calls["bsn"] >= 1 and calls["diffusion"] == 0  # the NAFNet corrects the BSN
    assert result.denoised.shape == other_volume.shape
    with pytest.raises(InputError, match="no 'uncertainty' output"):
        apply_bundle(loaded, other_volume, device="cpu", outputs=("uncertainty",))


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
