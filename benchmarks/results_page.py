"""Write the pages that show results from the committed results files, so no number there is typed by hand.

    python -m benchmarks.results_page

``docs/results.md`` is generated whole: issue 27's grid at the quick preset (``benchmarks/results/issue27_quick``,
the combined file of ``python -m benchmarks run --suite grid-quick``), the standard grid case and full-preset
cost measured on a GPU (``benchmarks/gpu_check.sh``, results in ``benchmarks/results/issue27_gpu``), the
sections the quick and full suites wrote (``<folder>/section.md``), the DDM2 benchmark's tables
(``benchmarks/results/ddm2``), and links to the earlier runs' committed files. In the README it fills the
results summary (the grid's header line and target table), the GPU section (the GPU grid's target table and
the case's note, and the full preset's cost) and the caption of the demo figure (from the report of
``diffdenoise demo``, copied to ``benchmarks/results/demo/report.txt``). Run it after any of these results
change; a test checks that the pages match the committed files.
"""

from __future__ import annotations

import os
import re
import textwrap
from pathlib import Path

from .report import replace_marked
from .suites import SUITES

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
GRID = RESULTS / "issue27_quick" / "diffdenoise_quick.md"
SUMMARY_PAGE, FULL_PAGE = ROOT / "README.md", ROOT / "docs" / "results.md"
SUMMARY = "results-summary"
GPU_RESULTS = RESULTS / "issue27_gpu"
DDM2_RESULTS = RESULTS / "ddm2"
GPU_GRID, GPU_COST = GPU_RESULTS / "diffdenoise_standard.md", GPU_RESULTS / "preset_cost" / "cost_full.md"
GPU = "gpu-results"
DEMO_REPORT = RESULTS / "demo" / "report.txt"  # copied from `diffdenoise demo`'s folder
DEMO = "demo-caption"
# committed results of earlier code and of the one-question benchmarks, with what each measured
EARLIER = {
    "diffdenoise_quick_cases": "issue 3's ablation study at the quick preset (code of that time: knee, MNI and the "
                               "head CT slice; single DDIM run, the paper's pairs and no BSN conditioning against "
                               "SRDS)",
    "diffdenoise_standard_cases": "the standard preset, diffusion generating the whole slice (earlier code)",
    "diffdenoise_standard_deviation_cases": "the standard preset, diffusion generating deviations from the BSN "
                                            "output (earlier code)",
    "volume_ablation": "each slice alone against the slice with its neighbours",
    "volume_ablation_quick_preset": "the same at the quick preset",
    "self_ensemble": "the BSN in one pass and averaged over 8 flips and turns",
    "bsn_wiener": "the BSN estimate with and without its Wiener blend",
    "bsn_wiener_depth": "Wiener patches in 2D and across 4 slices",
    "bsn_posterior": "the BSN output combined with the noisy pixel its blind spot left out",
    "bsn_learning_rate": "the blind-spot network's learning rate and training steps",
    "srds_sweep": "SRDS: prediction target, DDIM steps and pairs",
    "rician_bias": "the Rician bias, removed or kept",
    "recorruption_check": "recorruption noise of Poisson images: exact split against Gaussian of the same variance",
    "split_independence": "the recorruption split's copy and twin: variance ratios and correlation",
    "slice_correlation": "noise of each slice's own against noise shared between slices, as the noise analysis "
                         "measures it (whether the neighbours' blind spot is masked)",
    "network_speed": "the quick preset's networks: a training step and an inference pass, with PyTorch's own and "
                     "our gradients of the dilated depthwise convolutions",
    "output_blend": "the output blend's weight fitted with SURE on the image and on the recorrupted copy, beside "
                    "the best weight against the clean volume",
}


def target_table(grid: str) -> str:
    """The header line and target table of a combined grid file (everything before the first case)."""
    header, table = grid.split("\n\n")[:2]
    return f"{header}\n\n{table}"


def _prose(text: str) -> str:
    """A paragraph of the page's own words, wrapped as the hand-written pages are."""
    return textwrap.fill(text, 115, break_long_words=False, break_on_hyphens=False)


def _link(path: Path, page: Path) -> str:
    return f"[{path.name}]({os.path.relpath(path, page.parent)})"


def gpu_section(page: Path) -> str:
    """The GPU check's standard grid (its target table and the case's note, with the times) and the full preset's
    cost, with the files they come from (links relative to ``page``)."""
    grid = GPU_GRID.read_text(encoding="utf-8")
    note = grid.split("\n\n")[2]  # after the header line and the target table
    cost = GPU_COST.read_text(encoding="utf-8").strip()
    sources = ", ".join(_link(path, page) for path in (GPU_GRID, GPU_COST))
    return f"Copied from {sources} by `python -m benchmarks.results_page`.\n\n{target_table(grid)}\n\n{note}\n\n{cost}"


def demo_caption(report: str, page: Path) -> str:
    """The README's caption of docs/demo.png, from the report ``diffdenoise demo`` wrote beside it: the sample,
    the times and where they ran, the scores."""
    sample, times, device, *scores = report.splitlines()
    scores = [" ".join(line.split()) for line in scores if line.startswith(("noisy:", "BSN:", "denoised:"))]
    source = os.path.relpath(DEMO_REPORT, page.parent)
    return (f"*`diffdenoise demo` (quick preset; [its report]({source})): {sample}; {times}; {device}. "
            f"{'; '.join(scores)}.*")


def suite_section(name: str) -> str:
    """What ``python -m benchmarks run --suite NAME`` wrote for this page, or how to run it."""
    path = RESULTS / SUITES[name].folder / "section.md"
    if not path.exists():
        return f"Not run yet: `python -m benchmarks run --suite {name}` writes this section."
    return path.read_text(encoding="utf-8").strip()


def ddm2_section(page: Path) -> str:
    """What ``python -m benchmarks.ddm2_benchmark`` wrote (every ``benchmarks/results/ddm2/*.md``), its headings
    one level down and its figures linked from ``page``."""
    files = sorted(DDM2_RESULTS.glob("*.md"))
    if not files:
        return "Not run yet: `python -m benchmarks.ddm2_benchmark` writes this section."
    folder = os.path.relpath(DDM2_RESULTS, page.parent)
    parts = [_prose(f"Copied from {', '.join(_link(path, page) for path in files)}, written by "
                    "`python -m benchmarks.ddm2_benchmark` (the command and its protocols are in that module's "
                    "docstring).")]
    for path in files:
        text = path.read_text(encoding="utf-8").strip()
        parts.append(re.sub(r"\]\(([^/()]+\.png)\)", rf"]({folder}/\1)", text.replace("## ", "### ", 1)))
    return "\n\n".join(parts)


def results_page() -> str:
    """The whole of docs/results.md."""
    page = FULL_PAGE
    earlier = "\n".join(textwrap.fill(f"- [{folder}/]({os.path.relpath(RESULTS / folder, page.parent)}): {what}", 115,
                                       subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)
                         for folder, what in EARLIER.items() if (RESULTS / folder).exists())
    intro = ("Generated by `python -m benchmarks.results_page` from the committed files of `benchmarks/results/`, "
             "which the benchmark commands wrote; every section names its files and the command that reproduces "
             "them. The design choices and the measurements behind them are in [decisions.md](decisions.md), what "
             "the tests check of the quality in [usage.md](usage.md#what-the-tests-check).")
    grid = (f"Copied from {_link(GRID, page)}, written by `python -m benchmarks run --suite grid-quick --resume`: "
            "the central slices of each dev volume with each noise of its modality, every method on the same noisy "
            "input, BM3D and BM4D told the true noise, judged against issue 27's targets (mean and range over the "
            "noise seeds); then each case, with where and how long it ran.")
    suites = ("`python -m benchmarks run --suite quick` (about half an hour on 2 CPU cores) and `--suite full` "
              "(the standard preset on every dataset and noise: hours, on a GPU) each write their section below; "
              "`pip install -e .[bench]` adds the DWI peers and `pip install bm3d bm4d` BM3D and BM4D "
              "(non-commercial licenses: never dependencies).")
    history = ("Committed results of earlier code and of the benchmarks that answer one design question; each "
               "folder holds the tables its benchmark wrote, and [decisions.md](decisions.md) what was concluded "
               "from them.")
    return "\n".join([
        "# Results", "", _prose(intro), "",
        "## Issue 27's grid at the quick preset", "", _prose(grid), "", GRID.read_text(encoding="utf-8").strip(), "",
        "## Issue 27's grid at the standard preset, on a GPU", "", gpu_section(page), "",
        "## Benchmark suites: every peer, the supervised ceiling, DWI, cost", "", _prose(suites), "",
        "### Quick suite", "", suite_section("quick"), "",
        "### Full suite", "", suite_section("full"), "",
        "## DDM2 on diffusion MRI", "", ddm2_section(page), "",
        "## Earlier runs", "", _prose(history), "", earlier, ""])


def sections() -> list[tuple[Path, str, str]]:
    """(page, marker, text) of every section copied into the README."""
    grid = GRID.read_text(encoding="utf-8")
    return [(SUMMARY_PAGE, SUMMARY, target_table(grid)), (SUMMARY_PAGE, GPU, gpu_section(SUMMARY_PAGE)),
            (SUMMARY_PAGE, DEMO, demo_caption(DEMO_REPORT.read_text(encoding="utf-8"), SUMMARY_PAGE))]


def main() -> None:
    for page, marker, text in sections():
        replace_marked(page, marker, text)
    FULL_PAGE.write_text(results_page(), encoding="utf-8")
    print(f"wrote the results of {RESULTS} into {SUMMARY_PAGE} and {FULL_PAGE}")


if __name__ == "__main__":
    main()
