"""Benchmark figures: per dataset a grid (clean | noisy | each method | residual) with a zoomed inset row, a
PSNR-gain-vs-time scatter of every method, and the cost-growth curves of our pipeline."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt  # without a display matplotlib draws with Agg: files only
import numpy as np
from matplotlib.patches import Rectangle
from scipy.ndimage import uniform_filter

from DiffDenoiseLib.metrics import high_pass

from .scalar import DISTILLED, Score


def detail_window(clean: np.ndarray, fraction: float = 0.25) -> tuple[int, int, int]:
    """(row, column, side) of the square, ``fraction`` of the smaller side, richest in fine structure."""
    side = max(16, int(min(clean.shape) * fraction))
    energy = uniform_filter(high_pass(clean) ** 2, side)
    half = side // 2
    valid = energy[half:clean.shape[0] - half, half:clean.shape[1] - half]
    row, column = np.unravel_index(np.argmax(valid), valid.shape)
    return int(row), int(column), side


def case_grid(path: Path, title: str, cases: list[tuple[str, dict[str, np.ndarray]]]) -> None:
    """One figure for a dataset: per noise a row of full slices and a row of zoomed insets; the last column is
    the residual noisy - distilled (what our method removed; structure there was lost)."""
    names = [name for name in cases[0][1] if name != "clean"]
    columns = ["clean", *names, "residual"]
    figure, axes = plt.subplots(2 * len(cases), len(columns), figsize=(1.9 * len(columns), 4.0 * len(cases)),
                                squeeze=False)
    for index, (noise, images) in enumerate(cases):
        clean = images["clean"]
        low, high = np.percentile(clean, (0.5, 99.5))
        residual = images["noisy"] - images[DISTILLED]
        spread = 3 * float(np.std(residual)) or 1.0
        row, column, side = detail_window(clean)
        for position, name in enumerate(columns):
            image, window = (residual, (-spread, spread)) if name == "residual" else (images[name], (low, high))
            for zoomed, axis in enumerate(axes[2 * index:2 * index + 2, position]):
                shown = image[row:row + side, column:column + side] if zoomed else image
                axis.imshow(shown, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
                axis.set_xticks([])
                axis.set_yticks([])
            axes[2 * index, position].set_title(name.replace(" (", "\n("), fontsize=7)
        axes[2 * index, 0].add_patch(Rectangle((column, row), side, side, fill=False, edgecolor="yellow"))
        axes[2 * index, 0].set_ylabel(noise, fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def psnr_time_scatter(path: Path, scores: list[Score]) -> None:
    """PSNR gain over the noisy input against the total time a method took on its image (training included)."""
    figure, axis = plt.subplots(figsize=(7, 4.5))
    noisy = {(s.data, s.noise): s.psnr_db for s in scores if s.method == "noisy"}
    methods = list(dict.fromkeys(s.method for s in scores if s.method != "noisy"))
    markers = "os^vDP*Xh"
    for index, method in enumerate(methods):
        points = [(max(s.total_seconds, 1e-3), s.psnr_db - noisy[(s.data, s.noise)]) for s in scores
                  if s.method == method]
        axis.scatter(*zip(*points, strict=True), label=method, marker=markers[index % len(markers)], alpha=0.8)
    axis.set_xscale("log")
    axis.set_xlabel("time on the image, training included (s, log scale)")
    axis.set_ylabel("PSNR gain over the noisy input (dB)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def growth_curves(path: Path, growth: list[tuple]) -> None:
    """Time (training, inference, total) and peak memory of our pipeline at 1x, 2x, 4x slices and slice side."""
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, along in zip(axes[:2], ("slices", "size"), strict=True):
        points = [g for g in growth if g[0] == along]
        factors = [g[1] for g in points]
        for column, label in ((4, "training"), (5, "inference"), (6, "total")):
            axis.plot(factors, [g[column] for g in points], marker="o", label=label)
        base = points[0]
        axis.set_title(f"{'slice count' if along == 'slices' else 'slice side'} x1, x2, x4 "
                       f"(from {base[2]} slices of {base[3]} px)", fontsize=9)
        axis.set_xlabel("factor")
        axis.set_ylabel("seconds")
        axis.set_xticks([1, 2, 4])
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    for along in ("slices", "size"):
        points = [g for g in growth if g[0] == along]
        axes[2].plot([g[1] for g in points], [g[7] for g in points], marker="o", label=f"x {along}")
    axes[2].set_title("peak resident memory", fontsize=9)
    axes[2].set_xlabel("factor")
    axes[2].set_ylabel("GB")
    axes[2].set_xticks([1, 2, 4])
    axes[2].grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def fa_md_maps(path: Path, maps: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """One column per method: FA (top) and MD (bottom) of the first axial slice of (x, y, z) tensor maps."""
    fig, axes = plt.subplots(2, len(maps), figsize=(2.2 * len(maps), 4.6), squeeze=False)
    for column, (name, (fa, md)) in enumerate(maps.items()):
        for row, (image, limits, label) in enumerate(((fa[:, :, 0], (0, 1), "FA"),
                                                       (md[:, :, 0] * 1e3, (0, 3), "MD (um^2/ms)"))):
            ax = axes[row, column]
            ax.imshow(np.rot90(image), cmap="gray", vmin=limits[0], vmax=limits[1])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=7)
            if column == 0:
                ax.set_ylabel(label, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
