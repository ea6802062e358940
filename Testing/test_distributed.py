"""Scale-out under torchrun: 2 CPU processes (gloo) train a tiny pipeline and share out a cohort."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from DiffDenoiseLib.bundle import load_bundle
from DiffDenoiseLib.io import Geometry, Volume, read_volume, write_volume
from DiffDenoiseLib.runtime import distributed

ROOT = Path(__file__).resolve().parents[1]


def _torchrun(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "DiffDenoiseLib.cli", "--no-progress", *arguments], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture
def small_images(knee_crop, tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"image{i}.nii.gz")
        write_volume(paths[-1], Volume(np.roll(knee_crop, 7 * i, axis=-1), Geometry.identity(3)))
    return paths


def test_two_process_training_writes_one_output_and_a_bundle_that_loads(small_images, tmp_path):
    result = _torchrun("denoise", str(small_images[0]), "out.nii.gz", "--method", "bsn", "--steps", "4",
                       "--device", "cpu", "--save-model", "m.safetensors", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("saved model bundle") == 1  # one process writes
    bundle = load_bundle(tmp_path / "m.safetensors")
    summary = bundle.describe()["training"]["bsn"]["summary"]
    assert bundle.method == "bsn" and summary["steps"] == 4 and summary["processes"] == 2
    assert read_volume(tmp_path / "out.nii.gz").array.shape == read_volume(small_images[0]).array.shape


def test_cohort_inference_shards_the_files_by_rank(small_images, tmp_path):
    trained = _torchrun("denoise", str(small_images[0]), "out.nii.gz", "--method", "bsn", "--steps", "2",
                        "--device", "cpu", "--save-model", "m.safetensors", cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-3000:]
    result = _torchrun("cohort", "--model", "m.safetensors", "--out", "cohort", "--device", "cpu",
                       *map(str, small_images), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (tmp_path / "cohort").iterdir()) == [p.name for p in small_images]
    assert sorted(line.split("]")[0] for line in result.stdout.splitlines() if "->" in line) == [
        "[process 0", "[process 0", "[process 1"]
    # A second run finds the outputs there: every process stops before writing, and none is left waiting.
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cohort").iterdir()}
    again = _torchrun("cohort", "--model", "m.safetensors", "--out", "cohort", "--device", "cpu",
                      *map(str, small_images), cwd=tmp_path)
    assert again.returncode != 0 and "already exists" in again.stderr
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cohort").iterdir()} == before


def test_without_torchrun_everything_is_one_process():
    assert not distributed.launched_by_torchrun() and not distributed.initialise("cpu")
    assert distributed.rank() == 0 and distributed.world_size() == 1 and distributed.is_main()
    assert distributed.shard([1, 2, 3]) == [1, 2, 3] and distributed.gather("x") == ["x"]
