"""The Slicer panel's contract without the application: its parameters, dependency check and batch script."""

import pathlib
import shutil
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
from DiffDenoiseNodes import checkOutput  # noqa: E402
from DiffDenoiseRequirements import missingRequirements  # noqa: E402

from DiffDenoise import (  # noqa: E402
    PANEL_METHODS,
    DiffDenoiseLogic,
    DiffDenoiseParameterNode,
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
    images = [str(inputs / "a.nii.gz"), str(inputs / "b.nrrd")]
    result = subprocess.run([sys.executable, str(BATCH), "--no-progress", "cohort", "--out", str(tmp_path / "out"),
                             *images, "--method", "bsn", "--steps", "2", "--device", "cpu", "--extra", "residual"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "cohort: 2 of 2 images written" in result.stdout
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
    again = subprocess.run([sys.executable, str(BATCH), "--no-progress", "cohort", "--out", str(tmp_path / "out"),
                            *images, "--method", "bsn", "--steps", "2", "--device", "cpu"],
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir()} == written


def test_batch_script_exits_1_with_the_fix_when_it_cannot_import_or_packages_are_missing(tmp_path):
    """Under Slicer --no-main-window --python-script an uncaught error would hang: every failure must exit."""
    started = time.monotonic()
    bare = subprocess.run([sys.executable, "-S", str(BATCH), "cohort", "--out", "y", "x"], capture_output=True,
                          text=True, timeout=120)  # -S: no site-packages, so not even packaging to import
    assert bare.returncode == 1 and "cannot import packaging" in bare.stderr and "Traceback" not in bare.stderr
    module = tmp_path / "DiffDenoise"  # the module as installed, with a requirement this Python lacks
    shutil.copytree(ROOT / "DiffDenoise", module)
    requirements = module / "Resources" / "requirements.txt"
    requirements.write_text(requirements.read_text() + "diffdenoise-absent-package>=1\n")
    missing = subprocess.run([sys.executable, str(module / "Resources" / "Scripts" / "DiffDenoiseBatch.py"),
                              "cohort", "--out", "y", "x"], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "Python packages missing: diffdenoise-absent-package>=1" in missing.stderr
    assert "press Apply once" in missing.stderr and "Traceback" not in missing.stderr
    assert time.monotonic() - started < 100


@pytest.mark.parametrize("arguments, message", [
    (["cohort", "--out", "out", "/no/such/scan.nii.gz"], "1 of 1 inputs not found: /no/such/scan.nii.gz"),
    (["cohort", "--out", "out"], "the following arguments are required: inputs"),
])
def test_batch_script_exits_nonzero_with_a_clear_message(arguments, message, tmp_path):
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(BATCH), *arguments], capture_output=True, text=True, cwd=tmp_path,
                            timeout=120)
    assert result.returncode == 2 and message in result.stderr
    assert time.monotonic() - started < 60 and not (tmp_path / "out").exists()


# What the parameter node wrapper connects, from Slicer 5.10's
# Base/Python/slicer/parameterNodeWrapper/guiConnectors.py (Slicer/Slicer 66f3d12, the canRepresent of each
# connector class): widget class -> the annotation types it represents. "node": a MRML node class or a
# typing.Union of them (util.isNodeOrUnionOfNodes); "Choice": a str / int / float / bool with a Choice annotation
# (QComboBoxToStringableConnector fills the items from it).
SLICER_CONNECTORS = {
    "QCheckBox": {bool}, "ctkCheckBox": {bool}, "QPushButton": {bool}, "ctkCheckablePushButton": {bool},
    "QSlider": {int}, "QSpinBox": {int},
    "QDoubleSpinBox": {float, int}, "ctkSliderWidget": {float, int}, "qMRMLSliderWidget": {float, int},
    "ctkDoubleSlider": {float, int}, "ctkDoubleSpinBox": {float, int}, "qMRMLSpinBox": {float, int},
    "QComboBox": {"Choice"}, "ctkComboBox": {"Choice"},
    "QLineEdit": {str}, "QLabel": {str}, "QTextEdit": {str},
    "ctkPathLineEdit": {pathlib.Path}, "ctkDirectoryButton": {pathlib.Path},
    "qMRMLNodeComboBox": {"node"},
}
# The designer properties the .ui sets, per class: Qt's own (QWidget: toolTip, enabled, styleSheet) and the
# Q_PROPERTYs of qMRMLNodeComboBox.h (Slicer 66f3d12) and ctkPathLineEdit.h / ctkCollapsibleButton.h (CTK).
WIDGET_PROPERTIES = {
    "qMRMLNodeComboBox": {"nodeTypes", "showHidden", "showChildNodeTypes", "hideChildNodeTypes", "baseName",
                          "noneEnabled", "addEnabled", "removeEnabled", "editEnabled", "renameEnabled",
                          "selectNodeUponCreation", "noneDisplay"},
    "ctkPathLineEdit": {"label", "filters", "currentPath", "options", "settingKey", "showBrowseButton",
                        "showHistoryButton", "sizeAdjustPolicy", "minimumContentsLength", "nameFilters"},
    "ctkCollapsibleButton": {"text", "collapsed", "collapsedHeight", "flat"},
    "QLabel": {"text", "wordWrap"}, "QCheckBox": {"text", "checked"}, "QPushButton": {"text"},
    "QComboBox": set(), "QSpinBox": {"specialValueText", "minimum", "maximum", "value"},
    "QProgressBar": {"value"}, "QPlainTextEdit": {"readOnly", "maximumBlockCount", "placeholderText"},
    "qMRMLWidget": set(),
}
QWIDGET_PROPERTIES = {"toolTip", "enabled", "styleSheet", "SlicerParameterName"}
PATH_FILTER_FLAGS = {"Dirs", "Files", "Drives", "NoSymLinks", "AllEntries", "Readable", "Writable", "Executable",
                     "Hidden", "System"}  # ctkPathLineEdit::Filter (CTK ctkPathLineEdit.h)


def _ui_widgets():
    tree = ElementTree.parse(ROOT / "DiffDenoise" / "Resources" / "UI" / "DiffDenoise.ui")
    return list(tree.iter("widget"))


def _kind(hint) -> object:
    """The connector key of a parameter's annotation (see SLICER_CONNECTORS)."""
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint
    if typing.get_origin(base) is typing.Union:
        assert all(a is type(None) or issubclass(a, slicer.vtkMRMLNode) for a in typing.get_args(base))
        return "node"
    if isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode):
        return "node"
    if any(hasattr(meta, "choices") for meta in getattr(hint, "__metadata__", ())):
        return "Choice"
    return base


def test_every_bound_widget_has_the_connector_of_its_parameter_type_in_slicer():
    parameters = _parameters()
    for widget in _ui_widgets():
        properties = {prop.get("name"): prop for prop in widget.findall("property")}
        cls = widget.get("class")
        assert set(properties) <= WIDGET_PROPERTIES[cls] | QWIDGET_PROPERTIES, (widget.get("name"), cls)
        if "filters" in properties:
            flags = {flag.split("::")[-1] for flag in properties["filters"].find("set").text.split("|")}
            assert flags <= PATH_FILTER_FLAGS, widget.get("name")
        if "SlicerParameterName" in properties:
            name = properties["SlicerParameterName"].find("string").text
            assert _kind(parameters[name][0]) in SLICER_CONNECTORS[cls], (name, cls)


def test_volume_selectors_list_the_node_classes_of_their_parameters_so_dwi_and_sequences_show():
    """The connector sets the combo box's node types from the annotation (guiConnectors.py
    qMRMLNodeComboBoxToNodeConnector); with showChildNodeTypes false only the listed classes appear."""
    parameters = _parameters()
    for widget in _ui_widgets():
        properties = {prop.get("name"): prop for prop in widget.findall("property")}
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        name = properties["SlicerParameterName"].find("string").text
        classes = [a().GetClassName() for a in typing.get_args(parameters[name][0]) if a is not type(None)]
        assert classes == ["vtkMRMLScalarVolumeNode", "vtkMRMLDiffusionWeightedVolumeNode", "vtkMRMLSequenceNode"]
        assert [s.text for s in properties["nodeTypes"].iter("string")] == classes
        assert properties["showChildNodeTypes"].find("bool").text == "false"  # label maps stay out
        assert type(None) in typing.get_args(parameters[name][0])  # the empty selection


def test_version_guard_names_the_supported_slicer_and_matches_the_library():
    import tomllib

    from DiffDenoiseRequirements import MINIMUM_PYTHON, unsupportedPython

    message = unsupportedPython((3, 9, 10))
    assert "Slicer 5.10 or newer" in message and "Python 3.9" in message and "download.slicer.org" in message
    assert unsupportedPython((3, 12, 10)) is None and unsupportedPython((3, 11, 0)) is None
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == ">=" + ".".join(map(str, MINIMUM_PYTHON))


def test_dependency_plan_gives_pip_nothing_when_only_torch_is_missing():
    from DiffDenoiseRequirements import dependencyPlan

    assert dependencyPlan(["torch>=2.4,<3"], pytorchExtension=True) == ("torch>=2.4,<3", [])
    assert dependencyPlan(["torch>=2.4,<3"], pytorchExtension=False) == (None, ["torch>=2.4,<3"])
    assert dependencyPlan(["torch>=2.4,<3", "tqdm>=4.60"], True) == ("torch>=2.4,<3", ["tqdm>=4.60"])
    assert dependencyPlan(["tqdm>=4.60"], True) == (None, ["tqdm>=4.60"])


def test_a_missing_device_is_refused_with_the_fix():
    import torch
    from DiffDenoiseRequirements import deviceProblem

    assert deviceProblem("auto") is None and deviceProblem("cpu") is None
    if not torch.cuda.is_available():
        assert "Choose Device auto or cpu" in deviceProblem("cuda") and "PyTorch extension" in deviceProblem("cuda")


def test_panel_paths_are_used_only_where_switched_on_and_checked_before_a_run(knee_crop, tmp_path):
    slicer.mrmlScene = slicer.vtkMRMLScene()
    node = slicer.util.addVolumeFromArray(knee_crop, name="knee")
    panel = type("Panel", (), {name: default for name, (_, default) in _parameters().items()})()
    panel.method = "bsn"
    assert runOptions(panel, "a.safetensors", "b.safetensors", str(tmp_path))["saveModelPath"] is None  # off
    panel.saveModel = panel.keepCheckpoints = True
    options = runOptions(panel, "a.safetensors", " ", "")
    assert options["modelPath"] is None and options["saveModelPath"] == "" and options["checkpointDir"] == ""
    logic = DiffDenoiseLogic()
    with pytest.raises(ValueError, match="Choose where to save"):
        logic.startBackground(node, **options)
    existing = tmp_path / "kept.safetensors"
    existing.write_bytes(b"a user's model")
    with pytest.raises(Exception, match="already exists: choose a new name$"):  # no CLI flag named in the panel
        logic.startBackground(node, **runOptions(panel, "", str(existing), str(tmp_path / "checkpoints")))
    assert existing.read_bytes() == b"a user's model"
    panel.method = "apply"
    with pytest.raises(ValueError, match="Choose the model bundle"):
        logic.startBackground(node, **runOptions(panel, "", "", ""))
    with pytest.raises(ValueError, match="apply trains nothing"):
        logic.startBackground(node, **{**runOptions(panel, str(existing)), "saveModelPath": "new.safetensors"})
    dwi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "dwi")
    with pytest.raises(ValueError, match="choose '\\(create new\\)' or a node of the input's kind"):
        checkOutput(node, dwi)


def test_extra_outputs_get_a_centred_residual_window_and_an_uncertainty_window_from_zero():
    from DiffDenoiseNodes import showResult

    scene = slicer.mrmlScene = slicer.vtkMRMLScene()
    values = np.linspace(-3, 1, 4 * 8 * 8, dtype=np.float32).reshape(4, 8, 8)
    extras = {name: slicer.util.addVolumeFromArray(data, name=name)
              for name, data in (("residual", values), ("uncertainty", np.abs(values)))}
    output = slicer.util.addVolumeFromArray(values, name="denoised")
    for node in extras.values():
        node.CreateDefaultDisplayNodes()
    composite = scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode")
    showResult(output, extras, showUncertainty=False)
    residual, uncertainty = (extras[n].GetDisplayNode() for n in ("residual", "uncertainty"))
    assert residual.GetAutoWindowLevel() == 0 and residual.GetLevel() == 0
    assert residual.GetWindowLevelMax() == pytest.approx(np.percentile(np.abs(values), 99.5), rel=1e-5)
    assert uncertainty.GetWindowLevelMin() == 0
    assert composite.GetBackgroundVolumeID() == output.GetID()
    assert composite.GetForegroundVolumeID() == extras["uncertainty"].GetID() and composite.GetForegroundOpacity() == 0


def test_every_widget_the_panel_code_uses_is_in_the_ui():
    """The widget class cannot run without Slicer's Qt: at least each self.ui.<name> it touches must exist."""
    import re

    used = set(re.findall(r"self\.ui\.(\w+)", (ROOT / "DiffDenoise" / "DiffDenoise.py").read_text()))
    assert used and used <= {widget.get("name") for widget in _ui_widgets()}
