"""DiffDenoise against classical filters and its own ablations on real images with added noise: issue 27's targets.

    python -m benchmarks.diffdenoise_benchmark [--preset quick] [--data knee mni lidc t1 ct]
        [--noise gaussian rician poisson correlated] [--seeds 0 1 2] [--no-ablations] [--resume]
        [--out benchmarks/results]

Data (``../shared/data``): knee MRI (24 x 256 x 256, 4 mm slices), MNI T1 1 mm, LIDC chest CT 1.25 mm and
studyforrest T1 0.67 mm (24 central slices, the last two of their central 256 x 256), head CT (one 512 x 512
slice). Noise: Gaussian and spatially correlated Gaussian (filtered by a 1-px Gaussian) with sigma = 0.1 x the
clean image's robust range, Rician with channel sigma 0.05 x that range (MR only), and Poisson with 30 counts at
the top of the range; one case per noise seed.

Rows per dataset and noise, all from one run: noisy input; the classical peers (Gaussian blur and scikit-image NLM,
each tuned against the clean image, NLM with the noise level estimated from the noisy image, and BM3D and BM4D told
the true noise where installed: :func:`benchmarks.peers.classical_peers`); the BSN alone (PUCA or LG-BPN as picked
by the noise analysis, and PUCA forced on correlated noise); diffusion + SRDS; the distilled NAFNet (DiffDenoise);
and ablations: one DDIM trajectory instead of an SRDS pair, the paper's plain (BSN(y), y) training pairs instead of
recorrupted ones (same BSN), and diffusion conditioned on the noisy image instead of the BSN output. PSNR/SSIM use
the clean image's robust range as data range; "s/slice" is inference time per slice (training time in the notes).
Each finished case is kept in ``diffdenoise_<preset>_cases/`` and the training stages of the unfinished one
checkpoint to ``diffdenoise_<preset>_checkpoints/`` (``--resume`` skips the finished cases and resumes the
unfinished one, for runs longer than one sitting); the peers' scores, which do not depend on our code or preset,
are kept in ``peer_cases/`` and reused by every later run. All finished cases are gathered in
``diffdenoise_<preset>.md`` (first the issue's targets per case, mean and range over the seeds) and ``.csv``.
"""

from __future__ import annotations

import argparse
import csv
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from benchmarks.datasets import DATASETS as SHARED_DATASETS
from benchmarks.datasets import NOISES as NOISE_LEVELS
from benchmarks.datasets import SHARED
from benchmarks.peers import MethodOutput, classical_peers, method_label
from benchmarks.scalar import CSV_FIELDS, DISTILLED, Score, noisy_case, our_methods, read_case, score, write_scores
from benchmarks.volume_ablation import machine
from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.diffusion import ddim_sample
from DiffDenoiseLib.noise.normalisation import NoiseNormaliser
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
from DiffDenoiseLib.runtime.devices import resolve_device
from DiffDenoiseLib.runtime.progress import TqdmProgress
from DiffDenoiseLib.runtime.training import checkpointed

# this benchmark's noise names (its case files) -> the shared noise definitions (benchmarks.datasets.NOISES)
NOISES = {"gaussian": "gaussian 0.1", "rician": "rician 0.05", "poisson": "poisson 30",
          "correlated": "correlated 0.1"}
DATASETS = ("knee", "mni", "lidc", "t1", "ct")
SRDS = "diffusion + SRDS"
FORCED_PUCA = "BSN (PUCA, forced)"  # the row that shows what LG-BPN buys on correlated noise
# the CPU of the cases written before the case notes named theirs (the header of that run said so)
LEGACY_CPU = "Intel(R) Xeon(R) Processor (AMX), 2 threads"


def clean_volume(data: str) -> np.ndarray:
    """The dataset's central 24 slices (of 256 x 256 for the LIDC CT and the T1; all of the knee; the one slice
    of the head CT)."""
    return SHARED_DATASETS[data].central_slices(24)


def condition_of(result, noisy: np.ndarray, conditioning: str):
    """(scaling, normalised noisy slices, BSN output, noise normaliser, diffusion condition) of a benchmark
    volume, from the run's BSN output and noise model; ``conditioning`` may differ from the run's (ablations)."""
    scaling = IntensityScaling.fit(noisy)  # as denoise() does, so the BSN output maps back to its exact input
    slices = to_slices(scaling.normalise(noisy))
    bsn = to_slices(scaling.normalise(result.extras["bsn"]))
    normaliser = None if conditioning == "identity" else NoiseNormaliser.from_metadata(
        result.bundle.record.diffusion.noise_normalisation)
    return scaling, slices, bsn, normaliser, diffusion_condition(conditioning, slices, bsn, normaliser)


def single_ddim(result, noisy: np.ndarray, seed: int) -> MethodOutput:
    """Ablation: one DDIM trajectory from +eps (the first half of the SRDS pair) instead of the pair average."""
    bundle = result.bundle
    diffusion = bundle.record.diffusion
    scaling, _, bsn, normaliser, condition = condition_of(result, noisy, diffusion.conditioning)
    network = bundle.networks["diffusion"]
    schedule, steps = diffusion.schedule, diffusion.sampling.steps
    device = resolve_device("auto")
    outputs, started = [], time.perf_counter()
    for index in range(len(condition)):
        chunk = to_model_range(torch.from_numpy(condition[index:index + 1])).to(device)
        eps = slice_start_noise(seed, index, 1, (1, *chunk.shape[2:]))  # the +eps of SRDS's first pair
        sample = ddim_sample(conditioned_model(network, chunk, device), eps.to(device), schedule, steps)
        outputs.append(from_diffusion_data(from_model_range(sample).cpu().numpy(), bsn[index:index + 1], normaliser))
    seconds = time.perf_counter() - started
    return MethodOutput("ablation: single DDIM run", "", scaling.denormalise(
        from_slices(np.concatenate(outputs), noisy.shape, 0)), seconds / len(condition), seconds)


def conditioning_ablation(result, noisy: np.ndarray, conditioning: str, label: str, preset: str, seed: int,
                          progress: TqdmProgress, checkpoints: Path | None) -> MethodOutput:
    """Ablation: a diffusion model trained on the plain noisy slices with another condition (the same BSN
    output and noise normalisation), sampled with SRDS like the main run."""
    settings = PRESETS[preset]
    diffusion = replace(settings.diffusion, conditioning=conditioning,
                        training=checkpointed(replace(settings.diffusion.training, seed=seed), checkpoints,
                                              f"ablation_{conditioning}"))
    scaling, slices, bsn, normaliser, condition = condition_of(result, noisy, conditioning)
    targets = to_diffusion_data(slices, bsn, normaliser)
    network, summary = train_diffusion(targets, condition, diffusion, progress)
    started = time.perf_counter()
    output, _ = sample_srds(network, condition, diffusion.schedule, settings.sampling, resolve_device("auto"), seed,
                            progress, normaliser=normaliser, signal=bsn)
    seconds = time.perf_counter() - started
    return MethodOutput(label, "", scaling.denormalise(from_slices(output, noisy.shape, 0)), seconds / len(condition),
                        summary.seconds + seconds)


def case_name(data: str, noise: str, seed: int) -> str:
    """The file stem of one case: dataset, noise and noise seed."""
    return f"{data}_{noise}_seed{seed}"


def benchmark_cases(datas: list[str], noises: list[str]) -> list[tuple[str, str]]:
    """(dataset, noise) pairs in this benchmark's order, each noise only where its modality has it (Rician on
    magnitude MR only)."""
    return [(data, noise) for data in DATASETS if data in datas for noise in NOISES
            if noise in noises and NOISES[noise] in SHARED_DATASETS[data].noises]


def peer_scores(folder: Path, data: str, noise: str, seed: int, clean: np.ndarray) -> list[Score]:
    """The noisy input and every classical peer (:func:`benchmarks.peers.classical_peers`) on one case, scored;
    kept in ``folder`` and read back from there when present: they depend only on the image, the noise and
    its seed, not on our code or preset (delete the folder when the peers change)."""
    path = folder / f"{case_name(data, noise, seed)}.csv"
    if path.exists():
        return read_case(path)
    noisy, data_range, truth = noisy_case(clean, *NOISE_LEVELS[NOISES[noise]], seed)
    outputs = [MethodOutput("noisy", "", noisy, 0.0, 0.0), *classical_peers(noisy, clean, data_range, truth)]
    scores = [score(data, noise, o, clean, data_range) for o in outputs]
    folder.mkdir(parents=True, exist_ok=True)
    write_scores(path.with_suffix(".part"), scores)
    path.with_suffix(".part").replace(path)
    return read_case(path)  # as rounded in the file, like the scores of a later run that reads it


def run_case(data: str, clean: np.ndarray, noise: str, preset: str, seed: int, ablations: bool,
             checkpoints: Path | None, spacing: tuple[float, ...]) -> tuple[list[Score], list[str]]:
    """Our rows of one case (the pipeline's stages, forced PUCA on correlated noise, the ablations) and its
    notes; ``spacing`` is the volume's voxel spacing (numpy axis order), from which the default context is
    chosen as for a user's file; with ``checkpoints`` (a folder), a killed case resumes its training stages
    from there when run again."""
    noisy, data_range, _ = noisy_case(clean, *NOISE_LEVELS[NOISES[noise]], seed)
    progress = TqdmProgress()

    def folder(run: str) -> Path | None:
        return None if checkpoints is None else checkpoints / run

    outputs, result = our_methods(noisy, PRESETS[preset], seed, folder("pipeline"), progress, spacing)
    t, record = result.timings, result.bundle.record
    context, bsn, blend = record.context, record.bsn, record.output_blend_weight
    notes = [f"noise analysis: {result.noise.kind} (correlation {result.noise.neighbour_correlation:+.3f}); "
             f"context: {context.half_width} slice(s) per side ({context.reason}); "
             f"BSN estimate's share in its Wiener blend {bsn.wiener_weight:.2f} (patches "
             f"{bsn.wiener_depth} slice(s) deep); distilled NAFNet's share in its blend with the BSN estimate "
             + (f"{blend:.2f}; " if blend is not None else "none (no blend); ") +
             f"training s: BSN {t['train_bsn_s']:.0f}, diffusion {t['train_diffusion_s']:.0f}, "
             f"NAFNet {t['train_nafnet_s']:.0f}; SRDS {t['srds_s']:.0f}; total {t['total_s']:.0f}; "
             + machine()]
    if result.noise.kind == "correlated":
        puca = denoise(noisy, method="bsn", noise="iid", preset=PRESETS[preset], seed=seed,
                       checkpoint_dir=folder("puca"), progress=progress, spacing=spacing)
        outputs.append(MethodOutput(FORCED_PUCA, "", puca.denoised, puca.timings["bsn_inference_s"] / len(noisy),
                                    puca.timings["total_s"]))
    if ablations:
        outputs.append(single_ddim(result, noisy, seed))
        for conditioning, label in (("bsn", "ablation: paper's pairs (BSN(y) -> y, no recorruption)"),
                                    ("identity", "ablation: diffusion conditioned on noisy (no BSN)")):
            outputs.append(conditioning_ablation(result, noisy, conditioning, label, preset, seed, progress,
                                                 checkpoints))
    progress.close()
    return [score(data, noise, o, clean, data_range) for o in outputs], notes


def write_case(folder: Path, seed: int, shape: tuple, scores: list[Score], notes: list[str]) -> str:
    """One case's table as <folder>/<case name>.csv and .md (atomically: a killed run leaves no half case)."""
    data, noise = scores[0].data, scores[0].noise
    name = case_name(data, noise, seed)
    table = [f"**{data}** {shape}, {noise} noise, seed {seed}. " + " ".join(notes),
             "", "| method | PSNR (dB) | SSIM | detail PSNR (dB) | s/slice |", "|---|---|---|---|---|",
             *(f"| {method_label(s.method, s.setting)} | {s.psnr_db:.2f} | {s.ssim:.4f} | {s.detail_psnr_db:.2f} "
               f"| {s.seconds_per_slice:.3f} |" for s in scores), ""]
    write_scores(folder / f"{name}.csv.part", scores)
    (folder / f"{name}.md.part").write_text("\n".join(table) + "\n")
    for suffix in ("csv", "md"):  # the .md last: its presence marks the case as done
        (folder / f"{name}.{suffix}.part").replace(folder / f"{name}.{suffix}")
    return "\n".join(table)


def _spread(values: list[float], digits: int = 2) -> str:
    """The mean of ``values``, with their range after it when there are several (one per noise seed)."""
    mean = f"{np.mean(values):+.{digits}f}"
    return mean if len(values) == 1 else f"{mean} [{min(values):+.{digits}f}, {max(values):+.{digits}f}]"


def _verdict(gaps: list[float], target: float, digits: int = 2) -> str:
    """Mean gap (and its range over seeds) and whether the mean meets ``target``."""
    mean = float(np.mean(gaps))
    return f"{_spread(gaps, digits)} {'met' if mean >= target else f'missed by {target - mean:.{digits}f}'}"


# Issue 27's targets for the distilled NAFNet, per preset: (peer, PSNR margin dB, SSIM at least the peer's)
PEER_TARGETS = {"quick": (("BM3D", 0.0, False), ("NLM, estimated sigma", 1.0, False)),
                "standard": (("BM3D", 1.0, True), ("BM4D", 0.5, True))}


def target_table(cases: dict[tuple[str, str], list[dict[str, Score]]], preset: str) -> str:
    """Issue 27's targets per (data, noise) case, each a list of {method: score} over the noise seeds: the
    distilled NAFNet against the peers of ``preset`` (:data:`PEER_TARGETS`; a peer not installed or not run shows
    "-"), its SSIM against the BSN's, SRDS against the BSN (PSNR and SSIM); and on correlated noise LG-BPN
    against forced PUCA. Every gap is the mean over the seeds, its range in brackets."""
    targets = PEER_TARGETS.get(preset, PEER_TARGETS["quick"])
    peer_columns = "".join(f" distilled - {peer} (>= {margin:+.1f}{', SSIM >=' if with_ssim else ''}) |"
                           for peer, margin, with_ssim in targets)
    lines = [f"| data, noise | seeds | BSN | SRDS | distilled |{peer_columns} distilled SSIM - BSN's (>= 0) "
             "| SRDS - BSN (>= 0; SSIM >= 0) | LG-BPN - PUCA (> 0) |",
             "|---|---|---|---|---|" + "---|" * (len(targets) + 3)]

    def gaps(first: str, second: str, field: str = "psnr_db") -> list[float] | None:
        if not all(first in seed and second in seed for seed in seeds):
            return None
        return [getattr(seed[first], field) - getattr(seed[second], field) for seed in seeds]

    def mean_scores(method: str) -> str:
        if not all(method in seed for seed in seeds):
            return "-"
        return (f"{np.mean([s[method].psnr_db for s in seeds]):.2f} / "
                f"{np.mean([s[method].ssim for s in seeds]):.3f}")

    for (data, noise), seeds in cases.items():
        cells = []
        for peer, margin, with_ssim in targets:
            psnr_gaps = gaps(DISTILLED, peer)
            cells.append("-" if psnr_gaps is None else _verdict(psnr_gaps, margin) + (
                f"; SSIM {_verdict(gaps(DISTILLED, peer, 'ssim'), 0.0, 3)}" if with_ssim else ""))
        srds, puca = gaps(SRDS, "BSN"), gaps("BSN", FORCED_PUCA)
        srds_cell = "-" if srds is None else (f"{_verdict(srds, 0.0)}; "
                                              f"SSIM {_verdict(gaps(SRDS, 'BSN', 'ssim'), 0.0, 3)}")
        puca_cell = "-" if puca is None else f"{_spread(puca)} {'met' if np.mean(puca) > 0 else 'missed'}"
        lines.append(f"| {data}, {noise} | {len(seeds)} | {mean_scores('BSN')} ({seeds[0]['BSN'].setting}) | "
                     f"{mean_scores(SRDS)} | {mean_scores(DISTILLED)} | " + " | ".join(cells)
                     + f" | {_verdict(gaps(DISTILLED, 'BSN', 'ssim'), 0.0, 3)} | {srds_cell} | {puca_cell} |")
    return "\n".join(lines)


def finished_cases(folder: Path) -> list[tuple[str, str, int]]:
    """(data, noise, seed) of every finished case in ``folder``, in this benchmark's order."""
    found = [path.stem.rsplit("_seed", 1) for path in folder.glob("*_seed*.md")]
    keys = {(*stem.split("_", 1), int(seed)) for stem, seed in found}
    order = {case: index for index, case in enumerate(benchmark_cases(list(DATASETS), list(NOISES)))}
    return sorted((key for key in keys if key[:2] in order), key=lambda key: (order[key[:2]], key[2]))


def combine(folder: Path, out: Path, stem: str, header: str, preset: str) -> None:
    """Gather the finished cases into <stem>.md (the target table over the seeds, then each case) and <stem>.csv
    (every score, with its seed)."""
    finished = finished_cases(folder)
    cases: dict[tuple[str, str], list[dict[str, Score]]] = {}
    rows = []
    for data, noise, seed in finished:
        scores = read_case(folder / f"{case_name(data, noise, seed)}.csv")
        cases.setdefault((data, noise), []).append({s.method: s for s in scores})
        rows += [[seed, *row] for row in csv.reader(
            (folder / f"{case_name(data, noise, seed)}.csv").read_text().splitlines()[1:])]
    (out / f"{stem}.md").write_text(header + "\n\n" + target_table(cases, preset) + "\n\n" + "\n".join(
        (folder / f"{case_name(*key)}.md").read_text() for key in finished))
    with open(out / f"{stem}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(("seed", *CSV_FIELDS))
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="quick", choices=list(PRESETS))
    parser.add_argument("--data", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--noise", nargs="+", default=list(NOISES), choices=list(NOISES))
    parser.add_argument("--no-ablations", dest="ablations", action="store_false")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="noise seeds, one case each")
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
    # A grid may outlive a session and the CPU differ between sessions: each case's note names its own.
    header = (f"Preset {args.preset}, noise seeds {' '.join(map(str, args.seeds))}; torch {torch.__version__}; "
              f"the CPU of each case is in its note (cases whose note names none ran on {LEGACY_CPU})")
    for seed in args.seeds:  # every case at one seed before the next seed: a run cut short still covers them all
        for data, noise in benchmark_cases(args.data, args.noise):
            name = case_name(data, noise, seed)
            if (folder / f"{name}.md").exists():
                print(f"{name}: kept from an earlier run (--resume)", flush=True)
                continue
            clean = clean_volume(data)
            peers = peer_scores(args.out / "peer_cases", data, noise, seed, clean)
            ours, notes = run_case(data, clean, noise, args.preset, seed, args.ablations, checkpoints / name,
                                   SHARED_DATASETS[data].spacing)
            print(write_case(folder, seed, clean.shape, peers + ours, notes), flush=True)
            shutil.rmtree(checkpoints / name, ignore_errors=True)
            combine(folder, args.out, stem, header, args.preset)
    combine(folder, args.out, stem, header, args.preset)


if __name__ == "__main__":
    main()
