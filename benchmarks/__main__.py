"""Every benchmark in one command: scalar images against every peer (and the supervised ceiling), diffusion MRI,
speed, memory and cost growth, issue 27's grid with its targets and ablations; CSV, markdown, figures.

    python -m benchmarks run --suite quick|full|grid-quick|grid-standard [--parts scalar dwi cost]
        [--seeds 0 1 2] [--data knee mni ...] [--noise gaussian ...] [--ablations | --no-ablations] [--resume]
        [--out DIR] [--no-page]
    python -m benchmarks report --suite NAME [--out DIR]      # the combined page and CSV from the case files

``quick`` takes about 30 minutes on 2 CPU cores; ``full`` runs every dataset and noise with the standard preset
(many hours on a CPU: use a GPU); ``grid-quick`` and ``grid-standard`` are issue 27's grid (about 10 minutes a
case at the quick preset on 2 cores). Data comes from ``../shared/data``; absent datasets are skipped. Results
go to ``benchmarks/results/<the suite's folder>/``: each finished case in ``<stem>_cases/`` (:mod:`.scalar`),
the peers' scores in ``peer_cases/`` (reused by every later run), all cases gathered in ``<stem>.md`` (issue 27's
targets, mean and range over the seeds, then each case) and ``<stem>.csv``. ``--resume`` keeps what an earlier
run finished: a killed case resumes its training from its checkpoints. The quick and full suites also write
their section of docs/results.md (``section.md``, with figures); at the end the README's and docs/results.md's
results are written again from the committed files (``--no-page``: not; ``python -m benchmarks.results_page``
does it alone).
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

from . import ddm2_benchmark, figures, report, results_page
from .cost import measure_cost
from .datasets import DATASETS, SHARED
from .peers import careamics_status, missing_peers
from .scalar import Score, case_name, run_case, write_case
from .suites import SUITES, Suite, describe
from .volume_ablation import machine

RESULTS = Path(__file__).parent / "results"
RESULTS_PAGE = results_page.FULL_PAGE
PARTS = ("scalar", "dwi", "cost")


def run_scalar(suite: Suite, cases: tuple[tuple[str, str], ...], out: Path, seeds: tuple[int, ...], ablations: bool,
               notes: list[str]) -> None:
    """Each of ``cases`` (of ``suite``) at each of ``seeds`` not yet finished in ``out`` (every case at one seed
    before the next seed: a run cut short still covers them all), the suite's combined page and CSV after each."""
    folder = out / f"{suite.stem}_cases"
    folder.mkdir(parents=True, exist_ok=True)
    progress = TqdmProgress()
    for seed in seeds:
        for data, noise in cases:
            name = case_name(data, noise, seed)
            if not DATASETS[data].available:
                notes.append(f"{data}, {noise}: skipped ({DATASETS[data].file} is absent)")
                continue
            if (folder / f"{name}.md").exists():
                print(f"{name}: kept from an earlier run", flush=True)
                continue
            print(name, flush=True)
            clean = DATASETS[data].central_slices(suite.slices)
            case = run_case(data, clean, noise, seed, suite.settings, out, DATASETS[data].spacing, suite.ceiling,
                            ablations, machine(), progress)
            print(write_case(folder, seed, clean.shape, case), flush=True)
            shutil.rmtree(out / "checkpoints" / name, ignore_errors=True)
            combine(suite, out)
    progress.close()


def combine(suite: Suite, out: Path) -> list[tuple[int, Score]]:
    """The finished cases of ``suite`` in ``out`` gathered into ``<stem>.md`` and ``<stem>.csv``."""
    cases = out / f"{suite.stem}_cases"
    seeds = sorted({seed for *_, seed in report.finished_cases(cases, suite.cases)})
    # A suite may outlive a session and the CPU differ between sessions: each case's note names its own.
    header = (f"`python -m benchmarks run --suite {suite.name}`: {describe(suite.settings)}; noise seeds "
              f"{' '.join(map(str, seeds))}; where each case ran is in its note")
    return report.combine(cases, out, suite.stem, header, suite.cases, suite.targets)


def run_dwi(suite: Suite, out: Path, seed: int) -> None:
    result = ddm2_benchmark.run_benchmark(suite.dwi_settings, seed, suite.dwi_neighbours, suite.dwi_max_b,
                                          suite.mppca_radii, flips=False)
    result.maps = {}  # the suite's page embeds dwi.md; the maps figure belongs to the DDM2 benchmark's own page
    ddm2_benchmark.write_results(result, out / "dwi", "**DWI: mdt_b1k_b2k, held-out b0 protocol**")


def run_cost(suite: Suite, out: Path) -> None:
    cost = measure_cost(suite.cost_presets, suite.cost_steps, suite.speed_sizes, suite.growth_preset,
                        suite.growth_base)
    (out / "cost.json").write_text(json.dumps(asdict(cost), indent=1))


def render(suite: Suite, out: Path, notes: list[str], timings: dict[str, float]) -> str:
    """Write the figures, ``report.md`` and ``section.md`` (the section of docs/results.md, its links relative
    to that page) of a suite with a page; returns the section. The tables and figures show the first noise
    seed's cases."""
    figure_folder = out / "figures"
    figure_folder.mkdir(exist_ok=True)
    link = os.path.relpath(out, RESULTS_PAGE.parent)
    pairs = combine(suite, out)
    seed = min((s for s, _ in pairs), default=0)
    scores = [score for s, score in pairs if s == seed]
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
                path = out / f"{suite.stem}_cases" / f"{case_name(data, noise, seed)}.npz"
                if path.exists():  # the images stay local: a checkout of committed cases has none
                    with np.load(path) as images:
                        cases.append((noise, dict(images)))
            if cases:
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
    (out / "section.md").write_text(section + "\n", encoding="utf-8")
    (out / "report.md").write_text(f"# Benchmark suite {suite.name}\n\n{section}\n\n## Every score\n\n"
                                   + report.case_tables(scores) + "\n", encoding="utf-8")
    return section


def run(suite: Suite, parts: tuple[str, ...], out: Path, resume: bool, pages: bool,
        seeds: tuple[int, ...] | None = None, ablations: bool | None = None,
        cases: tuple[tuple[str, str], ...] | None = None) -> None:
    """Run ``parts`` of ``suite`` into ``out``: its scalar ``cases`` (default all) at ``seeds`` (default the
    suite's), with the ablations when ``ablations`` (default the suite's); with ``pages``, write the README's and
    docs/results.md's results again (:mod:`.results_page`)."""
    if not SHARED.exists():
        raise SystemExit(f"skipped: {SHARED} not found (the shared data folder is absent)")
    matplotlib.use("Agg")  # files only
    if not resume:
        clear_results(out)
    out.mkdir(parents=True, exist_ok=True)
    timing_file = out / "timings.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    notes = missing_peers()
    if status := careamics_status():
        notes.append(status)
    seeds = suite.seeds if seeds is None else seeds
    jobs = {"scalar": lambda: run_scalar(suite, suite.cases if cases is None else cases, out, seeds,
                                         suite.ablations if ablations is None else ablations, notes),
            "dwi": lambda: run_dwi(suite, out, seeds[0]), "cost": lambda: run_cost(suite, out)}
    for part in PARTS:
        done = {"dwi": out / "dwi.md", "cost": out / "cost.json"}.get(part)
        if part not in parts or part not in suite.parts or (done is not None and done.exists()):
            continue
        if part == "dwi" and not ddm2_benchmark.DATA.exists():
            notes.append(f"DWI skipped: {ddm2_benchmark.DATA} is absent")
            continue
        started = time.perf_counter()
        jobs[part]()
        # the scalar part resumes case by case, so its time adds up over runs; the others run in one go
        timings[part] = (timings.get(part, 0.0) if part == "scalar" else 0.0) + time.perf_counter() - started
        timing_file.write_text(json.dumps(timings))
    if suite.page:
        print(render(suite, out, notes, timings))
    else:
        combine(suite, out)
    if pages:
        results_page.main()


def clear_results(out: Path) -> None:
    """Remove what earlier runs wrote in ``out`` for a fresh run, except the peers' cache (``peer_cases``),
    which does not depend on our code or preset."""
    for entry in out.iterdir() if out.is_dir() else ():
        if entry.name == "peer_cases":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def selected(suite: Suite, datas: list[str] | None, noises: list[str] | None) -> tuple[tuple[str, str], ...]:
    """The cases of ``suite`` with a dataset of ``datas`` and a noise of ``noises`` (None: any)."""
    return tuple((d, n) for d, n in suite.cases if (datas is None or d in datas) and (noises is None or n in noises))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser("run", help="run a suite")
    command.add_argument("--suite", default="quick", choices=list(SUITES))
    command.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    command.add_argument("--seeds", nargs="+", type=int, help="noise seeds, one case each (default: the suite's)")
    command.add_argument("--data", nargs="+", choices=list(DATASETS), help="only these datasets' cases")
    command.add_argument("--noise", nargs="+", help="only these noises' cases (as the suite names them)")
    command.add_argument("--ablations", action=argparse.BooleanOptionalAction,
                         help="also run the ablations in each case (default: the suite's)")
    command.add_argument("--resume", action="store_true", help="keep what an earlier run of this suite finished")
    command.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<the suite's folder>)")
    command.add_argument("--no-page", dest="pages", action="store_false",
                         help="do not write the results into the README and docs/results.md (python -m "
                              "benchmarks.results_page does it later)")
    again = commands.add_parser("report", help="gather a suite's finished cases into its page and CSV again")
    again.add_argument("--suite", default="quick", choices=list(SUITES))
    again.add_argument("--out", type=Path, help="results folder (default benchmarks/results/<the suite's folder>)")
    args = parser.parse_args()
    suite = SUITES[args.suite]
    out = args.out or RESULTS / suite.folder
    if args.command == "report":
        combine(suite, out)
        return
    run(suite, tuple(args.parts), out, args.resume, args.pages, tuple(args.seeds) if args.seeds else None,
        args.ablations, selected(suite, args.data, args.noise))


if __name__ == "__main__":
    main()
