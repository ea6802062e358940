"""One scalar benchmark case: a clean image, one noise, every method on the same noisy copy, scored.

Methods: the noisy input; the classical peers (:func:`.peers.classical_peers`: tuned blur and NLM, NLM with
the noise level estimated, BM3D and BM4D told the true noise when importable); our BSN,
diffusion + SRDS and distilled NAFNet from one ``denoise`` run; and the ceiling: the distilled NAFNet's
architecture and training budget fitted to (noisy, clean) pairs, which self-supervised methods cannot see.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from DiffDenoiseLib.denoise import DenoiseResult, denoise
from DiffDenoiseLib.metrics import detail_psnr, psnr, ssim
from DiffDenoiseLib.noise.analysis import robust_range
from DiffDenoiseLib.noise.simulate import add_noise
from DiffDenoiseLib.pipelines.diffdenoise import DistillationSettings, distillation_loss, train_new_nafnet
from DiffDenoiseLib.preprocessing import IntensityScaling, to_slices
from DiffDenoiseLib.presets import PipelineSettings
from DiffDenoiseLib.runtime.devices import resolve_device
from DiffDenoiseLib.runtime.inference import predict_slices
from DiffDenoiseLib.runtime.progress import ProgressCallback

from .datasets import DATASETS, NOISES
from .peers import MethodOutput, TrueNoise, classical_peers

DISTILLED = "DiffDenoise (distilled NAFNet)"
SUPERVISED = "supervised NAFNet (ceiling)"
CSV_FIELDS = ("data", "noise", "method", "setting", "psnr_db", "ssim", "detail_psnr_db", "seconds_per_slice",
              "total_seconds")


@dataclass
class Score:
    """One method's scores on one case (a CSV row)."""

    data: str
    noise: str
    method: str
    setting: str
    psnr_db: float
    ssim: float
    detail_psnr_db: float
    seconds_per_slice: float
    total_seconds: float


def supervised_ceiling(noisy: np.ndarray, clean: np.ndarray, distillation: DistillationSettings, seed: int,
                       progress: ProgressCallback | None) -> MethodOutput:
    """The distilled NAFNet's architecture and budget trained on (noisy, clean) pairs: what clean data buys."""
    scaling = IntensityScaling.fit(noisy)
    inputs, targets = to_slices(scaling.normalise(noisy)), to_slices(scaling.normalise(clean))
    training = replace(distillation.training, seed=seed)
    # a plain NAFNet on the noisy slice
    network = replace(distillation, from_bsn=False, context_slices=0).network_config
    network, summary = train_new_nafnet(network, training, [inputs, targets], distillation_loss,
                                        "train supervised", progress, None)
    started = time.perf_counter()
    inference = predict_slices(network, inputs, resolve_device(training.device), progress=progress)
    seconds = time.perf_counter() - started
    output = scaling.denormalise(inference[:, 0]).reshape(noisy.shape).astype(np.float32)
    return MethodOutput(SUPERVISED, "clean targets", output, seconds / len(noisy), summary.seconds + seconds)


def bsn_label(result: DenoiseResult) -> str:
    """The blind-spot architecture a ``denoise`` run picked, as the papers write it (PUCA, LG-BPN)."""
    return result.bundle.networks["bsn"].architecture.upper().replace("LGBPN", "LG-BPN")


def our_methods(noisy: np.ndarray, settings: PipelineSettings, seed: int, checkpoints: Path | None,
                progress: ProgressCallback | None,
                spacing: tuple[float, ...]) -> tuple[list[MethodOutput], DenoiseResult]:
    """BSN, diffusion + SRDS and the distilled NAFNet of one ``denoise`` run (SRDS on every slice), and the run
    itself (its bundle, noise analysis and timings). ``spacing`` is the volume's, as a user's file gives it: the
    default context reads the neighbouring slices only where the slices are thin."""
    result = denoise(noisy, preset=settings, seed=seed, outputs=("bsn", "srds"), checkpoint_dir=checkpoints,
                     progress=progress, spacing=spacing)
    t, n = result.timings, len(noisy)
    bsn = bsn_label(result)
    bsn_total = t["train_bsn_s"] + t["bsn_inference_s"]
    return [MethodOutput("BSN", bsn, result.extras["bsn"], t["bsn_inference_s"] / n, bsn_total),
            MethodOutput("diffusion + SRDS", f"{settings.sampling.pairs} pair(s), {settings.sampling.steps} steps",
                         result.extras["srds"], t["srds_s"] / n, bsn_total + t["train_diffusion_s"] + t["srds_s"]),
            MethodOutput(DISTILLED, "", result.denoised, t["nafnet_inference_s"] / n, t["total_s"])], result


def score(data: str, noise: str, output: MethodOutput, clean: np.ndarray, data_range: float) -> Score:
    """``output`` scored against ``clean``: PSNR, SSIM and detail PSNR with ``data_range``."""
    image = output.image
    return Score(data, noise, output.method, output.setting, psnr(clean, image, data_range),
                 ssim(clean, image, data_range), detail_psnr(clean, image, data_range), output.seconds_per_slice,
                 output.total_seconds)


def noisy_case(clean: np.ndarray, kind: str, level: float, seed: int) -> tuple[np.ndarray, float, TrueNoise]:
    """``clean`` with noise ``kind`` at ``level`` added (seed ``seed``); the clean image's robust range (the data
    range of PSNR and SSIM); and the added noise as the oracle peers are told it."""
    noisy = add_noise(clean, kind, level, seed=seed)
    low, high = robust_range(clean)
    return noisy, high - low, TrueNoise(kind, level, float(np.std(noisy - clean)), low, high - low)


def run_case(data: str, clean: np.ndarray, noise: str, settings: PipelineSettings, seed: int,
             checkpoints: Path | None = None,
             progress: ProgressCallback | None = None) -> tuple[list[Score], dict[str, np.ndarray]]:
    """Every method on ``clean`` with ``noise`` added (seed ``seed``): the scores, and the middle slice of the
    clean, noisy and every method's image (for the figures)."""
    kind, level = NOISES[noise]
    noisy, data_range, truth = noisy_case(clean, kind, level, seed)
    outputs = [MethodOutput("noisy", "", noisy, 0.0, 0.0), *classical_peers(noisy, clean, data_range, truth)]
    outputs += our_methods(noisy, settings, seed, checkpoints, progress, DATASETS[data].spacing)[0]
    outputs.append(supervised_ceiling(noisy, clean, settings.distillation, seed, progress))
    scores = [score(data, noise, o, clean, data_range) for o in outputs]
    middle = len(clean) // 2
    images = {"clean": clean[middle], **{o.method: o.image[middle] for o in outputs}}
    return scores, images


def case_stem(data: str, noise: str) -> str:
    return f"{data}_{noise.replace(' ', '_').replace('=', '')}"


def write_scores(path: Path, scores: list[Score]) -> None:
    """``scores`` as CSV (columns ``CSV_FIELDS``)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS)
        writer.writerows([s.data, s.noise, s.method, s.setting, f"{s.psnr_db:.3f}", f"{s.ssim:.4f}",
                          f"{s.detail_psnr_db:.3f}", f"{s.seconds_per_slice:.4f}", f"{s.total_seconds:.1f}"]
                         for s in scores)


def write_case(folder: Path, scores: list[Score], images: dict[str, np.ndarray]) -> None:
    """<stem>.csv and <stem>.npz, written atomically (the .csv last: its presence marks the case as done)."""
    stem = case_stem(scores[0].data, scores[0].noise)
    with open(folder / f"{stem}.npz.part", "wb") as handle:
        np.savez_compressed(handle, **{name: image.astype(np.float32) for name, image in images.items()})
    write_scores(folder / f"{stem}.csv.part", scores)
    for suffix in ("npz", "csv"):
        (folder / f"{stem}.{suffix}.part").replace(folder / f"{stem}.{suffix}")


def read_case(path: Path) -> list[Score]:
    """The scores of a finished case's CSV."""
    with open(path, newline="") as handle:
        return [Score(r["data"], r["noise"], r["method"], r["setting"], *(float(r[f]) for f in CSV_FIELDS[4:]))
                for r in csv.DictReader(handle)]
