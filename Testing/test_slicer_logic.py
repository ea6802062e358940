"""The Slicer module's logic on a real MRML scene from slicer-core (no mocks)."""

import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("the installed 'slicer' package is not slicer-core", allow_module_level=True)
import vtk  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "DiffDenoise"))
from DiffDenoiseNodes import bValuesFromIndex, node_geometry  # noqa: E402

from DiffDenoise import DiffDenoiseLogic  # noqa: E402
from DiffDenoiseLib.bundle import read_bundle_metadata  # noqa: E402

IJK_TO_RAS = np.array([[0.0, -0.6, 0.0, 12.5], [0.7, 0.0, 0.0, -30.0], [0.0, 0.0, 4.0, 8.25], [0, 0, 0, 1]])


@pytest.fixture
def scene_with_volume(knee_crop):
    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    node = slicer.util.addVolumeFromArray(knee_crop.astype(np.int16), name="knee")
    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(IJK_TO_RAS))
    yield scene, node
    scene.Clear(1)


def _ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def test_process_creates_a_new_node_with_the_same_geometry(scene_with_volume, tmp_path):
    scene, node = scene_with_volume
    before = slicer.util.arrayFromVolume(node).copy()
    events = []
    logic = DiffDenoiseLogic()
    output = logic.process(node, steps=2, ddimSteps=2, device="cpu", progressCallback=events.append,
                           extraOutputs=("residual", "uncertainty"), saveModelPath=str(tmp_path / "m.safetensors"))
    assert output is not node and output.GetName() == "knee denoised"
    assert scene.GetNodesByClass("vtkMRMLScalarVolumeNode").GetNumberOfItems() == 4
    assert {name: extra.GetName() for name, extra in logic.lastExtraNodes.items()} == {
        "residual": "knee residual", "uncertainty": "knee uncertainty"}
    for extra in logic.lastExtraNodes.values():
        np.testing.assert_allclose(_ijk_to_ras(extra), IJK_TO_RAS, atol=1e-9)
    np.testing.assert_allclose(slicer.util.arrayFromVolume(logic.lastExtraNodes["residual"]),
                               before - slicer.util.arrayFromVolume(output), atol=1e-2)
    np.testing.assert_allclose(_ijk_to_ras(output), IJK_TO_RAS, atol=1e-9)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    np.testing.assert_allclose(_ijk_to_ras(node), IJK_TO_RAS, atol=1e-9)
    assert slicer.util.arrayFromVolume(output).shape == before.shape
    assert events and (tmp_path / "m.safetensors").exists()

    again = DiffDenoiseLogic().apply(node, str(tmp_path / "m.safetensors"))
    assert again.GetName() == "knee denoised_1"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(again), slicer.util.arrayFromVolume(output), atol=1e-3)
    weights = read_bundle_metadata(tmp_path / "m.safetensors")["bundle_sha256"]
    for made, how in ((output, "trained on the input"), (logic.lastExtraNodes["residual"], "trained on the input"),
                      (again, "bundle")):
        record = DiffDenoiseLogic.provenanceOf(made)
        assert (record.method, record.model, record.bundle_sha256) == ("diffdenoise", how, weights)
        assert made.GetAttribute("DiffDenoise.bundle_sha256") == weights
    assert DiffDenoiseLogic.provenanceOf(node) is None


def test_geometry_conversion_matches_itk_conventions(scene_with_volume):
    _, node = scene_with_volume
    geometry = node_geometry(node)
    np.testing.assert_allclose(geometry.spacing, (0.7, 0.6, 4.0))
    np.testing.assert_allclose(geometry.origin, (-12.5, 30.0, 8.25))  # RAS -> LPS
    assert geometry.slice_axis() == 0


def test_output_cannot_be_the_input(scene_with_volume):
    _, node = scene_with_volume
    with pytest.raises(ValueError, match="never overwritten"):
        DiffDenoiseLogic().process(node, outputVolumeNode=node)


def test_label_maps_are_refused(scene_with_volume):
    scene, _ = scene_with_volume
    labels = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "seg")
    with pytest.raises(ValueError, match="label map"):
        DiffDenoiseLogic().process(labels)


def _dwi_node(scene, small_dwi, tmp_path, volumes: int = 5):
    """A DWI node loaded by Slicer's own NRRD reader from a file our writer produced."""
    from DiffDenoiseLib.io import DiffusionVolume, Volume, write_dwi

    subset = DiffusionVolume(Volume(small_dwi.volume.array[:volumes], small_dwi.volume.geometry),
                             small_dwi.bvals[:volumes], small_dwi.bvecs[:volumes])
    write_dwi(tmp_path / "dwi.nrrd", subset)
    node = slicer.vtkMRMLDiffusionWeightedVolumeNode()
    node.SetName("dwi")
    scene.AddNode(node)
    storage = slicer.vtkMRMLNRRDStorageNode()
    storage.SetFileName(str(tmp_path / "dwi.nrrd"))
    assert storage.ReadData(node)
    return node


def _gradients(node):
    return (np.array([node.GetDiffusionGradient(i) for i in range(node.GetNumberOfGradients())]),
            np.array([node.GetBValue(i) for i in range(node.GetNumberOfGradients())]))


def test_process_dwi_returns_a_new_dwi_node_with_the_same_gradients(small_dwi, tmp_path):
    from helpers import make_tiny_ddm2

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    node = _dwi_node(scene, small_dwi, tmp_path)
    before = slicer.util.arrayFromVolume(node).copy()
    logic = DiffDenoiseLogic()
    output = logic.processDWI(node, preset=make_tiny_ddm2(), device="cpu", saveModelPath=str(tmp_path / "m"))
    assert output.IsA("vtkMRMLDiffusionWeightedVolumeNode") and output is not node
    assert output.GetName() == "dwi denoised"
    for got, want in zip(_gradients(output), _gradients(node), strict=True):
        np.testing.assert_allclose(got, want)
    np.testing.assert_allclose(_ijk_to_ras(output), _ijk_to_ras(node))
    frames = [vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()]
    node.GetMeasurementFrameMatrix(frames[0])
    output.GetMeasurementFrameMatrix(frames[1])
    np.testing.assert_allclose(*[slicer.util.arrayFromVTKMatrix(m) for m in frames])
    denoised = slicer.util.arrayFromVolume(output)
    assert denoised.shape == before.shape == (10, 10, 10, 5)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    assert "matched Markov-chain steps" in logic.lastSummary

    again = logic.applyDWI(node, str(tmp_path / "m.safetensors"))
    assert again.GetName() == "dwi denoised_1"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(again), denoised, atol=1e-3)
    background, _ = _finish(logic.startBackground(node, method="apply", modelPath=str(tmp_path / "m.safetensors")))
    assert background.IsA("vtkMRMLDiffusionWeightedVolumeNode") and background.GetName() == "dwi denoised_2"
    np.testing.assert_allclose(slicer.util.arrayFromVolume(background), denoised, atol=1e-3)
    weights = read_bundle_metadata(tmp_path / "m.safetensors")["bundle_sha256"]
    records = [DiffDenoiseLogic.provenanceOf(made) for made in (output, again, background)]
    assert [(r.method, r.model, r.bundle_sha256) for r in records] == [
        ("ddm2", "trained on the input", weights), ("ddm2", "bundle", weights), ("ddm2", "bundle", weights)]
    with pytest.raises(ValueError, match="processDWI"):
        logic.process(node)
    scene.Clear(1)


def test_process_dwi_takes_a_sequence_of_volumes_and_returns_a_new_sequence(small_dwi):
    from helpers import make_tiny_ddm2

    scene = slicer.vtkMRMLScene()
    slicer.mrmlScene = scene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "series")
    sequence.SetIndexName("volume")
    ijk_to_ras = vtk.vtkMatrix4x4()
    ijk_to_ras.SetElement(0, 0, -2.0)
    ijk_to_ras.SetElement(0, 3, 12.5)
    for i in range(5):
        volume = slicer.vtkMRMLScalarVolumeNode()
        volume.SetIJKToRASMatrix(ijk_to_ras)
        slicer.util.updateVolumeFromArray(volume, small_dwi.volume.array[i].astype(np.float32))
        sequence.SetDataNodeAtValue(volume, str(i))
    logic = DiffDenoiseLogic()
    with pytest.raises(ValueError, match="has no b-values .* pass bvals"):
        logic.processDWI(sequence, preset=make_tiny_ddm2(), device="cpu")
    output = logic.processDWI(sequence, preset=make_tiny_ddm2(), device="cpu", bvals=small_dwi.bvals[:5])
    assert output.IsA("vtkMRMLSequenceNode") and output.GetName() == "series denoised"
    assert output.GetNumberOfDataNodes() == 5 and output.GetIndexName() == "volume"
    for i in range(5):
        assert output.GetNthIndexValue(i) == sequence.GetNthIndexValue(i)
        item = output.GetNthDataNode(i)
        assert slicer.util.arrayFromVolume(item).shape == small_dwi.volume.array[i].shape
        np.testing.assert_allclose(_ijk_to_ras(item), _ijk_to_ras(sequence.GetNthDataNode(i)))
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(sequence.GetNthDataNode(2)), small_dwi.volume.array[2])
    sequence.SetIndexName("b-value")  # an index that is the b-value gives the b-values
    assert bValuesFromIndex(sequence) == [0.0, 1.0, 2.0, 3.0, 4.0]
    scene.Clear(1)


def _finish(run, timeout=300.0):
    """Poll a background run the way the panel's timer does; return its output node and progress events."""
    events, started = [], time.monotonic()
    while run.running:
        events += [m.event for m in run.messages() if m.kind == "progress"]
        assert time.monotonic() - started < timeout, "the worker did not finish"
        time.sleep(0.1)
    return run.finish(), events


def test_background_run_matches_the_input_and_leaves_no_temporary_files(scene_with_volume, tmp_path):
    scene, node = scene_with_volume
    before = slicer.util.arrayFromVolume(node).copy()
    run = DiffDenoiseLogic().startBackground(node, method="bsn", steps=2, device="cpu", extraOutputs=("residual",),
                                             saveModelPath=str(tmp_path / "bsn.safetensors"))
    output, events = _finish(run)
    assert output.GetName() == "knee denoised" and scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 3
    assert events and events[-1].step == events[-1].total
    np.testing.assert_allclose(_ijk_to_ras(output), IJK_TO_RAS, atol=1e-9)
    denoised = slicer.util.arrayFromVolume(output)
    assert denoised.shape == before.shape and np.abs(denoised - before).mean() > 0
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    assert not Path(run.folder).exists() and (tmp_path / "bsn.safetensors").exists()


def test_background_cancel_kills_the_worker_and_leaves_no_output(scene_with_volume):
    scene, node = scene_with_volume
    nodes_before = scene.GetNumberOfNodes()
    run = DiffDenoiseLogic().startBackground(node, method="diffdenoise", steps=100000, device="cpu")
    started = time.monotonic()
    while not any(m.kind == "progress" for m in run.messages()):  # training has started
        assert run.running and time.monotonic() - started < 120
        time.sleep(0.1)
    run.cancel()
    assert run.worker.process.poll() is not None and not Path(run.folder).exists()
    with pytest.raises(RuntimeError, match="cancelled"):
        run.finish()
    assert scene.GetNumberOfNodes() == nodes_before


def test_background_cancel_ends_a_launcher_and_the_interpreter_it_started(scene_with_volume, tmp_path):
    """Slicer's PythonSlicer is a launcher whose child interpreter does the work: cancel must end both."""
    _, node = scene_with_volume
    launcher = tmp_path / "PythonSlicer"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\necho launcher done\n')  # a parent, not an exec
    launcher.chmod(0o755)
    run = DiffDenoiseLogic().startBackground(node, method="bsn", steps=100000, device="cpu", python=str(launcher))
    started = time.monotonic()
    while not any(m.kind == "progress" for m in run.messages()):
        assert run.running and time.monotonic() - started < 120
        time.sleep(0.1)
    children = [int(pid) for pid in
                Path(f"/proc/{run.worker.process.pid}/task/{run.worker.process.pid}/children").read_text().split()]
    assert children, "the launcher runs the interpreter as its child"
    run.cancel()
    for pid in (run.worker.process.pid, *children):
        assert not Path(f"/proc/{pid}").exists() or Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", pid
    with pytest.raises(ProcessLookupError):
        os.killpg(run.worker.process.pid, 0)
    assert not Path(run.folder).exists()


def test_background_failure_reports_the_worker_error(scene_with_volume, tmp_path):
    _, node = scene_with_volume
    (tmp_path / "not_a_bundle.safetensors").write_bytes(b"\x00" * 16)
    run = DiffDenoiseLogic().startBackground(node, method="apply", modelPath=str(tmp_path / "not_a_bundle.safetensors"))
    with pytest.raises(RuntimeError, match="DiffDenoise failed: .*bundle"):
        _finish(run)


def test_a_bundle_path_that_cannot_be_written_is_refused_before_training(scene_with_volume, tmp_path):
    from DiffDenoiseLib.errors import InputError

    _, node = scene_with_volume
    (tmp_path / "a_file").write_text("x")
    started = time.perf_counter()
    with pytest.raises(InputError, match="is a file, not a folder"):
        DiffDenoiseLogic().process(node, method="bsn", steps=500, device="cpu",
                                   saveModelPath=str(tmp_path / "a_file" / "m.safetensors"))
    assert time.perf_counter() - started < 30
