"""The README's Slicer figure, from a real run of the panel's path: the module's logic on a real MRML scene
(slicer-core) starts the background worker as Apply does, with the residual and uncertainty outputs; the
figure shows the input, the result, and the two maps in the colours and windows the panel gives them
(:func:`DiffDenoiseNodes.styleExtraOutputs`), with the panel's options of the run listed under it. Outside the
Slicer application the module imports with the test suite's stand-ins for the application classes
(``Testing/slicer_app_stand_ins.py``); the logic, the scene and the worker are the real ones.

    python -m benchmarks.panel_figure [--out docs/slicer_panel.png] [--preset quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import matplotlib.pyplot as plt  # without a display matplotlib draws with Agg: files only
import numpy as np

from DiffDenoiseLib.data import SAMPLE_KNEE
from DiffDenoiseLib.io import read_volume
from DiffDenoiseLib.runtime.devices import cpu_model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "DiffDenoise"))  # the Slicer module (imported where used: it needs slicer-core)
# Slicer's colour tables for the maps, as matplotlib names them (DivergingBlueRed: blue below 0, red above)
COLORMAPS = {"residual": "RdBu_r", "uncertainty": "inferno"}


def run_panel(preset: str) -> tuple[dict[str, np.ndarray], dict[str, tuple[float, float]], dict[str, str], float]:
    """Slices of the input, the result and the extra outputs of one background run on the bundled knee sample,
    the windows the panel sets, the panel's options, and the run's seconds."""
    import slicer

    sys.path.insert(0, str(ROOT / "Testing"))
    from slicer_app_stand_ins import install

    install()  # where slicer-core lacks the application classes the module derives from
    from DiffDenoiseNodes import displayRange

    from DiffDenoise import DiffDenoiseLogic, runOptions

    slicer.mrmlScene = slicer.vtkMRMLScene()
    volume = read_volume(SAMPLE_KNEE)
    node = slicer.util.addVolumeFromArray(volume.array.astype(np.float32), name="knee")
    panel = type("Panel", (), {"outputVolume": None, "method": "diffdenoise", "noise": "auto", "preset": preset,
                               "device": "auto", "srdsPairs": 0, "ddimSteps": 0, "residualOutput": True,
                               "uncertaintyOutput": True, "saveModel": False, "keepCheckpoints": False})()
    options = runOptions(panel)
    logic = DiffDenoiseLogic()
    started = time.perf_counter()
    output = logic.startBackground(node, **options).wait()
    seconds = time.perf_counter() - started
    middle = volume.array.shape[0] // 2
    images = {"input": slicer.util.arrayFromVolume(node)[middle], "result": slicer.util.arrayFromVolume(output)[middle]}
    windows = {}
    for name, extra in logic.lastExtraNodes.items():
        array = slicer.util.arrayFromVolume(extra)
        images[name] = array[middle]
        windows[name] = displayRange(name, array)
    shown = {"Method": panel.method, "Noise type": panel.noise, "Preset": preset, "Device": panel.device,
             "SRDS pairs / DDIM steps": "preset's", "Extra outputs": "residual, uncertainty (overlay shown)",
             "Save trained model": "off", "Keep checkpoints": "off"}
    return images, windows, shown, seconds


def draw(path: Path, images: dict[str, np.ndarray], windows: dict[str, tuple[float, float]],
         options: dict[str, str], note: str) -> None:
    """Input | result | residual | uncertainty, and result with the uncertainty overlay, options underneath."""
    from DiffDenoiseNodes import UNCERTAINTY_OPACITY

    low, high = np.percentile(images["input"], (0.5, 99.5))
    panels = [("input", images["input"], "gray", (low, high)), ("result", images["result"], "gray", (low, high)),
              *((name, images[name], COLORMAPS[name], windows[name]) for name in ("residual", "uncertainty"))]
    figure, axes = plt.subplots(1, 5, figsize=(15, 3.9))
    for axis, (name, image, colormap, (vmin, vmax)) in zip(axes, panels, strict=False):
        shown = axis.imshow(image, cmap=colormap, vmin=vmin, vmax=vmax)
        axis.set_title(f"knee {name}" if name in ("input", "residual", "uncertainty") else "knee denoised")
        if name in COLORMAPS:
            figure.colorbar(shown, ax=axis, fraction=0.046)
    axes[4].imshow(images["result"], cmap="gray", vmin=low, vmax=high)
    axes[4].imshow(images["uncertainty"], cmap="inferno", vmin=windows["uncertainty"][0],
                   vmax=windows["uncertainty"][1], alpha=UNCERTAINTY_OPACITY)
    axes[4].set_title("result + uncertainty overlay")
    for axis in axes:
        axis.axis("off")
    figure.text(0.01, 0.02, "Panel: " + "; ".join(f"{k}: {v}" for k, v in options.items()) + f"\n{note}",
                fontsize=8.5, va="bottom")
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "slicer_panel.png")
    parser.add_argument("--preset", default="quick")
    args = parser.parse_args()
    images, windows, options, seconds = run_panel(args.preset)
    note = (f"Bundled knee sample (24 x 256 x 256), middle slice; the background worker as Apply runs it, "
            f"{seconds / 60:.1f} min on {cpu_model()}. `python -m benchmarks.panel_figure`")
    draw(args.out, images, windows, options, note)
    print(f"{args.out}: {note}")


if __name__ == "__main__":
    main()
