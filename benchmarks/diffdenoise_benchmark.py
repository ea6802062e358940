"""DiffDenoise against classical filters and its own ablations on real images with added noise, in one run.

    python -m benchmarks.diffdenoise_benchmark [--preset quick] [--data knee mni ct]
        [--noise gaussian correlated poisson] [--no-ablations] [--resume] [--out benchmarks/results]

Data (``../shared/data``): knee MRI (24 x 256 x 256), MNI T1 1 mm (24 central axial slices), head CT (one
512 x 512 slice). Noise: Gaussian and spatially correlated Gaussian (filtered by a 1-px Gaussian) with
sigma = 0.1 x the clean image's robust range, and Poisson with 30 counts at the top of the range.

Rows per dataset and noise, all from one run: noisy input; the classical peers (Gaussian blur and scikit-image NLM,
each tuned against the clean image, NLM with the noise level estimated from the noisy image, and BM3D and BM4D told
the true noise where installed: :func:`benchmarks.peers.classical_peers`); the BSN alone (PUCA or LG-BPN as picked
by the noise analysis, and PUCA forced on correlated noise); diffusion + SRDS; the distilled NAFNet (DiffDenoise);
and ablations: one DDIM trajectory instead of an SRDS pair, the paper's plain (BSN(y), y) training pairs instead of
recorrupted ones (same BSN), and diffusion conditioned on the noisy image instead of the BSN output. PSNR/SSIM use
the clean image's robust range as data range; "s/slice" is inference time per slice (training time in the notes).
Each finished case is kept in ``diffdenoise_<preset>_cases/`` and the training stages of the unfinished one
checkpoint to ``diffdenoise_<preset>_checkpoints/`` (``--resume`` skips the finished cases and resumes the
unfinished one, for runs longer than one sitting); all finished cases are gathered in ``diffdenoise_<preset>.md``
(first a table of the issue's targets per case) and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import platform
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.datasets import DATASETS as SHARED_DATASETS
from benchmarks.datasets import NOISES as NOISE_LEVELS
from benchmarks.datasets import SHARED
from benchmarks.peers import classical_peers
from benchmarks.scalar import DISTILLED, noisy_case, our_methods
from DiffDenoiseLib.cli import TqdmProgress
from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.devices import resolve_device
from DiffDenoiseLib.diffusion import NoiseSchedule, ddim_sample
from DiffDenoiseLib.metrics import psnr, ssim
from DiffDenoiseLib.noise_normalisation import NoiseNormaliser
from DiffDenoiseLib.pipelines.diffdenoise import (
    conditioned_model,
    diffusion_condition,
    from_diffusion_data,
    from_model_range,
    sample_srds,
    slice_start_noise,
    to_diffusion_data,
    to_model_range,
    train_diffusion,
)
from DiffDenoiseLib.preprocessing import IntensityScaling, from_slices, to_slices
from DiffDenoiseLib.presets import PRESETS
from DiffDenoiseLib.training import checkpointed

# this benchmark's noise names (its case files) -> the shared noise definitions
NOISES = {"gaussian": NOISE_LEVELS["gaussian 0.1"], "correlated": NOISE_LEVELS["correlated 0.1"],
          "poisson": NOISE_LEVELS["poisson 30"]}
DATASETS = ("knee", "mni", "ct")
FORCED_PUCA = "BSN (PUCA, forced)"  # the row that shows what LG-BPN buys on correlated noise


def clean_volume(data: str) -> np.ndarray:
    """The dataset's central 24 slices (all of the knee, one CT slice)."""
    return SHARED_DATASETS[data].central_slices(24)


def condition_of(result, noisy: np.ndarray, conditioning: str):
    """(scaling, normalised noisy slices, BSN output, noise normaliser, diffusion condition) of a benchmark
    volume, from the run's BSN output and noise model; ``conditioning`` may differ from the run's (ablations)."""
    scaling = IntensityScaling.fit(noisy)  # as denoise() does, so the BSN output maps back to its exact input
    slices = to_slices(scaling.normalise(noisy))
    bsn = to_slices(scaling.normalise(result.extras["bsn"]))
    normaliser = None if conditioning == "identity" else NoiseNormaliser.from_metadata(
        result.bundle.metadata["diffusion"]["noise_normalisation"])
    return scaling, slices, bsn, normaliser, diffusion_condition(conditioning, slices, bsn, normaliser)


def single_ddim(result, noisy: np.ndarray, seed: int) -> tuple[np.ndarray, float]:
    """Ablation: one DDIM trajectory from +eps (the first half of the SRDS pair) instead of the pair average."""
    bundle = result.bundle
    scaling, _, bsn, normaliser, condition = condition_of(result, noisy, bundle.metadata["diffusion"]["conditioning"])
    network = bundle.networks["diffusion"]
    schedule = NoiseSchedule(**bundle.metadata["diffusion"]["schedule"])
    steps = bundle.metadata["sampling"]["steps"]
    device = resolve_device("auto")
    outputs, started = [], time.perf_counter()
    for index in range(len(condition)):
        chunk = to_model_range(torch.from_numpy(condition[index:index + 1])).to(device)
        eps = slice_start_noise(seed, index, 1, (1, *chunk.shape[2:]))  # the +eps of SRDS's first pair
        sample = ddim_sample(conditioned_model(network, chunk, device), eps.to(device), schedule, steps)
        outputs.append(from_diffusion_data(from_model_range(sample).cpu().numpy(), bsn[index:index + 1], normaliser))
    seconds = (time.perf_counter() - started) / len(condition)
    return scaling.denormalise(from_slices(np.concatenate(outputs), noisy.shape, 0)), seconds


def conditioning_ablation(result, noisy: np.ndarray, conditioning: str, preset: str, seed: int,
                          progress: TqdmProgress, checkpoints: Path | None) -> tuple[np.ndarray, float]:
    """Ablation: a diffusion model trained on the plain noisy slices with another condition (the same BSN
    output and noise normalisation), sampled with SRDS like the main run."""
    settings = PRESETS[preset]
    diffusion = replace(settings.diffusion, conditioning=conditioning,
                        training=checkpointed(replace(settings.diffusion.training, seed=seed), checkpoints,
                                              f"ablation_{conditioning}"))
    scaling, slices, bsn, normaliser, condition = condition_of(result, noisy, conditioning)
    targets = to_diffusion_data(slices, bsn, normaliser)
    network, _ = train_diffusion(targets, condition, diffusion, progress)
    started = time.perf_counter()
    output, _ = sample_srds(network, condition, diffusion.schedule, settings.sampling, resolve_device("auto"), seed,
                            progress, normaliser=normaliser, signal=bsn)
    seconds = (time.perf_counter() - started) / len(condition)
    return scaling.denormalise(from_slices(output, noisy.shape, 0)), seconds


def run_case(clean: np.ndarray, noise: str, preset: str, seed: int, ablations: bool,
             checkpoints: Path | None) -> tuple[list[tuple], list[str]]:
    """Every row of one dataset and noise; with ``checkpoints`` (a folder), a killed case resumes its training
    stages from there when run again."""
    noisy, data_range, truth = noisy_case(clean, *NOISES[noise], seed)
    rows = [("noisy", noisy, 0.0), *((o.label, o.image, o.seconds_per_slice)
                                     for o in classical_peers(noisy, clean, data_range, truth))]
    progress = TqdmProgress()
    n = len(noisy)
    def folder(run: str) -> Path | None:
        return None if checkpoints is None else checkpoints / run

    ours, result = our_methods(noisy, PRESETS[preset], seed, folder("pipeline"), progress)
    t = result.timings
    notes = [f"noise analysis: {result.noise.kind} (correlation {result.noise.neighbour_correlation:+.3f}); "
             f"training s: BSN {t['train_bsn_s']:.0f}, diffusion {t['train_diffusion_s']:.0f}, "
             f"NAFNet {t['train_nafnet_s']:.0f}; SRDS {t['srds_s']:.0f}; total {t['total_s']:.0f}"]
    rows += [(o.label, o.image, o.seconds_per_slice) for o in ours]
    if result.noise.kind == "correlated":
        puca = denoise(noisy, method="bsn", noise="iid", preset=preset, seed=seed, checkpoint_dir=folder("puca"),
                       progress=progress)
        rows.append((FORCED_PUCA, puca.denoised, puca.timings["bsn_inference_s"] / n))
    if ablations:
        rows.append(("ablation: single DDIM run", *single_ddim(result, noisy, seed)))
        for conditioning, label in (("bsn", "ablation: paper's pairs (BSN(y) -> y, no recorruption)"),
                                    ("identity", "ablation: diffusion conditioned on noisy (no BSN)")):
            rows.append((label, *conditioning_ablation(result, noisy, conditioning, preset, seed, progress,
                                                       checkpoints)))
    progress.close()
    return [(name, psnr(clean, image, data_range), ssim(clean, image, data_range), seconds)
            for name, image, seconds in rows], notes


def write_case(folder: Path, data: str, shape: tuple, noise: str, rows: list[tuple], notes: list[str]) -> str:
    """One case's table as <folder>/<data>_<noise>.csv and .md (atomically: a killed run leaves no half case)."""
    table = [f"**{data}** {shape}, {noise} noise. " + " ".join(notes), "",
             "| method | PSNR (dB) | SSIM | s/slice |", "|---|---|---|---|",
             *(f"| {name} | {p:.2f} | {s:.4f} | {seconds:.3f} |" for name, p, s, seconds in rows), ""]
    with open(folder / f"{data}_{noise}.csv.part", "w", newline="") as handle:
        csv.writer(handle).writerows([data, noise, name, f"{p:.2f}", f"{s:.4f}", f"{seconds:.3f}"]
                                     for name, p, s, seconds in rows)
    (folder / f"{data}_{noise}.md.part").write_text("\n".join(table) + "\n")
    for suffix in ("csv", "md"):  # the .md last: its presence marks the case as done
        (folder / f"{data}_{noise}.{suffix}.part").replace(folder / f"{data}_{noise}.{suffix}")
    return "\n".join(table)


def _verdict(gap: float, target: float) -> str:
    return f"{gap:+.2f} {'met' if gap >= target else f'missed by {target - gap:.2f}'}"


# Issue 27's targets for the distilled NAFNet, per preset: (peer, PSNR margin dB, SSIM at least the peer's)
PEER_TARGETS = {"quick": (("BM3D", 0.0, False), ("NLM, estimated sigma", 1.0, False)),
                "standard": (("BM3D", 1.0, True), ("BM4D", 0.5, True))}


def target_table(rows: list[list[str]], preset: str) -> str:
    """Issue 27's targets per case from CSV rows (data, noise, method, PSNR, SSIM, ...): the distilled NAFNet
    against the peers of ``preset`` (:data:`PEER_TARGETS`; a peer not installed or not run shows "-"), its SSIM
    against the BSN's, SRDS's PSNR against the BSN's; and on correlated noise LG-BPN against forced PUCA."""
    scores: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    for data, noise, method, psnr_db, ssim_value, *_ in rows:
        scores.setdefault((data, noise), {})[method] = (float(psnr_db), float(ssim_value))
    targets = PEER_TARGETS.get(preset, PEER_TARGETS["quick"])
    peer_columns = "".join(f" distilled - {peer} (>= {margin:+.1f}{', SSIM >=' if with_ssim else ''}) |"
                           for peer, margin, with_ssim in targets)
    lines = [f"| data, noise | BSN | SRDS | distilled |{peer_columns} distilled SSIM - BSN's (>= 0) "
             "| SRDS - BSN (>= 0) | LG-BPN - PUCA (> 0) |", "|---|---|---|---|" + "---|" * (len(targets) + 3)]
    for (data, noise), case in scores.items():
        bsn_method = next(m for m in case if m.startswith("BSN (") and "forced" not in m)
        (bsn, bsn_ssim), (distilled, distilled_ssim) = case[bsn_method], case[DISTILLED]
        srds = next((value for m, value in case.items() if m.startswith("diffusion + SRDS")), None)
        cells = []
        for peer, margin, with_ssim in targets:
            label = next((m for m in case if m.split(" (")[0] == peer), None)
            if label is None:
                cells.append("-")
                continue
            peer_psnr, peer_ssim = case[label]
            verdict = _verdict(distilled - peer_psnr, margin)
            cells.append(verdict + (f"; SSIM {_verdict(distilled_ssim - peer_ssim, 0.0)}" if with_ssim else ""))
        versus_puca = "-"
        if FORCED_PUCA in case:
            gap = bsn - case[FORCED_PUCA][0]
            versus_puca = f"{gap:+.2f} {'met' if gap > 0 else 'missed'}"
        lines.append(f"| {data}, {noise} | {bsn:.2f} / {bsn_ssim:.3f} ({bsn_method[5:-1]}) | "
                     + (f"{srds[0]:.2f} / {srds[1]:.3f}" if srds else "-")
                     + f" | {distilled:.2f} / {distilled_ssim:.3f} | " + " | ".join(cells)
                     + f" | {_verdict(distilled_ssim - bsn_ssim, 0.0)} | "
                     + (_verdict(srds[0] - bsn, 0.0) if srds else "-") + f" | {versus_puca} |")
    return "\n".join(lines)


def combine(folder: Path, out: Path, stem: str, header: str, preset: str) -> None:
    """Gather the finished cases (in data, noise order) into <stem>.md (the target table, then each case) and
    <stem>.csv."""
    cases = [(data, noise) for data in DATASETS for noise in NOISES if (folder / f"{data}_{noise}.md").exists()]
    rows = [row for d, n in cases for row in csv.reader((folder / f"{d}_{n}.csv").read_text().splitlines())]
    (out / f"{stem}.md").write_text(header + "\n\n" + target_table(rows, preset) + "\n\n"
                                    + "\n".join((folder / f"{d}_{n}.md").read_text() for d, n in cases))
    with open(out / f"{stem}.csv", "w", newline="") as handle:
        handle.write("data,noise,method,psnr_db,ssim,seconds_per_slice\n")
        handle.writelines((folder / f"{d}_{n}.csv").read_text() for d, n in cases)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--noise", nargs="+", default=list(NOISES), choices=list(NOISES))
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--resume", action="store_true",
                        help="keep the cases an earlier run of this preset finished, and resume the training of an "
                             "unfinished one from its checkpoints")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not SHARED.exists():
        raise SystemExit(f"skipped: {SHARED} not found (the shared data folder is absent)")
    stem = f"diffdenoise_{args.preset}"
    folder = args.out / f"{stem}_cases"
    checkpoints = args.out / f"{stem}_checkpoints"  # one folder per unfinished case; removed when it is done
    if not args.resume:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    header = (f"Preset {args.preset}, seed {args.seed}; {platform.processor() or platform.machine()}, "
              f"{torch.get_num_threads()} threads, torch {torch.__version__}")
    for data in args.data:
        clean = clean_volume(data)
        for noise in args.noise:
            if (folder / f"{data}_{noise}.md").exists():
                print(f"{data}, {noise}: kept from an earlier run (--resume)", flush=True)
                continue
            case_checkpoints = checkpoints / f"{data}_{noise}"
            rows, notes = run_case(clean, noise, args.preset, args.seed, args.ablations, case_checkpoints)
            print(write_case(folder, data, clean.shape, noise, rows, notes), flush=True)
            shutil.rmtree(case_checkpoints, ignore_errors=True)
            combine(folder, args.out, stem, header, args.preset)
    combine(folder, args.out, stem, header, args.preset)


if __name__ == "__main__":
    main()
