"""DDM2 against raw data, Patch2Self and MP-PCA on real diffusion MRI, scored on held-out b0s, in one run.

    python -m benchmarks.ddm2_benchmark [--preset quick] [--neighbours 2] [--seed 0] [--out benchmarks/results]

Data: ``../shared/data/dwi/mdt_b1k_b2k`` (104 x 104 x 2 slices, 13 b0 + 30 x b=1000 + 60 x b=2000, real
scanner noise, brain mask). Leakage-free protocol: every second b0 is held out and never shown to any
method; each method denoises the remaining volumes, and each denoised kept b0 is scored against the mean of
the held-out b0s (PSNR inside the brain mask, data range = the reference's 99.9th percentile in the mask).
Scoring against the other b0s of the same input would be leaky: Patch2Self and Stage I predict a volume from
the other volumes. The reference is itself noisy (mean of 6 b0s), so PSNRs saturate; the ranking holds.

Methods: raw; dipy ``patch2self`` (version 3, OLS); dipy ``mppca`` with patch radius 2 in-plane (5x5x1: the
series has 2 slices) and 5 (11x11x1, more voxels than volumes, as dipy advises); our Stage I alone; DDM2 with
the accelerated (DDIM) and the full (ancestral, every step) sampler, from one trained model. Also SNR (mean in
the mask / std of the background) and CNR (upper minus lower quartile tissue of the reference b0, over the
background std) of the weighted volumes, as change against raw, and run times.
"""

from __future__ import annotations

import argparse
import csv
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_dilation

from benchmarks.datasets import SHARED
from DiffDenoiseLib.denoise_dwi import apply_dwi_bundle, denoise_dwi
from DiffDenoiseLib.io import read_dwi, read_volume
from DiffDenoiseLib.pipelines.ddm2 import DDM2Settings
from DiffDenoiseLib.runtime.progress import TqdmProgress

DATA = SHARED / "dwi" / "mdt_b1k_b2k"
B0_THRESHOLD = 50.0


def load() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Series (v, z, y, x) float32, b-values, brain mask (z, y, x)."""
    dwi = read_dwi(DATA / "b1k_b2k_example_slices_24_38.nii.gz", DATA / "b1k_b2k.bval", DATA / "b1k_b2k.bvec")
    mask = read_volume(DATA / "b1k_b2k_example_slices_24_38_mask.nii.gz").array > 0
    return dwi.volume.array.astype(np.float32), dwi.bvals, mask


def split_b0s(bvals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept volume indices, held-out b0 indices): every second b0 is held out."""
    b0s = np.flatnonzero(bvals < B0_THRESHOLD)
    held_out = b0s[1::2]
    return np.setdiff1d(np.arange(len(bvals)), held_out), held_out


def psnr_in_mask(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    data_range = np.percentile(reference[mask], 99.9)
    mse = np.mean((image[mask].astype(np.float64) - reference[mask]) ** 2)
    return float(10 * np.log10(data_range ** 2 / mse))


def snr_cnr(series: np.ndarray, reference_b0: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean SNR and CNR over the volumes of ``series`` (see the module docstring)."""
    background = ~binary_dilation(mask, iterations=3)
    background[:, :8] = background[:, -8:] = False  # avoid wrap-around/edge artefacts at the image border
    tissue = reference_b0[mask]
    high, low = mask & (reference_b0 >= np.percentile(tissue, 75)), mask & (reference_b0 <= np.percentile(tissue, 25))
    snrs, cnrs = [], []
    for volume in series:
        noise = volume[background].std()
        snrs.append(volume[mask].mean() / noise)
        cnrs.append(abs(volume[high].mean() - volume[low].mean()) / noise)
    return float(np.mean(snrs)), float(np.mean(cnrs))


def run_methods(series: np.ndarray, bvals: np.ndarray, preset: str | DDM2Settings, seed: int, neighbours: int,
                mppca_radii: tuple[int, ...] = (2, 5)) -> tuple[dict, list[str]]:
    """Every method on the kept series: name -> (denoised series, seconds)."""
    from dipy.denoise.localpca import mppca
    from dipy.denoise.patch2self import patch2self

    outputs, notes = {"raw": (series, 0.0)}, []
    xyzv = np.moveaxis(series, 0, -1).transpose(2, 1, 0, 3)  # dipy wants (x, y, z, volumes)
    back = lambda array: np.moveaxis(array.transpose(2, 1, 0, 3), -1, 0).astype(np.float32)  # noqa: E731
    started = time.perf_counter()
    denoised = patch2self(xyzv, bvals, model="ols")
    # dipy 1.12's version 3 writes stale results into the last (volumes % 5) volumes (its chunked copy takes
    # the wrong end of its buffer); the OLS fits do not depend on volume order, so those volumes come from a
    # second run on the reversed series, where they are first
    tail = xyzv.shape[-1] % 5
    if tail:
        denoised[..., -tail:] = patch2self(xyzv[..., ::-1], bvals[::-1], model="ols")[..., :tail][..., ::-1]
    outputs["Patch2Self (dipy, OLS)"] = (back(denoised), time.perf_counter() - started)
    for radius in mppca_radii:
        started = time.perf_counter()
        denoised = mppca(xyzv, patch_radius=np.array([radius, radius, 0]), suppress_warning=True)
        outputs[f"MP-PCA (dipy, radius {radius})"] = (back(denoised), time.perf_counter() - started)
    progress = TqdmProgress()
    started = time.perf_counter()
    result = denoise_dwi(series, bvals, preset=preset, seed=seed, neighbours=neighbours, sampler="accelerated",
                         progress=progress)
    outputs["DDM2 Stage I only"] = (result.stage1, result.timings["train_stage1_s"]
                                    + result.timings["stage1_inference_and_matching_s"])
    outputs["DDM2 accelerated (DDIM)"] = (result.denoised, time.perf_counter() - started)
    train_s = result.timings["train_stage1_s"] + result.timings["train_stage3_s"]
    full = apply_dwi_bundle(result.bundle, series, bvals, sampler="full", progress=progress)
    progress.close()
    outputs["DDM2 full chain"] = (full.denoised, train_s + full.timings["total_s"])
    steps = result.matched_steps
    notes.append(f"DDM2 training: Stage I {result.timings['train_stage1_s']:.0f} s, Stage III "
                 f"{result.timings['train_stage3_s']:.0f} s; sampling {result.timings['sampling_s']:.1f} s "
                 f"accelerated ({result.bundle.record.sampler_steps} steps) vs "
                 f"{full.timings['sampling_s']:.1f} s full chain")
    b0 = bvals < B0_THRESHOLD
    notes.append(f"matched steps: b0 slices median {int(np.median(steps[b0]))}, weighted slices median "
                 f"{int(np.median(steps[~b0]))} (range {steps.min()}-{steps.max()}); untouched slices "
                 f"{int(result.untouched.sum())}, outlier slices {int(result.outliers.sum())} accelerated / "
                 f"{int(full.outliers.sum())} full")
    return outputs, notes


@dataclass
class DwiBenchmark:
    """Scores of every method (rows: name, held-out-b0 PSNR mean and std, SNR and CNR change, seconds)."""

    rows: list[tuple[str, float, float, float, float, float]]
    notes: list[str]
    volumes: int
    kept_b0s: int
    held_out_b0s: int


def run_benchmark(preset: str | DDM2Settings, seed: int, neighbours: int, max_b: float | None = None,
                  mppca_radii: tuple[int, ...] = (2, 5)) -> DwiBenchmark:
    """The held-out-b0 protocol of the module docstring on the volumes with b <= ``max_b`` (all when None)."""
    series, bvals, mask = load()
    if max_b is not None:
        series, bvals = series[bvals <= max_b], bvals[bvals <= max_b]
    kept, held_out = split_b0s(bvals)
    reference = series[held_out].mean(axis=0)
    kept_series, kept_bvals = series[kept], bvals[kept]
    kept_b0 = np.flatnonzero(kept_bvals < B0_THRESHOLD)
    weighted = np.flatnonzero(kept_bvals >= B0_THRESHOLD)
    outputs, notes = run_methods(kept_series, kept_bvals, preset, seed, neighbours, mppca_radii)
    raw_snr, raw_cnr = snr_cnr(kept_series[weighted], reference, mask)
    rows = []
    for name, (denoised, seconds) in outputs.items():
        scores = [psnr_in_mask(denoised[i], reference, mask) for i in kept_b0]
        snr, cnr = snr_cnr(denoised[weighted], reference, mask)
        rows.append((name, float(np.mean(scores)), float(np.std(scores)), snr - raw_snr, cnr - raw_cnr, seconds))
    return DwiBenchmark(rows, notes, len(kept), len(kept_b0), len(held_out))


def write_results(result: DwiBenchmark, stem: Path, title: str, details: str) -> str:
    """<stem>.csv and <stem>.md; returns the markdown table."""
    with open(stem.with_name(stem.name + ".csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "heldout_b0_psnr_mean", "heldout_b0_psnr_std", "snr_change", "cnr_change",
                         "seconds"])
        writer.writerows([(r[0], *(round(float(v), 4) for v in r[1:])) for r in result.rows])
    lines = [title, "", f"{result.volumes} volumes denoised ({result.kept_b0s} b0 kept, {result.held_out_b0s} b0 "
             f"held out as reference); {details}", "",
             "| method | held-out-b0 PSNR (dB) | SNR change | CNR change | time (s) |", "|---|---|---|---|---|"]
    lines += [f"| {r[0]} | {r[1]:.2f} ± {r[2]:.2f} | {r[3]:+.2f} | {r[4]:+.2f} | {r[5]:.1f} |" for r in result.rows]
    lines += ["", *[f"- {note}" for note in result.notes]]
    stem.with_name(stem.name + ".md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=("quick", "standard", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neighbours", type=int, default=2, help="Stage I input volumes per slice (default 2)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    if not DATA.exists():
        raise SystemExit(f"{DATA} is absent: nothing to benchmark")
    result = run_benchmark(args.preset, args.seed, args.neighbours)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"ddm2_{args.preset}" + ("" if args.neighbours == 2 else f"_n{args.neighbours}"))
    print(write_results(result, stem, f"## DDM2 benchmark, mdt_b1k_b2k ({args.preset} preset)",
                        f"{platform.processor() or platform.machine()}, {time.strftime('%Y-%m-%d')}; seed "
                        f"{args.seed}; {args.neighbours} Stage I neighbours."))


if __name__ == "__main__":
    main()
