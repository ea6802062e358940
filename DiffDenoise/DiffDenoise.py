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
import shutil
import sys
import tempfile
import typing
import unittest
from collections.abc import Callable
from typing import Annotated

import numpy as np
import slicer
import vtk
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

_MODULE_DIR = os.path.dirname(os.path.abspath(__file__))


def _addLibraryToPath() -> None:
    """Make DiffDenoiseLib importable: bundled next to this file when installed, one level up in a checkout."""
    try:
        import DiffDenoiseLib  # noqa: F401
    except ImportError:
        sys.path.insert(0, os.path.dirname(_MODULE_DIR))


def _import_library() -> None:
    """Make the library importable, or raise the reason it cannot run in this Slicer.

    Its heavy modules (torch) are imported where they are used, so Slicer starts before torch is installed.
    """
    problem = unsupportedPython()
    if problem:
        raise RuntimeError(problem)
    _addLibraryToPath()


def _checkModelPath(saveModelPath: str | None) -> None:
    """Refuse a bundle path that cannot be written before training, not after it (the training would be lost)."""
    if saveModelPath:
        from DiffDenoiseLib.write_plan import WritePlan

        plan = WritePlan(overwrite=True)  # the panel's file dialog has asked about replacing
        plan.bundle(saveModelPath)
        plan.check()


_addLibraryToPath()
from DiffDenoiseNodes import (  # noqa: E402  (beside this file: MRML nodes <-> arrays, and their display)
    checkScalarInput,
    node_geometry,
    provenanceOf,
    recordProvenance,
    seriesArrays,
    seriesGradients,
    showResult,
    uncertaintyOpacity,
    writeScalar,
    writeSeries,
)
from DiffDenoiseRequirements import (  # noqa: E402  (beside this file: what this Slicer needs, and getting it)
    deviceProblem,
    installDependencies,
    missingRequirements,
    unsupportedPython,
)

# torch-free and importable on any Python 3, so the panel loads and can say what is missing
from DiffDenoiseLib.options import METHODS, DenoiseOptions, DWIOptions, panel_parameters, specs  # noqa: E402

PANEL_METHODS = ("auto", *METHODS, "ddm2", "apply")


def _temporaryFolder() -> str | None:
    """Slicer's configured temporary folder (Application settings), or None for the system's."""
    app = getattr(slicer, "app", None)
    return app.temporaryPath if app is not None else None


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


# The nodes the panel takes: a scalar volume, a DWI, or a sequence of scalar volumes (4D series for DDM2). A
# union of node classes, because the selector connector sets the combo box's node types from the annotation and
# the .ui's showChildNodeTypes=false would otherwise hide the DWI subclass (label maps stay hidden); None is the
# empty selection, which the parameter node wrapper's union needs listed. typing.Union, not "|": Slicer 5.10's
# parameterNodeWrapper.util.isNodeOrUnionOfNodes recognises only typing.Union.
VolumeOrSeries = typing.Union[slicer.vtkMRMLScalarVolumeNode, slicer.vtkMRMLDiffusionWeightedVolumeNode,  # noqa: UP007
                              slicer.vtkMRMLSequenceNode, None]


# The library's options on the panel (noise, preset, device, SRDS pairs, DDIM steps) with their choices, ranges
# and defaults, declared once in DiffDenoiseLib.options; a spin box's 0 is "the preset's".
PANEL_OPTIONS = panel_parameters(DenoiseOptions, Choice, WithinRange)


def _withPanelOptions(parameterNode: type) -> type:
    """The parameter node declaration with a field for each of :data:`PANEL_OPTIONS`."""
    for name, (annotation, default) in PANEL_OPTIONS.items():
        parameterNode.__annotations__[name] = annotation
        setattr(parameterNode, name, default)
    return parameterNode


@_withPanelOptions
class DiffDenoiseParameterNode:
    """What the panel shows, saved with the scene. Each name is a widget's ``SlicerParameterName`` in the .ui.

    The model and checkpoint paths are not parameters: a path field that is cleared never reports it (its
    validator rejects an empty text), so a stale path would stay in the node; the panel reads those fields at
    Apply, and these switches say whether they are used at all.
    """

    inputVolume: VolumeOrSeries
    outputVolume: VolumeOrSeries  # none: a new node
    method: Annotated[str, Choice(PANEL_METHODS)] = "auto"
    saveModel: bool = False  # save the trained bundle (to the save field's path)
    keepCheckpoints: bool = False  # checkpoints in the folder field's path: a stopped run resumes there
    residualOutput: bool = False
    uncertaintyOutput: bool = False
    showUncertainty: bool = True  # the uncertainty map as an overlay on the result


DiffDenoiseParameterNode = parameterNodeWrapper(DiffDenoiseParameterNode)


def runOptions(parameters, applyModelPath: str = "", saveModelPath: str = "", checkpointDir: str = "") -> dict:
    """Keyword arguments of :meth:`DiffDenoiseLogic.startBackground` for the panel's state and its path fields
    (each used only where the method or its switch asks for it)."""
    method = parameters.method
    extras = {"residual": parameters.residualOutput, "uncertainty": parameters.uncertaintyOutput}
    return {"outputNode": parameters.outputVolume, "method": method,
            **{name: getattr(parameters, name) for name in PANEL_OPTIONS},
            "extraOutputs": tuple(name for name, on in extras.items() if on),
            "modelPath": applyModelPath.strip() if method == "apply" else None,
            "saveModelPath": saveModelPath.strip() if parameters.saveModel and method != "apply" else None,
            "checkpointDir": checkpointDir.strip() if parameters.keepCheckpoints and method != "apply" else None}


def _panelOptions(options: type, values: dict, kept: tuple[str, ...] | None):
    """The job's options from panel-named ``values``: those it has (all of them, or the names in ``kept``);
    the panel passes all of its own to every job. A name no job has is a TypeError, as for any keyword."""
    known = {spec.panel for job in (DenoiseOptions, DWIOptions) for spec in specs(job).values()}
    if set(values) - known:
        raise TypeError(f"no option {', '.join(sorted(set(values) - known))}; options: {', '.join(sorted(known))}")
    names = {spec.panel for spec in specs(options).values()} if kept is None else set(kept)
    return options.from_panel_names({name: value for name, value in values.items() if name in names})


#
# DiffDenoiseLogic (GUI-free: the scripting API, also used by batch runs)
#


class DiffDenoiseLogic(ScriptedLoadableModuleLogic):
    """Denoise volume nodes; every result is a new node, the input is never modified.

    ``process`` trains on the input itself; ``apply`` uses a saved model bundle. Both block until done;
    pass ``progressCallback`` (called with a ``ProgressEvent``) and ``cancelCallback`` (return True to stop).
    """

    provenanceOf = staticmethod(provenanceOf)  # what made an output node (None: not DiffDenoise)

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self.lastExtraNodes = {}
        self.lastSummary = ""

    def _writeResult(self, inputVolumeNode, outputVolumeNode, result, provenance):
        """The denoised image into the output node; each extra output into a new node "<input> <extra>"; every
        node gets the run's provenance; the outlier slices go to ``self.lastSummary``."""
        self.lastSummary = result.summary()
        self.lastExtraNodes = {name: writeScalar(inputVolumeNode, None, image, name)
                               for name, image in result.extras.items()}
        outputVolumeNode = writeScalar(inputVolumeNode, outputVolumeNode, result.denoised)
        recordProvenance([outputVolumeNode, *self.lastExtraNodes.values()], provenance)
        return outputVolumeNode

    def process(self, inputVolumeNode, outputVolumeNode=None, saveModelPath: str | None = None,
                checkpointDir: str | None = None, progressCallback: Callable | None = None,
                cancelCallback: Callable[[], bool] | None = None, **options):
        """Denoise ``inputVolumeNode`` by training on it; returns the output node (new unless one is given).

        ``options`` are those of ``DiffDenoiseLib.options.DenoiseOptions`` by their camelCase names:
        ``method``, ``noise``, ``preset``, ``device``, ``seed``, ``steps``, ``srdsPairs``, ``ddimSteps``,
        ``distillSlices``, ``context`` and ``extraOutputs`` (``residual``, ``uncertainty``, ``bsn``, ``srds``:
        new volume nodes, listed in ``self.lastExtraNodes``). ``saveModelPath`` also saves the trained bundle
        for ``apply`` on other volumes. With ``checkpointDir`` each training stage keeps a checkpoint there,
        and a run cancelled or killed before the end resumes from it when started again.
        """
        checkScalarInput(inputVolumeNode, outputVolumeNode)
        _import_library()
        from DiffDenoiseLib.bundle import save_bundle
        from DiffDenoiseLib.denoise import denoise
        from DiffDenoiseLib.provenance import Provenance

        chosen = DenoiseOptions.from_panel_names(options)
        _checkModelPath(saveModelPath)
        array = slicer.util.arrayFromVolume(inputVolumeNode).copy()  # (k, j, i) = (z, y, x), like the library
        geometry = node_geometry(inputVolumeNode)
        result = denoise(array, chosen, slice_axis=geometry.slice_axis(), spacing=tuple(reversed(geometry.spacing)),
                         checkpoint_dir=checkpointDir, progress=progressCallback, cancel=cancelCallback)
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
        checkScalarInput(inputVolumeNode, outputVolumeNode)
        _import_library()
        from DiffDenoiseLib.bundle import load_bundle
        from DiffDenoiseLib.denoise import apply_bundle
        from DiffDenoiseLib.provenance import Provenance

        bundle = load_bundle(modelPath)
        array = slicer.util.arrayFromVolume(inputVolumeNode).copy()
        result = apply_bundle(bundle, array, device=device, outputs=tuple(extraOutputs), progress=progressCallback,
                              cancel=cancelCallback)
        return self._writeResult(inputVolumeNode, outputVolumeNode, result, Provenance.of(bundle, False))

    def processDWI(self, dwiNode, outputNode=None, saveModelPath: str | None = None, bvals=None,
                   checkpointDir: str | None = None, progressCallback: Callable | None = None,
                   cancelCallback: Callable[[], bool] | None = None, **options):
        """Denoise a diffusion-weighted volume node with DDM2 trained on it; returns a new DWI node (or
        ``outputNode``) with every volume, the same gradients, b-values, measurement frame and geometry.

        A ``vtkMRMLSequenceNode`` of scalar volumes (a 4D series) works too and gives a new sequence; its
        b-values are ``bvals`` (one per volume) or the sequence's index values when the index is "b-value".

        ``options`` are those of ``DiffDenoiseLib.options.DWIOptions`` by their camelCase names (``method``,
        ``preset``, ``device``, ``seed``, ``steps``, ``neighbours``, ``sampler``, ``samplerSteps``);
        ``checkpointDir`` as in :meth:`process`. The per-slice summary (matched steps, untouched and outlier
        slices) is kept in ``self.lastSummary``.
        """
        series, bvals = seriesArrays(dwiNode, outputNode, bvals)
        _import_library()
        from DiffDenoiseLib.bundle import save_bundle
        from DiffDenoiseLib.denoise_dwi import denoise_dwi
        from DiffDenoiseLib.provenance import Provenance

        chosen = DWIOptions.from_panel_names(options)
        _checkModelPath(saveModelPath)
        result = denoise_dwi(series, bvals, chosen, bvecs=seriesGradients(dwiNode), checkpoint_dir=checkpointDir,
                             progress=progressCallback, cancel=cancelCallback)
        if saveModelPath:
            save_bundle(saveModelPath, result.bundle, overwrite=True)  # a chosen path
        self.lastSummary = result.summary()
        logging.info(f"DiffDenoise DDM2: {self.lastSummary}; timings {result.timings}")
        return writeSeries(dwiNode, outputNode, result.denoised, Provenance.of(result.bundle, True))

    def applyDWI(self, dwiNode, modelPath: str, outputNode=None, device: str = "auto", sampler: str | None = None,
                 bvals=None, progressCallback: Callable | None = None,
                 cancelCallback: Callable[[], bool] | None = None):
        """Denoise a DWI node (or a sequence of volumes, see :meth:`processDWI`) with a saved DDM2 bundle (no
        training); returns a new node of the input's kind."""
        series, bvals = seriesArrays(dwiNode, outputNode, bvals)
        _import_library()
        from DiffDenoiseLib.bundle import load_bundle
        from DiffDenoiseLib.denoise_dwi import apply_dwi_bundle
        from DiffDenoiseLib.provenance import Provenance

        result = apply_dwi_bundle(load_bundle(modelPath), series, bvals, bvecs=seriesGradients(dwiNode),
                                  device=device, sampler=sampler, progress=progressCallback, cancel=cancelCallback)
        self.lastSummary = result.summary()
        return writeSeries(dwiNode, outputNode, result.denoised, Provenance.of(result.bundle, False))

    def startBackground(self, inputNode, outputNode=None, method: str = "auto", modelPath: str | None = None,
                        saveModelPath: str | None = None, bvals=None, checkpointDir: str | None = None,
                        python: str | None = None, **options) -> BackgroundRun:
        """Start the same run as :meth:`process` / :meth:`apply` / :meth:`processDWI` in a worker process (the
        ``diffdenoise`` CLI with Slicer's Python, on temporary files) and return at once; the panel's way.

        ``method``: ``auto`` (DDM2 for a DWI node or a sequence, ``diffdenoise`` otherwise), ``diffdenoise``,
        ``diffusion``, ``bsn``, ``ddm2``, or ``apply`` (``modelPath`` is the bundle to apply). ``options`` as in
        :meth:`process` (or :meth:`processDWI` for a series, which uses those of its options that are given:
        the panel passes all of its own). A training method saves its bundle to ``saveModelPath`` when given: a
        new file, never one that exists (the check is made here, before anything runs). ``bvals`` as in
        :meth:`processDWI`; ``checkpointDir`` as in :meth:`process`. Poll the returned :class:`BackgroundRun`
        from a timer; ``run.wait()`` blocks instead.
        """
        _import_library()
        from DiffDenoiseLib.io import DiffusionVolume, Volume, write_dwi, write_volume

        isSeries = inputNode is not None and (inputNode.IsA("vtkMRMLDiffusionWeightedVolumeNode")
                                              or inputNode.IsA("vtkMRMLSequenceNode"))
        if method == "auto":
            method = "ddm2" if isSeries else "diffdenoise"
        if isSeries and method not in ("ddm2", "apply"):
            raise ValueError(f"'{inputNode.GetName()}' is a diffusion series: use method ddm2 or apply")
        if not isSeries and method == "ddm2":
            raise ValueError(f"'{inputNode.GetName()}' is a scalar volume: DDM2 needs a diffusion series")
        self._checkRunPaths(method, modelPath, saveModelPath, checkpointDir)
        kept = ("device",) if method == "apply" else None  # applying a bundle trains nothing
        if isSeries:
            chosen = _panelOptions(DWIOptions, options, kept)
        else:
            chosen = _panelOptions(DenoiseOptions, {**options, **({} if method == "apply" else {"method": method})},
                                   None if kept is None else (*kept, "extraOutputs"))
        folder = tempfile.mkdtemp(prefix="DiffDenoise-", dir=_temporaryFolder())
        output = os.path.join(folder, "output.nii.gz" if isSeries else "output.nrrd")  # 4D: NIfTI + .bval
        try:
            if isSeries:
                series, bvals = seriesArrays(inputNode, outputNode, bvals)
                reference = inputNode if not inputNode.IsA("vtkMRMLSequenceNode") else inputNode.GetNthDataNode(0)
                source = os.path.join(folder, "input.nii.gz")
                # DDM2 compares the gradients' angles only (a sequence has none: zeros, acquisition order); the
                # output node gets the input's own gradients back
                gradients = seriesGradients(inputNode)
                write_dwi(source, DiffusionVolume(Volume(series, node_geometry(reference).with_series_axis()), bvals,
                                                  np.zeros((len(bvals), 3)) if gradients is None else gradients))
                arguments = ["ddm2", source, output]
            else:
                checkScalarInput(inputNode, outputNode)
                source = os.path.join(folder, "input.nrrd")
                write_volume(source, Volume(slicer.util.arrayFromVolume(inputNode), node_geometry(inputNode)))
                arguments = ["apply", source, output] if method == "apply" else ["denoise", source, output]
            arguments += chosen.to_cli_args()
            arguments += ["--model", modelPath] if method == "apply" else []
            arguments += ["--save-model", saveModelPath] if saveModelPath else []
            arguments += ["--checkpoint-dir", checkpointDir] if checkpointDir else []
            arguments += ["--output-dtype", "float32"]
            return BackgroundRun(self, inputNode, outputNode, folder, arguments, python)
        except Exception:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    @staticmethod
    def _checkRunPaths(method: str, modelPath: str | None, saveModelPath: str | None,
                       checkpointDir: str | None) -> None:
        """Refuse, before a run starts, a bundle to apply that is missing, a save path that is empty, exists
        already or is the bundle being applied, and an empty checkpoint folder (the path fields' "" means a
        switch is on but no path was given)."""
        from DiffDenoiseLib.write_plan import WritePlan

        plan = WritePlan(overwrite=False, overwrite_option=None)
        if method == "apply":
            if not modelPath:
                raise ValueError("Choose the model bundle (.safetensors) to apply")
            plan.read(modelPath, "model bundle")
            if saveModelPath or checkpointDir:
                raise ValueError("Method apply trains nothing: there is no model to save and no checkpoint to keep")
        if saveModelPath == "":
            raise ValueError("Choose where to save the trained model (a new .safetensors file), or untick saving")
        if saveModelPath:
            plan.bundle(saveModelPath)
        if checkpointDir == "":
            raise ValueError("Choose a checkpoint folder (the same one again resumes a stopped run), or untick it")
        if checkpointDir:
            plan.folder(checkpointDir, "checkpoint folder")
        plan.check()

    def _readBack(self, inputNode, outputNode, outputs: dict[str, str]):
        """Load a worker's output files into nodes: the denoised result (returned) and any extra outputs, with
        the provenance the worker recorded in its files."""
        from DiffDenoiseLib.io import read_dwi, read_provenance, read_volume

        provenance = read_provenance(outputs["denoised"])
        if inputNode.IsA("vtkMRMLDiffusionWeightedVolumeNode") or inputNode.IsA("vtkMRMLSequenceNode"):
            return writeSeries(inputNode, outputNode, read_dwi(outputs["denoised"]).volume.array, provenance)
        self.lastExtraNodes = {name: writeScalar(inputNode, None, read_volume(path).array, name)
                               for name, path in outputs.items() if name not in ("denoised", "model")}
        outputNode = writeScalar(inputNode, outputNode, read_volume(outputs["denoised"]).array)
        recordProvenance([outputNode, *self.lastExtraNodes.values()], provenance)
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
        self.installing = False  # dependencies are being installed (Apply must not start a second install)
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
        self.ui.showUncertaintyCheckBox.connect("toggled(bool)", self.onShowUncertainty)
        self.ui.progressBar.setVisible(False)
        problem = unsupportedPython()
        self.ui.supportLabel.setVisible(problem is not None)
        self.ui.supportLabel.text = problem or ""
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.initializeParameterNode()

    def cleanup(self):
        if self.run is not None:
            self.onCancelButton()
        self.timer.stop()
        self._disconnectParameterNode()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        # Keep the parameter node (as Slicer's module template does): a run goes on while the user is in
        # another module, and its end writes the result through the parameter node.
        self._disconnectParameterNode()

    def onSceneStartClose(self, caller, event):
        if self.run is not None:  # the run's input and output nodes are going away with the scene
            self.onCancelButton()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self):
        self.setParameterNode(DiffDenoiseParameterNode(self.logic.getParameterNode()))
        if not self._parameterNode.inputVolume:
            firstVolume = next((node for node in slicer.util.getNodesByClass("vtkMRMLScalarVolumeNode")
                                if not node.IsA("vtkMRMLLabelMapVolumeNode")), None)  # one the selector shows
            if firstVolume is not None:
                self._parameterNode.inputVolume = firstVolume

    def _disconnectParameterNode(self):
        if self._parameterNode and self._parameterNodeGuiTag is not None:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)

    def setParameterNode(self, parameterNode):
        self._disconnectParameterNode()
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateButtons)
        self.updateButtons()

    def updateButtons(self, *_):
        busy = self.run is not None or self.installing
        parameters = self._parameterNode
        hasInput = bool(parameters and parameters.inputVolume)
        self.ui.applyButton.enabled = hasInput and not busy and unsupportedPython() is None
        self.ui.cancelButton.enabled = self.run is not None
        self.ui.progressBar.setVisible(self.run is not None)
        if parameters:
            training = parameters.method != "apply"
            self.ui.applyModelPathLineEdit.enabled = not training
            self.ui.saveModelCheckBox.enabled = self.ui.checkpointCheckBox.enabled = training
            self.ui.saveModelPathLineEdit.enabled = training and parameters.saveModel
            self.ui.checkpointPathLineEdit.enabled = training and parameters.keepCheckpoints

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
        self.installing = True  # pip runs in an event loop: Apply would start a second install
        self.updateButtons()
        try:
            with slicer.util.tryWithErrorDisplay("Installing DiffDenoise's dependencies failed.", waitCursor=True):
                installDependencies(missing)
        finally:
            self.installing = False
            self.updateButtons()
        missing = missingRequirements()
        if missing:
            slicer.util.errorDisplay("Still missing: " + ", ".join(missing) + ". Restart Slicer and try again.")
        return not missing

    def onApplyButton(self):
        if not self.ensureDependencies():
            return
        self.ui.logTextEdit.clear()
        try:
            with slicer.util.tryWithErrorDisplay("DiffDenoise could not start.", waitCursor=True):
                problem = deviceProblem(self._parameterNode.device)
                if problem:
                    raise ValueError(problem)
                options = runOptions(self._parameterNode, self.ui.applyModelPathLineEdit.currentPath,
                                     self.ui.saveModelPathLineEdit.currentPath,
                                     self.ui.checkpointPathLineEdit.currentPath)
                self.run = self.logic.startBackground(self._parameterNode.inputVolume, **options)
                self.ui.logTextEdit.appendPlainText("Started: " + " ".join(self.run.worker.command[4:]))
                self.timer.start()
        except Exception:  # shown by tryWithErrorDisplay, which re-raises
            logging.debug("DiffDenoise did not start", exc_info=True)
        finally:
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
        try:
            with slicer.util.tryWithErrorDisplay("DiffDenoise failed.", waitCursor=True):
                output = run.finish()
                showResult(output, self.logic.lastExtraNodes,
                           self._parameterNode is None or self._parameterNode.showUncertainty)
                if self._parameterNode:  # none while a closed scene is replaced
                    self._parameterNode.outputVolume = None  # the next run makes a new node again
                self.ui.logTextEdit.appendPlainText(f"Done: '{output.GetName()}'")
        except Exception:  # shown by tryWithErrorDisplay, which re-raises
            logging.debug("DiffDenoise run failed", exc_info=True)
        finally:
            self.updateButtons()

    def onShowUncertainty(self, shown: bool):
        """Show or hide the last run's uncertainty overlay (when it is still the slice views' foreground)."""
        uncertainty = self.logic.lastExtraNodes.get("uncertainty")
        if uncertainty is not None and uncertainty.GetScene() is not None:
            slicer.util.setSliceViewerLayers(foreground=uncertainty, foregroundOpacity=uncertaintyOpacity(shown))

    def onCancelButton(self):
        self.timer.stop()
        if self.run is not None:
            self.run.cancel()
            self.run = None
            self.ui.logTextEdit.appendPlainText("Cancelled: no output was created")
        self.updateButtons()


#
# DiffDenoiseTest (runs inside Slicer: Developer mode > Reload and Test, and the registered ctest)
#


class DiffDenoiseTest(ScriptedLoadableModuleTest):
    """The scripting API and the panel's ways in Slicer: a scalar volume denoised in process and in the
    background, a DWI's trained bundle applied in the background, and a cancelled run. Skipped where
    DiffDenoise cannot run yet (its Python packages not installed, as on the extension build machines, or a
    Slicer older than :data:`DiffDenoiseRequirements.SUPPORTED_SLICER`)."""

    # the presets the in-process runs train with (a test outside Slicer passes tiny settings objects instead)
    scalarPreset = "quick"
    dwiPreset = "quick"
    inProcessSteps = 20  # None: the presets' own steps

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_DenoiseSample, self.test_BackgroundRun, self.test_BackgroundCancel,
                     self.test_DWIApply):
            self.setUp()
            try:
                test()
            except unittest.SkipTest as skipped:
                self.delayDisplay(f"DiffDenoise self-test skipped: {skipped}")
                return

    def _requireLibrary(self):
        problem = unsupportedPython() or (
            "its Python packages are not installed (" + ", ".join(missing) + "): press Apply in the module once"
            if (missing := missingRequirements()) else None)
        if problem:
            raise unittest.SkipTest(problem)
        _import_library()

    def _sampleVolume(self, name: str = "knee"):
        """A small real volume: 8 slices of 64 x 64 from the bundled knee sample."""
        from DiffDenoiseLib.data import SAMPLE_KNEE
        from DiffDenoiseLib.io import read_volume

        crop = read_volume(SAMPLE_KNEE).array[8:16, 96:160, 96:160].astype(np.float32)
        return slicer.util.addVolumeFromArray(crop, name=name)

    def test_DenoiseSample(self):
        """The scripting API: train on the sample in process; the input node stays untouched."""
        self._requireLibrary()
        inputNode = self._sampleVolume()
        before = slicer.util.arrayFromVolume(inputNode).copy()
        output = DiffDenoiseLogic().process(inputNode, preset=self.scalarPreset, steps=self.inProcessSteps,
                                            ddimSteps=2, device="cpu")
        self.assertEqual(output.GetName(), f"{inputNode.GetName()} denoised")
        self.assertTrue(np.array_equal(before, slicer.util.arrayFromVolume(inputNode)))
        self.assertEqual(slicer.util.arrayFromVolume(output).shape, before.shape)
        self.delayDisplay("DiffDenoise in-process run passed")

    def test_BackgroundRun(self):
        """The panel's way: the CLI in a PythonSlicer worker; the result and its residual become new nodes."""
        self._requireLibrary()
        inputNode = self._sampleVolume()
        logic = DiffDenoiseLogic()
        output = logic.startBackground(inputNode, method="bsn", steps=5, device="cpu",
                                       extraOutputs=("residual",)).wait()
        self.assertEqual(slicer.util.arrayFromVolume(output).shape, slicer.util.arrayFromVolume(inputNode).shape)
        self.assertEqual(set(logic.lastExtraNodes), {"residual"})
        showResult(output, logic.lastExtraNodes, True)
        self.delayDisplay("DiffDenoise background run passed")

    def test_BackgroundCancel(self):
        """Cancel during training: the worker ends, its temporary folder goes, and no node is added."""
        self._requireLibrary()
        import time

        inputNode = self._sampleVolume()
        nodes = slicer.mrmlScene.GetNumberOfNodes()
        run = DiffDenoiseLogic().startBackground(inputNode, method="diffdenoise", steps=100000, device="cpu")
        started = time.monotonic()
        while not any(message.kind == "progress" for message in run.messages()):
            self.assertTrue(run.running and time.monotonic() - started < 300, "\n".join(run.log[-5:]))
            time.sleep(0.1)
        run.cancel()
        self.assertIsNotNone(run.worker.process.poll())  # ended
        self.assertFalse(os.path.exists(run.folder))
        with self.assertRaises(RuntimeError):
            run.finish()
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodes)
        self.delayDisplay("DiffDenoise cancel passed")

    def test_DWIApply(self):
        """A DWI node (b0 and four weighted volumes made from the sample): DDM2 trained in process and its
        bundle saved, then applied in the background; the result is a new DWI node with the same gradients."""
        self._requireLibrary()
        b0 = slicer.util.arrayFromVolume(self._sampleVolume("b0"))
        bvals = np.array([0.0, 1000.0, 1000.0, 1000.0, 1000.0])
        gradients = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.6, 0.8, 0]], dtype=np.float64)
        rng = np.random.default_rng(0)
        series = np.stack([b0 * np.exp(-b * 1e-3 * (0.5 + 0.1 * i)) for i, b in enumerate(bvals)], axis=-1)
        series += rng.normal(0, 0.05 * b0.max(), series.shape)
        dwi = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLDiffusionWeightedVolumeNode", "dwi")
        slicer.util.updateVolumeFromArray(dwi, series.astype(np.float32))
        dwi.SetNumberOfGradients(len(bvals))
        for index, (gradient, bvalue) in enumerate(zip(gradients, bvals, strict=True)):
            dwi.SetDiffusionGradient(index, gradient)
            dwi.SetBValue(index, bvalue)
        bundle = os.path.join(tempfile.mkdtemp(prefix="DiffDenoiseTest-", dir=_temporaryFolder()), "ddm2.safetensors")
        try:
            logic = DiffDenoiseLogic()
            trained = logic.processDWI(dwi, preset=self.dwiPreset, steps=self.inProcessSteps, device="cpu",
                                       saveModelPath=bundle)
            applied = logic.startBackground(dwi, method="apply", modelPath=bundle, device="cpu").wait()
            for output in (trained, applied):
                self.assertTrue(output.IsA("vtkMRMLDiffusionWeightedVolumeNode"))
                self.assertEqual(slicer.util.arrayFromVolume(output).shape, series.shape)
                self.assertEqual(output.GetNumberOfGradients(), len(bvals))
        finally:
            shutil.rmtree(os.path.dirname(bundle), ignore_errors=True)
        self.delayDisplay("DiffDenoise DWI apply passed")
