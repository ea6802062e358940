"""The Slicer panel's contract without the application: its parameters, dependency check and batch script."""

import subprocess
import sys
import time
import typing
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "DiffDenoise"))
from DiffDenoise import (  # noqa: E402
    PANEL_METHODS,
    DiffDenoiseLogic,
    DiffDenoiseParameterNode,
    missingRequirements,
    runOptions,
)
from DiffDenoiseLib.options import DEVICE_CHOICES, METHODS, NOISE_CHOICES, PRESETS  # noqa: E402

BATCH = ROOT / "DiffDenoise" / "Resources" / "Scripts" / "DiffDenoiseBatch.py"


def _parameters():
    """{name: (annotation, default)} of the panel's parameter node declaration."""
    hints = typing.get_type_hints(DiffDenoiseParameterNode, include_extras=True)
    return {name: (hint, getattr(DiffDenoiseParameterNode, name, None)) for name, hint in hints.items()}


def test_every_parameter_has_a_widget_and_every_bound_widget_a_parameter():
    tree = ElementTree.parse(ROOT / "DiffDenoise" / "Resources" / "UI" / "DiffDenoise.ui")
    bound = {prop.find("string").text for prop in tree.iter("property") if prop.get("name") == "SlicerParameterName"}
    assert bound == set(_parameters())


def test_panel_defaults_are_valid_choices_and_run_through_the_worker(knee_crop):
    choices = {}
    for name, (hint, default) in _parameters().items():
        for meta in getattr(hint, "__metadata__", ()):
            if hasattr(meta, "choices"):
                choices[name] = tuple(meta.choices)
                assert default in meta.choices, name
            if hasattr(meta, "minimum"):
                assert meta.minimum <= default <= meta.maximum, name
    assert choices == {"method": PANEL_METHODS, "noise": NOISE_CHOICES, "preset": PRESETS, "device": DEVICE_CHOICES}
    assert set(METHODS) < set(PANEL_METHODS)

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    node = slicer.util.addVolumeFromArray(knee_crop, name="knee")
    defaults = type("Panel", (), {name: default for name, (_, default) in _parameters().items()})()
    options = runOptions(defaults)
    assert options["outputNode"] is None and options["modelPath"] is None and options["extraOutputs"] == ()
    run = DiffDenoiseLogic().startBackground(node, steps=2, **options)
    output = run.wait()
    assert output.GetName() == "knee denoised"
    assert slicer.util.arrayFromVolume(output).shape == knee_crop.shape
    defaults.residualOutput, defaults.srdsPairs = True, 2
    assert runOptions(defaults)["extraOutputs"] == ("residual",) and runOptions(defaults)["srdsPairs"] == 2
    scene.Clear(1)


def test_missing_requirements_lists_absent_and_out_of_range_packages(tmp_path):
    assert missingRequirements() == []  # the test environment has everything the module needs
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("# comment\nnumpy>=1.0\nnumpy<1.0  # too old a range\nsurely-not-installed-pkg>=1\n")
    assert missingRequirements(str(requirements)) == ["numpy<1.0", "surely-not-installed-pkg>=1"]


def _image(path: Path, array: np.ndarray) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((0.7, 0.6, 3.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    image.SetDirection((0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0))
    sitk.WriteImage(image, str(path))


def test_batch_script_denoises_a_folder_with_slicer_core(knee_crop, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    _image(inputs / "a.nii.gz", knee_crop.astype(np.int16))
    _image(inputs / "b.nrrd", knee_crop[::-1].copy())
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    result = subprocess.run([sys.executable, str(BATCH), "--input", str(inputs), "--output", str(tmp_path / "out"),
                             "--method", "bsn", "--steps", "2", "--device", "cpu", "--extra", "residual",
                             "--no-progress"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "denoised 2 of 2 images" in result.stdout
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "a_residual.nii.gz", "b.nrrd",
                                                                     "b_residual.nrrd"]
    for name in ("a.nii.gz", "b.nrrd"):
        source, output = sitk.ReadImage(str(inputs / name)), sitk.ReadImage(str(tmp_path / "out" / name))
        assert output.GetSize() == source.GetSize()
        np.testing.assert_allclose(output.GetSpacing(), source.GetSpacing(), atol=1e-5)
        np.testing.assert_allclose(output.GetOrigin(), source.GetOrigin(), atol=1e-4)
        np.testing.assert_allclose(output.GetDirection(), source.GetDirection(), atol=1e-6)
        assert np.abs(sitk.GetArrayFromImage(output) - sitk.GetArrayFromImage(source)).mean() > 0
    assert {p.name: p.read_bytes() for p in inputs.iterdir()} == before
    # run again into the same folder: refused before any image is read, unless --overwrite
    written = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()}
    again = subprocess.run([sys.executable, str(BATCH), "--input", str(inputs), "--output", str(tmp_path / "out"),
                            "--method", "bsn", "--steps", "2", "--device", "cpu", "--no-progress"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == written


@pytest.mark.parametrize("arguments, message", [
    (["--input", "/no/such/folder", "--output", "out"], "input /no/such/folder does not exist"),
    (["--output", "out"], "the following arguments are required: --input"),
])
def test_batch_script_exits_nonzero_with_a_clear_message(arguments, message, tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(BATCH), *arguments], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()
