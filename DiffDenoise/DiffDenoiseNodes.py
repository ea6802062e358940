"""MRML nodes <-> arrays for the DiffDenoise module: the input checks, the geometry of a volume node, scalar
and diffusion-series nodes read into arrays and written back, the provenance attributes of results, and how
results are shown (the extra outputs' colour maps and windows, the uncertainty overlay).

Kept beside ``DiffDenoise.py`` so that its logic class reads like Slicer's scripted-module template; the
library is imported where it is used (``DiffDenoise.py`` has put it on the path)."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

PROVENANCE_ATTRIBUTE = "DiffDenoise."  # node attributes DiffDenoise.method, DiffDenoise.bundle_sha256, ...


def node_geometry(volumeNode):
    """Geometry (ITK/LPS convention, as DiffDenoiseLib uses) of a volume node's IJK-to-RAS transform."""
    from DiffDenoiseLib.io import Geometry

    ijkToRas = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(ijkToRas)
    matrix = slicer.util.arrayFromVTKMatrix(ijkToRas)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    rasToLps = np.diag([-1.0, -1.0, 1.0])
    direction = rasToLps @ (matrix[:3, :3] / spacing)
    origin = rasToLps @ matrix[:3, 3]
    return Geometry(tuple(spacing.tolist()), tuple(origin.tolist()), tuple(direction.ravel().tolist()))


def checkScalarInput(inputVolumeNode, outputVolumeNode):
    """Refuse what the scalar methods cannot take: no node, a DWI, a label map, no image data, the input as
    output or an output of another kind."""
    if inputVolumeNode is None or not inputVolumeNode.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError("Select a scalar volume as input")
    if inputVolumeNode.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        raise ValueError(f"'{inputVolumeNode.GetName()}' is a diffusion-weighted series: use processDWI (DDM2)")
    if inputVolumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError(f"'{inputVolumeNode.GetName()}' is a label map (segmentation); select an image")
    checkDataAndOutput(inputVolumeNode, outputVolumeNode)


def checkDataAndOutput(inputNode, outputNode):
    """Refuse an input without image data, and an output that is the input itself."""
    if inputNode.GetImageData() is None:
        raise ValueError(f"'{inputNode.GetName()}' has no image data")
    checkOutput(inputNode, outputNode)


def checkOutput(inputNode, outputNode):
    """Refuse the input itself as output, and an output of another kind than the input (a scalar result
    cannot go into a DWI node or a sequence, nor a series into a scalar volume)."""
    if outputNode is inputNode:
        raise ValueError("The output node must differ from the input: the input is never overwritten")
    if outputNode is not None and outputNode.GetClassName() != inputNode.GetClassName():
        raise ValueError(f"The output '{outputNode.GetName()}' is a {outputNode.GetClassName()} but the input is a "
                         f"{inputNode.GetClassName()}: choose '(create new)' or a node of the input's kind")


def newNodeFor(inputNode, className: str, suffix: str = "denoised"):
    """A new node "<input> <suffix>" of ``className`` in the input's scene (with display nodes if it has any)."""
    scene = inputNode.GetScene() or slicer.mrmlScene
    node = scene.AddNewNodeByClass(className, scene.GenerateUniqueName(f"{inputNode.GetName()} {suffix}"))
    if node.IsA("vtkMRMLDisplayableNode"):
        node.CreateDefaultDisplayNodes()
    return node


def writeScalar(inputVolumeNode, outputVolumeNode, denoised, suffix: str = "denoised"):
    if outputVolumeNode is None:
        outputVolumeNode = newNodeFor(inputVolumeNode, "vtkMRMLScalarVolumeNode", suffix)
    ijkToRas = vtk.vtkMatrix4x4()
    inputVolumeNode.GetIJKToRASMatrix(ijkToRas)
    outputVolumeNode.SetIJKToRASMatrix(ijkToRas)
    outputVolumeNode.SetAndObserveTransformNodeID(inputVolumeNode.GetTransformNodeID())
    slicer.util.updateVolumeFromArray(outputVolumeNode, denoised.astype(np.float32))
    return outputVolumeNode


def recordProvenance(nodes, provenance):
    """Node attributes ``DiffDenoise.<field>`` (method, preset, bundle_sha256, model, package_version,
    created): saved with the scene, read back by :meth:`provenanceOf`."""
    for node in nodes:
        for key, value in provenance.as_dict().items():
            node.SetAttribute(PROVENANCE_ATTRIBUTE + key, value)


def provenanceOf(node):
    """The ``Provenance`` DiffDenoise recorded on an output node, or None for a node it did not make."""
    from DiffDenoiseLib.provenance import Provenance

    record = {name[len(PROVENANCE_ATTRIBUTE):]: node.GetAttribute(name) for name in node.GetAttributeNames()
              if name.startswith(PROVENANCE_ATTRIBUTE)}
    return Provenance.from_dict(record) if "method" in record else None


def seriesArrays(dwiNode, outputNode, bvals=None):
    """(volumes, z, y, x) series and b-values of a DWI node, or of a sequence of scalar volumes (4D series;
    b-values from ``bvals`` or from the sequence's index when it is the b-value), after checking the node
    and the output."""
    if dwiNode is not None and dwiNode.IsA("vtkMRMLSequenceNode"):
        return _sequenceArrays(dwiNode, outputNode, bvals)
    if dwiNode is None or not dwiNode.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        raise ValueError("Select a diffusion-weighted volume (DWI) or a sequence of volumes as input")
    if bvals is not None:
        raise ValueError(f"'{dwiNode.GetName()}' is a DWI node and carries its own b-values: leave bvals out")
    checkDataAndOutput(dwiNode, outputNode)
    series = np.moveaxis(slicer.util.arrayFromVolume(dwiNode), -1, 0).copy()  # (z, y, x, v) -> (v, z, y, x)
    return series, vtk_to_numpy(dwiNode.GetBValues()).astype(np.float64)


def seriesGradients(node):
    """A DWI node's (volumes, 3) gradient directions (its measurement frame: DDM2 compares their angles only), or
    None for a sequence of scalar volumes, which has none."""
    if node is None or not node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        return None
    return vtk_to_numpy(node.GetDiffusionGradients()).astype(np.float64).reshape(-1, 3)


def _sequenceArrays(sequenceNode, outputNode, bvals):
    count = sequenceNode.GetNumberOfDataNodes()
    items = [sequenceNode.GetNthDataNode(i) for i in range(count)]
    if not items or not all(item is not None and item.IsA("vtkMRMLScalarVolumeNode") for item in items):
        raise ValueError(f"'{sequenceNode.GetName()}' is not a sequence of scalar volumes")
    checkOutput(sequenceNode, outputNode)
    arrays = []
    for item in items:
        checkDataAndOutput(item, None)
        arrays.append(slicer.util.arrayFromVolume(item))
    if len({array.shape for array in arrays}) > 1:
        raise ValueError(f"the volumes of '{sequenceNode.GetName()}' differ in size; resample them to one grid")
    if bvals is None:
        bvals = bValuesFromIndex(sequenceNode)
    return np.stack(arrays).astype(np.float32), np.asarray(bvals, dtype=np.float64)


def bValuesFromIndex(sequenceNode):
    """The sequence's index values when its index is the b-value (they are unique, so rarely)."""
    values = [sequenceNode.GetNthIndexValue(i) for i in range(sequenceNode.GetNumberOfDataNodes())]
    if sequenceNode.GetIndexName().lower().replace("-", "").replace(" ", "") == "bvalue":
        try:
            return [float(value) for value in values]
        except ValueError:
            pass
    raise ValueError(f"'{sequenceNode.GetName()}' has no b-values (its index is '{sequenceNode.GetIndexName()}' "
                     f"= {', '.join(values[:3])}, ...): pass bvals=[...] with one b-value per volume")


def writeSeries(inputNode, outputNode, series, provenance):
    """The denoised series as the same kind of node as the input (DWI node or sequence of volumes), with
    the run's provenance."""
    write = _writeSequence if inputNode.IsA("vtkMRMLSequenceNode") else _writeDWI
    outputNode = write(inputNode, outputNode, series)
    recordProvenance([outputNode], provenance)
    return outputNode


def _writeSequence(sequenceNode, outputNode, series):
    """A new (or the given) sequence with one denoised volume per input item: same index, geometry."""
    if outputNode is None:
        outputNode = newNodeFor(sequenceNode, "vtkMRMLSequenceNode")
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


def _writeDWI(dwiNode, outputNode, series):
    """A new (or the given) DWI node with the input's geometry, gradients, b-values and measurement frame."""
    if outputNode is None:
        outputNode = newNodeFor(dwiNode, "vtkMRMLDiffusionWeightedVolumeNode")
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


# Slicer's colour tables of the extra outputs (IDs as vtkMRMLColorLogic.h lists them)
EXTRA_COLORS = {"residual": "vtkMRMLColorTableNodeFileDivergingBlueRed.txt",  # signed: blue below 0, red above
                "uncertainty": "vtkMRMLColorTableNodeFileInferno.txt"}  # 0 dark, high bright
UNCERTAINTY_OPACITY = 0.4


def displayRange(name: str, values: np.ndarray) -> tuple[float, float]:
    """The window of an extra output: the residual centred on 0 out to the 99.5th percentile of its magnitude
    on either side, the uncertainty from 0 to its 99.5th percentile (a few outlier voxels do not wash it out)."""
    if name == "residual":
        extent = float(np.percentile(np.abs(values), 99.5))
        return -extent, extent
    return 0.0, float(np.percentile(values, 99.5))


def styleExtraOutputs(extras: dict) -> None:
    """Colour map and window/level (:func:`displayRange`) of the residual and uncertainty nodes in ``extras``; a
    colour table missing from the scene (no Slicer application) leaves the node's own."""
    for name, node in extras.items():
        display = node.GetDisplayNode()
        if name not in EXTRA_COLORS or display is None:
            continue
        scene = node.GetScene()
        if scene is not None and scene.GetNodeByID(EXTRA_COLORS[name]) is not None:
            display.SetAndObserveColorNodeID(EXTRA_COLORS[name])
        low, high = displayRange(name, slicer.util.arrayFromVolume(node))
        display.AutoWindowLevelOff()
        display.SetWindowLevelMinMax(low, max(high, low + 1e-6))  # a constant map still gets a valid window


def uncertaintyOpacity(shown: bool) -> float:
    """The slice views' foreground opacity of the uncertainty overlay, shown or hidden."""
    return UNCERTAINTY_OPACITY if shown else 0.0


def showResult(output, extras: dict, showUncertainty: bool) -> None:
    """The result in the slice views (a sequence is left to the Sequences module), the extra outputs styled,
    and the uncertainty map, when there is one, as an overlay on the result (opacity 0 when not shown)."""
    styleExtraOutputs(extras)
    if output.IsA("vtkMRMLSequenceNode"):
        return
    uncertainty = extras.get("uncertainty")
    opacity = uncertaintyOpacity(showUncertainty) if uncertainty is not None else None
    slicer.util.setSliceViewerLayers(background=output, foreground=uncertainty, foregroundOpacity=opacity,
                                     fit=hasattr(slicer, "app"))  # fitting needs the application's views
