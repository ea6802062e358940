"""Refactors keep results: ``denoise``, ``apply_bundle`` and ``denoise_dwi`` at a fixed seed on the test
configurations give the outputs recorded in ``data/recorded_outputs.npz`` before a change of structure.

Recorded with one CPU thread (the sums of a convolution can round differently with the work split in
another way) and in float32 (bfloat16 on AMX CPUs is switched off for the comparison). On a CPU with the
recording's kernels (``torch.backends.cpu.get_cpu_capability()``) the outputs must be bit-identical; on
another the kernels round differently, and they must agree to 1e-4 of the intensity range, far below any
change of logic (one training step more moves the BSN method's output by 1.5e-3 of the range: 1e-2 before
the correlated noise model's level changed). Record again, on purpose and in its own commit, only for a change
that is meant to change results::

    python Testing/test_recorded_outputs.py --record
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # as pytest's rootdir conftest import does, for --record

from helpers import SMALL_DWI, make_tiny_ddm2, make_tiny_settings  # noqa: E402

from DiffDenoiseLib.data import SAMPLE_KNEE  # noqa: E402
from DiffDenoiseLib.denoise import apply_bundle, denoise  # noqa: E402
from DiffDenoiseLib.denoise_dwi import apply_dwi_bundle, denoise_dwi  # noqa: E402
from DiffDenoiseLib.io import read_dwi, read_volume  # noqa: E402
from DiffDenoiseLib.runtime import devices  # noqa: E402

RECORDED = Path(__file__).parent / "data" / "recorded_outputs.npz"
TOLERANCE = 1e-4  # of the intensity range, on a CPU with other kernels than the recording's
CAPABILITY_KEY = "cpu_capability"


def _knee(rows: slice) -> np.ndarray:
    return read_volume(SAMPLE_KNEE).array[4:8, rows, 64:128].astype(np.float32)


def _scalar_runs() -> dict[str, np.ndarray]:
    image, other = _knee(slice(64, 128)), _knee(slice(128, 192))
    outputs: dict[str, np.ndarray] = {}
    for method in ("bsn", "diffusion", "diffdenoise"):
        result = denoise(image, method=method, preset=make_tiny_settings(), device="cpu", seed=3,
                         outputs=("bsn",) if method != "bsn" else ())
        outputs[f"denoise_{method}"] = result.denoised
        if method != "bsn":
            outputs[f"denoise_{method}_bsn"] = result.extras["bsn"]
        outputs[f"apply_{method}"] = apply_bundle(result.bundle, other, device="cpu").denoised
    return outputs


def _dwi_runs() -> dict[str, np.ndarray]:
    dwi = read_dwi(SMALL_DWI)
    series, bvals = dwi.volume.array.astype(np.float32), dwi.bvals
    outputs: dict[str, np.ndarray] = {}
    for method in ("ddm2", "stage1"):
        result = denoise_dwi(series, bvals, method=method, preset=make_tiny_ddm2(), device="cpu", seed=5)
        outputs[f"ddm2_{method}"] = result.denoised
        outputs[f"ddm2_apply_{method}"] = apply_dwi_bundle(result.bundle, series, bvals, device="cpu").denoised
    return outputs


RUNS: dict[str, Callable[[], dict[str, np.ndarray]]] = {"scalar": _scalar_runs, "dwi": _dwi_runs}


@contextmanager
def _one_thread() -> Iterator[None]:
    """One thread, and float32 everywhere: on CPUs with AMX the NAFNets would run in bfloat16, whose rounding
    is far coarser than the tolerance (the recording ran without AMX, in float32)."""
    threads, has_amx = torch.get_num_threads(), devices.cpu_has_amx_bf16
    torch.set_num_threads(1)
    devices.cpu_has_amx_bf16 = lambda: False  # read by devices.choose_precision at every call
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        devices.cpu_has_amx_bf16 = has_amx


def record() -> None:
    """Run every configuration and write the outputs (atomically) to :data:`RECORDED`."""
    with _one_thread():
        outputs = {name: array for run in RUNS.values() for name, array in run().items()}
    partial = RECORDED.with_name(RECORDED.name + ".partial.npz")
    np.savez_compressed(partial, **outputs, **{CAPABILITY_KEY: np.array(torch.backends.cpu.get_cpu_capability())})
    partial.replace(RECORDED)
    print(f"recorded {len(outputs)} outputs to {RECORDED}")


@pytest.mark.parametrize("run", list(RUNS))
def test_outputs_equal_the_recorded_ones(run):
    recorded = np.load(RECORDED)
    with _one_thread():
        outputs = RUNS[run]()
    exact = str(recorded[CAPABILITY_KEY]) == torch.backends.cpu.get_cpu_capability()
    for name, output in outputs.items():
        expected = recorded[name]
        assert output.shape == expected.shape and output.dtype == expected.dtype, name
        if exact:
            np.testing.assert_array_equal(output, expected, err_msg=name)
        else:
            span = float(expected.max() - expected.min())
            np.testing.assert_allclose(output, expected, rtol=0, atol=TOLERANCE * span, err_msg=name)


def test_the_comparison_would_catch_one_training_step_more():
    """The tolerance of another CPU is far below (a tenth or less of) what a change of logic moves: one step more
    of every stage."""
    image = _knee(slice(64, 128))
    with _one_thread():
        settings = make_tiny_settings()
        longer = denoise(image, method="bsn", preset=settings, device="cpu", seed=3, steps=5).denoised
    expected = np.load(RECORDED)["denoise_bsn"]
    span = float(expected.max() - expected.min())
    assert np.abs(longer - expected).max() > 10 * TOLERANCE * span


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python Testing/test_recorded_outputs.py --record")
    record()
