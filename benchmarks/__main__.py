"""Every benchmark in one command: scalar images against every peer and the supervised ceiling, diffusion MRI,
speed, memory and cost growth; CSV, markdown, figures, and the suite's section of docs/results.md.

    python -m benchmarks run --suite quick|full [--parts scalar dwi cost] [--resume] [--out DIR] [--no-page]

``quick`` takes about 30 minutes on 2 CPU cores; ``full`` runs every dataset and noise with the standard preset
(many hours on a CPU: use a GPU). Data comes from ``../shared/data``; absent datasets are skipped. Results go to
``benchmarks/results/suite_<name>/``; finished cases are kept with ``--resume`` (a killed scalar case resumes its
training from checkpoints).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import matplotlib
import numpy as np
import torch

from DiffDenoiseLib.runtime.progress import TqdmProgress

from . import ddm2_benchmark, figures, report
from .cost import measure_cost
from .datasets import DATASETS, SHARED
from .peers import careamics_status, missing_peers
from .scalar import case_stem, read_case, run_case, write_case, write_scores
from .suites import SUITES, Suite, describe
from .volume_ablation import machine

RESULTS = Path(__file__).parent / "results"
RESULTS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "results.md"
PARTS = ("scalar", "dwi", "cost")


def run_scalar(suite: Suite, out: Path, seed: int, notes: list[str]) -> None:
    cases = out / "cases"
    cases.mkdir(parents=True, exist_ok=True)
    progress = TqdmProgress()
    for data, noise in suite.cases:
        stem = case_stem(data, noise)
        if not DATASETS[data].available:
            notes.append(f"{data}, {noise}: skipped ({DATASETS[data].file} is absent)")
            continue
        if (cases / f"{stem}.csv").exists():
            print(f"{data}, {noise}: kept from an earlier run", flush=True)
            continue
        print(f"{data}, {noise}", flush=True)
        checkpoints = out / "checkpoints" / stem
        clean = DATASETS[data].central_slices(suite.slices)
        scores, images = run_case(data, clean, noise, suite.settings, seed, checkpoints, progress)
        write_case(cases, scores, images)
        shutil.rmtree(checkpoints, ignore_errors=True)
    progress.close()


def run_dwi(suite: Suite, out: Path, seed: int) -> None:
    result = ddm2_benchmark.run_benchmark(suite.dwi_settings, seed, suite.dwi_neighbours, suite.dwi_max_b,
                                          suite.mppca_radii)
    shells = "all shells" if suite.dwi_max_b is None else f"b <= {suite.dwi_max_b:g} only"
    ddm2_benchmark.write_results(result, out / "dwi", "**DWI: mdt_b1k_b2k, held-out b0 protocol**",
                                 f"{shells}; {suite.dwi_neighbours} Stage I neighbours; seed {seed}.")


def run_cost(suite: Suite, out: Path) -> None:
    cost = measure_cost(suite.cost_presets, suite.cost_steps, suite.speed_sizes, suite.growth_preset,
                        suite.growth_base)
    (out / "cost.json").write_text(json.dumps(asdict(cost), indent=1))


def render(suite: Suite, out: Path, seed: int, notes: list[str], timings: dict[str, float], page: Path) -> str:
    """Write the figures and ``report.md``; returns the section for ``page`` (its links relative to it)."""
    figure_folder = out / "figures"
    figure_folder.mkdir(exist_ok=True)
    link = os.path.relpath(out, page.resolve().parent)
    scores = [s for data, noise in suite.cases if (path := out / "cases" / f"{case_stem(data, noise)}.csv").exists()
              for s in read_case(path)]
    parts = [f"`python -m benchmarks run --suite {suite.name}` on {time.strftime('%Y-%m-%d')}, {machine()}, "
             f"torch {torch.__version__}; "
             f"wall time {sum(timings.values()) / 60:.1f} min ("
             + ", ".join(f"{part} {seconds / 60:.1f}" for part, seconds in timings.items())
             + f"). Our pipeline: {describe(suite.settings)}; seed {seed}. Peers tuned against the clean image (an "
             "optimistic oracle). Detail PSNR: PSNR of the high-pass band (image minus its 1-px Gaussian blur), "
             "where over-smoothing shows.", ""]
    parts += [f"- {note}" for note in notes]
    if scores:
        for data in dict.fromkeys(s.data for s in scores):
            cases = []
            for noise in dict.fromkeys(s.noise for s in scores if s.data == data):
                with np.load(out / "cases" / f"{case_stem(data, noise)}.npz") as images:
                    cases.append((noise, dict(images)))
            figures.case_grid(figure_folder / f"{data}.png", DATASETS[data].description, cases)
        figures.psnr_time_scatter(figure_folder / "psnr_vs_time.png", scores)
        parts += ["", report.metric_table(scores, "psnr_db", "PSNR (dB)"), "",
                  report.metric_table(scores, "detail_psnr_db", "Detail PSNR (dB)"), "",
                  report.metric_table(scores, "ssim", "SSIM"), "", report.gap_table(scores), "",
                  f"![PSNR gain against time]({link}/figures/psnr_vs_time.png)", "",
                  *(f"![{d}]({link}/figures/{d}.png)" for d in dict.fromkeys(s.data for s in scores)), ""]
    if (out / "dwi.md").exists():
        parts += [(out / "dwi.md").read_text(), ""]
    if (out / "cost.json").exists():
        cost = json.loads((out / "cost.json").read_text())
        figures.growth_curves(figure_folder / "growth.png", cost["growth"])
        parts += [f"**Speed, training time and cost growth** (training timed over {suite.cost_steps} steps per "
                  "stage, stage time = s/step x the preset's steps; the growth runs also train "
                  f"{suite.cost_steps} steps per stage, so training is their fixed part and inference the growing "
                  "one; peak RSS of each run's own process)", "", report.cost_tables(cost), "",
                  f"![cost growth]({link}/figures/growth.png)", ""]
    section = "\n".join(parts)
    (out / "report.md").write_text(f"# Benchmark suite {suite.name}\n\n{section}\n\n## Every score\n\n"
                                   + report.case_tables(scores) + "\n")
    write_scores(out / "scalar.csv", scores)
    return section


def run(suite: Suite, parts: tuple[str, ...], out: Path, seed: int, resume: bool, page: Path | None) -> None:
    if not SHARED.exists():
        raise SystemExit(f"skipped: {SHARED} not found (the shared data folder is absent)")
    matplotlib.use("Agg")  # files only
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    timing_file = out / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    notes = missing_peers()
    if status := careamics_status():
        notes.append(status)
    for part, job in (("scalar", lambda: run_scalar(suite, out, seed, notes)),
                      ("dwi", lambda: run_dwi(suite, out, seed)), ("cost", lambda: run_cost(suite, out))):
        done = {"dwi": out / "dwi.md", "cost": out / "cost.json"}.get(part)
        if part not in parts or (done is not None and done.exists()):
            continue
        if part == "dwi" and not ddm2_benchmark.DATA.exists():
            notes.append(f"DWI skipped: {ddm2_benchmark.DATA} is absent")
            continue
        started = time.perf_counter()
        job()
        # the scalar part resumes case by case, so its time adds up over runs; the others run in one go
        timings[part] = (timings.get(part, 0.0) if part == "scalar" else 0.0) + time.perf_counter() - started
        timing_file.write_text(json.dumps(timings))
    section = render(suite, out, seed, notes, timings, page or RESULTS_PAGE)
    if page is not None:
        report.replace_section(page, suite.name, section)
    print(section)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("run", help="run a suite")
    command.add_argument("--suite", default="quick", choices=list(SUITES))
    command.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    command.add_argument("--seed", type=int, default=0)
    command.add_argument("--resume", action="store_true", help="keep what an earlier run of this suite finished")
    command.add_argument("--out", type=Path, help="results folder (default benchmarks/results/suite_<suite>)")
    command.add_argument("--no-page", dest="page", action="store_false",
                         help="do not rewrite this suite's section of docs/results.md")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    run(suite, tuple(args.parts), args.out or RESULTS / f"suite_{suite.name}", args.seed, args.resume,
        RESULTS_PAGE if args.page else None)


if __name__ == "__main__":
    main()
