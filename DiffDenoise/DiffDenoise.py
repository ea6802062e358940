"""DiffDenoise: self-supervised denoising of volumes loaded in 3D Slicer.

The widget only gathers the panel's state and calls :class:`DiffDenoiseLogic`; the logic converts MRML nodes
to arrays + geometry and calls the same library function as the ``diffdenoise`` CLI. From the Python
console::

    logic = slicer.modules.diffdenoise.widgetRepresentation().self().logic  # or DiffDenoiseLogic()
    outputNode = logic.process(getNode("MRHead"), preset="quick")
"""

from __future__ import annotations

import logging
import os
import pathlib
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

try:  # the Slicer application; absent under slicer-core (headless MRML), where only the logic is used
    from slicer.ScriptedLoadableModule import (
        ScriptedLoadableModule,
        ScriptedLoadableModuleLogic,
        ScriptedLoadableModuleTest,
        ScriptedLoadableModuleWidget,
    )
except ImportError:

    class _OutsideSlicerApp:
        """Stand-in base class under slicer-core, where only the logic runs (tests, plain-Python batch)."""

        def __init__(self, *args, **kwargs):
            pass

    ScriptedLoadableModule = ScriptedLoadableModuleWidget = _OutsideSlicerApp
    ScriptedLoadableModuleLogic = ScriptedLoadableModuleTest = _OutsideSlicerApp
from slicer.util import VTKObservationMixin

try:  # typed parameters bound to the panel's widgets and saved with the scene (Slicer >= 5.4)
    from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
except ImportError:  # slicer-core: no GUI binding; the declaration below still lists each parameter's choices

    @dataclass(frozen=True)
    class Choice:
        choices: tuple

    @dataclass(frozen=True)
    class WithinRange:
        minimum: int
        maximum: int

    parameterNodeWrapper = None

_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
REQUIREMENTS = os.path.join(_MODULE_DIR, "Resources", "requirements.txt")
PROVENANCE_ATTRIBUTE = "DiffDenoise."  # node attributes DiffDenoise.method, DiffDenoise.bundle_sha256, ...


def _import_library() -> None:
    """Make DiffDenoiseLib importable: bundled next to this file when installed, one level up in a checkout.

    Its heavy modules (torch) are imported where they are used, so Slicer starts before torch is installed.
    """
    try:
        import DiffDenoiseLib  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(_MODULE_DIR))


def _checkModelPath(saveModelPath: str | None) -> None:
    """Refuse a bundle path that cannot be written before training, not after it (the training would be lost)."""
    if saveModelPath:
        from DiffDenoiseLib.write_plan import WritePlan

        plan = WritePlan(overwrite=True)  # the panel's file dialog has asked about replacing
        plan.bundle(saveModelPath)
        plan.check()


_import_library()
from DiffDenoiseLib.options import DEVICE_CHOICES, METHODS, NOISE_CHOICES, PRESETS  # noqa: E402 (torch-free)

PANEL_METHODS = ("auto", *METHODS, "ddm2", "apply")


def missingRequirements(path: str = REQUIREMENTS) -> list[str]:
    """The lines of ``requirements.txt`` that this Python does not satisfy (absent, or outside the range)."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    missing = []
    with open(path) as handle:
        for line in handle:
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            requirement = Requirement(line)
            try:
                installed = version(requirement.name)
            except PackageNotFoundError:
                missing.append(line)
                continue
            if not requirement.specifier.contains(installed, prereleases=True):
                missing.append(line)
    return missing


#
# DiffDenoise (module metadata)
#


class DiffDenoise(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "DiffDenoise"
        self.parent.categories = ["Filtering.Denoising"]
        self.parent.dependencies = []
        self.parent.contributors = ["DiffDenoise developers"]
        self.parent.helpText = (
            "Self-supervised denoising: a blind-spot network learns from the noisy volume itself, no clean "
            "data needed. Select a volume, choose a preset and Apply; the result is a new volume. "
            "See the README on the extension's home page for methods, presets and scripting."
        )
        self.parent.acknowledgementText = (
            "Methods: PUCA blind-spot network (Jang et al., NeurIPS 2023); DiffDenoise (arXiv 2504.00264). "
            "Sample data: knee MRI from pymskt (MIT)."
        )


#
# The panel's state
#


class DiffDenoiseParameterNode:
    """What the panel shows, saved with the scene. Each name is a widget's ``SlicerParameterName`` in the .ui."""

    inputVolume: slicer.vtkMRMLScalarVolumeNode  # a DWI node is one too
    outputVolume: slicer.vtkMRMLScalarVolumeNode  # none: a new node
    method: Annotated[str, Choice(PANEL_METHODS)] = "auto"
    noise: Annotated[str, Choice(NOISE_CHOICES)] = "auto"
    preset: Annotated[str, Choice(PRESETS)] = "quick"
    device: Annotated[str, Choice(DEVICE_CHOICES)] = "auto"
    modelPath: pathlib.Path = pathlib.Path()  # the bundle to apply, or where to save the trained one
    srdsPairs: Annotated[int, WithinRange(0, 16)] = 0  # 0: the preset's
    ddimSteps: Annotated[int, WithinRange(0, 1000)] = 0
    residualOutput: bool = False
    uncertaintyOutput: bool = False


if parameterNodeWrapper is not None:
    DiffDenoiseParameterNode = parameterNodeWrapper(DiffDenoiseParameterNode)


def runOptions(parameters) -> dict:
    """Keyword arguments of :meth:`DiffDenoiseLogic.startBackground` for the panel's state."""
    modelPath = str(parameters.modelPath or "")
    extras = {"residual": parameters.residualOutput, "uncertainty": parameters.uncertaintyOutput}
    return {"outputNode": parameters.outputVolume, "method": parameters.method, "noise": parameters.noise,
            "preset": parameters.preset, "device": parameters.device, "srdsPairs": parameters.srdsPairs or None,
            "ddimSteps": parameters.ddimSteps or None, "extraOutputs": tuple(name for name, on in extras.items() if on),
            "modelPath": modelPath if modelPath not in ("", ".") else None}


#
# DiffDenoiseLogic (GUI-free: the scripting API, also used by batch runs)
#


def node_geometry(volumeNode):
    """Geometry (ITK/LPS convention, as DiffDenoiseLib uses) of a volume node's IJK-to-RAS transform."""
    _import_library()
    from DiffDenoiseLib.io import Geometry

    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    matrix = slicer.util.arrayFromVTKMatrix(ijkToRas)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    rasToLps = np.diag([-1.0, -1.0, 1.0])
    direction = rasToLps @ (matrix[:3, :3] / spacing)
    origin = rasToLps @ matrix[:3, 3]
    return Geometry(tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist()))


class DiffDenoiseLogic(ScriptedLoadableModuleLogic):
    """Denoise volume nodes; every result is a new node, the input is never modified.

    ``process`` trains on the input itself; ``apply`` uses a saved model bundle. Both block until done;
    pass ``progressCallback`` (called with a ``ProgressEvent``) and ``cancelCallback`` (return True to stop).
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastExtraNodes = {}
        self.lastSummary = ""

    @staticmethod
    def _checkInput(inputVolumeNode, outputVolumeNode):
        if inputVolumeNode is None or not inputVolumeNode.IsA("vtkMRMLScalarVolumeNode"):
            raise ValueError("Select a scalar volume as input")
        if inputVolumeNode.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
            raise ValueError(f"'{inputVolumeNode.GetName()}' is a diffusion-weighted series: use processDWI (DDM2)")
        if inputVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
            raise ValueError(f"'{inputVolumeNode.GetName()}' is a label map (segmentation); select an image")
        DiffDenoiseLogic._checkDataAndOutput(inputVolumeNode, outputVolumeNode)

    @staticmethod
    def _checkDataAndOutput(inputNode, outputNode):
        """Refuse an input without image data, and an output that is the input itself."""
        if inputNode.GetImageData() is None:
            raise ValueError(f"'{inputNode.GetName()}' has no image data")
        DiffDenoiseLogic._checkOutput(inputNode, outputNode)

    @staticmethod
    def _checkOutput(inputNode, outputNode):
        if outputNode is inputNode:
            raise ValueError("The output node must differ from the input: the input is never overwritten")

    @staticmethod
    def _newNodeFor(inputNode, className: str, suffix: str = "denoised"):
        """A new node "<input> <suffix>" of ``className`` in the input's scene (with display nodes if it has any)."""
        scene = inputNode.GetScene() or slicer.mrmlScene
        node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(f"{inputNode.GetName()} {suffix}"))
        if node.IsA("vtkMRMLDisplayableNode"):
            node.CreateDefaultDisplayNodes()
        return node

    @staticmethod
    def _writeOutput(inputVolumeNode, outputVolumeNode, denoised, suffix: str = "denoised"):
        if outputVolumeNode is None:
            outputVolumeNode = DiffDenoiseLogic._newNodeFor(inputVolumeNode, "vtkMRMLScalarVolumeNode", suffix)
        ijkToRas = vtk.vtkMatrix4x4()
        inputVolumeNode.GetIJKToRASMatrix(ijkToRas)
        outputVolumeNode.SetIJKToRASMatrix(ijkToRas)
        outputVolumeNode.SetAndObserveTransformNodeID(inputVolumeNode.GetTransformNodeID())
        slicer.util.updateVolumeFromArray(outputVolumeNode, denoised.astype(np.float32))
        return outputVolumeNode

    @staticmethod
    def _recordProvenance(nodes, provenance):
        """Node attributes ``DiffDenoise.<field>`` (method, preset, bundle_sha256, model, package_version,
        created): saved with the scene, read back by :meth:`provenanceOf`."""
        for node in nodes:
            for key, value in provenance.as_dict().items():
                node.SetAttribute(PROVENANCE_ATTRIBUTE + key, value)

    @staticmethod
    def provenanceOf(node):
        """The ``Provenance`` DiffDenoise recorded on an output node, or None for a node it did not make."""
        _import_library()
        from DiffDenoiseLib.provenance import Provenance

        record = {name[len(PROVENANCE_ATTRIBUTE):]: node.GetAttribute(name) for name in node.GetAttributeNames()
                  if name.startswith(PROVENANCE_ATTRIBUTE)}
        return Provenance.from_dict(record) if "method" in record else None

    def _writeResult(self, inputVolumeNode, outputVolumeNode, result, provenance):
        """The denoised image into the output node; each extra output into a new node "<input> <extra>"; every
        node gets the run's provenance; the outlier slices go to ``self.lastSummary``."""
        self.lastSummary = result.summary()
        self.lastExtraNodes = {name: self._writeOutput(inputVolumeNode, None, image, name)
                               for name, image in result.extras.items()}
        outputVolumeNode = self._writeOutput(inputVolumeNode, outputVolumeNode, result.denoised)
        self._recordProvenance([outputVolumeNode, *self.lastExtraNodes.values()], provenance)
        return outputVolumeNode

    def process(self, inputVolumeNode, outputVolumeNode=None, method: str = "diffdenoise", noise: str = "auto",
                preset: str = "quick", device: str = "auto", steps: int | None = None, seed: int = 0,
                srdsPairs: int | None = None, ddimSteps: int | None = None, distillSlices: int | None = None,
                extraOutputs: tuple[str, ...] = (), saveModelPath: str | None = None, checkpointDir: str | None = None,
                progressCallback: Callable | None = None, cancelCallback: Callable[[], bool] | None = None):
        """Denoise ``inputVolumeNode`` by training on it; returns the output node (new unless one is given).

        Options are those of ``DiffDenoiseLib.denoise.denoise`` (method, noise, preset, device, steps, seed,
        SRDS pairs, DDIM steps, distillation slices). ``extraOutputs`` (``residual``, ``uncertainty``, ``bsn``,
        ``srds``) become new volume nodes, listed in ``self.lastExtraNodes``. ``saveModelPath`` also saves the
        trained bundle for ``apply`` on other volumes. With ``checkpointDir`` each training stage keeps a
        checkpoint there, and a run cancelled or killed before the end resumes from it when started again.
        """
        self._checkInput(inputVolumeNode, outputVolumeNode)
        _import_library()
        from DiffDenoiseLib.bundle import save_bundle
        from DiffDenoiseLib.denoise import denoise
        from DiffDenoiseLib.provenance import Provenance

        _checkModelPath(saveModelPath)
        array = slicer.util.arrayFromVolume(inputVolumeNode).copy()  # (k, j, i) = (z, y, x), like the library
        geometry = node_geometry(inputVolumeNode)
        result = denoise(array, method=method, noise=noise, preset=preset, device=device,
                         slice_axis=geometry.slice_axis(), seed=seed, steps=steps, srds_pairs=srdsPairs,
                         ddim_steps=ddimSteps, distill_slices=distillSlices, outputs=tuple(extraOutputs),
                         spacing=tuple(reversed(geometry.spacing)), checkpoint_dir=checkpointDir,
                         progress=progressCallback, cancel=cancelCallback)
        if saveModelPath:
            save_bundle(saveModelPath, result.bundle, overwrite=True)  # a chosen path
        logging.info(f"DiffDenoise: noise {result.noise.kind}, timings {result.timings}")
        return self._writeResult(inputVolumeNode, outputVolumeNode, result, Provenance.of(result.bundle, True))

    def apply(self, inputVolumeNode, modelPath: str, outputVolumeNode=None, device: str = "auto",
              extraOutputs: tuple[str, ...] = (), progressCallback: Callable | None = None,
              cancelCallback: Callable[[], bool] | None = None):
        """Denoise ``inputVolumeNode`` with a saved bundle (no training); returns the output node.

        A DiffDenoise bundle runs its BSN and distilled NAFNet: one forward pass of each per slice.
        """
        self._checkInput(inputVolumeNode, outputVolumeNode)
        _import_library()
        from DiffDenoiseLib.bundle import load_bundle
        from DiffDenoiseLib.denoise import apply_bundle
        from DiffDenoiseLib.provenance import Provenance

        bundle = load_bundle(modelPath)
        array = slicer.util.arrayFromVolume(inputVolumeNode).copy()
        result = apply_bundle(bundle, array, device=device, outputs=tuple(extraOutputs), progress=progressCallback,
                              cancel=cancelCallback)
        return self._writeResult(inputVolumeNode, outputVolumeNode, result, Provenance.of(bundle, False))

    @staticmethod
    def _dwiArrays(dwiNode, outputNode, bvals=None):
        """(volumes, z, y, x) series and b-values of a DWI node, or of a sequence of scalar volumes (4D series;
        b-values from ``bvals`` or from the sequence's index when it is the b-value), after checking the node
        and the output."""
        if dwiNode is not None and dwiNode.IsA("vtkMRMLSequenceNode"):
            return DiffDenoiseLogic._sequenceArrays(dwiNode, outputNode, bvals)
        if dwiNode is None or not dwiNode.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
            raise ValueError("Select a diffusion-weighted volume (DWI) or a sequence of volumes as input")
        if bvals is not None:
            raise ValueError(f"'{dwiNode.GetName()}' is a DWI node and carries its own b-values: leave bvals out")
        DiffDenoiseLogic._checkDataAndOutput(dwiNode, outputNode)
        series = np.moveaxis(slicer.util.arrayFromVolume(dwiNode), -1, 0).copy()  # (z, y, x, v) -> (v, z, y, x)
        return series, vtk_to_numpy(dwiNode.GetBValues()).astype(np.float64)

    @staticmethod
    def _sequenceArrays(sequenceNode, outputNode, bvals):
        count = sequenceNode.GetNumberOfDataNodes()
        items = [sequenceNode.GetNthDataNode(i) for i in range(count)]
        if not items or not all(item is not None and item.IsA("vtkMRMLScalarVolumeNode") for item in items):
            raise ValueError(f"'{sequenceNode.GetName()}' is not a sequence of scalar volumes")
        DiffDenoiseLogic._checkOutput(sequenceNode, outputNode)
        arrays = []
        for item in items:
            DiffDenoiseLogic._checkDataAndOutput(item, None)
            arrays.append(slicer.util.arrayFromVolume(item))
        if len({array.shape for array in arrays}) > 1:
            raise ValueError(f"the volumes of '{sequenceNode.GetName()}' differ in size; resample them to one grid")
        if bvals is None:
            bvals = DiffDenoiseLogic._bValuesFromIndex(sequenceNode)
        return np.stack(arrays).astype(np.float32), np.asarray(bvals, dtype=np.float64)

    @staticmethod
    def _bValuesFromIndex(sequenceNode):
        """The sequence's index values when its index is the b-value (they are unique, so rarely)."""
        values = [sequenceNode.GetNthIndexValue(i) for i in range(sequenceNode.GetNumberOfDataNodes())]
        if sequenceNode.GetIndexName().lower().replace("-", "").replace(" ", "") == "bvalue":
            try:
                return [float(value) for value in values]
            except ValueError:
                pass
        raise ValueError(f"'{sequenceNode.GetName()}' has no b-values (its index is '{sequenceNode.GetIndexName()}' "
                         f"= {', '.join(values[:3])}, ...): pass bvals=[...] with one b-value per volume")

    @staticmethod
    def _writeSeries(inputNode, outputNode, series, provenance):
        """The denoised series as the same kind of node as the input (DWI node or sequence of volumes), with
        the run's provenance."""
        write = DiffDenoiseLogic._writeSequence if inputNode.IsA("vtkMRMLSequenceNode") else DiffDenoiseLogic._writeDWI
        outputNode = write(inputNode, outputNode, series)
        DiffDenoiseLogic._recordProvenance([outputNode], provenance)
        return outputNode

    @staticmethod
    def _writeSequence(sequenceNode, outputNode, series):
        """A new (or the given) sequence with one denoised volume per input item: same index, geometry."""
        if outputNode is None:
            outputNode = DiffDenoiseLogic._newNodeFor(sequenceNode, "vtkMRMLSequenceNode")
        outputNode.RemoveAllDataNodes()
        for attribute in ("IndexName", "IndexUnit", "IndexType"):
            getattr(outputNode, f"Set{attribute}")(getattr(sequenceNode, f"Get{attribute}")())
        matrix = vtk.vtkMatrix4x4()
        for i, volume in enumerate(series):
            item = sequenceNode.GetNthDataNode(i)
            denoised = slicer.vtkMRMLScalarVolumeNode()
            item.GetIJKToRASMatrix(matrix)
            denoised.SetIJKToRASMatrix(matrix)
            slicer.util.updateVolumeFromArray(denoised, np.ascontiguousarray(volume, np.float32))
            outputNode.SetDataNodeAtValue(denoised, sequenceNode.GetNthIndexValue(i))
        return outputNode

    @staticmethod
    def _writeDWI(dwiNode, outputNode, series):
        """A new (or the given) DWI node with the input's geometry, gradients, b-values and measurement frame."""
        if outputNode is None:
            outputNode = DiffDenoiseLogic._newNodeFor(dwiNode, "vtkMRMLDiffusionWeightedVolumeNode")
        matrix = vtk.vtkMatrix4x4()
        dwiNode.GetIJKToRASMatrix(matrix)
        outputNode.SetIJKToRASMatrix(matrix)
        dwiNode.GetMeasurementFrameMatrix(matrix)
        outputNode.SetMeasurementFrameMatrix(matrix)
        outputNode.SetAndObserveTransformNodeID(dwiNode.GetTransformNodeID())
        for getter, setter in ((dwiNode.GetDiffusionGradients, outputNode.SetDiffusionGradients),
                               (dwiNode.GetBValues, outputNode.SetBValues)):
            copy = vtk.vtkDoubleArray()
            copy.DeepCopy(getter())
            setter(copy)
        slicer.util.updateVolumeFromArray(outputNode, np.ascontiguousarray(np.moveaxis(series, 0, -1), np.float32))
        return outputNode

    def processDWI(self, dwiNode, outputNode=None, method: str = "ddm2", preset: str = "quick", device: str = "auto",
                   steps: int | None = None, seed: int = 0, neighbours: int | None = None, sampler: str | None = None,
                   samplerSteps: int | None = None, saveModelPath: str | None = None, bvals=None,
                   checkpointDir: str | None = None, progressCallback: Callable | None = None,
                   cancelCallback: Callable[[], bool] | None = None):
        """Denoise a diffusion-weighted volume node with DDM2 trained on it; returns a new DWI node (or
        ``outputNode``) with every volume, the same gradients, b-values, measurement frame and geometry.

        A ``vtkMRMLSequenceNode`` of scalar volumes (a 4D series) works too and gives a new sequence; its
        b-values are ``bvals`` (one per volume) or the sequence's index values when the index is "b-value".

        Options are those of ``DiffDenoiseLib.denoise_dwi.denoise_dwi`` (``checkpointDir`` as in
        :meth:`process`); the per-slice summary (matched
        steps, untouched and outlier slices) is kept in ``self.lastSummary``.
        """
        series, bvals = self._dwiArrays(dwiNode, outputNode, bvals)
        _import_library()
        from DiffDenoiseLib.bundle import save_bundle
        from DiffDenoiseLib.denoise_dwi import denoise_dwi
        from DiffDenoiseLib.provenance import Provenance

        _checkModelPath(saveModelPath)
        result = denoise_dwi(series, bvals, method=method, preset=preset, device=device, seed=seed, steps=steps,
                             neighbours=neighbours, sampler=sampler, sampler_steps=samplerSteps,
                             checkpoint_dir=checkpointDir, progress=progressCallback, cancel=cancelCallback)
        if saveModelPath:
            save_bundle(saveModelPath, result.bundle, overwrite=True)  # a chosen path
        self.lastSummary = result.summary()
        logging.info(f"DiffDenoise DDM2: {self.lastSummary}; timings {result.timings}")
        return self._writeSeries(dwiNode, outputNode, result.denoised, Provenance.of(result.bundle, True))

    def applyDWI(self, dwiNode, modelPath: str, outputNode=None, device: str = "auto", sampler: str | None = None,
                 bvals=None, progressCallback: Callable | None = None,
                 cancelCallback: Callable[[], bool] | None = None):
        """Denoise a DWI node (or a sequence of volumes, see :meth:`processDWI`) with a saved DDM2 bundle (no
        training); returns a new node of the input's kind."""
        series, bvals = self._dwiArrays(dwiNode, outputNode, bvals)
        _import_library()
        from DiffDenoiseLib.bundle import load_bundle
        from DiffDenoiseLib.denoise_dwi import apply_dwi_bundle
        from DiffDenoiseLib.provenance import Provenance

        result = apply_dwi_bundle(load_bundle(modelPath), series, bvals, device=device, sampler=sampler,
                                  progress=progressCallback, cancel=cancelCallback)
        self.lastSummary = result.summary()
        return self._writeSeries(dwiNode, outputNode, result.denoised, Provenance.of(result.bundle, False))

    def startBackground(self, inputNode, outputNode=None, method: str = "auto", noise: str = "auto",
                        preset: str = "quick", device: str = "auto", srdsPairs: int | None = None,
                        ddimSteps: int | None = None, steps: int | None = None, extraOutputs: tuple[str, ...] = (),
                        modelPath: str | None = None, bvals=None, checkpointDir: str | None = None,
                        python: str | None = None) -> BackgroundRun:
        """Start the same run as :meth:`process` / :meth:`apply` / :meth:`processDWI` in a worker process (the
        ``diffdenoise`` CLI with Slicer's Python, on temporary files) and return at once; the panel's way.

        ``method``: ``auto`` (DDM2 for a DWI node or a sequence, ``diffdenoise`` otherwise), ``diffdenoise``,
        ``diffusion``, ``bsn``, ``ddm2``, or ``apply`` (``modelPath`` is then the bundle to apply; for the
        other methods it is where to save the trained bundle, optional). ``bvals`` as in :meth:`processDWI`;
        ``steps`` overrides the preset's training steps; ``checkpointDir`` as in :meth:`process`.
        Poll the returned :class:`BackgroundRun` from a timer; ``run.wait()`` blocks instead.
        """
        _import_library()
        from DiffDenoiseLib.io import DiffusionVolume, Volume, write_dwi, write_volume

        isSeries = inputNode is not None and (inputNode.IsA("vtkMRMLDiffusionWeightedVolumeNode")
                                              or inputNode.IsA("vtkMRMLSequenceNode"))
        if method == "auto":
            method = "ddm2" if isSeries else "diffdenoise"
        if method == "apply" and not modelPath:
            raise ValueError("Choose the model bundle (.safetensors) to apply")
        folder = tempfile.mkdtemp(prefix="DiffDenoise-")
        output = os.path.join(folder, "output.nii.gz" if isSeries else "output.nrrd")  # 4D: NIfTI + .bval
        device = ["--device", device]
        try:
            if isSeries:
                series, bvals = self._dwiArrays(inputNode, outputNode, bvals)
                reference = inputNode if not inputNode.IsA("vtkMRMLSequenceNode") else inputNode.GetNthDataNode(0)
                source = os.path.join(folder, "input.nii.gz")
                # DDM2 uses the b-values only; the output node gets the input's own gradients back
                write_dwi(source, DiffusionVolume(Volume(series, node_geometry(reference).with_series_axis()),
                                                  bvals, np.zeros((len(bvals), 3))))
                arguments = ["ddm2", source, output, "--preset", preset, *device]
                if method == "apply":
                    arguments += ["--model", modelPath]
                elif method != "ddm2":
                    raise ValueError(f"'{inputNode.GetName()}' is a diffusion series: use method ddm2 or apply")
            else:
                self._checkInput(inputNode, outputNode)
                if method == "ddm2":
                    raise ValueError(f"'{inputNode.GetName()}' is a scalar volume: DDM2 needs a diffusion series")
                source = os.path.join(folder, "input.nrrd")
                write_volume(source, Volume(slicer.util.arrayFromVolume(inputNode), node_geometry(inputNode)))
                extras = ["--extra", *extraOutputs] if extraOutputs else []
                if method == "apply":
                    arguments = ["apply", "--model", modelPath, source, output, *device, *extras]
                else:
                    arguments = ["denoise", source, output, "--method", method, "--noise", noise, "--preset", preset,
                                 *device, *extras]
                    arguments += ["--srds-pairs", str(srdsPairs)] if srdsPairs else []
                    arguments += ["--ddim-steps", str(ddimSteps)] if ddimSteps else []
            if method != "apply":
                arguments += ["--steps", str(steps)] if steps else []
                arguments += ["--save-model", modelPath] if modelPath else []
                arguments += ["--checkpoint-dir", checkpointDir] if checkpointDir else []
            arguments += ["--output-dtype", "float32"]
            return BackgroundRun(self, inputNode, outputNode, folder, arguments, python)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def _readBack(self, inputNode, outputNode, outputs: dict[str, str]):
        """Load a worker's output files into nodes: the denoised result (returned) and any extra outputs, with
        the provenance the worker recorded in its files."""
        from DiffDenoiseLib.io import read_dwi, read_provenance, read_volume

        provenance = read_provenance(outputs["denoised"])
        if inputNode.IsA("vtkMRMLDiffusionWeightedVolumeNode") or inputNode.IsA("vtkMRMLSequenceNode"):
            return self._writeSeries(inputNode, outputNode, read_dwi(outputs["denoised"]).volume.array, provenance)
        self.lastExtraNodes = {name: self._writeOutput(inputNode, None, read_volume(path).array, name)
                               for name, path in outputs.items() if name not in ("denoised", "model")}
        outputNode = self._writeOutput(inputNode, outputNode, read_volume(outputs["denoised"]).array)
        self._recordProvenance([outputNode, *self.lastExtraNodes.values()], provenance)
        return outputNode


class BackgroundRun:
    """A DiffDenoise run in a worker process (see :meth:`DiffDenoiseLogic.startBackground`).

    Call :meth:`messages` from a timer for progress and log lines; once :attr:`running` is False,
    :meth:`finish` loads the result into nodes and returns the output node. :meth:`cancel` kills the worker
    and removes its temporary files: no output file or node is left behind.
    """

    def __init__(self, logic, inputNode, outputNode, folder: str, arguments: list[str], python: str | None = None):
        from DiffDenoiseLib.worker import WorkerProcess

        self.logic, self.inputNode, self.outputNode, self.folder = logic, inputNode, outputNode, folder
        self.worker = WorkerProcess(arguments, python)
        self.log: list[str] = []

    def messages(self):
        """What the worker reported since the last call (``WorkerMessage`` objects); log lines are also kept
        in :attr:`log`."""
        found = self.worker.messages()
        self.log += [message.text for message in found if message.kind in ("log", "error")]
        return found

    @property
    def running(self) -> bool:
        return self.worker.running

    def wait(self):
        """Block until the worker ends; then as :meth:`finish`."""
        self.worker.wait()
        return self.finish()

    def finish(self):
        """The output node of a finished run; raises ``RuntimeError`` with the worker's message if it failed."""
        try:
            self.messages()
            result = self.worker.result
            if self.worker.cancelled:
                raise RuntimeError("DiffDenoise was cancelled; no output was created")
            if result is None or result.kind == "error":
                reason = result.text if result is not None else "\n".join(self.log[-5:]) or "no output"
                raise RuntimeError(f"DiffDenoise failed: {reason}")
            return self.logic._readBack(self.inputNode, self.outputNode, result.outputs)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def cancel(self) -> None:
        """Kill the worker and remove its temporary files."""
        self.worker.cancel()
        shutil.rmtree(self.folder, ignore_errors=True)


#
# DiffDenoiseWidget (thin: gathers the panel's state and calls the logic)
#


class DiffDenoiseWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """Gathers the panel's state (a parameter node) and runs the logic in a worker process, polled by a timer."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.run = None  # the BackgroundRun in progress
        self._parameterNode = None
        self._parameterNodeGuiTag = None

    def setup(self):
        import qt

        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/DiffDenoise.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = DiffDenoiseLogic()
        self.timer = qt.QTimer()
        self.timer.setInterval(250)
        self.timer.connect("timeout()", self.onTimer)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.progressBar.setVisible(False)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        if self.run is not None:
            self.onCancelButton()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(DiffDenoiseParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputVolume:
            self._parameterNode.inputVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")

    def setParameterNode(self, parameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def updateButtons(self, *_):
        running = self.run is not None
        hasInput = bool(self._parameterNode and self._parameterNode.inputVolume)
        self.ui.applyButton.enabled = hasInput and not running
        self.ui.cancelButton.enabled = running
        self.ui.progressBar.setVisible(running)

    def ensureDependencies(self) -> bool:
        """Install what requirements.txt lists and this Slicer lacks, after asking; True when all are there.

        torch comes from the PyTorch extension when it is installed (it picks a CUDA build matching the GPU).
        """
        missing = missingRequirements()
        if not missing:
            return True
        if not slicer.util.confirmOkCancelDisplay(
                "DiffDenoise needs these Python packages, which are not installed yet:\n\n" + "\n".join(missing)
                + "\n\nInstall them now? This can take several minutes (torch is large).",
                windowTitle="DiffDenoise: install dependencies"):
            return False
        with slicer.util.tryWithErrorDisplay("Installing DiffDenoise's dependencies failed.", waitCursor=True):
            torchLine = next((line for line in missing if line.startswith("torch")), None)
            if torchLine:
                try:
                    import PyTorchUtils
                except ImportError:
                    PyTorchUtils = None  # no PyTorch extension: pip installs torch with the rest
                if PyTorchUtils is not None:
                    version = torchLine[len("torch"):].strip()
                    PyTorchUtils.PyTorchUtilsLogic().installTorch(askConfirmation=False,
                                                                  torchVersionRequirement=version)
            try:
                import slicer.pydeps as pydeps  # Slicer >= 5.11
            except ImportError:
                pydeps = None
            if pydeps is not None:
                pydeps.pip_ensure(pydeps.load_requirements(REQUIREMENTS), requester="DiffDenoise")
            else:
                slicer.util.pip_install(missingRequirements() or [])
        missing = missingRequirements()
        if missing:
            slicer.util.errorDisplay("Still missing: " + ", ".join(missing) + ". Restart Slicer and try again.")
        return not missing

    def onApplyButton(self):
        if not self.ensureDependencies():
            return
        self.ui.logTextEdit.clear()
        with slicer.util.tryWithErrorDisplay("DiffDenoise could not start.", waitCursor=True):
            self.run = self.logic.startBackground(self._parameterNode.inputVolume, **runOptions(self._parameterNode))
            self.ui.logTextEdit.appendPlainText("Started: " + " ".join(self.run.worker.command[4:]))
            self.timer.start()
        self.updateButtons()

    def onTimer(self):
        for message in self.run.messages():
            if message.kind == "progress":
                event = message.event
                self.ui.progressBar.setFormat(f"{event.stage}: %p%")
                self.ui.progressBar.setMaximum(event.total)
                self.ui.progressBar.setValue(event.step)
            elif message.text:
                self.ui.logTextEdit.appendPlainText(message.text)
        if self.run.running:
            return
        self.timer.stop()
        run, self.run = self.run, None
        with slicer.util.tryWithErrorDisplay("DiffDenoise failed.", waitCursor=True):
            output = run.finish()
            self._parameterNode.outputVolume = output
            slicer.util.setSliceViewerLayers(background=output)
            self.ui.logTextEdit.appendPlainText(f"Done: '{output.GetName()}'")
        self.updateButtons()

    def onCancelButton(self):
        self.timer.stop()
        if self.run is not None:
            self.run.cancel()
            self.run = None
            self.ui.logTextEdit.appendPlainText("Cancelled: no output was created")
        self.updateButtons()


#
# DiffDenoiseTest (runs inside Slicer: Developer mode > Reload and Test)
#


class DiffDenoiseTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_DenoiseSample()
        self.test_BackgroundRun()

    def test_DenoiseSample(self):
        """Denoise the embedded knee sample with a short training; the input node must stay untouched."""
        _import_library()
        from DiffDenoiseLib.data import SAMPLE_KNEE

        inputNode = slicer.util.loadVolume(str(SAMPLE_KNEE))
        before = slicer.util.arrayFromVolume(inputNode).copy()
        output = DiffDenoiseLogic().process(inputNode, steps=20, ddimSteps=2)
        self.assertEqual(output.GetName(), f"{inputNode.GetName()} denoised")
        self.assertTrue(np.array_equal(before, slicer.util.arrayFromVolume(inputNode)))
        self.assertEqual(slicer.util.arrayFromVolume(output).shape, before.shape)
        self.delayDisplay("DiffDenoise test passed")

    def test_BackgroundRun(self):
        """The panel's way: the CLI in a PythonSlicer worker process; the result is read back into a new node."""
        _import_library()
        from DiffDenoiseLib.data import SAMPLE_KNEE

        inputNode = slicer.util.loadVolume(str(SAMPLE_KNEE))
        output = DiffDenoiseLogic().startBackground(inputNode, method="bsn", steps=20).wait()
        self.assertEqual(slicer.util.arrayFromVolume(output).shape, slicer.util.arrayFromVolume(inputNode).shape)
        self.delayDisplay("DiffDenoise background run passed")
