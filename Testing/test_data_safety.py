"""Never lose a user's data: the failing cases of the robustness catalogue (docs: robustness-findings.md, ids
in brackets), through the real ``diffdenoise`` command.

Every refusal is one ``diffdenoise: error: ...`` line, comes before any work, and leaves every input and every
pre-existing file byte for byte as it was. Most cases run the CLI in this process (``cli.main``) with a tiny
BSN bundle; signal cases run it as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file

from DiffDenoiseLib import cli
from DiffDenoiseLib.bundle import _content_digest, load_bundle, save_bundle
from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.errors import BundleError, InputError
from DiffDenoiseLib.io import Geometry, Volume, output_files, read_volume, write_dwi, write_volume
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.write_plan import WritePlan

GEOMETRY = Geometry((0.8, 0.8, 3.0), (1.0, 2.0, 3.0), tuple(np.eye(3).ravel()))


@pytest.fixture(scope="module")
def noisy_int16(knee_crop) -> np.ndarray:
    return np.rint(add_noise(knee_crop, "gaussian", 0.1, seed=0)).astype(np.int16)


@pytest.fixture(scope="module")
def model(tmp_path_factory, noisy_int16) -> Path:
    """A tiny BSN bundle, saved once for the module."""
    from helpers import make_tiny_settings

    bundle = denoise(noisy_int16, method="bsn", preset=make_tiny_settings(), device="cpu").bundle
    return save_bundle(tmp_path_factory.mktemp("model") / "bsn.safetensors", bundle)


@pytest.fixture
def scan(tmp_path, noisy_int16) -> Path:
    path = tmp_path / "scan.nii.gz"
    write_volume(path, Volume(noisy_int16, GEOMETRY))
    return path


def run(capsys, *arguments) -> tuple[int, str, str]:
    """``diffdenoise --no-progress ARGUMENTS`` in this process: exit code, stdout, stderr."""
    code = cli.main(["--no-progress", *map(str, arguments)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def refused(capsys, text: str, *arguments) -> str:
    """Run and assert one error line containing ``text`` and a non-zero exit; returns the line."""
    code, _, err = run(capsys, *arguments)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0 and len(lines) == 1, err
    assert lines[0].startswith("diffdenoise: error: ") and text in lines[0], lines[0]
    return lines[0]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes (symlinks by their target)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path)] = "-> " + os.readlink(path)
        elif path.is_file():
            found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


# --- O: output paths -------------------------------------------------------------------------------------


def test_existing_folder_output_is_refused_and_kept(capsys, tmp_path, scan, model):  # O6
    results = tmp_path / "results"
    results.mkdir()
    (results / "notes.txt").write_text("notes")
    (results / "previous_run.nii.gz").write_bytes(scan.read_bytes())
    before = snapshot(tmp_path)
    for flags in ([], ["--overwrite"]):  # not even --overwrite deletes a folder that is not a DICOM series
        refused(capsys, "existing folder holding 2 entries that are not a DICOM series", "apply", "--model", model,
                scan, results, *flags)
    assert snapshot(tmp_path) == before


def test_output_folder_holding_the_input_is_refused(capsys, tmp_path, scan, model):  # O7
    study = tmp_path / "study"
    study.mkdir()
    patient = study / "patient1.nii.gz"
    patient.write_bytes(scan.read_bytes())
    series = tmp_path / "study2"
    write_volume(series / "series1", Volume(read_volume(scan).array, GEOMETRY))
    before = snapshot(tmp_path)
    refused(capsys, "holds the input", "apply", "--model", model, patient, study, "--overwrite")
    refused(capsys, "holds the input", "apply", "--model", model, series / "series1", series, "--overwrite")
    assert snapshot(tmp_path) == before


def test_current_folder_as_output_is_one_line(capsys, tmp_path, scan, model, monkeypatch):  # O8
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "keep.txt").write_text("keep")
    monkeypatch.chdir(inner)
    refused(capsys, "existing folder", "apply", "--model", model, scan, ".")
    assert (inner / "keep.txt").read_text() == "keep" and sorted(p.name for p in inner.iterdir()) == ["keep.txt"]


def test_unwritable_outputs_are_refused_before_training(capsys, tmp_path, scan):  # O9, O17
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    started = time.perf_counter()
    refused(capsys, "is a file, not a folder", "denoise", scan, tmp_path / "ok.nii.gz", "--method", "bsn",
            "--steps", "500", "--save-model", a_file / "m.safetensors", "--device", "cpu")
    refused(capsys, "cannot write to /proc", "denoise", scan, "/proc/diffdenoise-test/x.nii.gz", "--method", "bsn",
            "--steps", "500", "--device", "cpu")
    assert time.perf_counter() - started < 30  # 500 steps were never started
    assert not (tmp_path / "ok.nii.gz").exists()


def test_outputs_that_do_not_fit_on_the_disk_are_refused():  # O10 (the space check, before any work)
    plan = WritePlan()
    plan.image(Path("/tmp/huge.nii"), "output", (10 ** 6, 10 ** 4, 10 ** 4), np.float32)
    with pytest.raises(InputError, match="the outputs need about .* free: free some space"):
        plan.check()


def test_a_volume_is_never_cut_to_one_png_slice(capsys, tmp_path, model):  # O11, O12
    volume = tmp_path / "vol16.nrrd"
    write_volume(volume, Volume(np.random.default_rng(0).integers(0, 4000, (4, 64, 64)).astype(np.uint16),
                                GEOMETRY))
    refused(capsys, "a PNG holds one 2D image and this output has 4 slices", "apply", "--model", model, volume,
            tmp_path / "vol16.png")
    refused(capsys, "a single .dcm file holds one slice and this output has 4", "apply", "--model", model, volume,
            tmp_path / "vol.dcm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol16.nrrd"]


@pytest.mark.parametrize("output,text", [
    ("res.jpg", "unsupported output type 'res.jpg'"),  # O5
    ("res.nii.bz2", "unsupported output type"),
    ("res.png", "PNG stores 8- or 16-bit unsigned integers and this output is int16"),  # O12
])
def test_impossible_outputs_are_refused_before_training(capsys, tmp_path, scan, output, text):
    started = time.perf_counter()
    refused(capsys, text, "denoise", scan, tmp_path / output, "--method", "bsn", "--steps", "500",
            "--save-model", tmp_path / "lost.safetensors", "--device", "cpu")
    assert time.perf_counter() - started < 30
    assert not list(tmp_path.glob("lost*"))


def test_colour_png_to_png_is_refused_before_training_with_the_right_fix(capsys, tmp_path):  # F9
    rgb = tmp_path / "rgb.png"
    colour = np.random.default_rng(0).integers(0, 255, (64, 64, 3)).astype(np.uint8)
    sitk.WriteImage(sitk.GetImageFromArray(colour, isVector=True), str(rgb))
    line = refused(capsys, "this output is float32: write .tif, .nrrd or .nii.gz instead", "denoise", rgb,
                   tmp_path / "rgb_dn.png", "--method", "bsn", "--steps", "500", "--device", "cpu")
    assert "keep the input's data type" not in line


def test_extra_output_never_overwrites_the_input(capsys, tmp_path, scan, model):  # O14
    named = tmp_path / "knee_residual.nii.gz"
    named.write_bytes(scan.read_bytes())
    before = snapshot(tmp_path)
    for flags in ([], ["--overwrite"]):
        refused(capsys, "residual output", "apply", "--model", model, named, tmp_path / "knee.nii.gz",
                "--extra", "residual", *flags)
    assert snapshot(tmp_path) == before


def test_existing_json_next_to_a_png_output_is_kept(capsys, tmp_path, model):  # O15
    photo = tmp_path / "sub-01_photo.png"
    write_volume(photo, Volume(np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8),
                               Geometry.identity(2)))
    sidecar = tmp_path / "sub-01_photo_dn.json"
    sidecar.write_text('{"AcquisitionTime": "10:00"}')
    refused(capsys, "sub-01_photo_dn.json already exists", "apply", "--model", model, photo,
            tmp_path / "sub-01_photo_dn.png")
    assert json.loads(sidecar.read_text()) == {"AcquisitionTime": "10:00"}


def test_an_input_header_s_data_file_is_never_overwritten(capsys, tmp_path, model, noisy_int16):  # O16
    write_volume(tmp_path / "result.mhd", Volume(noisy_int16, GEOMETRY))  # writes result.zraw
    header = tmp_path / "orig.mhd"
    header.write_text((tmp_path / "result.mhd").read_text())
    (tmp_path / "result.mhd").unlink()
    before = snapshot(tmp_path)
    refused(capsys, "would overwrite the input", "apply", "--model", model, header, tmp_path / "result.mhd",
            "--overwrite")
    assert snapshot(tmp_path) == before
    np.testing.assert_array_equal(read_volume(header).array, noisy_int16)


def test_existing_outputs_need_overwrite_and_then_are_replaced(capsys, tmp_path, scan, model):
    output = tmp_path / "out.nii.gz"
    output.write_text("an older result")
    refused(capsys, "already exists: choose a new name, or pass --overwrite", "apply", "--model", model, scan,
            output)
    assert output.read_text() == "an older result"
    code, _, err = run(capsys, "apply", "--model", model, scan, output, "--overwrite")
    assert code == 0, err
    assert read_volume(output).array.shape == read_volume(scan).array.shape
    series = tmp_path / "series"  # a DICOM series this tool wrote may be replaced with --overwrite
    assert run(capsys, "apply", "--model", model, scan, series)[0] == 0
    refused(capsys, "already exists", "apply", "--model", model, scan, series)
    assert run(capsys, "apply", "--model", model, scan, series, "--overwrite")[0] == 0
    assert len(list(series.glob("*.dcm"))) == 4 and not list(tmp_path.glob(".*partial*"))
    scanner = tmp_path / "scanner"  # a series DiffDenoise did not write is never replaced
    write_volume(scanner, Volume(read_volume(scan).array, GEOMETRY))
    before = snapshot(scanner)
    refused(capsys, "not a DICOM series written by DiffDenoise", "apply", "--model", model, scan, scanner,
            "--overwrite")
    assert snapshot(scanner) == before


def test_machine_progress_always_ends_with_an_error_line(capsys, tmp_path, scan, model):  # O19
    code = cli.main(["--machine-progress", "apply", "--model", str(model), str(scan), "/proc/nowhere/x.nii.gz"])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code != 0 and last["diffdenoise"] == "error" and "cannot write to /proc" in last["message"]


# --- D: diffusion series ---------------------------------------------------------------------------------


def test_ddm2_output_next_to_the_input_keeps_the_input_bval_and_bvec(capsys, tmp_path, small_dwi):  # D14
    source = tmp_path / "small_64D.nii.gz"
    write_dwi(source, small_dwi)
    before = snapshot(tmp_path)
    refused(capsys, "would overwrite the input", "ddm2", source, tmp_path / "small_64D.nii", "--steps", "500",
            "--overwrite", "--device", "cpu")
    assert snapshot(tmp_path) == before


def test_dwi_writer_never_half_writes_over_existing_sidecars(tmp_path, small_dwi):
    (tmp_path / "d.bvec").write_text("mine")
    with pytest.raises(InputError, match="already exists"):
        write_dwi(tmp_path / "d.nii.gz", small_dwi)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.bvec"]


# --- C: cohort -------------------------------------------------------------------------------------------


def test_cohort_refuses_inputs_that_share_an_output_name(capsys, tmp_path, scan, model):  # C3, C4
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "T1w.nii.gz").write_bytes(scan.read_bytes())
        write_volume(tmp_path / "dcm" / name / "T1", Volume(read_volume(scan).array, GEOMETRY))
    refused(capsys, "would both be written to", "cohort", "--model", model, "--out", tmp_path / "out",
            tmp_path / "a" / "T1w.nii.gz", tmp_path / "b" / "T1w.nii.gz")
    refused(capsys, "would both be written to", "cohort", "--model", model, "--out", tmp_path / "out",
            tmp_path / "dcm" / "a" / "T1", tmp_path / "dcm" / "b" / "T1")
    assert not (tmp_path / "out").exists()


def test_cohort_goes_on_past_a_bad_file_and_reports_every_failure(capsys, tmp_path, scan, model):  # C1
    good = [tmp_path / f"good{i}.nii.gz" for i in (1, 3)]
    for path in good:
        path.write_bytes(scan.read_bytes())
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(scan.read_bytes()[:200])
    code, out, err = run(capsys, "cohort", "--model", model, "--out", tmp_path / "out", good[0], bad, good[1])
    assert code == 1
    assert (tmp_path / "out" / "good1.nii.gz").is_file() and (tmp_path / "out" / "good3.nii.gz").is_file()
    assert "bad.nii.gz: FAILED: cannot read" in err and "2 of 3 images written" in out
    assert err.strip().splitlines()[-1].startswith("diffdenoise: error: 1 of 3 images failed")


def test_cohort_checks_every_path_before_the_first_image(capsys, tmp_path, scan, model):  # C2
    refused(capsys, "1 of 2 inputs not found", "cohort", "--model", model, "--out", tmp_path / "out", scan,
            tmp_path / "nothere.nii.gz")
    assert not (tmp_path / "out").exists()


def test_cohort_without_a_bundle_trains_on_each_image_as_denoise_does(capsys, tmp_path, scan):  # C7
    second = tmp_path / "second.nii.gz"
    write_volume(second, Volume(read_volume(scan).array[:, ::-1].copy(), GEOMETRY))
    before = snapshot(tmp_path)
    training = ("--method", "bsn", "--steps", "3", "--device", "cpu")
    code, out, err = run(capsys, "cohort", "--out", tmp_path / "out", scan, second, *training)
    assert code == 0, err
    assert "2 of 2 images written" in out and "noise:" in out
    code, _, err = run(capsys, "denoise", second, tmp_path / "alone.nii.gz", *training)
    assert code == 0, err
    np.testing.assert_array_equal(read_volume(tmp_path / "out" / "second.nii.gz").array,
                                  read_volume(tmp_path / "alone.nii.gz").array)
    assert {path: digest for path, digest in snapshot(tmp_path).items() if path in before} == before
    refused(capsys, "--slice-axis bundle needs --model", "cohort", "--out", tmp_path / "again", scan,
            "--slice-axis", "bundle", *training)
    assert not (tmp_path / "again").exists()


# --- S: signals and checkpoints --------------------------------------------------------------------------


def test_sigterm_is_handled_like_ctrl_c(tmp_path, scan):  # S2
    checkpoints, output = tmp_path / "ck", tmp_path / "out" / "t.nii.gz"
    process = subprocess.Popen([sys.executable, "-m", "DiffDenoiseLib.cli", "--no-progress", "denoise", str(scan),
                                str(output), "--method", "bsn", "--steps", "200", "--checkpoint-dir",
                                str(checkpoints), "--device", "cpu"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (checkpoints / "bsn.pt").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143
    assert err.strip().splitlines()[-1] == ("diffdenoise: terminated (SIGTERM); no output was written; run the "
                                            f"same command again to resume from the checkpoints in {checkpoints}")
    assert (checkpoints / "bsn.pt").is_file() and not output.exists()
    assert not list(tmp_path.rglob("*partial*"))


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 not a whole checkpoint"])
def test_damaged_checkpoint_is_one_line(capsys, tmp_path, scan, content):  # S7
    checkpoints = tmp_path / "ck"
    checkpoints.mkdir()
    (checkpoints / "bsn.pt").write_bytes(content)
    refused(capsys, "is damaged or incomplete", "denoise", scan, tmp_path / "o.nii.gz", "--method", "bsn",
            "--steps", "3", "--checkpoint-dir", checkpoints, "--device", "cpu")


def test_checkpoint_folder_that_is_a_file_is_refused_at_start(capsys, tmp_path, scan):  # S8
    (tmp_path / "ck_file").write_text("hi")
    started = time.perf_counter()
    refused(capsys, "is a file, not a folder", "denoise", scan, tmp_path / "o.nii.gz", "--method", "bsn",
            "--steps", "500", "--checkpoint-dir", tmp_path / "ck_file", "--device", "cpu")
    assert time.perf_counter() - started < 30


# --- B: bundles ------------------------------------------------------------------------------------------


def _rewrite_bundle(source: Path, target: Path, edit, rehash: bool = True) -> Path:
    """Copy a bundle with its metadata (and optionally tensors) edited, as a careless tool would."""
    with safe_open(str(source), framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
        raw = handle.metadata()["diffdenoise"]
    metadata = json.loads(raw)
    edited = edit(metadata, tensors)
    if isinstance(edited, str):  # raw metadata text
        save_file(tensors, str(target), metadata={"diffdenoise": edited})
        return target
    if rehash and isinstance(metadata, dict):
        metadata["bundle_sha256"] = _content_digest(tensors, metadata)
    save_file(tensors, str(target), metadata={"diffdenoise": json.dumps(metadata)})
    return target


def _set_config(key, value):
    def edit(metadata, tensors):
        metadata["networks"]["bsn"]["config"][key] = value
    return edit


def test_edited_settings_are_refused_like_edited_weights(tmp_path, model):  # B14
    edited = _rewrite_bundle(model, tmp_path / "edited.safetensors", _set_config("pd_infer", 5), rehash=False)
    with pytest.raises(BundleError, match="weights or settings do not match their recorded SHA-256"):
        load_bundle(edited)


def test_non_finite_weights_are_refused(tmp_path, model):  # B15
    def poison(metadata, tensors):
        first = sorted(key for key in tensors if tensors[key].is_floating_point())[0]
        tensors[first] = torch.full_like(tensors[first], float("nan"))
    with pytest.raises(BundleError, match="holds NaN or Inf values"):
        load_bundle(_rewrite_bundle(model, tmp_path / "nan.safetensors", poison))


def _set(key, value):
    def edit(metadata, tensors):
        metadata[key] = value
    return edit


def _drop(key):
    def edit(metadata, tensors):
        metadata.pop(key)
    return edit


@pytest.mark.parametrize("edit,message", [
    (lambda m, t: "{not json", "not valid JSON"),  # B16
    (lambda m, t: "[1, 2, 3]", "not a DiffDenoise bundle"),
    (_set("format_version", "one"), "format_version 'one' is not a whole number"),
    (_set("format_version", 1), "bundle format 1, whose hash does not cover its settings"),
    (_drop("networks"), "'networks' must be a non-empty mapping"),  # B17
    (_set("networks", []), "'networks' must be a non-empty mapping"),
    (_set("inference_network", "nafnet"), "inference_network is 'nafnet'"),  # B18
    (_set("slice_axis", 7), "slice_axis must be 0, 1 or 2, got 7"),
    (_set("slice_axis", "x"), "slice_axis must be 0, 1 or 2, got 'x'"),
    (_set("method", "diffusion"), "a diffusion bundle runs network 'diffusion'"),
    (_set_config("pd_infer", 0), "pd_infer = 0 is not a valid value"),
    (_set_config("width", True), "width = True is not a valid value"),
    (_set("method", ["bsn"]), "unknown method ['bsn']"),
])
def test_malformed_bundle_settings_are_one_clear_error(tmp_path, model, capsys, scan, edit, message):
    bad = _rewrite_bundle(model, tmp_path / "bad.safetensors", edit)
    refused(capsys, message, "apply", "--model", bad, scan, tmp_path / "o.nii.gz")
    assert not (tmp_path / "o.nii.gz").exists()


def test_bundle_hash_in_outputs_is_the_saved_bundle_s(capsys, tmp_path, scan, model):
    from DiffDenoiseLib.bundle import read_bundle_metadata
    from DiffDenoiseLib.io import read_provenance

    assert run(capsys, "apply", "--model", model, scan, tmp_path / "o.nrrd")[0] == 0
    assert read_provenance(tmp_path / "o.nrrd").bundle_sha256 == read_bundle_metadata(model)["bundle_sha256"]


def test_apply_slices_along_the_input_s_own_thick_axis(capsys, tmp_path, model, noisy_int16):  # B19, F35
    sagittal = tmp_path / "sag.nii.gz"  # 4 thick slices along x (numpy axis 2)
    write_volume(sagittal, Volume(np.ascontiguousarray(np.moveaxis(noisy_int16, 0, 2)),
                                  Geometry((3.0, 0.8, 0.8), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))))
    code, out, err = run(capsys, "apply", "--model", model, sagittal, tmp_path / "o.nii.gz")
    assert code == 0, err
    assert "none of 4" in out  # 4 slices of 64 x 64, not 64 slices of 64 x 4
    code, out, err = run(capsys, "info", sagittal)
    assert code == 0, err
    assert "slice axis: 2" in out and "noise type:" in out


def test_concurrent_saves_of_one_bundle_path_never_collide(tmp_path, model):  # K2
    bundle, target, errors = load_bundle(model), tmp_path / "stress.safetensors", []

    def save_many():
        try:
            for _ in range(30):
                save_bundle(target, bundle, overwrite=True)
        except Exception as error:  # noqa: BLE001 (the test reports any failure)
            errors.append(error)

    workers = [threading.Thread(target=save_many) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not errors and load_bundle(target).method == "bsn"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stress.safetensors"]
    assert oct(target.stat().st_mode & 0o777) == "0o644"


# --- P, F: options and inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("option,value", [("--srds-pairs", "0"), ("--ddim-steps", "0"), ("--distill-slices", "0"),
                                          ("--seed", "99999999999999999999"), ("--steps", "-5")])
def test_bad_option_values_are_usage_errors(capsys, tmp_path, scan, option, value):  # P2
    assert cli.main(["denoise", str(scan), str(tmp_path / "o.nii.gz"), option, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and option in err[0] and "out of range" in err[0]


@pytest.mark.parametrize("option", ["--neighbours", "--sampler-steps"])
def test_bad_ddm2_option_values_are_usage_errors(capsys, tmp_path, option):  # P2
    assert cli.main(["ddm2", str(tmp_path / "d.nii.gz"), str(tmp_path / "o.nii.gz"), option, "0"]) == 2
    assert "at least 1" in capsys.readouterr().err


def test_usage_errors_end_the_machine_protocol_too(capsys, tmp_path):  # O19
    assert cli.main(["--machine-progress", "apply", str(tmp_path / "in.nii.gz")]) == 2
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["diffdenoise"] == "error" and last["exit_code"] == 2 and "--model" in last["message"]


def test_a_folder_with_two_dicom_series_can_be_picked_from(capsys, tmp_path, noisy_int16, model):  # F1
    mixed = tmp_path / "mixed"
    for index, name in enumerate(("A", "B")):
        write_volume(tmp_path / name, Volume(noisy_int16 + index, GEOMETRY))
        mixed.mkdir(exist_ok=True)
        for path in (tmp_path / name).iterdir():
            path.rename(mixed / f"{name}_{path.name}")
    line = refused(capsys, "pick one with --series", "info", mixed)
    uid = line.rsplit(" ", 1)[-1]
    code, out, _ = run(capsys, "apply", "--model", model, mixed, tmp_path / "picked.nrrd", "--series", uid)
    assert code == 0 and (tmp_path / "picked.nrrd").is_file()


# --- property: whatever the output path, no input byte changes and no pre-existing file disappears -------


def _output_choices(root: Path, source: Path) -> dict[str, Path]:
    return {
        "the input": source, "the input's folder": source.parent, "its parent": root, "a new name": root / "new.nrrd",
        "the input, other extension": source.with_name("scan.nrrd"),
        "the input, other letter case": source.with_name("SCAN.nii.gz"),
        "a link to the input": root / "data" / "link.nii.gz",
        "through a linked folder": root / "linked" / "scan.nii.gz",
        "an existing file": root / "data" / "notes.nii.gz", "a folder of notes": root / "notes",
        "new DICOM series": root / "series", "in a new folder": root / "deep" / "er" / "x.mha",
        "a dot path": root / "data" / ".." / "data" / "scan.nii.gz", "an MHD data file": root / "data" / "scan.mhd",
        "the bundle": root / "m.safetensors",
    }


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(choice=st.sampled_from(sorted(_output_choices(Path("/"), Path("/data/scan.nii.gz")))),
       extras=st.sampled_from([[], ["--extra", "residual"]]), overwrite=st.booleans())
def test_no_output_path_loses_data(capsys, tmp_path_factory, noisy_int16, model, choice, extras, overwrite):
    root = tmp_path_factory.mktemp("sandbox")
    data = root / "data"
    source = data / "scan.nii.gz"
    write_volume(source, Volume(noisy_int16, GEOMETRY))
    (data / "scan_residual.nii.gz").write_bytes(source.read_bytes())
    (data / "scan.zraw").write_text("the data file of another header")
    (data / "notes.nii.gz").write_text("not an image")
    (data / "link.nii.gz").symlink_to(source)
    (root / "linked").symlink_to(data, target_is_directory=True)
    (root / "notes").mkdir()
    (root / "notes" / "a.txt").write_text("a")
    (root / "m.safetensors").write_bytes(model.read_bytes())
    before = snapshot(root)
    output = _output_choices(root, source)[choice]
    code, _, err = run(capsys, "apply", "--model", root / "m.safetensors", source, output, *extras,
                       *(["--overwrite"] if overwrite else []))
    after = snapshot(root)
    assert len([line for line in err.splitlines() if line.startswith("diffdenoise:")]) == (code != 0)
    requested = {str(path) for main in (output, cli.extra_output_path(output, "residual")) for path in
                 output_files(main)} if overwrite and code == 0 else set()
    for path, digest in before.items():
        replaced_on_request = path in requested and path != str(source)
        assert path in after, f"{path} disappeared ({choice})"
        assert after[path] == digest or replaced_on_request, f"{path} changed ({choice})"
    assert not [path for path in after if ".partial" in path]


# --- real small and read-only disks (tmpfs; skipped where this process may not mount) -------------------


@pytest.fixture
def small_disk(tmp_path):
    """A 256 kB tmpfs at tmp_path/disk, unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()

    def mount(*options):
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=256k", *options)), "tmpfs",
                                 str(mount_point)], capture_output=True)
        if result.returncode != 0:
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
        return mount_point

    yield mount
    subprocess.run(["umount", str(mount_point)], capture_output=True)


def test_read_only_disk_is_refused_before_any_work(capsys, small_disk, scan, model):  # O9
    disk = small_disk("ro")
    line = refused(capsys, f"cannot write to {disk}: Read-only file system", "apply", "--model", model, scan,
                   disk / "x.nii.gz")
    assert "choose a folder you can write to" in line


def test_full_disk_is_one_line_and_leaves_nothing(capsys, small_disk, tmp_path, model):  # O10
    disk = small_disk()
    (disk / "filler").write_bytes(b"\0" * 200_000)
    big = tmp_path / "big.nrrd"
    write_volume(big, Volume(np.random.default_rng(0).normal(100, 10, (8, 64, 64)).astype(np.float32), GEOMETRY))
    refused(capsys, "the outputs need about 0.1 MB", "apply", "--model", model, big, disk / "out.nii")
    # the raw image fits, the DICOM headers of 96 tiny slices do not: the writer fails, in one line
    many = tmp_path / "many.nrrd"
    write_volume(many, Volume(np.random.default_rng(0).integers(0, 999, (96, 12, 12)).astype(np.int16), GEOMETRY))
    line = refused(capsys, "cannot write or read", "apply", "--model", model, many, disk / "series")
    assert "is the disk full?" in line
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_sigterm_during_a_cohort_says_which_files_were_written(tmp_path, scan, model, noisy_int16):  # S6
    long = tmp_path / "long.nii.gz"
    write_volume(long, Volume(np.tile(noisy_int16, (24, 4, 4)), GEOMETRY))  # 96 slices of 256 x 256
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "DiffDenoiseLib.cli", "--no-progress", "cohort", "--model",
                                str(model), "--out", str(out), str(scan), str(long), "--device", "cpu"],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (out / "scan.nii.gz").exists() and time.time() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == ("diffdenoise: terminated (SIGTERM); only these were written: "
                                            f"{out / 'scan.nii.gz'}")
    assert sorted(p.name for p in out.iterdir()) == ["scan.nii.gz"]


class _Stopped(Exception):
    pass


def _record(records: list, item: object) -> None:
    records.append(item)


def _raise_stopped(signum, frame):
    raise _Stopped


@pytest.mark.parametrize("writer", ["image", "bundle"])
def test_a_sigterm_as_the_output_lands_is_held_until_it_is_recorded(tmp_path, model, noisy_int16, writer):  # S6
    # The record of what was written is made before the signal lands, so an interrupted run never says "no output
    # was written" about a file it left in place.
    recorded = []
    # The kernel hands a signal sent to the process to any thread that does not block it: torch's and tqdm's
    # threads too. Its handler then runs on the main thread at the next Python call, wherever that is.
    bystander_done = threading.Event()
    bystander = threading.Thread(target=bystander_done.wait)
    bystander.start()

    def record_then_terminate(*path):
        signal.pthread_kill(bystander.ident, signal.SIGTERM)  # arrives while the output is placed
        time.sleep(0.1)  # the bystander takes it
        _record(recorded, path)  # a Python call, where a pending handler would run: after the hold, not here

    previous = signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        with pytest.raises(_Stopped):
            if writer == "image":
                write_volume(tmp_path / "out.nii.gz", Volume(noisy_int16, GEOMETRY), on_written=record_then_terminate)
            else:
                save_bundle(tmp_path / "out.safetensors", load_bundle(model), on_saved=record_then_terminate)
    finally:
        signal.signal(signal.SIGTERM, previous)
        bystander_done.set()
        bystander.join()
    assert len(recorded) == 1
    assert [p.name for p in tmp_path.iterdir()] == [f"out.{'nii.gz' if writer == 'image' else 'safetensors'}"]


def test_sigterm_while_writing_leaves_no_partial_output(tmp_path, model, noisy_int16):  # S4
    long = tmp_path / "long.nrrd"
    # 16 slices of 512 x 512: writing them takes about 0.4 s, a wide window for the signal; applying the bundle
    # takes 20 s (most of it the grouped Wiener filtering), so no larger
    write_volume(long, Volume(np.tile(noisy_int16, (4, 8, 8)), GEOMETRY))
    out = tmp_path / "out"
    out.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "DiffDenoiseLib.cli", "--no-progress", "apply", "--model",
                                str(model), str(long), str(out / "long.nii.gz"), "--device", "cpu"],
                               stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not list(out.glob(".long.nii.gz.partial-*")) and time.time() < deadline and process.poll() is None:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143, err
    assert err.strip().splitlines()[-1] == "diffdenoise: terminated (SIGTERM); no output was written"
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("bvals,message", [("nan", "finite and >= 0"), ("-1000", "finite and >= 0"),
                                           ("1.0", "look like ms/um^2")])
def test_bad_b_values_stop_ddm2_before_training(capsys, tmp_path, small_dwi, bvals, message):  # D4, D6, D7
    source = tmp_path / "dwi.nii.gz"
    write_dwi(source, small_dwi)
    values = small_dwi.bvals.astype(object)
    values[values > 0] = 1000.0
    values[3] = bvals if bvals != "1.0" else 1.0
    if bvals == "1.0":
        values[values == 1000.0] = 1.0
    (tmp_path / "bad.bval").write_text(" ".join(map(str, values)) + "\n")
    started = time.perf_counter()
    refused(capsys, message, "ddm2", source, tmp_path / "out.nii.gz", "--bval", tmp_path / "bad.bval",
            "--steps", "500", "--device", "cpu")
    assert time.perf_counter() - started < 30 and not (tmp_path / "out.nii.gz").exists()


def test_a_bundle_the_disk_cannot_hold_does_not_lose_the_images(capsys, small_disk, tmp_path, scan):  # O10, O17
    disk = small_disk()
    (disk / "filler").write_bytes(b"\0" * 250_000)
    code, _, err = run(capsys, "denoise", scan, tmp_path / "out.nii.gz", "--method", "bsn", "--steps", "2",
                       "--device", "cpu", "--save-model", disk / "m.safetensors")
    lines = [line for line in err.splitlines() if line.startswith("diffdenoise:")]
    assert code == 1 and lines[-1].startswith("diffdenoise: error: the model bundle was not saved")
    assert "the images were written" in lines[-1] and "is the disk full?" in lines[-1]
    assert (tmp_path / "out.nii.gz").is_file() and sorted(p.name for p in disk.iterdir()) == ["filler"]


def test_a_file_another_run_wrote_meanwhile_is_never_replaced(tmp_path, model):  # K1
    from DiffDenoiseLib.io import move_into_place

    finished, destination = tmp_path / ".partial", tmp_path / "out.nii.gz"
    finished.write_text("this run")
    destination.write_text("the other run")
    with pytest.raises(InputError, match="appeared while this run worked"):
        move_into_place(finished, destination, overwrite=False)
    assert destination.read_text() == "the other run"
    save_bundle(tmp_path / "m.safetensors", load_bundle(model))
    with pytest.raises(BundleError, match="already exists"):
        save_bundle(tmp_path / "m.safetensors", load_bundle(model))


@pytest.fixture(scope="module")
def diffusion_model(tmp_path_factory, noisy_int16) -> Path:
    from helpers import make_tiny_settings

    bundle = denoise(noisy_int16, method="diffusion", preset=make_tiny_settings(), device="cpu").bundle
    return save_bundle(tmp_path_factory.mktemp("diffusion") / "diffusion.safetensors", bundle)


def _set_in(section, key, value):
    def edit(metadata, tensors):
        metadata[section][key] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set_in("sampling", "pairs", 0), "sampling pairs must be a whole number >= 1, got 0"),
    (_set_in("sampling", "colour", "blue"), "sampling settings are invalid"),
    (_set_in("sampling", "seed", "x"), "sampling seed must be a whole number"),
    (lambda m, t: m["diffusion"]["schedule"].update(kind="evil"), "diffusion schedule settings are invalid"),
    (lambda m, t: m["diffusion"].update(conditioning=3), "'diffusion' settings (schedule, conditioning) are missing"),
])
def test_malformed_diffusion_settings_are_one_clear_error(tmp_path, diffusion_model, capsys, scan, edit, message):
    bad = _rewrite_bundle(diffusion_model, tmp_path / "bad.safetensors", edit)
    refused(capsys, message, "apply", "--model", bad, scan, tmp_path / "o.nii.gz")


def test_names_too_long_for_the_disk_and_pipes_are_refused_before_work(capsys, tmp_path, scan, model):
    refused(capsys, "is too long for this disk", "apply", "--model", model, scan, tmp_path / ("x" * 240 + ".nrrd"))
    pipe = tmp_path / "pipe.nii.gz"
    os.mkfifo(pipe)
    refused(capsys, "is not a regular file or folder", "apply", "--model", model, pipe, tmp_path / "o.nii.gz")


def test_cohort_png_and_tif_of_one_name_share_their_provenance_file(capsys, tmp_path, model):  # C6
    image = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8)
    for name in ("img.png", "img.tif"):
        sitk.WriteImage(sitk.GetImageFromArray(image), str(tmp_path / name))
    code, out, err = run(capsys, "cohort", "--model", model, "--out", tmp_path / "out", tmp_path / "img.png",
                         tmp_path / "img.tif")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img.json", "img.png", "img.tif"]
