"""Copy the committed issue-27 grid into the pages that show it, so no number there is typed by hand.

    python -m benchmarks.results_page

The README's results summary is the grid's target table (the benchmark's own header line and table, mean and
range over the seeds); ``docs/results.md`` gets the whole combined file (the table and every case). The README's
GPU section is the GPU check's standard grid (its target table and the case's note) and its full-preset cost page
(``benchmarks/gpu_check.sh``, results in ``benchmarks/results/issue27_gpu``); the caption of the demo figure
is made from the report of ``diffdenoise demo`` (its figure and report copied to ``docs/demo.png`` and
``benchmarks/results/demo/report.txt``). Run it after
``python -m benchmarks run --suite grid-quick`` adds cases to ``benchmarks/results/issue27_quick``; a test checks
that the pages match the committed files.
"""

from __future__ import annotations

import os
from pathlib import Path

from .report import replace_marked

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "benchmarks" / "results" / "issue27_quick" / "diffdenoise_quick.md"
SUMMARY_PAGE, FULL_PAGE = ROOT / "README.md", ROOT / "docs" / "results.md"
SUMMARY, FULL = "results-summary", "issue27-grid"
GPU_RESULTS = ROOT / "benchmarks" / "results" / "issue27_gpu"
GPU_GRID, GPU_COST = GPU_RESULTS / "diffdenoise_standard.md", GPU_RESULTS / "preset_cost" / "cost_full.md"
GPU = "gpu-results"
DEMO_REPORT = ROOT / "benchmarks" / "results" / "demo" / "report.txt"  # copied from `diffdenoise demo`'s folder
DEMO = "demo-caption"


def target_table(grid: str) -> str:
    """The header line and target table of a combined grid file (everything before the first case)."""
    header, table = grid.split("\n\n")[:2]
    return f"{header}\n\n{table}"


def full_section(grid: str, page: Path) -> str:
    """The whole grid, with a line naming the file it is copied from (relative to ``page``)."""
    source = os.path.relpath(GRID, page.parent)
    return f"Copied from [{GRID.name}]({source}) by `python -m benchmarks.results_page`.\n\n{grid.strip()}"


def gpu_section(page: Path) -> str:
    """The GPU check's standard grid (its target table and the case's note, with the times) and the full preset's
    cost, with the files they come from (links relative to ``page``)."""
    grid = GPU_GRID.read_text(encoding="utf-8")
    note = grid.split("\n\n")[2]  # after the header line and the target table
    cost = GPU_COST.read_text(encoding="utf-8").strip()
    sources = ", ".join(f"[{path.name}]({os.path.relpath(path, page.parent)})" for path in (GPU_GRID, GPU_COST))
    return f"Copied from {sources} by `python -m benchmarks.results_page`.\n\n{target_table(grid)}\n\n{note}\n\n{cost}"


def demo_caption(report: str, page: Path) -> str:
    """The README's caption of docs/demo.png, from the report ``diffdenoise demo`` wrote beside it: the sample,
    the times and where they ran, the scores."""
    sample, times, device, *scores = report.splitlines()
    scores = [" ".join(line.split()) for line in scores if line.startswith(("noisy:", "BSN:", "denoised:"))]
    source = os.path.relpath(DEMO_REPORT, page.parent)
    return (f"*`diffdenoise demo` (quick preset; [its report]({source})): {sample}; {times}; {device}. "
            f"{'; '.join(scores)}.*")


def sections() -> list[tuple[Path, str, str]]:
    """(page, marker, text) of every copied section."""
    grid = GRID.read_text(encoding="utf-8")
    return [(SUMMARY_PAGE, SUMMARY, target_table(grid)), (FULL_PAGE, FULL, full_section(grid, FULL_PAGE)),
            (SUMMARY_PAGE, GPU, gpu_section(SUMMARY_PAGE)),
            (SUMMARY_PAGE, DEMO, demo_caption(DEMO_REPORT.read_text(encoding="utf-8"), SUMMARY_PAGE))]


def main() -> None:
    for page, marker, text in sections():
        replace_marked(page, marker, text)
    print(f"wrote the grids of {GRID} and {GPU_RESULTS} into {SUMMARY_PAGE} and {FULL_PAGE}")


if __name__ == "__main__":
    main()
