"""The options records: every bad value of every option is one line with exit 2 from the CLI and an
``InputError`` from the library; the command line, the panel and the keyword forms are built from them."""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass, fields

import numpy as np
import pytest

from DiffDenoiseLib.cli import main
from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.denoise_dwi import denoise_dwi
from DiffDenoiseLib.errors import InputError
from DiffDenoiseLib.options import (
    DenoiseOptions,
    DWIOptions,
    OptionSpec,
    add_arguments,
    option,
    panel_parameters,
    specs,
)

JOBS = {"denoise": DenoiseOptions, "ddm2": DWIOptions}


def _bad_values(spec: OptionSpec) -> list[tuple[object, str]]:
    """(library value, command-line word) pairs that the option must refuse."""
    if spec.many:
        return [(("nonsense",), "nonsense")]
    if spec.choices is not None:
        return [("nonsense", "nonsense")]
    below = spec.minimum - 1
    above = [(spec.maximum + 1, str(spec.maximum + 1))] if spec.maximum is not None else []
    return [(below, str(below)), (1.5, "1.5"), *above]


CASES = [pytest.param(job, name, value, word, id=f"{job}-{name}-{word}")
         for job, options in JOBS.items() for name, spec in specs(options).items()
         for value, word in _bad_values(spec)]


@pytest.mark.parametrize(("job", "name", "value", "word"), CASES)
def test_every_bad_value_is_an_input_error_naming_the_option(job, name, value, word):
    with pytest.raises(InputError, match=f"^{name}: "):
        JOBS[job](**{name: value})


@pytest.mark.parametrize(("job", "name", "value", "word"), CASES)
def test_every_bad_value_is_one_line_with_exit_2_from_the_cli(job, name, value, word, capsys, tmp_path):
    flag = specs(JOBS[job])[name].flag
    code = main([job, str(tmp_path / "in.nii.gz"), str(tmp_path / "out.nii.gz"), f"{flag}={word}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("diffdenoise: error: ") and flag in lines[0]


def test_the_front_doors_refuse_bad_options_before_any_work():
    image = np.zeros((4, 64, 64), np.float32)  # never analysed: the options are checked first
    with pytest.raises(InputError, match="^srds_pairs: 0 is out of range"):
        denoise(image, srds_pairs=0)
    with pytest.raises(InputError, match="^sampler_steps: "):
        denoise_dwi(np.zeros((3, 4, 8, 8), np.float32), np.zeros(3), sampler_steps=0)
    with pytest.raises(TypeError, match="no option srds_pair"):
        denoise(image, srds_pair=2)


def test_values_allowed_alone_but_not_together_are_refused_by_the_cli_with_exit_2(tmp_path):
    result = subprocess.run([sys.executable, "-m", "DiffDenoiseLib.cli", "denoise", str(tmp_path / "in.nii.gz"),
                             str(tmp_path / "out.nii.gz"), "--method", "bsn", "--extra", "srds"],
                            capture_output=True, text=True, timeout=300)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "use method diffusion or diffdenoise" in lines[0]


@pytest.mark.parametrize("options", [
    DenoiseOptions(),
    DenoiseOptions(method="bsn", noise="poisson", preset="standard", device="cuda:1", seed=-7, steps=3,
                   context=0, outputs=("residual", "bsn")),
    DenoiseOptions(srds_pairs=4, ddim_steps=9, distill_slices=2, context=3),
    DWIOptions(method="stage1", seed=-(2 ** 63), neighbours=4, sampler="full", sampler_steps=2),
])
def test_the_command_line_of_options_parses_back_to_them(options):
    parser = argparse.ArgumentParser()
    add_arguments(parser, type(options))
    assert type(options).from_namespace(parser.parse_args(options.to_cli_args())) == options


def test_panel_names_are_the_camel_case_names_and_a_spin_box_0_is_the_presets():
    assert DenoiseOptions().as_panel_names()["srdsPairs"] is None
    chosen = DenoiseOptions.from_panel_names({"srdsPairs": 0, "ddimSteps": 3, "extraOutputs": ("residual",)})
    assert (chosen.srds_pairs, chosen.ddim_steps, chosen.outputs) == (None, 3, ("residual",))
    assert DenoiseOptions.from_panel_names(chosen.as_panel_names()) == chosen
    with pytest.raises(TypeError, match="no option srdsPair"):
        DenoiseOptions.from_panel_names({"srdsPair": 2})


def test_explicit_settings_are_taken_for_a_preset_but_cannot_go_on_a_command_line(tiny_settings):
    options = DenoiseOptions(preset=tiny_settings)
    with pytest.raises(InputError, match="explicit settings cannot go on a command line"):
        options.to_cli_args()


@dataclass(frozen=True)
class _WithKnob(DenoiseOptions):
    knob: int | None = option(None, "a new knob", minimum=1, on_panel=True, panel_maximum=5)


def test_a_new_option_reaches_every_surface_from_its_field_alone():
    """Adding an option is one field: the CLI flag, its check, the worker's command line and the panel
    parameter follow from it."""
    parser = argparse.ArgumentParser()
    add_arguments(parser, _WithKnob)
    parsed = _WithKnob.from_namespace(parser.parse_args(["--knob", "3"]))
    assert parsed.knob == 3 and "--knob=3" in parsed.to_cli_args()
    assert "knob" in panel_parameters(_WithKnob, lambda choices: choices, lambda low, high: (low, high))
    assert _WithKnob.from_panel_names({"knob": 0}).knob is None
    with pytest.raises(InputError, match="^knob: 0 is out of range"):
        _WithKnob(knob=0)
    assert {item.name for item in fields(_WithKnob)} - {item.name for item in fields(DenoiseOptions)} == {"knob"}


def test_the_wiener_depth_option_reaches_the_bsn_stage(knee_crop, tiny_settings):
    noisy = knee_crop + np.random.default_rng(0).normal(0, 0.1 * np.ptp(knee_crop), knee_crop.shape).astype(np.float32)
    depths = {depth: denoise(noisy, method="bsn", preset=tiny_settings, device="cpu", context=1,
                             wiener_depth=depth).bundle.metadata["bsn"]["wiener_depth"] for depth in (None, 2, 3)}
    assert depths == {None: min(tiny_settings.bsn.wiener_depth, len(knee_crop)), 2: 2, 3: 3}
