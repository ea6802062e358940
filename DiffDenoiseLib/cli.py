"""The ``diffdenoise`` command line: denoise, apply, cohort, ddm2, info and demo.

Errors the user can fix are printed as one line (``diffdenoise: error: ...``) with exit code 2 for bad
usage or input, 1 for other failures, 130 when interrupted (Ctrl-C) and 143 when terminated (SIGTERM).
Every path a run will write is checked before any work (:mod:`.write_plan`); an existing output needs
``--overwrite``. ``--machine-progress`` reports progress, the files written and errors as JSON lines on
stdout instead (the protocol of :mod:`.worker`, read by the Slicer panel).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from . import __version__
from .errors import Cancelled, DiffDenoiseError, InputError
from .options import DenoiseOptions, DWIOptions, add_arguments
from .runtime.progress import TqdmProgress
from .worker import JsonLinesProgress

if TYPE_CHECKING:
    import numpy as np

    from .bundle import ModelBundle
    from .denoise import Denoised
    from .io import Volume
    from .provenance import Provenance
    from .write_plan import WritePlan

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143
Written = dict[str, Path]  # what a command wrote, by name (denoised, residual, model, ...)
CHECKPOINT_HELP = ("keep a checkpoint of each training stage in this folder; run the same command again after a "
                   "crash or Ctrl-C to resume where it stopped (delete the folder when done)")


class UsageError(Exception):
    """A command line argparse refused; :func:`main` reports it as one line (and a protocol error line)."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of usage text + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{message} (see {self.prog} --help)")


Progress = TqdmProgress | JsonLinesProgress


def extra_output_path(output: Path, name: str) -> Path:
    """``out.nii.gz`` -> ``out_residual.nii.gz`` (a DICOM folder ``out`` -> ``out_residual``)."""
    from .io import split_image_name

    stem, extension = split_image_name(output)
    return output.with_name(f"{stem}_{name}{extension}")


def _image_outputs(output: Path, args: argparse.Namespace,
                   volume: Volume | None) -> list[tuple[str, Path, np.dtype | None]]:
    """(name, path, data type) of every image a run writes for one input: the denoised image in the input's
    type (or float32) and each extra output in float32 (a residual is signed, an uncertainty fractional).
    The input's type is None while the input is unread (cohort planning)."""
    import numpy as np

    kept = volume.array.dtype if volume is not None else None
    outputs = [("denoised", output, kept if args.output_dtype == "input" else np.dtype(np.float32))]
    return outputs + [(name, extra_output_path(output, name), np.dtype(np.float32)) for name in args.outputs]


def _plan_images(plan: WritePlan, output: Path, args: argparse.Namespace, volume: Volume | None,
                 source: Path | None = None) -> None:
    """Plan the output and extras of one input (``source`` names it in messages, for a cohort)."""
    shape, geometry = (volume.array.shape, volume.geometry) if volume is not None else (None, None)
    of = f" of {source}" if source is not None else ""
    for name, path, dtype in _image_outputs(output, args, volume):
        plan.image(path, ("output" if name == "denoised" else f"{name} output") + of, shape, dtype,
                   geometry=geometry)


def _plan_training(plan: WritePlan, args: argparse.Namespace) -> Path | None:
    """Plan the checkpoint folder and the bundle of a training run; returns where the bundle goes (or None)."""
    if args.checkpoint_dir:
        plan.folder(args.checkpoint_dir, "checkpoint folder")
    return plan.bundle(args.save_model) if args.save_model else None


def _check_finite(images: dict[str, np.ndarray]) -> None:
    """Refuse NaN or Inf results before anything is written (integer outputs would turn them into garbage)."""
    import numpy as np

    for name, image in images.items():
        bad = int(image.size - np.isfinite(image).sum())
        if bad:
            raise DiffDenoiseError(f"the {name} result has {bad} NaN or Inf voxels (a damaged model or diverged "
                                   "training): nothing was written; train the model again")


def _write_outputs(input_volume: Volume, result: Denoised, output: Path, args: argparse.Namespace,
                   provenance: Provenance, written: Written, prefix: str = "") -> None:
    """Write the denoised image and each extra output with the run's provenance, recording each in
    ``written`` as soon as it is in place."""
    from .io import output_files, write_volume
    from .preprocessing import match_dtype

    images = {"denoised": result.denoised, **result.extras}
    for name, path, dtype in _image_outputs(output, args, input_volume):
        companions = set(output_files(path)[1:])
        write_volume(path, input_volume.with_array(match_dtype(images[name], dtype)), description="DiffDenoise",
                     provenance=provenance, overwrite=args.overwrite,
                     shared_sidecar=bool(companions & args.sidecars_written),  # planned as shared: same run
                     on_written=functools.partial(written.__setitem__, prefix + name, path))
        args.sidecars_written |= companions
        if name != "denoised":
            print(f"wrote {name} to {path}")


def _save_model(path: Path | None, bundle: ModelBundle, args: argparse.Namespace, written: Written) -> str | None:
    """Save the trained bundle first of all outputs, so a later failure cannot lose the training. A bundle that
    cannot be written (a full disk) does not stop the images: returns the problem, to report after them."""
    from .bundle import save_bundle

    if path is None:
        return None
    try:
        save_bundle(path, bundle, overwrite=args.overwrite, on_saved=functools.partial(written.__setitem__, "model"))
    except OSError as error:
        problem = f"the model bundle was not saved: {_describe_error(error)}"
        print(f"diffdenoise: warning: {problem}; writing the images anyway", file=sys.stderr)
        return problem
    print(f"saved model bundle {written['model']}")
    return None


def _report_unsaved(problem: str | None, args: argparse.Namespace) -> None:
    if problem is not None:
        raise DiffDenoiseError(f"{problem}; the images were written{_resume_hint(args)}")


def _slice_axis(volume: Volume, choice: str) -> int:
    return volume.geometry.slice_axis() if choice == "auto" else int(choice)


def _numpy_spacing(volume: Volume) -> tuple[float, ...]:
    """The voxel spacing in numpy axis order (the geometry's is x, y, z)."""
    return tuple(reversed(volume.geometry.spacing[:volume.array.ndim]))


def cmd_denoise(args: argparse.Namespace, progress: Progress) -> Written:
    from .io import read_volume
    from .write_plan import WritePlan

    options = DenoiseOptions.from_namespace(args)  # values allowed alone may not be together
    plan = WritePlan(args.overwrite)
    plan.read(args.input)
    volume = read_volume(args.input, args.series)
    _plan_images(plan, args.output, args, volume)
    model_path = _plan_training(plan, args)
    plan.check()
    _denoise_volume(volume, options, args.output, args, progress, model_path, args.checkpoint_dir)
    return args.written


def _denoise_volume(volume: Volume, options: DenoiseOptions, output: Path, args: argparse.Namespace,
                    progress: Progress, model_path: Path | None = None, checkpoint_dir: Path | None = None,
                    prefix: str = "") -> None:
    """Train on one image and write its result (and extras, and the bundle to ``model_path``) to ``output``;
    under torchrun every process trains and the main one writes."""
    from .denoise import denoise
    from .provenance import Provenance
    from .runtime import distributed

    result = denoise(volume.array, options, slice_axis=_slice_axis(volume, args.slice_axis),
                     spacing=_numpy_spacing(volume), checkpoint_dir=checkpoint_dir, progress=progress)
    progress.close()
    if not distributed.is_main():
        return
    _check_finite({"denoised": result.denoised, **result.extras})
    unsaved = _save_model(model_path, result.bundle, args, args.written)
    _write_outputs(volume, result, output, args, Provenance.of(result.bundle, True), args.written, prefix)
    print(result.summary())
    noise = result.noise
    print(f"noise: {noise.kind} (sigma ~ {noise.sigma:.4g}, {100 * noise.relative_sigma:.1f}% of range); "
          f"wrote {output} in {result.timings['total_s']:.0f} s")
    _report_unsaved(unsaved, args)


def _apply_to_volume(bundle: ModelBundle, volume: Volume, output: Path, args: argparse.Namespace,
                     progress: Progress, prefix: str = "") -> None:
    """Denoise one image with a loaded bundle and write the result (and extras) to ``output``."""
    from .denoise import apply_bundle
    from .provenance import Provenance

    axis = None if args.slice_axis == "bundle" else _slice_axis(volume, args.slice_axis)
    result = apply_bundle(bundle, volume.array, device=args.device, slice_axis=axis, outputs=tuple(args.outputs),
                          progress=progress)
    progress.close()
    print(result.summary())
    _check_finite({"denoised": result.denoised, **result.extras})
    _write_outputs(volume, result, output, args, Provenance.of(bundle, False), args.written, prefix)


def cmd_apply(args: argparse.Namespace, progress: Progress) -> Written:
    from .bundle import load_bundle
    from .io import read_volume
    from .write_plan import WritePlan

    plan = WritePlan(args.overwrite)
    plan.read(args.model, "model bundle")
    plan.read(args.input)
    volume = read_volume(args.input, args.series)
    _plan_images(plan, args.output, args, volume)
    plan.check()
    bundle = load_bundle(args.model)
    _apply_to_volume(bundle, volume, args.output, args, progress)
    print(f"applied {bundle.method} bundle {args.model}; wrote {args.output}")
    return args.written


def cmd_ddm2(args: argparse.Namespace, progress: Progress) -> Written:
    from .bundle import load_bundle
    from .denoise_dwi import apply_dwi_bundle, denoise_dwi
    from .io import DiffusionVolume, read_dwi, write_dwi
    from .preprocessing import match_dtype
    from .provenance import Provenance
    from .runtime import distributed
    from .write_plan import WritePlan

    options = DWIOptions.from_namespace(args)
    plan = WritePlan(args.overwrite)
    for path in (args.input, args.bval, args.bvec, args.model):
        if path is not None:
            plan.read(path)
    dwi = read_dwi(args.input, args.bval, args.bvec)
    series = dwi.volume.array
    dtype = series.dtype if args.output_dtype == "input" else "float32"
    plan.image(args.output, "output", series.shape, dtype, dwi=True, geometry=dwi.volume.geometry)
    model_path = None if args.model else _plan_training(plan, args)
    plan.check()
    if args.model:
        result = apply_dwi_bundle(load_bundle(args.model), series, dwi.bvals, bvecs=dwi.bvecs, device=options.device,
                                  sampler=options.sampler, sampler_steps=options.sampler_steps, progress=progress)
    else:
        result = denoise_dwi(series, dwi.bvals, options, bvecs=dwi.bvecs, checkpoint_dir=args.checkpoint_dir,
                             progress=progress)
    progress.close()
    if not distributed.is_main():
        return {}
    _check_finite({"denoised": result.denoised})
    unsaved = _save_model(model_path, result.bundle, args, args.written)
    write_dwi(args.output, DiffusionVolume(dwi.volume.with_array(match_dtype(result.denoised, dtype)), dwi.bvals,
                                           dwi.bvecs), Provenance.of(result.bundle, not args.model), args.overwrite,
              on_written=functools.partial(args.written.__setitem__, "denoised", args.output))
    print(result.summary())
    print(f"wrote {args.output} ({len(series)} volumes, b-values and gradients kept) in "
          f"{result.timings['total_s']:.0f} s")
    _report_unsaved(unsaved, args)
    return args.written


def cmd_cohort(args: argparse.Namespace, progress: Progress) -> Written:
    """Denoise many images: each trained on itself, or with ``--model`` one saved bundle applied to all.

    Under torchrun, every process trains each image together (DistributedDataParallel), or with a bundle each
    process takes every world-size-th image. Every output path is checked before the first image is read; an
    image that fails is reported and skipped, and the run ends with a summary (exit 1 when any failed)."""
    from .bundle import load_bundle
    from .io import check_output_format, read_volume
    from .runtime import distributed

    options = None if args.model else DenoiseOptions.from_namespace(args)
    if options is not None and args.slice_axis == "bundle":
        raise InputError("--slice-axis bundle needs --model (the axis a saved bundle was trained along); to train "
                         "on each image, use auto or 0, 1, 2")
    jobs = _plan_cohort(args)
    bundle = load_bundle(args.model) if args.model else None
    mine = distributed.shard(jobs) if bundle is not None else jobs
    failed: list[str] = []
    for number, (path, output) in enumerate(mine, start=1):
        try:
            volume = read_volume(path)
            for _, image_path, dtype in _image_outputs(output, args, volume):
                check_output_format(image_path, volume.array.shape, dtype, volume.geometry)
            if bundle is not None:
                _apply_to_volume(bundle, volume, output, args, progress, prefix=f"{path}:")
            else:
                _denoise_volume(volume, options, output, args, progress, prefix=f"{path}:")
        except (DiffDenoiseError, OSError) as error:
            progress.close()
            failed.append(str(path))
            print(f"[{number}/{len(mine)}] {path}: FAILED: {_describe_error(error)}", file=sys.stderr)
            continue
        if bundle is not None or distributed.is_main():
            print(f"[process {distributed.rank()}] [{number}/{len(mine)}] {path} -> {output}")
    print(f"cohort: {len(mine) - len(failed)} of {len(mine)} images written to {args.out}"
          + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    if failed:
        raise DiffDenoiseError(f"{len(failed)} of {len(mine)} images failed ({', '.join(failed)}); the other "
                               f"{len(mine) - len(failed)} were written")
    return args.written


def _plan_cohort(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    """Check every input and every output path of a cohort before any image is read, in every process, so
    that none writes while another is still checking; returns the (input, output) pairs."""
    from .runtime import distributed
    from .write_plan import WritePlan

    missing = [str(path) for path in args.inputs if not path.exists()]
    if missing:
        raise InputError(f"{len(missing)} of {len(args.inputs)} inputs not found: {', '.join(missing)} (check the "
                         "paths; nothing was processed)")
    plan = WritePlan(args.overwrite)
    if args.model:
        plan.read(args.model, "model bundle")
    jobs = [(path, args.out / path.name) for path in args.inputs]
    for path, output in jobs:
        plan.read(path)
        _plan_images(plan, output, args, None, source=path)
    # Every process checks every path before any writes: one that finished its check early and wrote its first
    # output would otherwise make a slower process's check find that output already there.
    try:
        plan.check()
        problem = None
    except InputError as error:
        problem = str(error)
    problems = [message for message in distributed.gather(problem) if message]
    if problems:
        raise InputError(str(problems[0]))
    return jobs


def cmd_info(args: argparse.Namespace, progress: Progress) -> Written:
    if args.input.suffix == ".safetensors":
        from .bundle import read_bundle_metadata

        print(json.dumps(read_bundle_metadata(args.input), indent=2))
        return {}
    import numpy as np

    from .context import SLICE_CORRELATION_THRESHOLD
    from .io import read_provenance, read_volume
    from .noise.analysis import estimate_noise

    volume = read_volume(args.input, args.series)
    array, geometry = volume.array, volume.geometry
    print(f"file:      {args.input}")
    print(f"shape:     {array.shape} (numpy order, slowest axis first)")
    print(f"dtype:     {array.dtype}")
    print(f"spacing:   {tuple(round(s, 4) for s in geometry.spacing)} mm (x, y, z)")
    print(f"origin:    {tuple(round(o, 3) for o in geometry.origin)} mm (LPS)")
    finite = np.isfinite(array)
    print(f"range:     {np.min(array[finite]) if finite.any() else 'n/a'} .. "
          f"{np.max(array[finite]) if finite.any() else 'n/a'}"
          + ("" if finite.all() else f" ({array.size - int(finite.sum())} NaN/Inf voxels)"))
    if array.ndim in (2, 3):
        axis = geometry.slice_axis() if array.ndim == 3 else 0
        noise = estimate_noise(np.moveaxis(array, axis, 0) if array.ndim == 3 else array)
        print(f"noise:     sigma ~ {noise.sigma:.4g} ({100 * noise.relative_sigma:.2f}% of the robust range)")
        print(f"noise type: {noise.kind} (neighbour correlation {noise.neighbour_correlation:+.2f}; "
              "> +0.02 counts as spatially correlated)")
        print(f"slice axis: {axis} (coarsest spacing; noise measured in these slices)")
        if noise.slice_correlation is not None:
            print(f"between slices: noise correlation {noise.slice_correlation:+.2f} (> "
                  f"{SLICE_CORRELATION_THRESHOLD:+.2f}: shared between slices, so the networks read the neighbouring "
                  "slices with their blind spot masked)")
    provenance = read_provenance(args.input)
    if provenance is not None:
        print("made by:   " + ", ".join(f"{key} {value}" for key, value in provenance.as_dict().items()))
    return {}


def cmd_demo(args: argparse.Namespace, progress: Progress) -> Written:
    from .demo import DEMO_FILES, run_demo
    from .write_plan import WritePlan

    plan = WritePlan(args.overwrite)
    for name in DEMO_FILES:
        plan.file(args.out / name, f"demo file {name}")
    plan.check()
    report = run_demo(args.out, steps=args.steps, device=args.device, progress=progress, overwrite=args.overwrite)
    progress.close()
    print(report)
    return {"folder": args.out}


def build_parser() -> argparse.ArgumentParser:
    """The command line; the options of each job come from :mod:`.options`."""
    parser = _Parser(prog="diffdenoise", description="Self-supervised denoising of medical images: it learns "
                     "from the noisy scan itself, no clean data needed.")
    parser.add_argument("--version", action="version", version=f"diffdenoise {__version__}")
    parser.add_argument("--no-progress", action="store_true", help="do not draw progress bars")
    parser.add_argument("--machine-progress", action="store_true",
                        help="report progress, written files and errors as JSON lines on stdout (for a parent "
                             "process such as the Slicer panel) instead of progress bars")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_scalar_commands(commands)
    _add_other_commands(commands)
    return parser


def _add_overwrite(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--overwrite", action="store_true",
                     help="replace outputs that already exist (never an input, and a folder only when it holds "
                          "nothing but a DICOM series); without it an existing output is refused")


def _add_output_dtype(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--output-dtype", default="input", choices=("input", "float32"),
                     help="data type of the output file (default: the input's, rounded for integers)")


def _add_file_arguments(sub: argparse.ArgumentParser, axis_choices: tuple[str, ...]) -> None:
    """The arguments of every job on scalar images besides its options: how the files are read and written."""
    sub.add_argument("--slice-axis", default="auto", choices=axis_choices,
                     help="numpy axis of 3D volumes to slice along; auto = the input's coarsest spacing (the "
                          "acquisition plane; default)" + ("; bundle = the axis the bundle was trained along"
                                                           if "bundle" in axis_choices else ""))
    sub.add_argument("--series", metavar="SERIES_UID", help="the DICOM series to read when an input folder holds "
                     "several")
    _add_overwrite(sub)
    _add_output_dtype(sub)


def _add_scalar_commands(commands: argparse._SubParsersAction) -> None:
    """``denoise``, ``apply`` and ``cohort``: 2D images and 3D volumes."""
    denoise = commands.add_parser("denoise", help="train on the input itself and denoise it")
    denoise.add_argument("input", type=Path, help="image file (NIfTI, NRRD, MHA, DICOM, PNG, TIFF) or DICOM folder")
    denoise.add_argument("output", type=Path, help="output file (format from the extension) or DICOM folder")
    add_arguments(denoise, DenoiseOptions)
    denoise.add_argument("--save-model", type=Path, help="also save the trained model bundle (.safetensors)")
    denoise.add_argument("--checkpoint-dir", type=Path, help=CHECKPOINT_HELP)
    _add_file_arguments(denoise, ("auto", "0", "1", "2"))
    denoise.set_defaults(run=cmd_denoise)

    apply = commands.add_parser("apply", help="denoise with a saved model bundle (fast, no training)")
    apply.add_argument("--model", type=Path, required=True, help="bundle saved with denoise --save-model")
    apply.add_argument("input", type=Path)
    apply.add_argument("output", type=Path)
    add_arguments(apply, DenoiseOptions, only=("device", "outputs"))
    _add_file_arguments(apply, ("auto", "0", "1", "2", "bundle"))
    apply.set_defaults(run=cmd_apply)

    cohort = commands.add_parser("cohort", help="denoise many images, each trained on itself or with --model one "
                                 "saved bundle (shared out by torchrun)")
    cohort.add_argument("--model", type=Path, help="apply this bundle (saved with denoise --save-model) to every "
                        "image instead of training on each; then only --device and --extra of the options are used")
    cohort.add_argument("--out", type=Path, required=True, help="output folder (same file names as the inputs)")
    cohort.add_argument("inputs", type=Path, nargs="+", help="image files or DICOM folders")
    add_arguments(cohort, DenoiseOptions)
    _add_file_arguments(cohort, ("auto", "0", "1", "2", "bundle"))
    cohort.set_defaults(run=cmd_cohort)


def _add_other_commands(commands: argparse._SubParsersAction) -> None:
    """``ddm2`` (4D diffusion MRI), ``info`` and ``demo``."""
    ddm2 = commands.add_parser("ddm2", help="denoise a 4D diffusion MRI series with DDM2 (trained on it)")
    ddm2.add_argument("input", type=Path, help="4D NIfTI (with --bval/--bvec or <stem>.bval/.bvec) or NRRD DWI")
    ddm2.add_argument("output", type=Path, help="4D output: .nii.gz (+ .bval/.bvec written next to it) or .nrrd")
    ddm2.add_argument("--bval", type=Path, help="FSL b-values (default <stem>.bval; not needed for NRRD DWI)")
    ddm2.add_argument("--bvec", type=Path, help="FSL gradient directions (default <stem>.bvec)")
    add_arguments(ddm2, DWIOptions)
    ddm2.add_argument("--model", type=Path, help="apply this saved DDM2 bundle instead of training")
    ddm2.add_argument("--save-model", type=Path, help="also save the trained model bundle (.safetensors)")
    ddm2.add_argument("--checkpoint-dir", type=Path, help=CHECKPOINT_HELP)
    _add_output_dtype(ddm2)
    _add_overwrite(ddm2)
    ddm2.set_defaults(run=cmd_ddm2)

    info = commands.add_parser("info", help="image shape, spacing, noise level and type; or a bundle's metadata")
    info.add_argument("input", type=Path)
    info.add_argument("--series", metavar="SERIES_UID", help="the DICOM series to read when a folder holds several")
    info.set_defaults(run=cmd_info)

    demo = commands.add_parser("demo", help="denoise the embedded knee MRI sample with known added noise")
    demo.add_argument("--out", type=Path, default=Path("diffdenoise-demo"), help="output folder")
    add_arguments(demo, DenoiseOptions, only=("steps", "device"))
    _add_overwrite(demo)
    demo.set_defaults(run=cmd_demo)


def _resume_hint(args: argparse.Namespace) -> str:
    folder = getattr(args, "checkpoint_dir", None)
    return f"; run the same command again to resume from the checkpoints in {folder}" if folder else ""


def _what_was_written(args: argparse.Namespace) -> str:
    written = getattr(args, "written", {})
    if not written:
        return "no output was written"
    return f"only these were written: {', '.join(str(path) for path in written.values())}"


class Terminated(KeyboardInterrupt):
    """SIGTERM (batch schedulers, the Slicer panel's Cancel): handled like Ctrl-C, so clean-up, checkpoints and
    the message happen."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: object = None, line: str | None = None) -> None:
    """Warnings as one ``diffdenoise: warning: ...`` line each, without Python's file and line."""
    print(f"diffdenoise: warning: {message}", file=sys.stderr)


def _describe_error(error: BaseException) -> str:
    """One line for a user: the tool's own message, or what the operating system said about which path."""
    if isinstance(error, OSError) and not isinstance(error, DiffDenoiseError):
        where = f" {error.filename}" if error.filename else ""
        fix = {28: "free some space or write elsewhere", 30: "write to a writable disk or folder",
               13: "write to a folder you have permission to write to"}.get(error.errno or 0,
                                                                              "check the path and the disk")
        return f"cannot write or read{where}: {error.strerror or error} ({fix})"
    return str(error)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as error:
        print(f"diffdenoise: error: {error}", file=sys.stderr)
        if "--machine-progress" in (sys.argv[1:] if argv is None else argv):
            JsonLinesProgress().error(f"error: {error}", EXIT_USAGE)
        return EXIT_USAGE
    # Whole lines, one write each: under PYTHONUNBUFFERED every print is several writes, and the processes of a
    # torchrun share one pipe, so their lines would interleave mid-line.
    for stream in (sys.__stdout__, sys.__stderr__):  # the process's own streams, not a test's capture
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=False)
    args.written = {}  # every file in place so far, by name: what an interrupted or failed run reports
    args.sidecars_written = set()  # companion files this run wrote (a cohort's img.png and img.tif share img.json)
    signal.signal(signal.SIGTERM, _raise_terminated)
    warnings.showwarning = _show_warning
    import SimpleITK as sitk
    import torch  # after parsing, so usage errors stay fast; every command but info needs it anyway

    sitk.ProcessObject.SetGlobalWarningDisplay(False)  # the readers turn what matters into our own warnings

    from .runtime import distributed

    distributed.initialise(getattr(args, "device", "auto"))  # a no-op unless started by torchrun
    progress: Progress = (JsonLinesProgress() if args.machine_progress
                          else TqdmProgress(not args.no_progress and distributed.is_main()))

    def fail(message: str, code: int) -> int:
        progress.close()
        print(f"diffdenoise: {message}", file=sys.stderr)
        if isinstance(progress, JsonLinesProgress):
            progress.error(message, code)
        return code

    try:
        written = args.run(args, progress)
    except Cancelled as error:
        return fail(f"{error}; {_what_was_written(args)}{_resume_hint(args)}", EXIT_INTERRUPTED)
    except Terminated:
        return fail(f"terminated (SIGTERM); {_what_was_written(args)}{_resume_hint(args)}", EXIT_TERMINATED)
    except KeyboardInterrupt:
        return fail(f"interrupted; {_what_was_written(args)}{_resume_hint(args)}", EXIT_INTERRUPTED)
    except InputError as error:
        return fail(f"error: {error}", EXIT_USAGE)
    except DiffDenoiseError as error:
        return fail(f"error: {error}", EXIT_FAILURE)
    except (MemoryError, torch.OutOfMemoryError):
        return fail("error: out of memory: use a smaller preset, fewer slices or --device cuda", EXIT_FAILURE)
    except OSError as error:
        return fail(f"error: {_describe_error(error)}; {_what_was_written(args)}", EXIT_FAILURE)
    except Exception as error:  # a bug: still one line (and the protocol's error line), the traceback on request
        if os.environ.get("DIFFDENOISE_TRACEBACK"):
            traceback.print_exc()
        return fail(f"error: unexpected {type(error).__name__}: {error} (a bug: please report it with the "
                    "command; set DIFFDENOISE_TRACEBACK=1 to see where it happened)", EXIT_FAILURE)
    finally:
        distributed.shutdown()
    if isinstance(progress, JsonLinesProgress):
        progress.result(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
