"""DDM2 against raw data, Patch2Self and MP-PCA on real diffusion MRI, scored by what diffusion-MRI users trust.

    python -m benchmarks.ddm2_benchmark [--series mdt phantom] [--preset quick] [--neighbours N] [--seed 0]
        [--stage3-timesteps matched|chain] [--out benchmarks/results/ddm2]

**In-vivo series** (``../shared/data/dwi/mdt_b1k_b2k``: 104 x 104 x 2 slices, 13 b0 + 30 x b = 1000 + 60 x
b = 2000, real scanner noise, brain mask). Leakage-free protocol: every second b0 is held out and never shown to
any method; each method denoises the remaining volumes, and:

* each denoised kept b0 is scored against the mean of the held-out b0s (PSNR inside the brain mask; the
  reference is itself noisy, so PSNRs saturate; the ranking holds);
* the denoised series is scored by k-fold cross-validated DTI (b = 1000), DKI (both shells) and CSD (b = 2000)
  fits: median R^2 over the brain mask (DTI) or its white matter, FA > 0.2 of the raw series (DKI, CSD)
  (:func:`.dwi_metrics.cv_fit_r2`, the Patch2Self paper's protocol);
* SNR and CNR in the corpus callosum, dipy's recipe as in the DDM2 paper's table, as change against raw
  (:class:`.dwi_metrics.CorpusCallosum`);
* FA and MD maps go into a figure.

**Water phantom** (``dib2019_water_phantom``: 92 x 92 x 25 slices, 1 b0, b = 100, 7 x 700, 2 x 1400, 11 x 2000):
a homogeneous object whose signal at b = 2000 (about 2 % of the b0) sits on the magnitude noise floor. Scored
in the phantom's core: the mean at b = 2000 against the mono-exponential decay fitted to the raw b0 and b = 700
means (the floor's bias: a denoiser should not add to it), the spread at b = 2000 and b = 700 (the noise left),
and the mean change between neighbouring voxels across slices and within them, each against raw's: slices
denoised one by one that do not fit together show as a between-slice ratio above the within-slice one.

Methods, in one run on the same input: raw; dipy ``patch2self`` version 3 and version 1 (OLS); dipy ``mppca``
(in-plane patches, radius 2: mdt has 2 slices); our Stage I alone; DDM2 with the accelerated (DDIM) and the
full (ancestral, every step) sampler and the accelerated sampler averaged over the 4 flips of each slice, from
one trained model. Where Stage III gains or loses is tabulated per shell and per matched step of the b0 slices.
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.ndimage import binary_erosion

from benchmarks import dwi_metrics
from benchmarks.datasets import SHARED
from benchmarks.volume_ablation import machine
from DiffDenoiseLib.denoise_dwi import DWIDenoiseResult, apply_dwi_bundle, denoise_dwi
from DiffDenoiseLib.io import read_dwi, read_volume
from DiffDenoiseLib.pipelines.ddm2 import DDM2Settings, shell_of
from DiffDenoiseLib.presets import ddm2_settings
from DiffDenoiseLib.runtime.progress import TqdmProgress

DATA = SHARED / "dwi" / "mdt_b1k_b2k"
PHANTOM = SHARED / "dwi" / "dib2019_water_phantom"
RESULTS = Path(__file__).parent / "results" / "ddm2"
B0_THRESHOLD = dwi_metrics.B0_THRESHOLD
FLIPS = ((), (-1,), (-2,), (-2, -1))  # the identity and the three flips of a slice's (y, x) axes


@dataclass
class DwiSeries:
    """A series (volumes, z, y, x) with its gradient table and a mask (z, y, x) of the object."""

    name: str
    series: np.ndarray
    bvals: np.ndarray
    bvecs: np.ndarray
    mask: np.ndarray

    def subset(self, volumes: np.ndarray) -> DwiSeries:
        return DwiSeries(self.name, self.series[volumes], self.bvals[volumes], self.bvecs[volumes], self.mask)


def load() -> DwiSeries:
    """The in-vivo series with its brain mask."""
    dwi = read_dwi(DATA / "b1k_b2k_example_slices_24_38.nii.gz", DATA / "b1k_b2k.bval", DATA / "b1k_b2k.bvec")
    mask = read_volume(DATA / "b1k_b2k_example_slices_24_38_mask.nii.gz").array > 0
    return DwiSeries("mdt_b1k_b2k", dwi.volume.array.astype(np.float32), dwi.bvals, dwi.bvecs, mask)


def load_phantom() -> DwiSeries:
    """The water phantom; its mask: the b0 above half its 99th percentile, eroded by 3 voxels (the core)."""
    stem = PHANTOM / "WATER__DIB2019__FWF_DIG_LTE_pt1_11"
    dwi = read_dwi(stem.with_suffix(".nii.gz"), stem.with_suffix(".bval"), stem.with_suffix(".bvec"))
    series = dwi.volume.array.astype(np.float32)
    b0 = series[np.argmin(dwi.bvals)]
    core = binary_erosion(b0 > 0.5 * np.percentile(b0, 99), iterations=3)
    return DwiSeries("dib2019_water_phantom", series, dwi.bvals, dwi.bvecs, core)


def split_b0s(bvals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept volume indices, held-out b0 indices): every second b0 is held out."""
    b0s = np.flatnonzero(bvals < B0_THRESHOLD)
    held_out = b0s[1::2]
    return np.setdiff1d(np.arange(len(bvals)), held_out), held_out


@dataclass
class HeldOut:
    """The in-vivo series without its held-out b0s, their mean (the reference) and the kept b0s' indices."""

    data: DwiSeries
    reference: np.ndarray
    kept_b0: np.ndarray
    held_out: int


def held_out_protocol(max_b: float | None = None) -> HeldOut:
    """The in-vivo series (volumes with b <= ``max_b``; all when None) split as :func:`split_b0s` says."""
    data = load()
    if max_b is not None:
        data = data.subset(np.flatnonzero(data.bvals <= max_b))
    kept, held_out = split_b0s(data.bvals)
    reference = data.series[held_out].mean(axis=0)
    data = data.subset(kept)
    return HeldOut(data, reference, np.flatnonzero(data.bvals < B0_THRESHOLD), len(held_out))


def flip_averaged(result: DWIDenoiseResult, series: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray,
                  progress: Callable | None) -> tuple[np.ndarray, float]:
    """The trained DDM2 applied to the series and its three flipped copies, unflipped and averaged."""
    started = time.perf_counter()
    outputs = [result.denoised]
    for axes in FLIPS[1:]:
        flipped = apply_dwi_bundle(result.bundle, np.flip(series, axes).copy(), bvals, bvecs=bvecs,
                                   sampler="accelerated", progress=progress)
        outputs.append(np.flip(flipped.denoised, axes))
    return np.mean(outputs, axis=0).astype(np.float32), time.perf_counter() - started


def patch2self_fixed(xyzv: np.ndarray, bvals: np.ndarray, version: int) -> np.ndarray:
    """dipy's Patch2Self (OLS), around two faults of dipy 1.12 with scikit-learn 1.9.

    * Version 1's ``"ols"`` is a scikit-learn ``Ridge(copy_X=False)`` fitted on the very array it then predicts
      from: the fit centres that array in place, so the prediction loses its mean (the b0s came out at 0.47 of
      their level). Version 1 is given ``LinearRegression()`` (OLS on a copy) instead; dipy's test for a model
      object looks for ``sklearn.linear_model.BaseEstimator``, which scikit-learn keeps in ``sklearn.base``.
    * Version 3 writes stale results into the last (volumes % 5) volumes (its chunked copy takes the wrong end of
      its buffer); the OLS fits do not depend on volume order, so those volumes come from a second run on the
      reversed series, where they are first.
    """
    import sklearn.base
    import sklearn.linear_model
    from dipy.denoise.patch2self import patch2self

    if version == 1:
        if not hasattr(sklearn.linear_model, "BaseEstimator"):
            sklearn.linear_model.BaseEstimator = sklearn.base.BaseEstimator
        return patch2self(xyzv, bvals, model=sklearn.linear_model.LinearRegression(), version=1)
    denoised = patch2self(xyzv, bvals, model="ols", version=3)
    tail = xyzv.shape[-1] % 5
    if tail:
        again = patch2self(xyzv[..., ::-1], bvals[::-1], model="ols", version=3)
        denoised[..., -tail:] = again[..., :tail][..., ::-1]
    return denoised


@dataclass
class MethodRuns:
    """Each method's denoised series (volumes, z, y, x) and seconds, and DDM2's matched steps and notes."""

    outputs: dict[str, tuple[np.ndarray, float]]
    matched_steps: np.ndarray
    notes: list[str] = field(default_factory=list)


def run_methods(data: DwiSeries, preset: str | DDM2Settings, seed: int, neighbours: int | None,
                mppca_radii: tuple[int, ...] = (2,), flips: bool = True, full_chain: bool = True) -> MethodRuns:
    """Every method on ``data``'s series (DDM2's 4-flip average and full chain where asked)."""
    from dipy.denoise.localpca import mppca

    series, bvals = data.series, data.bvals
    outputs: dict[str, tuple[np.ndarray, float]] = {"raw": (series, 0.0)}
    xyzv = dwi_metrics.to_dipy(series)
    for version in (3, 1):
        started = time.perf_counter()
        denoised = patch2self_fixed(xyzv, bvals, version)
        outputs[f"Patch2Self v{version} (dipy, OLS)"] = (dwi_metrics.from_dipy(denoised),
                                                         time.perf_counter() - started)
    for radius in mppca_radii:
        started = time.perf_counter()
        denoised = mppca(xyzv, patch_radius=np.array([radius, radius, 0]), suppress_warning=True)
        outputs[f"MP-PCA (dipy, radius {radius})"] = (dwi_metrics.from_dipy(denoised), time.perf_counter() - started)
    progress = TqdmProgress()
    started = time.perf_counter()
    result = denoise_dwi(series, bvals, preset=preset, seed=seed, neighbours=neighbours, sampler="accelerated",
                         bvecs=data.bvecs, progress=progress)
    timings = result.timings
    outputs["DDM2 Stage I only"] = (result.stage1, timings["train_stage1_s"]
                                    + timings["stage1_inference_and_matching_s"])
    outputs["DDM2 accelerated (DDIM)"] = (result.denoised, time.perf_counter() - started)
    train_s = timings["train_stage1_s"] + timings.get("train_stage3_s", 0.0)
    if flips:
        averaged, flip_s = flip_averaged(result, series, bvals, data.bvecs, progress)
        outputs["DDM2 accelerated, 4-flip average"] = (averaged, outputs["DDM2 accelerated (DDIM)"][1] + flip_s)
    sampling = f"sampling {timings['sampling_s']:.1f} s accelerated ({result.bundle.record.sampler_steps} steps)"
    outliers = f"outlier slices {int(result.outliers.sum())} accelerated"
    if full_chain:
        full = apply_dwi_bundle(result.bundle, series, bvals, bvecs=data.bvecs, sampler="full", progress=progress)
        outputs["DDM2 full chain"] = (full.denoised, train_s + full.timings["total_s"])
        sampling += f" against {full.timings['sampling_s']:.1f} s full chain"
        outliers += f" / {int(full.outliers.sum())} full"
    progress.close()
    steps = result.matched_steps
    b0 = bvals < B0_THRESHOLD
    notes = [*result.notes,
             f"DDM2: {result.bundle.record.neighbours} Stage I neighbours; training Stage I "
             f"{timings['train_stage1_s']:.0f} s, Stage III {timings.get('train_stage3_s', 0):.0f} s; {sampling}",
             f"matched steps: b0 slices median {int(np.median(steps[b0]))}, weighted slices median "
             f"{int(np.median(steps[~b0]))} (range {steps.min()}-{steps.max()}); untouched slices "
             f"{int(result.untouched.sum())}, {outliers}"]
    return MethodRuns(outputs, steps, notes)


# --- in-vivo scores --------------------------------------------------------------------------------------------

IN_VIVO_COLUMNS = ("method", "heldout_b0_psnr_mean", "heldout_b0_psnr_std", "snr_change", "cnr_change", "seconds")


@dataclass
class DwiBenchmark:
    """Every method's scores (``rows``: column -> value, ``columns`` in order) and what the run noted."""

    rows: list[dict[str, float | str]]
    columns: list[str]
    notes: list[str]
    details: str
    stage3_table: list[str] = field(default_factory=list)
    maps: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def run_benchmark(preset: str | DDM2Settings, seed: int, neighbours: int | None, max_b: float | None = None,
                  mppca_radii: tuple[int, ...] = (2,), flips: bool = True) -> DwiBenchmark:
    """The in-vivo protocol of the module docstring on the volumes with b <= ``max_b`` (all when None)."""
    protocol = held_out_protocol(max_b)
    data, reference, kept_b0 = protocol.data, protocol.reference, protocol.kept_b0
    runs = run_methods(data, preset, seed, neighbours, mppca_radii, flips)
    mask_xyz = data.mask.transpose(2, 1, 0)
    raw_xyzv = dwi_metrics.to_dipy(data.series)
    callosum = dwi_metrics.CorpusCallosum.of(raw_xyzv, data.bvals, data.bvecs, mask_xyz)
    models = dwi_metrics.fit_models(data.bvals)
    # DKI and CSD cost a minute a method over the brain; they are scored where their fibres are
    white = dwi_metrics.white_matter(raw_xyzv, data.bvals, data.bvecs, mask_xyz)
    regions = {model.name: mask_xyz if model.name == "dti" else white for model in models}
    raw_snr, raw_cnr = callosum.snr_cnr(raw_xyzv)
    rows, maps = [], {}
    for name, (denoised, seconds) in runs.outputs.items():
        xyzv = dwi_metrics.to_dipy(denoised)
        scores = [dwi_metrics.psnr_in_mask(denoised[i], reference, data.mask) for i in kept_b0]
        snr, cnr = callosum.snr_cnr(xyzv)
        row: dict[str, float | str] = {"method": name, "heldout_b0_psnr_mean": float(np.mean(scores)),
                                       "heldout_b0_psnr_std": float(np.std(scores)),
                                       "snr_change": float(np.mean(snr - raw_snr)),
                                       "cnr_change": float(np.mean(cnr - raw_cnr))}
        for model in models:
            r2 = dwi_metrics.cv_fit_r2(xyzv, data.bvals, data.bvecs, regions[model.name], model,
                                       response_data=raw_xyzv, seed=seed)
            row[f"cv_r2_{model.name}"] = float(np.median(r2))
        row["seconds"] = seconds
        rows.append(row)
        maps[name] = dwi_metrics.tensor_maps(xyzv, data.bvals, data.bvecs, mask_xyz)
    columns = [*IN_VIVO_COLUMNS[:-1], *(f"cv_r2_{m.name}" for m in models), "seconds"]
    shells = "all shells" if max_b is None else f"b <= {max_b:g} only"
    details = (f"{len(data.bvals)} volumes denoised ({len(kept_b0)} b0 kept, {protocol.held_out} b0 held out as "
               f"reference), {shells}; CV R^2 (median) of {', '.join(m.label for m in models) or 'no model'}, DTI over "
               f"the brain mask ({int(mask_xyz.sum())} voxels), DKI and CSD over its white matter (FA > "
               f"{dwi_metrics.WHITE_MATTER_FA}, {int(white.sum())} voxels); corpus-callosum "
               f"ROI {int(callosum.roi.sum())} voxels (colour-FA limits {callosum.threshold}); seed {seed}; "
               f"{machine()}, {time.strftime('%Y-%m-%d')}")
    table = stage3_table(runs, data, reference, kept_b0, models, raw_xyzv, mask_xyz, seed)
    return DwiBenchmark(rows, columns, runs.notes, details, table, maps)


def stage3_table(runs: MethodRuns, data: DwiSeries, reference: np.ndarray, kept_b0: np.ndarray,
                 models: list[dwi_metrics.FitModel], raw_xyzv: np.ndarray, mask_xyz: np.ndarray,
                 seed: int) -> list[str]:
    """Where Stage III gains or loses against Stage I: per b0 slice (held-out PSNR against its matched step)
    and per shell (single-shell CV R^2 of DTI on each shell, median over the mask)."""
    stage1 = runs.outputs["DDM2 Stage I only"][0]
    variants = [name for name in runs.outputs if name.startswith("DDM2") and name != "DDM2 Stage I only"]
    lines = ["| b0 slice | matched step | Stage I PSNR | " + " | ".join(f"{v} change" for v in variants) + " |",
             "|---|---|---|" + "---|" * len(variants)]
    for volume in kept_b0:
        for z in range(data.series.shape[1]):
            mask = data.mask[z]
            base = dwi_metrics.psnr_in_mask(stage1[volume, z], reference[z], mask)
            changes = [dwi_metrics.psnr_in_mask(runs.outputs[v][0][volume, z], reference[z], mask) - base
                       for v in variants]
            lines.append(f"| v{volume}/z{z} | {runs.matched_steps[volume, z]} | {base:.2f} | "
                         + " | ".join(f"{c:+.2f}" for c in changes) + " |")
    lines += ["", "| shell (DTI CV R^2, median) | matched steps (median) | Stage I | "
              + " | ".join(variants) + " |", "|---|---|---|" + "---|" * len(variants)]
    for shell in dwi_metrics.shells(data.bvals):
        model = dwi_metrics.FitModel("dti", (shell,))
        members = shell_of(data.bvals) == shell
        scores = [float(np.median(dwi_metrics.cv_fit_r2(dwi_metrics.to_dipy(runs.outputs[name][0]), data.bvals,
                                                        data.bvecs, mask_xyz, model, raw_xyzv, seed)))
                  for name in ("DDM2 Stage I only", *variants)]
        lines.append(f"| b = {shell:g} | {int(np.median(runs.matched_steps[members]))} | {scores[0]:.4f} | "
                     + " | ".join(f"{s:.4f}" for s in scores[1:]) + " |")
    return lines


NEIGHBOUR_COLUMNS = ("neighbours", "order", "heldout_b0_psnr_mean", "heldout_b0_psnr_std", "cv_r2_dti_lowest_shell",
                     "cv_r2_dti_highest_shell", "seconds")


def run_neighbour_sweep(preset: str | DDM2Settings, seed: int, counts: list[int]) -> DwiBenchmark:
    """Stage I alone on the in-vivo series with each of ``counts`` neighbours, a weighted volume's chosen nearest
    in acquisition order and nearest in gradient direction: held-out-b0 PSNR and the DTI CV R^2 of the lowest and
    highest shell (Stage I is what the neighbours change)."""
    protocol = held_out_protocol()
    data, reference, kept_b0 = protocol.data, protocol.reference, protocol.kept_b0
    mask_xyz, raw_xyzv = data.mask.transpose(2, 1, 0), dwi_metrics.to_dipy(data.series)
    shells = dwi_metrics.shells(data.bvals)
    rows = []
    for count, order in ((count, order) for count in counts for order in ("acquisition", "direction")):
        started = time.perf_counter()
        result = denoise_dwi(data.series, data.bvals, method="stage1", preset=preset, seed=seed, neighbours=count,
                             bvecs=None if order == "acquisition" else data.bvecs)
        seconds = time.perf_counter() - started
        xyzv = dwi_metrics.to_dipy(result.stage1)
        scores = [dwi_metrics.psnr_in_mask(result.stage1[i], reference, data.mask) for i in kept_b0]
        r2 = [float(np.median(dwi_metrics.cv_fit_r2(xyzv, data.bvals, data.bvecs, mask_xyz,
                                                      dwi_metrics.FitModel("dti", (shell,)), raw_xyzv, seed)))
              for shell in (shells[0], shells[-1])]
        rows.append({"neighbours": f"{count}", "order": order, "heldout_b0_psnr_mean": float(np.mean(scores)),
                     "heldout_b0_psnr_std": float(np.std(scores)), "cv_r2_dti_lowest_shell": r2[0],
                     "cv_r2_dti_highest_shell": r2[1], "seconds": seconds})
    raw = np.mean([dwi_metrics.psnr_in_mask(data.series[i], reference, data.mask) for i in kept_b0])
    details = (f"Stage I alone on {len(data.bvals)} volumes ({len(kept_b0)} b0 kept, {protocol.held_out} held out); "
               f"DTI CV R^2 (median over the brain mask) on b = {shells[0]:g} and b = {shells[-1]:g} alone; "
               f"raw b0s score {raw:.2f} dB; "
               f"seed {seed}; {machine()}, {time.strftime('%Y-%m-%d')}")
    return DwiBenchmark(rows, list(NEIGHBOUR_COLUMNS), [], details)


# --- water phantom ---------------------------------------------------------------------------------------------

PHANTOM_COLUMNS = ("method", "high_b_mean", "expected_high_b_mean", "floor_bias", "high_b_std", "mid_b_std",
                   "between_slices", "within_slices", "seconds")


def neighbour_change(series: np.ndarray, mask: np.ndarray, axis: int) -> float:
    """Mean |difference| between neighbouring voxels along ``axis`` of (volumes, z, y, x), inside ``mask``."""
    pairs = np.take(mask, range(1, mask.shape[axis - 1]), axis - 1) & np.take(mask, range(mask.shape[axis - 1] - 1),
                                                                            axis - 1)
    return float(np.abs(np.diff(series, axis=axis))[:, pairs].mean())


def run_phantom(preset: str | DDM2Settings, seed: int, neighbours: int | None) -> DwiBenchmark:
    """The phantom protocol of the module docstring."""
    data = load_phantom()
    # the full chain from the weighted volumes' high matched steps over 550 slices: too long for this check
    runs = run_methods(data, preset, seed, neighbours, flips=False, full_chain=False)
    bvals = data.bvals
    high, mid = bvals.max(), 700.0
    b0s, highs, mids = bvals < B0_THRESHOLD, np.isclose(bvals, high), np.isclose(bvals, mid)
    raw = data.series
    s0, s_mid = raw[b0s][:, data.mask].mean(), raw[mids][:, data.mask].mean()
    diffusivity = np.log(s0 / s_mid) / mid
    expected = float(s0 * np.exp(-diffusivity * high))
    rows = []
    for name, (denoised, seconds) in runs.outputs.items():
        core_high, core_mid = denoised[highs][:, data.mask], denoised[mids][:, data.mask]
        rows.append({"method": name, "high_b_mean": float(core_high.mean()), "expected_high_b_mean": expected,
                     "floor_bias": float(core_high.mean() - expected),
                     "high_b_std": float(core_high.std(axis=1).mean()),
                     "mid_b_std": float(core_mid.std(axis=1).mean()),
                     "between_slices": neighbour_change(denoised, data.mask, 1) / neighbour_change(raw, data.mask, 1),
                     "within_slices": neighbour_change(denoised, data.mask, 2) / neighbour_change(raw, data.mask, 2),
                     "seconds": seconds})
    details = (f"{len(bvals)} volumes (b = {', '.join(f'{b:g}' for b in np.unique(bvals))}), core of "
               f"{int(data.mask.sum())} voxels; diffusivity from the raw b0 and b = {mid:g} means "
               f"{diffusivity * 1e3:.3f} um^2/ms, so b = {high:g} should average {expected:.1f}; seed {seed}; "
               f"{machine()}, {time.strftime('%Y-%m-%d')}")
    return DwiBenchmark(rows, list(PHANTOM_COLUMNS), runs.notes, details)


# --- output ----------------------------------------------------------------------------------------------------

HEADINGS = {"heldout_b0_psnr_mean": "held-out-b0 PSNR (dB)", "snr_change": "CC SNR change",
            "cnr_change": "CC CNR change", "cv_r2_dti": "CV R^2 DTI", "cv_r2_dki": "CV R^2 DKI",
            "cv_r2_csd": "CV R^2 CSD", "seconds": "time (s)", "high_b_mean": "b_max mean",
            "expected_high_b_mean": "expected", "floor_bias": "floor bias", "high_b_std": "b_max spread",
            "mid_b_std": "b = 700 spread", "between_slices": "between-slice change / raw's",
            "within_slices": "within-slice change / raw's", "neighbours": "Stage I neighbours",
            "order": "a weighted volume's neighbours: nearest in",
            "cv_r2_dti_lowest_shell": "DTI CV R^2, lowest shell",
            "cv_r2_dti_highest_shell": "DTI CV R^2, highest shell"}


def _cell(row: dict, column: str) -> str:
    value = row[column]
    if column == "heldout_b0_psnr_mean":
        return f"{value:.2f} ± {row['heldout_b0_psnr_std']:.2f}"
    if column.endswith("_change"):
        return f"{value:+.2f}"
    if column.startswith("cv_r2"):
        return f"{value:.4f}"
    if column == "order":
        return str(value)
    if column.endswith("_slices"):
        return f"{value:.3f}"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def write_results(result: DwiBenchmark, stem: Path, title: str) -> str:
    """<stem>.csv and <stem>.md (and <stem>_maps.png where the run made FA/MD maps); returns the markdown."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    with open(stem.with_name(stem.name + ".csv"), "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(result.columns)
        writer.writerows([[row[c] if isinstance(row[c], str) else round(float(row[c]), 4) for c in result.columns]
                          for row in result.rows])
    first = result.columns[0]
    shown = [c for c in result.columns[1:] if c != "heldout_b0_psnr_std"]
    lines = [title, "", result.details, "", f"| {HEADINGS.get(first, first)} | "
             + " | ".join(HEADINGS[c] for c in shown) + " |", "|---|" + "---|" * len(shown)]
    lines += ["| " + " | ".join([str(row[first]), *(_cell(row, c) for c in shown)]) + " |" for row in result.rows]
    lines += ["", *[f"- {note}" for note in result.notes]]
    if result.stage3_table:
        lines += ["", "Stage III against Stage I:", "", *result.stage3_table]
    if result.maps:
        from benchmarks.figures import fa_md_maps

        figure = stem.with_name(stem.name + "_maps.png")
        fa_md_maps(figure, result.maps)
        lines += ["", f"![FA and MD maps]({figure.name})"]
    stem.with_name(stem.name + ".md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--series", nargs="+", default=["mdt", "phantom"], choices=("mdt", "phantom"))
    parser.add_argument("--preset", default="quick", choices=("quick", "standard", "full"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neighbours", type=int, default=None,
                        help="Stage I input volumes per slice (default: DDM2's choice from the series)")
    parser.add_argument("--neighbour-sweep", type=int, nargs="+", metavar="N",
                        help="instead: Stage I alone on mdt with each of these neighbour counts")
    parser.add_argument("--stage3-timesteps", default="matched", choices=("matched", "chain"),
                        help="where Stage III's training draws its steps (the ablation of the paper's whole chain)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    suffix = (f"_{args.preset}" + ("" if args.neighbours is None else f"_n{args.neighbours}")
              + ("" if args.stage3_timesteps == "matched" else "_chain"))
    preset = replace(ddm2_settings(args.preset), stage3_timesteps=args.stage3_timesteps)
    if args.neighbour_sweep:
        result = run_neighbour_sweep(preset, args.seed, args.neighbour_sweep)
        print(write_results(result, args.out / f"neighbours_{args.preset}",
                            f"## DDM2's Stage I neighbours on mdt_b1k_b2k ({args.preset} preset)"))
        return
    for name in args.series:
        folder = DATA if name == "mdt" else PHANTOM
        if not folder.exists():
            print(f"{folder} is absent: {name} skipped")
            continue
        if name == "mdt":
            result = run_benchmark(preset, args.seed, args.neighbours)
            title = f"## DDM2 on mdt_b1k_b2k ({args.preset} preset), held-out-b0 protocol"
        else:
            result = run_phantom(preset, args.seed, args.neighbours)
            title = f"## DDM2 on the water phantom ({args.preset} preset): noise floor and noise left"
        if args.stage3_timesteps == "chain":
            title += "; Stage III trained over the whole chain"
        print(write_results(result, args.out / f"{name}{suffix}", title))


if __name__ == "__main__":
    main()
