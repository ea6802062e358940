"""The diffdenoise command: real subprocess runs, exit codes and one-line errors."""

import os
import signal
import socket
import subprocess
import sys
import time

import nibabel as nib
import numpy as np
import pytest

from DiffDenoiseLib.bundle import read_bundle_metadata
from DiffDenoiseLib.io import Geometry, Volume, read_provenance, read_volume, write_volume


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "DiffDenoiseLib.cli", "--no-progress", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


def _one_line_error(result, text):
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0] and text in lines[0]


@pytest.fixture
def noisy_file(tmp_path, knee_crop):
    path = tmp_path / "noisy.nrrd"
    write_volume(path, Volume(knee_crop.astype(np.int16), Geometry((0.6, 0.6, 4.0), (1.0, 2.0, 3.0),
                                                                   tuple(np.eye(3).ravel()))))
    return path


def test_denoise_apply_and_info(tmp_path, noisy_file):
    out, model = tmp_path / "out.nii.gz", tmp_path / "model.safetensors"
    result = run_cli("denoise", noisy_file, out, "--steps", "2", "--ddim-steps", "2", "--srds-pairs", "2",
                     "--save-model", model, "--device", "cpu", "--extra", "residual", "uncertainty")
    assert result.returncode == 0, result.stderr
    assert "outlier slices" in result.stdout
    written, source = read_volume(out), read_volume(noisy_file)
    assert written.array.shape == source.array.shape and written.array.dtype == np.int16
    for name in ("residual", "uncertainty"):
        extra = read_volume(tmp_path / f"out_{name}.nii.gz")
        assert extra.array.shape == source.array.shape and extra.array.dtype == np.float32
        np.testing.assert_allclose(extra.geometry.origin, source.geometry.origin, atol=1e-6)
    np.testing.assert_allclose(written.geometry.spacing, source.geometry.spacing, atol=1e-6)
    np.testing.assert_allclose(written.geometry.origin, source.geometry.origin, atol=1e-6)

    # every output records what made it; the hash is the saved bundle's, trained here or applied from it
    weights = read_bundle_metadata(model)["bundle_sha256"]
    for path in (out, tmp_path / "out_residual.nii.gz", tmp_path / "out_uncertainty.nii.gz"):
        record = read_provenance(path)
        assert (record.method, record.preset, record.model) == ("diffdenoise", "quick", "trained on the input")
        assert record.bundle_sha256 == weights
    assert nib.load(out).header["descrip"].item().decode().startswith(f"DiffDenoise {record.package_version} "
                                                                      f"diffdenoise quick {weights[:12]}")

    applied = tmp_path / "applied.nrrd"
    result = run_cli("apply", "--model", model, noisy_file, applied, "--output-dtype", "float32")
    assert result.returncode == 0, result.stderr
    assert read_volume(applied).array.dtype == np.float32
    record = read_provenance(applied)
    assert (record.model, record.bundle_sha256) == ("bundle", weights)

    info = run_cli("info", noisy_file)
    assert info.returncode == 0 and "noise type:" in info.stdout and "(0.6, 0.6, 4.0)" in info.stdout
    assert "made by" not in info.stdout and f"bundle_sha256 {weights}" in run_cli("info", applied).stdout
    bundle_info = run_cli("info", model)
    assert bundle_info.returncode == 0 and '"method": "diffdenoise"' in bundle_info.stdout
    assert '"pairs": 2' in bundle_info.stdout


def test_killed_training_resumes_from_its_checkpoints_to_the_same_result(tmp_path, noisy_file):
    options = ["denoise", noisy_file, None, "--method", "diffusion", "--steps", "10", "--ddim-steps", "2",
               "--device", "cpu", "--output-dtype", "float32"]
    command = [sys.executable, "-m", "DiffDenoiseLib.cli", "--no-progress"]
    checkpoints, resumed = tmp_path / "checkpoints", tmp_path / "resumed.nrrd"
    options[2] = resumed
    process = subprocess.Popen([*command, *map(str, options), "--checkpoint-dir", str(checkpoints)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (checkpoints / "diffusion.pt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()  # SIGKILL in the middle of the diffusion stage: no cleanup runs
    assert process.wait() == -signal.SIGKILL  # killed, not finished
    assert (checkpoints / "bsn.pt").exists() and not resumed.exists()
    assert run_cli(*options, "--checkpoint-dir", checkpoints).returncode == 0
    options[2] = tmp_path / "uninterrupted.nrrd"
    assert run_cli(*options).returncode == 0
    np.testing.assert_array_equal(read_volume(resumed).array, read_volume(options[2]).array)


def test_every_line_is_one_write_even_when_python_is_unbuffered(noisy_file):
    # torchrun's processes share one pipe: a line written in pieces interleaves with another process's line.
    # A packet socket as stdout keeps each write apart, so the test sees the writes themselves.
    reader, writer = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with reader, writer:
        subprocess.run([sys.executable, "-m", "DiffDenoiseLib.cli", "info", str(noisy_file)], stdout=writer,
                       env=dict(os.environ, PYTHONUNBUFFERED="1"), check=True, timeout=120)
        writer.close()
        writes = []
        while packet := reader.recv(65536):
            writes.append(packet.decode())
    assert len(writes) > 5 and all(text.endswith("\n") and text.count("\n") == 1 for text in writes), writes


def test_bsn_method_has_no_uncertainty(tmp_path, noisy_file):
    result = run_cli("denoise", noisy_file, tmp_path / "o.nrrd", "--method", "bsn", "--extra", "uncertainty")
    _one_line_error(result, "use method diffusion or diffdenoise")


def test_extra_output_names():
    from pathlib import Path

    from DiffDenoiseLib.cli import extra_output_path

    assert extra_output_path(Path("/d/out.nii.gz"), "residual") == Path("/d/out_residual.nii.gz")
    assert extra_output_path(Path("/d/out.nrrd"), "uncertainty") == Path("/d/out_uncertainty.nrrd")
    assert extra_output_path(Path("/d/series"), "residual") == Path("/d/series_residual")
    assert extra_output_path(Path("/d/OUT.NII.GZ"), "bsn") == Path("/d/OUT_bsn.NII.GZ")  # the writers' extension


def test_missing_file(tmp_path):
    _one_line_error(run_cli("denoise", tmp_path / "nope.nii.gz", tmp_path / "o.nii.gz"), "not found")


def test_5d_array(tmp_path):
    path = tmp_path / "five.nii.gz"
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 4, 2, 2)).astype(np.float32), np.eye(4)), path)
    _one_line_error(run_cli("denoise", path, tmp_path / "o.nii.gz"), "5D")


def test_nan_only_volume(tmp_path):
    path = tmp_path / "nan.nrrd"
    write_volume(path, Volume(np.full((2, 32, 32), np.nan, np.float32), Geometry.identity(3)))
    result = run_cli("denoise", path, tmp_path / "o.nrrd")
    _one_line_error(result, "NaN")
    assert not (tmp_path / "o.nrrd").exists()


def test_unknown_option(tmp_path, noisy_file):
    result = run_cli("denoise", noisy_file, tmp_path / "o.nrrd", "--colour", "blue")
    _one_line_error(result, "unrecognized arguments")
    assert result.returncode == 2


def test_output_may_not_overwrite_input(noisy_file):
    _one_line_error(run_cli("denoise", noisy_file, noisy_file), "overwrite the input")


def test_bad_bundle(tmp_path, noisy_file):
    fake = tmp_path / "model.pt"
    fake.write_bytes(b"not a model")
    _one_line_error(run_cli("apply", "--model", fake, noisy_file, tmp_path / "o.nrrd"), "never unpickles")


def test_machine_progress_reports_progress_then_the_written_files(tmp_path, noisy_file):
    from DiffDenoiseLib.worker import parse_line

    output = tmp_path / "out.nrrd"
    result = run_cli("--machine-progress", "denoise", noisy_file, output, "--method", "bsn", "--steps", "3",
                     "--extra", "residual", "--device", "cpu")
    assert result.returncode == 0, result.stderr
    messages = [parse_line(line) for line in result.stdout.splitlines()]
    training = [m.event for m in messages if m.kind == "progress" and m.event.stage == "train bsn"]
    assert [e.step for e in training] == [1, 2, 3] and all(e.total == 3 and e.loss > 0 for e in training)
    assert messages[-1].kind == "result" and [m.kind for m in messages].count("result") == 1
    assert messages[-1].outputs == {"denoised": str(output), "residual": str(tmp_path / "out_residual.nrrd")}
    assert any(m.kind == "log" and m.text.startswith("noise:") for m in messages)

    failed = run_cli("--machine-progress", "apply", "--model", tmp_path / "missing.safetensors", noisy_file, output)
    last = parse_line(failed.stdout.splitlines()[-1])
    assert failed.returncode != 0 and last.kind == "error" and last.exit_code == failed.returncode
    assert "not found" in last.text
