"""Denoise one image file, or every image in a folder, with the DiffDenoise module's logic (no GUI).

    Slicer --no-splash --no-main-window --python-script DiffDenoiseBatch.py --input IN --output OUT [options]
    python DiffDenoiseBatch.py --input IN --output OUT [options]        (plain Python with slicer-core)

Each image is read into its own MRML scene through a storage node, denoised by ``DiffDenoiseLogic`` (trained
on the image itself, or with ``--model`` a saved bundle), and written by the library's writer with the node's
geometry and provenance (method, preset, bundle hash, version, date) in the header: a file to a file, a
folder to a folder with the same file names. Outputs appear only when complete. Exit status: 0 when
every image was denoised, 1 when any failed (the others are still written), 2 for bad arguments or paths.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MODULE_FOLDER = Path(__file__).resolve().parents[2]  # Resources/Scripts/..


def _fail(message: str) -> None:
    """One line naming the problem and the fix, then exit 1. Under ``Slicer --no-main-window --python-script``
    an uncaught exception does not end Slicer (its event loop runs on with no window to close), so every
    failure has to end in ``sys.exit``."""
    print(f"DiffDenoiseBatch: error: {message}", file=sys.stderr)
    sys.exit(EXIT_FAILED)


try:
    sys.path.insert(0, str(MODULE_FOLDER))
    import slicer

    from DiffDenoise import missingRequirements, unsupportedPython

    if problem := unsupportedPython():
        _fail(problem)
    if missing := missingRequirements():
        _fail("Python packages missing: " + ", ".join(missing) + ". Open the DiffDenoise module in "
              "Slicer and press Apply once (it installs them), or run: PythonSlicer -m pip install -r "
              f"{MODULE_FOLDER / 'Resources' / 'requirements.txt'}")
    from DiffDenoiseNodes import node_geometry, provenanceOf

    from DiffDenoise import DiffDenoiseLogic
    from DiffDenoiseLib.cli import extra_output_path
    from DiffDenoiseLib.errors import InputError
    from DiffDenoiseLib.io import Volume, write_volume
    from DiffDenoiseLib.options import DenoiseOptions, add_arguments
    from DiffDenoiseLib.runtime.progress import ProgressEvent, TqdmProgress
    from DiffDenoiseLib.write_plan import WritePlan
except ImportError as error:
    _fail(f"cannot import {error.name or error}: run this script with Slicer (Slicer --no-main-window "
          "--python-script DiffDenoiseBatch.py ...) or a Python with slicer-core and DiffDenoise installed")

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")  # what the volume storage node reads


def image_files(folder: Path) -> list[Path]:
    """The images directly in ``folder`` (sorted; hidden and partial files skipped)."""
    return sorted(path for path in folder.iterdir()
                  if path.is_file() and not path.name.startswith(".") and path.name.lower().endswith(IMAGE_SUFFIXES))


def read_node(scene, path: Path):
    """A scalar volume node read from ``path`` by Slicer's volume storage node."""
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", path.name)
    if not storage.ReadData(node) or node.GetImageData() is None:
        raise ValueError(f"cannot read {path} as an image volume")
    return node


def write_node(node, path: Path, overwrite: bool) -> None:
    """Write ``node`` to ``path`` atomically, with its geometry and the provenance the logic recorded on it (a
    storage node would drop the provenance attributes)."""
    volume = Volume(slicer.util.arrayFromVolume(node).copy(), node_geometry(node))
    write_volume(path, volume, provenance=provenanceOf(node), overwrite=overwrite)


def plan_writes(jobs: list[tuple[Path, Path]], args: argparse.Namespace) -> None:
    """Check every output of the run before the first image is read (never an input, never an existing file
    without --overwrite, never two outputs on one path)."""
    plan = WritePlan(args.overwrite)
    if args.model:
        plan.read(args.model, "model bundle")
    for source, target in jobs:
        plan.read(source)
        plan.image(target)
        for name in args.outputs:
            plan.image(extra_output_path(target, name), f"{name} output")
    plan.check()


class CoarseProgress:
    """Progress as a line per stage and per tenth of it: inside Slicer, whose console turns every redraw of a
    progress bar into a log entry of its own."""

    def __init__(self) -> None:
        self.shown: tuple[str, int] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        tenth = 10 * event.step // max(event.total, 1)
        if (event.stage, tenth) != self.shown:
            self.shown = event.stage, tenth
            print(f"  {event.stage}: {10 * tenth}%", flush=True)

    def close(self) -> None:
        """Nothing to close (the same interface as the progress bars)."""


def make_progress(args: argparse.Namespace):
    """tqdm bars in a terminal, coarse lines inside Slicer (which has ``slicer.app``), nothing with --no-progress."""
    if args.no_progress or not hasattr(slicer, "app"):
        return TqdmProgress(enabled=not args.no_progress)
    return CoarseProgress()


def denoise_file(source: Path, target: Path, args: argparse.Namespace, options: DenoiseOptions) -> None:
    scene = slicer.vtkMRMLScene()
    try:
        node = read_node(scene, source)
        progress = make_progress(args)
        logic = DiffDenoiseLogic()
        if args.model:
            output = logic.apply(node, str(args.model), device=options.device, extraOutputs=options.outputs,
                                 progressCallback=progress)
        else:
            output = logic.process(node, progressCallback=progress, **options.as_panel_names())
        progress.close()
        write_node(output, target, args.overwrite)
        for name, extra in logic.lastExtraNodes.items():
            write_node(extra, extra_output_path(target, name), args.overwrite)
    finally:
        scene.Clear(1)


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="DiffDenoiseBatch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, required=True, help="an image file or a folder of them")
    parser.add_argument("--output", type=Path, required=True, help="output file (for a file) or folder")
    parser.add_argument("--model", type=Path, help="apply this saved bundle instead of training on each image "
                        "(then only --device and --extra are used)")
    add_arguments(parser, DenoiseOptions)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    try:
        args = parse_arguments(argv)
    except SystemExit as stop:  # argparse printed the problem
        return EXIT_USAGE if stop.code else EXIT_OK
    try:
        options = DenoiseOptions.from_namespace(args)  # values allowed alone may not be together
    except InputError as error:
        print(f"DiffDenoiseBatch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    source, target = args.input, args.output
    if not source.exists():
        print(f"DiffDenoiseBatch: error: input {source} does not exist", file=sys.stderr)
        return EXIT_USAGE
    if args.model and not args.model.is_file():
        print(f"DiffDenoiseBatch: error: model bundle {args.model} does not exist", file=sys.stderr)
        return EXIT_USAGE
    if source.is_dir():
        if target.exists() and not target.is_dir() or target.resolve() == source.resolve():
            print(f"DiffDenoiseBatch: error: output {target} must be another folder for an input folder",
                  file=sys.stderr)
            return EXIT_USAGE
        jobs = [(path, target / path.name) for path in image_files(source)]
        if not jobs:
            print(f"DiffDenoiseBatch: error: no images ({', '.join(IMAGE_SUFFIXES)}) in {source}", file=sys.stderr)
            return EXIT_USAGE
    else:
        if not target.name.lower().endswith(IMAGE_SUFFIXES) or target.resolve() == source.resolve():
            print(f"DiffDenoiseBatch: error: output {target} must be a new image file ({', '.join(IMAGE_SUFFIXES)})",
                  file=sys.stderr)
            return EXIT_USAGE
        jobs = [(source, target)]
    try:
        plan_writes(jobs, args)
    except InputError as error:
        print(f"DiffDenoiseBatch: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    failed = 0
    for number, (path, output) in enumerate(jobs, start=1):
        started = time.perf_counter()
        try:
            denoise_file(path, output, args, options)
            print(f"[{number}/{len(jobs)}] {path.name} -> {output} ({time.perf_counter() - started:.0f} s)")
        except Exception as error:  # one bad file must not stop the cohort; it is reported and counted
            failed += 1
            print(f"[{number}/{len(jobs)}] {path.name}: FAILED: {error}", file=sys.stderr)
    print(f"denoised {len(jobs) - failed} of {len(jobs)} images" + (f"; {failed} failed" if failed else ""))
    return EXIT_FAILED if failed else EXIT_OK


def run(argv: list[str]) -> int:
    """``main``, with anything it did not foresee reported as a failure (exit 1) instead of left to Slicer."""
    try:
        return main(argv)
    except Exception:
        traceback.print_exc()
        print("DiffDenoiseBatch: error: the run stopped on the error above; outputs already written are complete",
              file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
