"""One scalar benchmark case of any suite: a clean image, one noise at one noise seed, every method on the same
noisy copy, scored; and the case's files, which every suite shares.

Methods: the noisy input and the classical peers (:func:`.peers.classical_peers`: tuned blur and NLM, NLM with
the noise level estimated, BM3D and BM4D told the true noise when importable), kept in a peer cache because they
do not depend on our code or preset; our BSN, diffusion + SRDS and distilled NAFNet from one ``denoise`` run;
where the noise analysis finds correlated noise, the BSN with PUCA forced (what LG-BPN buys); optionally the
ablations (:data:`ABLATIONS`), each a setting of the public API; and optionally the ceiling, the distilled
NAFNet's architecture and training budget fitted to (noisy, clean) pairs, which self-supervised methods cannot
see.

A finished case is three files named ``<data>_<noise>_seed<k>``: ``.csv`` (every score, columns
:data:`CSV_FIELDS`), ``.npz`` (the middle slice of the clean image and of each output, for the figures; it stays
local, the others are committed) and ``.md`` (the case's note and table), written last: its presence marks the
case as done.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

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

from .datasets import noise_of
from .peers import MethodOutput, TrueNoise, classical_peers, method_label

DISTILLED = "DiffDenoise (distilled NAFNet)"
SRDS = "diffusion + SRDS"
SUPERVISED = "supervised NAFNet (ceiling)"
FORCED_PUCA = "BSN (PUCA, forced)"  # the row that shows what LG-BPN buys on correlated noise
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


@dataclass
class Case:
    """A finished case: its scores, the middle slices of the clean image and every output, and its notes."""

    scores: list[Score]
    images: dict[str, np.ndarray]
    notes: list[str]


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
            MethodOutput(SRDS, f"{settings.sampling.pairs} pair(s), {settings.sampling.steps} steps",
                         result.extras["srds"], t["srds_s"] / n, bsn_total + t["train_diffusion_s"] + t["srds_s"]),
            MethodOutput(DISTILLED, "", result.denoised, t["nafnet_inference_s"] / n, t["total_s"])], result


# Each ablation: its row's name, the settings change, and the stages it leaves as the main run trained them
# (those resume from the main run's checkpoints instead of training again).
ABLATIONS: dict[str, tuple[Callable[[PipelineSettings], PipelineSettings], tuple[str, ...]]] = {
    "ablation: single DDIM run": (
        lambda s: replace(s, sampling=replace(s.sampling, antithetic=False)), ("bsn", "diffusion")),
    "ablation: paper's pairs (BSN(y) -> y, no recorruption)": (
        lambda s: replace(s, diffusion=replace(s.diffusion, conditioning="bsn")), ("bsn",)),
    "ablation: diffusion conditioned on noisy (no BSN)": (
        lambda s: replace(s, diffusion=replace(s.diffusion, conditioning="identity")), ("bsn",)),
}


def ablation_outputs(noisy: np.ndarray, settings: PipelineSettings, seed: int, checkpoints: Path,
                     progress: ProgressCallback | None, spacing: tuple[float, ...]) -> list[MethodOutput]:
    """Each of :data:`ABLATIONS` as ``denoise(method="diffusion")`` with its setting, scored on its raw SRDS
    output like the main run's SRDS row; the stages it keeps resume from ``checkpoints/pipeline`` (the main
    run's) and its own train in ``checkpoints/<ablation>``."""
    outputs = []
    for index, (label, (change, kept)) in enumerate(ABLATIONS.items()):
        folder = checkpoints / f"ablation{index}"
        folder.mkdir(parents=True, exist_ok=True)
        for stage in kept:
            if (checkpoints / "pipeline" / f"{stage}.pt").exists():
                shutil.copy2(checkpoints / "pipeline" / f"{stage}.pt", folder / f"{stage}.pt")
        result = denoise(noisy, method="diffusion", preset=change(settings), seed=seed, outputs=("srds",),
                         checkpoint_dir=folder, progress=progress, spacing=spacing)
        t = result.timings
        outputs.append(MethodOutput(label, "", result.extras["srds"], t["srds_s"] / len(noisy), t["total_s"]))
    return outputs


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


def case_name(data: str, noise: str, seed: int) -> str:
    """The file stem of one case: dataset, noise and noise seed."""
    return f"{data}_{noise.replace(' ', '_').replace('=', '')}_seed{seed}"


def middle(image: np.ndarray) -> np.ndarray:
    """The middle slice of a (slices, H, W) image, as the figures show it."""
    return image[len(image) // 2].astype(np.float32)


def save_images(path: Path, images: dict[str, np.ndarray]) -> None:
    """``images`` as ``path`` (.npz), written under a temporary name and moved into place when complete."""
    partial = path.with_suffix(".npz.part")
    with open(partial, "wb") as handle:
        np.savez_compressed(handle, **images)
    partial.replace(path)


def peer_case(folder: Path, data: str, noise: str, seed: int, clean: np.ndarray) -> Case:
    """The noisy input and every classical peer on one case, scored (with their middle slices): kept in
    ``folder`` and read back from there when present, since they depend only on the image, the noise and its
    seed, not on our code or preset (delete the folder when the peers change). A cache written before the
    images were kept has scores only."""
    path = folder / f"{case_name(data, noise, seed)}.csv"
    if not path.exists():
        noisy, data_range, truth = noisy_case(clean, *noise_of(noise), seed)
        outputs = [MethodOutput("noisy", "", noisy, 0.0, 0.0), *classical_peers(noisy, clean, data_range, truth)]
        folder.mkdir(parents=True, exist_ok=True)
        save_images(path.with_suffix(".npz"), {o.method: middle(o.image) for o in outputs})
        write_scores(path.with_suffix(".part"), [score(data, noise, o, clean, data_range) for o in outputs])
        path.with_suffix(".part").replace(path)
    images = {}
    if path.with_suffix(".npz").exists():
        with np.load(path.with_suffix(".npz")) as stored:
            images = dict(stored)
    return Case(read_case(path), images, [])  # as rounded in the file, like a later run that reads it


def run_case(data: str, clean: np.ndarray, noise: str, seed: int, settings: PipelineSettings, folder: Path,
             spacing: tuple[float, ...], ceiling: bool, ablations: bool, machine: str,
             progress: ProgressCallback | None = None) -> Case:
    """Every method on ``clean`` (a (slices, H, W) image of ``data`` with voxel ``spacing``, numpy order) with
    ``noise`` added at noise seed ``seed``: the peers from the cache in ``folder/peer_cases``, our pipeline with
    ``settings`` (its stages checkpointed in ``folder/checkpoints/<case>``, so a killed case resumes), the
    forced-PUCA row on correlated noise, the ablations and the ceiling when asked. ``machine`` says where it ran,
    for the note."""
    peers = peer_case(folder / "peer_cases", data, noise, seed, clean)
    noisy, data_range, _ = noisy_case(clean, *noise_of(noise), seed)
    checkpoints = folder / "checkpoints" / case_name(data, noise, seed)
    outputs, result = our_methods(noisy, settings, seed, checkpoints / "pipeline", progress, spacing)
    notes = [note for note in (run_note(result, machine), noise_model_note(result, noisy - clean)) if note]
    if result.noise.kind == "correlated":
        puca = denoise(noisy, method="bsn", noise="iid", preset=settings, seed=seed,
                       checkpoint_dir=checkpoints / "puca", progress=progress, spacing=spacing)
        outputs.append(MethodOutput(FORCED_PUCA, "", puca.denoised, puca.timings["bsn_inference_s"] / len(noisy),
                                    puca.timings["total_s"]))
    if ablations:
        outputs += ablation_outputs(noisy, settings, seed, checkpoints, progress, spacing)
    if ceiling:
        outputs.append(supervised_ceiling(noisy, clean, settings.distillation, seed, progress))
    scores = peers.scores + [score(data, noise, o, clean, data_range) for o in outputs]
    images = {"clean": middle(clean), "noisy": middle(noisy), **peers.images}  # a cache may hold no images
    return Case(scores, images | {o.method: middle(o.image) for o in outputs}, notes)


def run_note(result: DenoiseResult, machine: str) -> str:
    """What a case's note says of our run: the noise analysis, the context, the blend weights, the times."""
    t, record = result.timings, result.bundle.record
    context, bsn, blend = record.context, record.bsn, record.output_blend_weight
    return (f"noise analysis: {result.noise.kind} (correlation {result.noise.neighbour_correlation:+.3f}); "
            f"context: {context.half_width} slice(s) per side ({context.reason}); "
            f"BSN estimate's share in its Wiener blend {bsn.wiener_weight:.2f} (patches "
            f"{bsn.wiener_depth} slice(s) deep); distilled NAFNet's share in its blend with the BSN estimate "
            + (f"{blend:.2f}; " if blend is not None else "none (no blend); ") +
            f"training steps: BSN {result.bundle.record.training['bsn']['config']['steps']}; "
            f"training s: BSN {t['train_bsn_s']:.0f}, diffusion {t['train_diffusion_s']:.0f}, "
            f"NAFNet {t['train_nafnet_s']:.0f}; SRDS {t['srds_s']:.0f}; total {t['total_s']:.0f}; {machine}, "
            f"torch {torch.__version__}")


def noise_model_note(result: DenoiseResult, added: np.ndarray) -> str:
    """What a case's note says of the recorruption noise model our run fitted, against the noise the case
    ``added`` (noisy - clean): where the model is Gaussian (Gaussian and correlated noise), its std (the mean
    over its intensity levels) as a multiple of the added noise's and the correlation of neighbouring pixels
    in both; else nothing. Volumes with noise of their own (LIDC, T1) come out above 1 by that much."""
    record = result.bundle.record
    model = record.noise.model
    if model is None or model["family"] != "gaussian":
        return ""
    low, high = record.normalization["training_range"]
    noise = added.astype(np.float64)
    neighbours = 0.5 * (np.corrcoef(noise[..., 1:].ravel(), noise[..., :-1].ravel())[0, 1]
                        + np.corrcoef(noise[..., 1:, :].ravel(), noise[..., :-1, :].ravel())[0, 1])
    return (f"Noise model: std {np.mean(model['std']) * (high - low) / noise.std():.3f} x the added noise's, "
            f"neighbour correlation {model['neighbour_correlation']:+.2f} (added {neighbours:+.2f}).")


def write_scores(path: Path, scores: list[Score], seeds: list[int] | None = None) -> None:
    """``scores`` as CSV (columns ``CSV_FIELDS``; with ``seeds``, one per score, a ``seed`` column first)."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_FIELDS if seeds is None else ("seed", *CSV_FIELDS))
        for index, s in enumerate(scores):
            row = [s.data, s.noise, s.method, s.setting, f"{s.psnr_db:.3f}", f"{s.ssim:.4f}", f"{s.detail_psnr_db:.3f}",
                   f"{s.seconds_per_slice:.4f}", f"{s.total_seconds:.1f}"]
            writer.writerow(row if seeds is None else [seeds[index], *row])


def write_case(folder: Path, seed: int, shape: tuple, case: Case) -> str:
    """One case as ``<folder>/<case name>.csv``, ``.npz`` and ``.md``, atomically (the ``.md`` last: a killed
    run leaves no half case); returns the ``.md`` text."""
    data, noise = case.scores[0].data, case.scores[0].noise
    name = case_name(data, noise, seed)
    table = [f"**{data}** {shape}, {noise} noise, seed {seed}. " + " ".join(case.notes),
             "", "| method | PSNR (dB) | SSIM | detail PSNR (dB) | s/slice |", "|---|---|---|---|---|",
             *(f"| {method_label(s.method, s.setting)} | {s.psnr_db:.2f} | {s.ssim:.4f} | {s.detail_psnr_db:.2f} "
               f"| {s.seconds_per_slice:.3f} |" for s in case.scores), ""]
    write_scores(folder / f"{name}.csv.part", case.scores)
    (folder / f"{name}.csv.part").replace(folder / f"{name}.csv")
    save_images(folder / f"{name}.npz", case.images)
    (folder / f"{name}.md.part").write_text("\n".join(table) + "\n", encoding="utf-8")
    (folder / f"{name}.md.part").replace(folder / f"{name}.md")
    return "\n".join(table)


def read_case(path: Path) -> list[Score]:
    """The scores of a finished case's CSV."""
    with open(path, newline="") as handle:
        return [Score(r["data"], r["noise"], r["method"], r["setting"], *(float(r[f]) for f in CSV_FIELDS[4:]))
                for r in csv.DictReader(handle)]
