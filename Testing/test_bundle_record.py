"""The typed record of a bundle's settings: its JSON form round-trips, older bundles read with their defaults,
and settings out of range are refused with the fix."""

import json
from dataclasses import replace

import numpy as np
import pytest
from helpers import make_tiny_ddm2, make_tiny_settings

from DiffDenoiseLib.bundle import load_bundle, save_bundle
from DiffDenoiseLib.bundle_record import BsnRecord, DDM2Record, ScalarRecord, record_of
from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.denoise_dwi import denoise_dwi
from DiffDenoiseLib.errors import BundleError


@pytest.fixture(scope="module", params=["bsn", "diffusion", "diffdenoise"])
def trained(request, knee_crop):
    return denoise(knee_crop, method=request.param, noise="iid", preset=make_tiny_settings(), device="cpu")


def _settings(metadata: dict) -> dict:
    """The metadata without what every bundle describes outside the record (format, method, networks)."""
    return {k: v for k, v in metadata.items() if k not in ("format", "format_version", "package_version",
                                                           "method", "inference_network", "networks")}


def test_the_json_form_of_each_method_round_trips_through_the_record(trained, tmp_path):
    record = trained.bundle.record
    assert isinstance(record, ScalarRecord) and record.bsn is not None
    assert record.to_json() == _settings(trained.bundle.describe())
    assert (record.diffusion is None) == (trained.bundle.method == "bsn")
    assert record.from_bsn is (True if trained.bundle.method == "diffdenoise" else None)
    loaded = load_bundle(save_bundle(tmp_path / "model", trained.bundle))
    assert loaded.record.to_json() == json.loads(json.dumps(record.to_json()))  # tuples come back as lists
    assert loaded.record.bsn == record.bsn and loaded.record.diffusion == record.diffusion


def test_a_changed_record_is_what_apply_runs(trained, knee_crop):
    if trained.bundle.method == "bsn":
        record = trained.bundle.record
        plain = trained.bundle.with_record(replace(record, bsn=replace(record.bsn, wiener_weight=None)))
        assert plain.record.bsn.wiener_weight is None and "wiener_weight" in trained.bundle.metadata["bsn"]
        assert not np.array_equal(apply_bundle(plain, knee_crop).denoised, apply_bundle(trained.bundle,
                                                                                         knee_crop).denoised)


def test_a_bundle_from_before_the_bsn_settings_reads_with_their_defaults(trained):
    metadata = trained.bundle.describe()
    del metadata["bsn"]
    metadata.pop("output_blend", None)  # a bsn bundle has none
    record = record_of(metadata)
    assert record.bsn is None and record.output_blend_weight is None
    metadata["bsn"] = {"posterior": True}  # before the Wiener blend
    assert record_of(metadata).bsn == BsnRecord(posterior=True, wiener_weight=None, wiener_depth=1)


@pytest.mark.parametrize("section,value,message", [
    ("bsn", {"posterior": True, "wiener_weight": 1.5, "wiener_depth": 4}, "wiener_weight must be from 0 to 1"),
    ("bsn", {"posterior": True, "wiener_depth": 0}, "wiener_depth must be a whole number >= 1"),
    ("bsn", {"posterior": True, "colour": 1}, "bsn settings are invalid"),
    ("noise", "gaussian", "'noise' must be a mapping"),
])
def test_settings_of_the_wrong_type_or_range_are_refused_with_the_fix(trained, section, value, message):
    metadata = trained.bundle.describe() | {section: value}
    with pytest.raises(BundleError, match=f"{message}.*re-save it"):
        record_of(metadata, "model.safetensors")


def test_a_ddm2_bundle_records_its_sampler_and_a_changed_one_is_kept_apart(small_dwi):
    result = denoise_dwi(small_dwi.volume.array[:6, :3], small_dwi.bvals[:6], preset=make_tiny_ddm2(), device="cpu")
    record = result.bundle.record
    assert isinstance(record, DDM2Record) and record.sampler == "accelerated"
    assert record.to_json() == _settings(result.bundle.describe())
    full = record.with_sampler("full", None)
    assert full.sampler == "full" and full.sampler_steps == record.sampler_steps and record.sampler == "accelerated"
