"""The module's in-Slicer self-test (``DiffDenoiseTest``) run here on slicer-core's real MRML scene: the code
that Reload and Test and the registered ctest run, minus the Qt panel."""

import sys
from pathlib import Path

import pytest
from helpers import make_tiny_ddm2, make_tiny_settings

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffDenoise"))
import DiffDenoise  # noqa: E402 (the module, not its names: pytest would collect DiffDenoiseTest twice)


class TestSelfTestOnSlicerCore(DiffDenoise.DiffDenoiseTest):
    scalarPreset = make_tiny_settings()  # the in-process runs at a test's budget (the worker runs take steps=20)
    dwiPreset = make_tiny_ddm2()
    inProcessSteps = None

    def setUp(self):
        slicer.mrmlScene = slicer.vtkMRMLScene()
        super().setUp()

    def tearDown(self):
        slicer.mrmlScene.Clear(1)


def test_self_test_skips_with_the_reason_when_packages_are_missing(monkeypatch):
    monkeypatch.setattr(DiffDenoise, "missingRequirements", lambda: ["torch>=2.4,<3"])
    case = DiffDenoise.DiffDenoiseTest("test_BackgroundRun")
    with pytest.raises(DiffDenoise.unittest.SkipTest, match=r"torch>=2.4,<3.*press Apply"):
        case._requireLibrary()
    messages = []
    monkeypatch.setattr(case, "delayDisplay", messages.append)
    slicer.mrmlScene = slicer.vtkMRMLScene()
    case.runTest()  # Reload and Test: a skip is reported, not raised
    assert messages == [messages[0]] and "skipped" in messages[0] and "torch" in messages[0]
