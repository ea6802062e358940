"""The ``diffdenoise`` command line: denoise, apply, cohort, ddm2, info and demo.

Errors the user can fix are printed as one line (``diffdenoise: error: ...``) with exit code 2 for bad
usage or input, 1 for other failures and 130 when interrupted. ``--machine-progress`` reports progress, the
files written and errors as JSON lines on stdout instead (the protocol of :mod:`.worker`, read by the Slicer
panel).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from . import __version__
from .errors import Cancelled, DiffDenoiseError, InputError
from .progress import ProgressEvent
from .worker import JsonLinesProgress

if TYPE_CHECKING:
    import numpy as np

    from .bundle import ModelBundle
    from .denoise import Denoised
    from .io import Volume
    from .provenance import Provenance

EXIT_FAILURE, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
Written = dict[str, Path]  # what a command wrote, by name (denoised, residual, model, ...)
CHECKPOINT_HELP = ("keep a checkpoint of each training stage in this folder; run the same command again after a "
                   "crash or Ctrl-C to resume where it stopped (delete the folder when done)")


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line instead of usage text + error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class TqdmProgress:
    """Progress callback drawing one tqdm bar per stage on stderr."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stage: str | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=event.stage, unit="step", dynamic_ncols=True, leave=True)
        assert self.bar is not None
        self.bar.n = event.step
        if event.loss is not None:
            self.bar.set_postfix(loss=f"{event.loss:.4g}", refresh=False)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


Progress = TqdmProgress | JsonLinesProgress


def _check_output(input_path: Path, output_path: Path) -> None:
    if output_path.resolve() == input_path.resolve():
        raise InputError(f"output {output_path} would overwrite the input: choose another output path")


def _write_result(input_volume: Volume, denoised: np.ndarray, output: Path, output_dtype: str,
                  provenance: Provenance) -> None:
    from .io import write_volume
    from .preprocessing import match_dtype

    dtype = input_volume.array.dtype if output_dtype == "input" else "float32"
    write_volume(output, input_volume.with_array(match_dtype(denoised, dtype)), description="DiffDenoise",
                 provenance=provenance)


def extra_output_path(output: Path, name: str) -> Path:
    """``out.nii.gz`` -> ``out_residual.nii.gz`` (a DICOM folder ``out`` -> ``out_residual``)."""
    suffixes = "".join(output.suffixes[-2:]) if output.name.endswith(".nii.gz") else output.suffix
    return output.with_name(f"{output.name[:len(output.name) - len(suffixes)]}_{name}{suffixes}")


def _write_outputs(input_volume: Volume, result: Denoised, output: Path, output_dtype: str,
                   provenance: Provenance) -> Written:
    """Write the denoised image and each extra output (float32: a residual is signed, an uncertainty is
    fractional) with the run's provenance; returns their paths."""
    _write_result(input_volume, result.denoised, output, output_dtype, provenance)
    written = {"denoised": output}
    for name, image in result.extras.items():
        written[name] = extra_output_path(output, name)
        _write_result(input_volume, image, written[name], "float32", provenance)
        print(f"wrote {name} to {written[name]}")
    return written


def _slice_axis(volume: Volume, choice: str) -> int:
    return volume.geometry.slice_axis() if choice == "auto" else int(choice)


def cmd_denoise(args: argparse.Namespace, progress: Progress) -> Written:
    from . import distributed
    from .bundle import save_bundle
    from .denoise import denoise
    from .io import read_volume
    from .provenance import Provenance

    _check_output(args.input, args.output)
    volume = read_volume(args.input)
    result = denoise(volume.array, method=args.method, noise=args.noise, preset=args.preset, device=args.device,
                     slice_axis=_slice_axis(volume, args.slice_axis), seed=args.seed, steps=args.steps,
                     srds_pairs=args.srds_pairs, ddim_steps=args.ddim_steps, distill_slices=args.distill_slices,
                     outputs=tuple(args.extra), checkpoint_dir=args.checkpoint_dir, progress=progress)
    progress.close()
    if not distributed.is_main():  # under torchrun every process trains; one writes
        return {}
    written = _write_outputs(volume, result, args.output, args.output_dtype, Provenance.of(result.bundle, True))
    print(result.summary())
    noise = result.noise
    print(f"noise: {noise.kind} (sigma ~ {noise.sigma:.4g}, {100 * noise.relative_sigma:.1f}% of range); "
          f"wrote {args.output} in {result.timings['total_s']:.0f} s")
    if args.save_model:
        written["model"] = save_bundle(args.save_model, result.bundle)
        print(f"saved model bundle {written['model']}")
    return written


def _apply_to_file(bundle: ModelBundle, path: Path, output: Path, args: argparse.Namespace,
                   progress: Progress) -> Written:
    """Denoise one image file with a loaded bundle and write the result (and extras) next to ``output``."""
    from .denoise import apply_bundle
    from .io import read_volume
    from .provenance import Provenance

    volume = read_volume(path)
    axis = None if args.slice_axis == "bundle" else _slice_axis(volume, args.slice_axis)
    result = apply_bundle(bundle, volume.array, device=args.device, slice_axis=axis, outputs=tuple(args.extra),
                          progress=progress)
    progress.close()
    print(result.summary())
    return _write_outputs(volume, result, output, args.output_dtype, Provenance.of(bundle, False))


def cmd_apply(args: argparse.Namespace, progress: Progress) -> Written:
    from .bundle import load_bundle

    _check_output(args.input, args.output)
    bundle = load_bundle(args.model)
    written = _apply_to_file(bundle, args.input, args.output, args, progress)
    print(f"applied {bundle.method} bundle {args.model}; wrote {args.output}")
    return written


def cmd_ddm2(args: argparse.Namespace, progress: Progress) -> Written:
    from . import distributed
    from .bundle import load_bundle, save_bundle
    from .denoise_dwi import apply_dwi_bundle, denoise_dwi
    from .io import DiffusionVolume, read_dwi, write_dwi
    from .preprocessing import match_dtype
    from .provenance import Provenance

    _check_output(args.input, args.output)
    dwi = read_dwi(args.input, args.bval, args.bvec)
    series = dwi.volume.array
    if args.model:
        result = apply_dwi_bundle(load_bundle(args.model), series, dwi.bvals, device=args.device,
                                  sampler=args.sampler, sampler_steps=args.sampler_steps, progress=progress)
    else:
        result = denoise_dwi(series, dwi.bvals, method=args.method, preset=args.preset, device=args.device,
                             seed=args.seed, steps=args.steps, neighbours=args.neighbours, sampler=args.sampler,
                             sampler_steps=args.sampler_steps, checkpoint_dir=args.checkpoint_dir,
                             progress=progress)
    progress.close()
    if not distributed.is_main():
        return {}
    dtype = series.dtype if args.output_dtype == "input" else "float32"
    write_dwi(args.output, DiffusionVolume(dwi.volume.with_array(match_dtype(result.denoised, dtype)), dwi.bvals,
                                           dwi.bvecs), Provenance.of(result.bundle, not args.model))
    print(result.summary())
    print(f"wrote {args.output} ({len(series)} volumes, b-values and gradients kept) in "
          f"{result.timings['total_s']:.0f} s")
    written = {"denoised": args.output}
    if args.save_model and not args.model:
        written["model"] = save_bundle(args.save_model, result.bundle)
        print(f"saved model bundle {written['model']}")
    return written


def cmd_cohort(args: argparse.Namespace, progress: Progress) -> Written:
    """Apply one bundle to many images; under torchrun each process takes every world-size-th image."""
    from . import distributed
    from .bundle import load_bundle

    bundle = load_bundle(args.model)
    jobs = [(path, args.out / path.name) for path in args.inputs]
    for path, output in jobs:
        _check_output(path, output)
    written = {}
    for path, output in distributed.shard(jobs):
        files = _apply_to_file(bundle, path, output, args, progress)
        written.update({f"{path}:{name}": file for name, file in files.items()})
        print(f"[process {distributed.rank()}] {path} -> {output}")
    return written


def cmd_info(args: argparse.Namespace, progress: Progress) -> Written:
    if args.input.suffix == ".safetensors":
        from .bundle import read_bundle_metadata

        print(json.dumps(read_bundle_metadata(args.input), indent=2))
        return {}
    import numpy as np

    from .io import read_provenance, read_volume
    from .noise import estimate_noise

    volume = read_volume(args.input)
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
        noise = estimate_noise(array)
        print(f"noise:     sigma ~ {noise.sigma:.4g} ({100 * noise.relative_sigma:.2f}% of the robust range)")
        print(f"noise type: {noise.kind} (neighbour correlation {noise.neighbour_correlation:+.2f}; "
              "> +0.02 counts as spatially correlated)")
        print(f"slice axis: {geometry.slice_axis()} (coarsest spacing)")
    provenance = read_provenance(args.input)
    if provenance is not None:
        print("made by:   " + ", ".join(f"{key} {value}" for key, value in provenance.as_dict().items()))
    return {}


def cmd_demo(args: argparse.Namespace, progress: Progress) -> Written:
    from .demo import run_demo

    report = run_demo(args.out, steps=args.steps, device=args.device, progress=progress)
    progress.close()
    print(report)
    return {"folder": args.out}


def build_parser() -> argparse.ArgumentParser:
    from .options import DEVICE_CHOICES, EXTRA_OUTPUTS, METHODS, NOISE_CHOICES, PRESETS

    parser = _Parser(prog="diffdenoise", description="Self-supervised denoising of medical images: it learns "
                     "from the noisy scan itself, no clean data needed.")
    parser.add_argument("--version", action="version", version=f"diffdenoise {__version__}")
    parser.add_argument("--no-progress", action="store_true", help="do not draw progress bars")
    parser.add_argument("--machine-progress", action="store_true",
                        help="report progress, written files and errors as JSON lines on stdout (for a parent "
                             "process such as the Slicer panel) instead of progress bars")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def add_common(sub: argparse.ArgumentParser, default_axis: str) -> None:
        sub.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default auto)")
        sub.add_argument("--slice-axis", default=default_axis, choices=("auto", "0", "1", "2", "bundle"),
                         help="numpy axis of 3D volumes to slice along; auto = coarsest spacing")
        sub.add_argument("--output-dtype", default="input", choices=("input", "float32"),
                         help="data type of the output file (default: the input's, rounded for integers)")
        sub.add_argument("--extra", nargs="+", default=[], choices=EXTRA_OUTPUTS, metavar="OUTPUT",
                         help="also write OUTPUT_<name> float32 files: residual (input - output), uncertainty "
                              "(SRDS pair disagreement), bsn (BSN output), srds (SRDS output)")

    denoise = commands.add_parser("denoise", help="train on the input itself and denoise it")
    denoise.add_argument("input", type=Path, help="image file (NIfTI, NRRD, MHA, DICOM, PNG, TIFF) or DICOM folder")
    denoise.add_argument("output", type=Path, help="output file (format from the extension) or DICOM folder")
    denoise.add_argument("--method", default="diffdenoise", choices=METHODS,
                         help="diffdenoise: BSN -> diffusion -> SRDS -> distilled NAFNet (default); diffusion: "
                              "SRDS output; bsn: blind-spot network only")
    denoise.add_argument("--noise", default="auto", choices=NOISE_CHOICES, help="noise type (auto: measured)")
    denoise.add_argument("--preset", default="quick", choices=PRESETS, help="training budget (README: Presets)")
    denoise.add_argument("--steps", type=int, help="training steps of every stage, overriding the preset")
    denoise.add_argument("--srds-pairs", type=int, help="antithetic SRDS pairs averaged per slice")
    denoise.add_argument("--ddim-steps", type=int, help="DDIM steps per SRDS trajectory")
    denoise.add_argument("--distill-slices", type=int,
                         help="SRDS-sample at most this many evenly spaced slices to train the NAFNet")
    denoise.add_argument("--seed", type=int, default=0)
    denoise.add_argument("--save-model", type=Path, help="also save the trained model bundle (.safetensors)")
    denoise.add_argument("--checkpoint-dir", type=Path, help=CHECKPOINT_HELP)
    add_common(denoise, "auto")
    denoise.set_defaults(run=cmd_denoise)

    apply = commands.add_parser("apply", help="denoise with a saved model bundle (fast, no training)")
    apply.add_argument("--model", type=Path, required=True, help="bundle saved with denoise --save-model")
    apply.add_argument("input", type=Path)
    apply.add_argument("output", type=Path)
    add_common(apply, "bundle")
    apply.set_defaults(run=cmd_apply)

    cohort = commands.add_parser("cohort", help="apply a saved bundle to many images (shared out by torchrun)")
    cohort.add_argument("--model", type=Path, required=True, help="bundle saved with denoise --save-model")
    cohort.add_argument("--out", type=Path, required=True, help="output folder (same file names as the inputs)")
    cohort.add_argument("inputs", type=Path, nargs="+", help="image files or DICOM folders")
    add_common(cohort, "bundle")
    cohort.set_defaults(run=cmd_cohort)

    ddm2 = commands.add_parser("ddm2", help="denoise a 4D diffusion MRI series with DDM2 (trained on it)")
    ddm2.add_argument("input", type=Path, help="4D NIfTI (with --bval/--bvec or <stem>.bval/.bvec) or NRRD DWI")
    ddm2.add_argument("output", type=Path, help="4D output: .nii.gz (+ .bval/.bvec written next to it) or .nrrd")
    ddm2.add_argument("--bval", type=Path, help="FSL b-values (default <stem>.bval; not needed for NRRD DWI)")
    ddm2.add_argument("--bvec", type=Path, help="FSL gradient directions (default <stem>.bvec)")
    ddm2.add_argument("--method", default="ddm2", choices=("ddm2", "stage1"),
                      help="ddm2: Stages I-III (default); stage1: the slice-from-other-volumes denoiser alone")
    ddm2.add_argument("--preset", default="quick", choices=PRESETS, help="training budget (README: DDM2)")
    ddm2.add_argument("--steps", type=int, help="training steps of both stages, overriding the preset")
    ddm2.add_argument("--neighbours", type=int, help="volumes per Stage I input (default 2)")
    ddm2.add_argument("--sampler", choices=("accelerated", "full"),
                      help="accelerated: DDIM over a few steps (default); full: every step of the chain")
    ddm2.add_argument("--sampler-steps", type=int, help="steps of the accelerated sampler (default 10)")
    ddm2.add_argument("--seed", type=int, default=0)
    ddm2.add_argument("--model", type=Path, help="apply this saved DDM2 bundle instead of training")
    ddm2.add_argument("--save-model", type=Path, help="also save the trained model bundle (.safetensors)")
    ddm2.add_argument("--checkpoint-dir", type=Path, help=CHECKPOINT_HELP)
    ddm2.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="compute device (default auto)")
    ddm2.add_argument("--output-dtype", default="input", choices=("input", "float32"),
                      help="data type of the output file (default: the input's, rounded for integers)")
    ddm2.set_defaults(run=cmd_ddm2)

    info = commands.add_parser("info", help="image shape, spacing, noise level and type; or a bundle's metadata")
    info.add_argument("input", type=Path)
    info.set_defaults(run=cmd_info)

    demo = commands.add_parser("demo", help="denoise the embedded knee MRI sample with known added noise")
    demo.add_argument("--out", type=Path, default=Path("diffdenoise-demo"), help="output folder")
    demo.add_argument("--steps", type=int, help="training steps (default: the quick preset's)")
    demo.add_argument("--device", default="auto", choices=DEVICE_CHOICES)
    demo.set_defaults(run=cmd_demo)
    return parser


def _resume_hint(args: argparse.Namespace) -> str:
    folder = getattr(args, "checkpoint_dir", None)
    return f"; run the same command again to resume from the checkpoints in {folder}" if folder else ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    import torch  # after parsing, so usage errors stay fast; every command but info needs it anyway

    from . import distributed

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
        return fail(str(error) + _resume_hint(args), EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        return fail("interrupted; no output was written" + _resume_hint(args), EXIT_INTERRUPTED)
    except InputError as error:
        return fail(f"error: {error}", EXIT_USAGE)
    except DiffDenoiseError as error:
        return fail(f"error: {error}", EXIT_FAILURE)
    except (MemoryError, torch.OutOfMemoryError):
        return fail("error: out of memory: use a smaller preset, fewer slices or --device cuda", EXIT_FAILURE)
    finally:
        distributed.shutdown()
    if isinstance(progress, JsonLinesProgress):
        progress.result(written)
    return 0


if __name__ == "__main__":
    sys.exit(main())
