"""The benchmark suite's machinery end to end on real images (tiny training budgets): every method scored, CSV,
figures, report and README section written, and a resumed run keeping finished work."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers import make_tiny_settings

from benchmarks.__main__ import run
from benchmarks.datasets import SHARED
from benchmarks.report import combine, replace_marked, target_table
from benchmarks.scalar import DISTILLED, FORCED_PUCA, SUPERVISED, Score, peer_case, run_case, write_case
from benchmarks.suites import SUITES, grid_cases, with_steps
from DiffDenoiseLib.data import SAMPLE_KNEE
from DiffDenoiseLib.io import read_volume
from DiffDenoiseLib.presets import PRESETS


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_suite_scores_every_method_writes_figures_and_its_page_section_and_resumes(tmp_path):
    suite = replace(SUITES["quick"], settings=with_steps(PRESETS["quick"], 2, 2, 2),
                    cases=(("knee", "correlated 0.1"), ("mni", "rician 0.05")), slices=2,
                    cost_presets=("quick",), cost_steps=2, speed_sizes=(64, 96), growth_base=(1, 64))
    out = tmp_path / "suite"
    run(suite, ("scalar", "cost"), out, False, False)

    with open(out / "suite_quick.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["seed"] for r in rows} == {"0"}
    for case in (("knee", "correlated 0.1"), ("mni", "rician 0.05")):
        methods = {r["method"]: r for r in rows if (r["data"], r["noise"]) == case}
        assert {"noisy", "Gaussian blur", "NLM", "NLM, estimated sigma", "BSN", "diffusion + SRDS", DISTILLED,
                SUPERVISED} <= set(methods)
        assert all(np.isfinite(float(r["psnr_db"])) and -1 <= float(r["ssim"]) <= 1 for r in methods.values())
        # the tuned blur removes noise on any image; the supervised model trains for the budget, so takes time
        assert float(methods["Gaussian blur"]["psnr_db"]) > float(methods["noisy"]["psnr_db"])
        assert float(methods[SUPERVISED]["total_seconds"]) > 0
    assert {r["setting"] for r in rows if r["method"] == "BSN"} == {"LG-BPN", "PUCA"}  # noise analysis per case

    growth = json.loads((out / "cost.json").read_text())["growth"]
    assert [(g[0], g[2], g[3]) for g in growth] == [("slices", 1, 64), ("slices", 2, 64), ("slices", 4, 64),
                                                   ("size", 1, 64), ("size", 1, 128), ("size", 1, 256)]
    assert all(g[7] > 0.1 for g in growth)  # peak RSS of a real process (GB)
    for figure in ("knee.png", "mni.png", "psnr_vs_time.png", "growth.png"):
        assert (out / "figures" / figure).stat().st_size > 10_000
    text = (out / "section.md").read_text()  # docs/results.md's section, its links relative to that page
    assert "distilled - supervised ceiling" in text and "suite/figures/knee.png)" in text
    assert "| knee | correlated 0.1 |" in text and "s/slice 64 x 64 | s/slice 96 x 96" in text

    case = out / "suite_quick_cases" / "knee_correlated_0.1_seed0.md"
    assert "noise analysis: correlated" in case.read_text()  # the case's note
    finished = case.stat().st_mtime_ns
    run(suite, ("scalar", "cost"), out, True, False)  # resumed: nothing is recomputed
    assert case.stat().st_mtime_ns == finished


def test_a_fresh_run_clears_earlier_results_but_keeps_the_peer_cache(tmp_path):
    from benchmarks.__main__ import clear_results

    for name in ("peer_cases/knee_gaussian_seed0.csv", "diffdenoise_quick_cases/knee_gaussian_seed0.md",
                 "checkpoints/knee_gaussian_seed0/pipeline/bsn.pt", "diffdenoise_quick.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("earlier")
    clear_results(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in sorted(tmp_path.rglob("*"))] == [
        "peer_cases", "peer_cases/knee_gaussian_seed0.csv"]
    clear_results(tmp_path / "absent")  # nothing there yet: nothing to do


def test_readme_without_markers_is_refused_with_the_fix(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("no markers here\n")
    with pytest.raises(SystemExit, match="results-summary:start"):
        replace_marked(readme, "results-summary", "table")


def _scores(data: str, noise: str, table: tuple) -> dict[str, Score]:
    return {method: Score(data, noise, method, setting, psnr_db, ssim_value, 0.0, 0.1, 1.0)
            for method, setting, psnr_db, ssim_value in table}


def test_target_table_judges_each_case_against_the_issue_targets_over_the_seeds():
    gaussian = [_scores("knee", "gaussian", (
        ("noisy", "", 20.0, 0.30), ("NLM, estimated sigma", "h 0.8 sigma", 29.5 + shift, 0.80),
        ("BM3D", "true sigma", 31.0, 0.86), ("BM4D", "true sigma", 31.5, 0.88), ("BSN", "PUCA", 30.6, 0.85),
        ("diffusion + SRDS", "1 pair(s)", 30.7, 0.84), (DISTILLED, "", 31.2 + shift, 0.87)))
        for shift in (-0.1, 0.1)]  # two noise seeds
    correlated = [_scores("knee", "correlated", (
        ("NLM", "h 1.2 sigma", 26.0, 0.5), ("BSN", "LG-BPN", 24.0, 0.5), (DISTILLED, "", 24.3, 0.5),
        (FORCED_PUCA, "", 20.0, 0.5)))]
    cases = {("knee", "gaussian"): gaussian, ("knee", "correlated"): correlated}
    first, second = target_table(cases, "quick").splitlines()[2:]
    assert first == ("| knee, gaussian | 2 | 30.60 / 0.850 (PUCA) | 30.70 / 0.840 | 31.20 / 0.870 "
                     "| +0.20 [+0.10, +0.30] met | +1.70 [+1.70, +1.70] met | +0.020 [+0.020, +0.020] met "
                     "| +0.10 [+0.10, +0.10] met; SSIM -0.010 [-0.010, -0.010] missed by 0.010 | - |")
    assert second == ("| knee, correlated | 1 | 24.00 / 0.500 (LG-BPN) | - | 24.30 / 0.500 | - | - | +0.000 met | - "
                      "| +4.00 met |")
    standard = target_table(cases, "standard").splitlines()
    assert "distilled - BM3D (>= +1.0, SSIM >=)" in standard[0]
    assert standard[2].split(" | ")[5:7] == ["+0.20 [+0.10, +0.30] missed by 0.80; SSIM +0.010 [+0.010, +0.010] met",
                                             "-0.30 [-0.40, -0.20] missed by 0.80; "
                                             "SSIM -0.010 [-0.010, -0.010] missed by 0.010"]


def test_grid_cases_give_rician_noise_to_magnitude_mr_only():
    cases = grid_cases(("knee", "t1", "lidc", "ct"), ("gaussian", "rician"))
    assert cases == (("knee", "gaussian"), ("knee", "rician"), ("lidc", "gaussian"), ("t1", "gaussian"),
                     ("t1", "rician"), ("ct", "gaussian"))


def test_a_grid_case_scores_pipeline_peers_forced_puca_and_ablations(tmp_path, knee_crop):
    peers = peer_case(tmp_path / "peer_cases", "knee", "correlated", 0, knee_crop)
    cached = (tmp_path / "peer_cases" / "knee_correlated_seed0.csv").stat().st_mtime_ns
    again = peer_case(tmp_path / "peer_cases", "knee", "correlated", 0, knee_crop)  # read back, not rerun
    assert again.scores == peers.scores and again.images.keys() == peers.images.keys() >= {"noisy", "NLM"}
    assert (tmp_path / "peer_cases" / "knee_correlated_seed0.csv").stat().st_mtime_ns == cached
    spacing = tuple(read_volume(SAMPLE_KNEE).geometry.spacing)[::-1]  # numpy axis order, as the benchmark gives it
    case = run_case("knee", knee_crop, "correlated", 0, make_tiny_settings(), tmp_path, spacing, ceiling=False,
                    ablations=True, machine="here")

    methods = {s.method: s for s in case.scores}
    assert {"noisy", "NLM", "NLM, estimated sigma", "BSN", FORCED_PUCA, "diffusion + SRDS", DISTILLED,
            "ablation: single DDIM run", "ablation: paper's pairs (BSN(y) -> y, no recorruption)",
            "ablation: diffusion conditioned on noisy (no BSN)"} <= set(methods) and SUPERVISED not in methods
    assert methods["BSN"].setting == "LG-BPN" and case.notes[0].startswith("noise analysis: correlated")
    assert "context: 0 slice(s) per side (slices 6.4x thicker than the pixels" in case.notes[0]  # spacing reached it
    assert "training steps: BSN 4;" in case.notes[0]  # the steps the LG-BPN trained (make_tiny_settings: share 1)
    assert case.notes[0].endswith("here, torch " + torch.__version__)
    assert re.fullmatch(r"Noise model: std \d\.\d{3} x the added noise's, neighbour correlation [+-]\d\.\d\d "
                        r"\(added [+-]\d\.\d\d\)\.", case.notes[1])
    assert all(np.isfinite([s.psnr_db, s.detail_psnr_db]).all() and -1 <= s.ssim <= 1 and s.seconds_per_slice >= 0
               for s in methods.values())
    assert methods["NLM"].psnr_db > methods["noisy"].psnr_db
    # the single DDIM run samples the main run's diffusion network from the +eps half of each pair
    assert methods["ablation: single DDIM run"].psnr_db != methods["diffusion + SRDS"].psnr_db
    assert set(case.images) >= {"clean", "noisy", "BSN", DISTILLED} and case.images["clean"].shape == (64, 64)

    cases = tmp_path / "cases"
    cases.mkdir()
    write_case(cases, 0, knee_crop.shape, case)
    assert sorted(f.name for f in cases.iterdir()) == ["knee_correlated_seed0.csv", "knee_correlated_seed0.md",
                                                        "knee_correlated_seed0.npz"]
    rows = combine(cases, tmp_path, "diffdenoise_tiny", "header", (("knee", "correlated"),), "quick")
    assert "| knee, correlated | 1 | " in (tmp_path / "diffdenoise_tiny.md").read_text()
    with open(tmp_path / "diffdenoise_tiny.csv", newline="") as handle:
        written = list(csv.DictReader(handle))
    assert len(written) == len(rows) == len(case.scores) and {r["seed"] for r in written} == {"0"}


def test_recorruption_check_gaussian_twin_has_the_poisson_variance_and_no_skew():
    from benchmarks.recorruption_check import poisson_pair

    clean = np.full((2, 128, 128), 50.0, dtype=np.float32)
    clean[:, :, 64:] = 100.0  # the top of the robust range: 30 counts; the left half 0
    pair = poisson_pair(clean, 30.0, seed=0)
    poisson, gaussian = pair["poisson 30"], pair["gaussian, Poisson 30 variance"]
    for image in (poisson, gaussian):
        np.testing.assert_allclose(image[:, :, 64:].mean(), 100.0, atol=0.5)
        np.testing.assert_allclose(image[:, :, 64:].var(), (50.0 / np.sqrt(30)) ** 2, rtol=0.05)
    deviation = poisson[:, :, 64:] - 100.0
    skew = lambda d: np.mean(d ** 3) / np.var(d) ** 1.5  # noqa: E731
    assert skew(deviation) == pytest.approx(1 / np.sqrt(30), abs=0.05)
    assert abs(skew(gaussian[:, :, 64:] - 100.0)) < 0.05


def test_volume_ablation_report_gathers_finished_runs(tmp_path):
    from benchmarks.volume_ablation import FIELDS, STAGES, write_report, write_rows

    for context, chosen in (("0", "0"), ("auto", "2")):
        rows = [dict(zip(FIELDS, ("mni", "gaussian 0.1", 0, context, chosen, method, "30.0", "0.9", "31.0", "10"),
                         strict=True)) for method in ("noisy", *(stage for stage, _ in STAGES))]
        write_rows(tmp_path / f"mni_{context}.csv", rows)
    write_report(tmp_path, with_steps(PRESETS["quick"], 1, 1, 1), 24)
    table = (tmp_path / "volume_ablation.md").read_text()
    assert "| mni | gaussian 0.1 | 0 | auto (2) | 30.0 / 0.9 / 31.0 |" in table and "| 0 (0) |" in table
    assert not list(tmp_path.glob("*.part"))


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_output_blend_scores_the_fitted_weight_beside_the_best_and_resumes(tmp_path):
    from benchmarks.output_blend import KINDS, main

    arguments = ["--data", "knee", "--noise", "gaussian", "--steps", "2", "2", "2", "--slices", "3", "--out",
                 str(tmp_path)]
    main(arguments)  # raises if the weight refitted from the kept stages is not the run's own
    finished = tmp_path / "knee_gaussian_seed0.csv"
    rows = list(csv.DictReader(finished.open(newline="")))
    assert [row["weight_kind"] for row in rows] == list(KINDS)
    weights = {row["weight_kind"]: float(row["weight"]) for row in rows}
    assert weights["BSN"] == 0 and weights["NAFNet"] == 1
    assert all(0 <= weights[kind] <= 1 for kind in ("SURE", "copy and twin", "best"))
    stamp = finished.stat().st_mtime_ns
    main(arguments)
    assert finished.stat().st_mtime_ns == stamp
    assert "| knee | gaussian | 0 |" in (tmp_path / "output_blend.md").read_text()


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_bsn_learning_rate_sweep_scores_each_rate_and_resumes(tmp_path):
    from benchmarks.bsn_learning_rate import main

    arguments = ["--data", "knee", "--rates", "1e-3", "4e-3", "--steps", "2", "--slices", "3", "--out", str(tmp_path)]
    main(arguments)
    finished = sorted(tmp_path.glob("*.csv"))
    assert [path.name for path in finished] == ["knee_gaussian_0.1_seed0_steps2_lr0.001.csv",
                                                 "knee_gaussian_0.1_seed0_steps2_lr0.004.csv"]
    rows = [next(csv.DictReader(path.open(newline=""))) for path in finished]
    assert {r["learning_rate"] for r in rows} == {"0.001", "0.004"}
    assert all(np.isfinite(float(r["psnr_db"])) and -1 <= float(r["ssim"]) <= 1 for r in rows)
    assert rows[0]["psnr_db"] != rows[1]["psnr_db"]  # the rate reached the training
    table = (tmp_path / "bsn_learning_rate.md").read_text()
    assert "| knee | gaussian 0.1 | 0 | 2 | 0.001 |" in table and "| knee | gaussian 0.1 | 0 | 2 | 0.004 |" in table

    stamps = [path.stat().st_mtime_ns for path in finished]
    main(arguments)  # finished runs are kept, not recomputed
    assert [path.stat().st_mtime_ns for path in finished] == stamps


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_bsn_posterior_benchmark_scores_both_outputs_and_resumes(tmp_path):
    from benchmarks.bsn_posterior import main

    arguments = ["--data", "knee", "--noise", "gaussian 0.1", "--steps", "2", "--slices", "3", "--out", str(tmp_path)]
    main(arguments)
    finished = sorted(tmp_path.glob("*.csv"))
    assert [path.name for path in finished] == ["knee_gaussian_0.1_seed0_steps2.csv"]
    rows = list(csv.DictReader(finished[0].open(newline="")))
    assert [r["posterior"] for r in rows] == ["False", "True"]
    assert all(np.isfinite(float(r["psnr_db"])) and -1 <= float(r["ssim"]) <= 1 for r in rows)
    table = (tmp_path / "bsn_posterior.md").read_text()
    assert "| knee | gaussian 0.1 | 0 | 2 |" in table
    stamp = finished[0].stat().st_mtime_ns
    main(arguments)  # a finished case is kept, not recomputed
    assert finished[0].stat().st_mtime_ns == stamp


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_bsn_wiener_benchmark_scores_both_outputs_with_the_fitted_weight(tmp_path):
    from benchmarks.bsn_wiener import main

    main(["--data", "knee", "--noise", "gaussian 0.1", "--steps", "2", "--slices", "3", "--out", str(tmp_path)])
    finished = sorted(tmp_path.glob("*.csv"))
    assert [path.name for path in finished] == ["knee_gaussian_0.1_seed0_steps2.csv"]
    rows = list(csv.DictReader(finished[0].open(newline="")))
    assert [r["wiener"] for r in rows] == ["False", "True"]
    assert rows[0]["weight"] == "" and 0 <= float(rows[1]["weight"]) <= 1
    assert all(np.isfinite(float(r["psnr_db"])) and -1 <= float(r["ssim"]) <= 1 for r in rows)
    assert "| knee | gaussian 0.1 | 0 | 2 |" in (tmp_path / "bsn_wiener.md").read_text()


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_bsn_wiener_depth_benchmark_compares_2d_patches_with_patches_across_slices(tmp_path):
    from benchmarks.bsn_wiener_depth import main

    main(["--data", "mni", "--noise", "gaussian 0.1", "--steps", "2", "--slices", "4", "--out", str(tmp_path)])
    finished = sorted(tmp_path.glob("*.csv"))
    rows = list(csv.DictReader(finished[0].open(newline="")))
    # the 1 mm MNI reads its neighbours whole (4 slices: the fewest the between-slice measure reads); the
    # patches span the 4 slices there are
    assert [r["wiener_depth"] for r in rows] == ["1", "4"]
    assert all(0 <= float(r["weight"]) <= 1 and np.isfinite(float(r["psnr_db"])) for r in rows)
    assert rows[0]["psnr_db"] != rows[1]["psnr_db"]
    assert "| mni | gaussian 0.1 | 0 | 2 |" in (tmp_path / "bsn_wiener_depth.md").read_text()


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_rician_bias_benchmark_scores_the_biased_and_the_corrected_output(tmp_path):
    from benchmarks.rician_bias import main
    from DiffDenoiseLib.noise.model import FAMILIES

    main(["--data", "mni", "--steps", "2", "--slices", "3", "--out", str(tmp_path)])
    finished = sorted(tmp_path.glob("*.csv"))
    assert [path.name for path in finished] == ["mni_rician_0.05_seed0_steps2.csv"]
    rows = list(csv.DictReader(finished[0].open(newline="")))
    assert [r["requested"] for r in rows] == ["gaussian", "auto"] and rows[0]["family"] == "gaussian"
    assert rows[1]["family"] in FAMILIES and all(np.isfinite(float(r["psnr_db"])) for r in rows)
    assert "| mni | rician 0.05 | 0 | 2 |" in (tmp_path / "rician_bias.md").read_text()


def test_panel_figure_draws_the_four_images_and_the_overlay(tmp_path):
    from benchmarks.panel_figure import draw

    rng = np.random.default_rng(0)
    images = {name: rng.normal(size=(32, 32)).astype(np.float32) for name in ("input", "result", "residual")}
    images["uncertainty"] = np.abs(images["residual"])
    draw(tmp_path / "panel.png", images, {"residual": (-2.0, 2.0), "uncertainty": (0.0, 2.0)},
         {"Method": "diffdenoise"}, "note")
    assert (tmp_path / "panel.png").stat().st_size > 10_000


def test_the_pages_show_the_committed_grid_as_the_benchmark_wrote_it():
    """The README's results summary and GPU section and the whole of docs/results.md copy the committed results
    files, made by ``python -m benchmarks.results_page``: no number there is typed by hand or left stale."""
    from benchmarks import results_page

    stale = "is stale: run python -m benchmarks.results_page"
    assert results_page.FULL_PAGE.read_text(encoding="utf-8") == results_page.results_page(), f"docs/results.md {stale}"
    for page, name, body in results_page.sections():
        copy = page.read_text(encoding="utf-8").split(f"<!-- {name}:start -->\n")[1].split(f"\n<!-- {name}:end -->")[0]
        assert copy == body.strip(), f"{page} {stale}"


@pytest.mark.skipif(not SHARED.exists(), reason="../shared/data is absent")
def test_the_poisson_split_of_the_knee_grid_case_has_independent_halves():
    from benchmarks.split_independence import check

    row = check("knee", "poisson", 0)
    assert row["family"] == "poisson" and abs(row["correlation_dark"]) < 0.02 and abs(row["correlation"]) < 0.02
    assert row["copy_variance_ratio"] == pytest.approx(1.25, rel=0.02)
    assert row["twin_variance_ratio"] == pytest.approx(5.0, rel=0.02)


def test_slice_correlation_benchmark_judges_each_noise_on_the_volume(tmp_path, shared_data):
    from benchmarks.slice_correlation import AS_READ, OWN_NOISES, SHARED_NOISES, main

    main(["--data", "knee", "--seeds", "0", "--slices", "8", "--out", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "slice_correlation.csv").open(newline="")))
    assert [r["noise"] for r in rows] == [AS_READ, *OWN_NOISES, *SHARED_NOISES]
    assert all(r["decision_right"] == "True" for r in rows[1:])  # the knee's own noise is not shared (4 mm slices)
    assert "| shared 0.7 slice | yes |" in (tmp_path / "slice_correlation.md").read_text()


def test_network_speed_times_every_network_with_both_gradients(tmp_path, monkeypatch):
    from benchmarks import network_speed
    from DiffDenoiseLib.models.blocks import DepthwiseConv2d

    conv = DepthwiseConv2d(4, dilation=2)
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    with network_speed.native_gradients():
        assert type(conv(x).grad_fn).__name__ == "ConvolutionBackward0"  # PyTorch's own backward
    assert type(conv(x).grad_fn).__name__ != "ConvolutionBackward0"

    monkeypatch.setattr(network_speed, "TRAIN_BATCH", (2, 16))  # tiny sizes: the machinery, not the timings
    monkeypatch.setattr(network_speed, "INFERENCE_BATCH", (1, 24))
    network_speed.main(["--repeats", "1", "--out", str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "network_speed.csv").open(newline="")))
    assert [(r["network"], r["context_slices"]) for r in rows] == [
        (name, context) for context in ("0", "2") for name in ("PUCA", "LG-BPN", "NAFNet (distilled)")]
    assert all(float(r[field]) > 0 for r in rows for field in network_speed.FIELDS[2:])
    table = (tmp_path / "network_speed.md").read_text()
    assert table.count("\n| PUCA |") == 2 and "2 x 16 x 16 patches" in table and "1 x 24 x 24 slices" in table
