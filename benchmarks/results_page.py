"""Copy the committed issue-27 grid into the pages that show it, so no number there is typed by hand.

    python -m benchmarks.results_page

The README's results summary is the grid's target table (the benchmark's own header line and table, mean and
range over the seeds); ``docs/results.md`` gets the whole combined file (the table and every case). Run it after
``python -m benchmarks.diffdenoise_benchmark`` adds cases to ``benchmarks/results/issue27_quick``; a test checks
that both pages match the committed file.
"""

from __future__ import annotations

import os
from pathlib import Path

from .report import replace_marked

ROOT = Path(__file__).resolve().parents[1]
GRID = ROOT / "benchmarks" / "results" / "issue27_quick" / "diffdenoise_quick.md"
SUMMARY_PAGE, FULL_PAGE = ROOT / "README.md", ROOT / "docs" / "results.md"
SUMMARY, FULL = "results-summary", "issue27-grid"


def target_table(grid: str) -> str:
    """The header line and target table of a combined grid file (everything before the first case)."""
    header, table = grid.split("\n\n")[:2]
    return f"{header}\n\n{table}"


def full_section(grid: str, page: Path) -> str:
    """The whole grid, with a line naming the file it is copied from (relative to ``page``)."""
    source = os.path.relpath(GRID, page.parent)
    return f"Copied from [{GRID.name}]({source}) by `python -m benchmarks.results_page`.\n\n{grid.strip()}"


def main() -> None:
    grid = GRID.read_text(encoding="utf-8")
    replace_marked(SUMMARY_PAGE, SUMMARY, target_table(grid))
    replace_marked(FULL_PAGE, FULL, full_section(grid, FULL_PAGE))
    print(f"wrote the grid of {GRID} into {SUMMARY_PAGE} and {FULL_PAGE}")


if __name__ == "__main__":
    main()
