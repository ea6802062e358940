"""Peak memory of `diffdenoise apply` on large data, and of `diffdenoise cohort` as the cohort grows.

    python -m benchmarks.memory_benchmark [--preset standard] [--cohort 20] [--out benchmarks/results]

Cases, each a fresh CLI process whose peak resident memory (``ru_maxrss`` of that child) is recorded:

* one 2048 x 2048 slice and one 512 x 512 x 400 int16 volume (the real knee MRI of ``../shared/data``,
  interpolated up, with Gaussian noise), applied with a bundle of the preset's networks;
* a cohort of 1 and of ``--cohort`` knee volumes (each with its own noise) through one ``cohort`` call: flat
  memory means the peak does not grow with the number of volumes.

The bundle is trained for a few steps on a small crop: memory depends on the networks' sizes, not on their
weights. Results go to ``memory_<preset>.md``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import zoom

from benchmarks.cost import measured_run
from benchmarks.datasets import DATASETS, SHARED
from DiffDenoiseLib.bundle import save_bundle
from DiffDenoiseLib.denoise import denoise
from DiffDenoiseLib.io import Geometry, Volume, read_volume, write_volume
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.runtime.devices import describe_device

KNEE = SHARED / DATASETS["knee"].file


def peak_rss(arguments: list[str]) -> tuple[float, float]:
    """Run the CLI with ``arguments``; its peak resident memory in GB and its wall time in seconds."""
    _, gb, seconds = measured_run([sys.executable, "-m", "DiffDenoiseLib.cli", "--no-progress", *arguments])
    return gb, seconds


def make_bundle(knee: np.ndarray, preset: str, path: Path) -> Path:
    crop = add_noise(knee[10:12, 64:192, 64:192], "gaussian", 0.1, seed=0)
    result = denoise(crop, preset=preset, steps=2, ddim_steps=2, distill_slices=1, device="cpu")
    return save_bundle(path, result.bundle)


def noisy_file(path: Path, clean: np.ndarray, seed: int) -> Path:
    noisy = add_noise(clean, "gaussian", 0.1, seed=seed)
    write_volume(path, Volume(np.clip(np.rint(noisy), -32768, 32767).astype(np.int16),
                              Geometry((0.5, 0.5, 1.0), (0.0, 0.0, 0.0), tuple(np.eye(3).ravel()))))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--cohort", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    if not KNEE.exists():
        raise SystemExit(f"skipped: {KNEE} not found (the shared data folder is absent)")
    knee = read_volume(KNEE).array.astype(np.float32)  # (24, 256, 256)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        model = make_bundle(knee, args.preset, folder / "model.safetensors")
        apply = ["apply", "--model", str(model), "--device", "cpu"]

        large_slice = zoom(knee[12], 8, order=1)[None]  # (1, 2048, 2048)
        source = noisy_file(folder / "slice.nii", large_slice, seed=1)
        gb, seconds = peak_rss([*apply, str(source), str(folder / "slice_out.nii")])
        rows.append(("apply, one 2048 x 2048 slice", "8 MB", gb, seconds))

        large_volume = zoom(knee, (400 / 24, 2, 2), order=1)  # (400, 512, 512)
        source = noisy_file(folder / "volume.nii", large_volume, seed=2)
        del large_volume
        gb, seconds = peak_rss([*apply, str(source), str(folder / "volume_out.nii")])
        rows.append(("apply, 512 x 512 x 400 volume", "200 MB int16 (400 MB float32)", gb, seconds))

        inputs = [noisy_file(folder / f"knee_{i:02d}.nii.gz", knee, seed=10 + i) for i in range(args.cohort)]
        for count in (1, args.cohort):
            gb, seconds = peak_rss(["cohort", "--model", str(model), "--device", "cpu", "--out",
                                    str(folder / f"cohort_{count}"), *map(str, inputs[:count])])
            rows.append((f"cohort of {count} knee volume{'s' * (count > 1)} (24 x 256 x 256)",
                         f"{count} x 3 MB int16", gb, seconds))

    lines = [f"Preset {args.preset} networks; {describe_device(torch.device('cpu'))}, torch {torch.__version__}", "",
             "| run | input | peak RSS (GB) | wall (s) |", "|---|---|---|---|"]
    lines += [f"| {name} | {size} | {gb:.2f} | {seconds:.0f} |" for name, size, gb, seconds in rows]
    report = "\n".join(lines) + "\n"
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"memory_{args.preset}.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
