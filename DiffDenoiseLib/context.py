"""Through-plane context: each slice of a volume seen together with its neighbouring slices.

Thin-slice volumes repeat their anatomy from one slice to the next while the noise of each slice is new, so a
denoiser that sees the neighbours has several noisy looks at almost the same structure (the idea behind
Noise2Sim, NS-N2N and NGPS, which beat BM3D on real CT and MRI where single-slice methods trail it).

A context stack is an (N, 1 + 2k, H, W) array: channel 0 is the slice itself, then the neighbours at distance
1, 2, ... k, the previous before the next (``[s, s-1, s+1, s-2, s+2, ...]``). The slice comes first so that
networks with a residual on their first channel (the distilled NAFNet) and the blind-spot loss (target: channel
0) need no index arithmetic. At the ends of the volume a missing neighbour is replaced by the one at the same
distance on the other side (never by a wrap-around, and never by the slice itself: a blind-spot network that
saw its own noisy pixel in a neighbour channel would learn to copy it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InputError
from .options import MAX_HALF_WIDTH

MIN_CONTEXT_SLICES = 3  # volumes of one or two slices keep the 2D path


def context_channels(half_width: int) -> int:
    """Channels of a context stack of ``half_width`` neighbours per side."""
    return 1 + 2 * half_width


def neighbour_index(index: int, offset: int, count: int) -> int:
    """The slice standing in for slice ``index + offset`` of ``count``: itself when it exists, else its mirror
    ``index - offset``, else the end of the volume farthest from ``index`` (all differ from ``index``)."""
    for candidate in (index + offset, index - offset):
        if 0 <= candidate < count:
            return candidate
    return 0 if 2 * index >= count else count - 1


def context_indices(index: int, half_width: int, count: int) -> list[int]:
    """Slice indices of the context stack of slice ``index`` (channel order of the module docstring)."""
    offsets = [sign * distance for distance in range(1, half_width + 1) for sign in (-1, 1)]
    return [index, *(neighbour_index(index, offset, count) for offset in offsets)]


def stack_context(slices: np.ndarray, half_width: int, indices: Sequence[int] | None = None) -> np.ndarray:
    """The (M, 1 + 2k, H, W) context stacks of (N, 1, H, W) ``slices`` for ``indices`` (default: all);
    ``slices`` itself (or its selected slices) when ``half_width`` is 0."""
    count = len(slices)
    indices = range(count) if indices is None else indices
    if half_width == 0:
        return slices[np.asarray(indices, dtype=int)]
    if count < MIN_CONTEXT_SLICES:
        raise ValueError(f"through-plane context needs at least {MIN_CONTEXT_SLICES} slices, got {count}")
    rows = [context_indices(int(i), half_width, count) for i in indices]
    return np.stack([slices[row, 0] for row in rows])


# Noise correlation between adjacent slices above which the neighbours' blind spot is masked too. Measured
# (benchmarks/results/slice_correlation): noise of each slice's own (Gaussian 0.1, Poisson 30, correlated 0.1
# in-plane over 1-2 px) -0.03 to +0.06 on the four dev volumes, 0.67 mm T1 included; noise shared by a
# 0.5-slice Gaussian along z 0.21 to 0.26, by a 0.7-slice one 0.48 to 0.49. Where a neighbour's noise is
# 0.1 of the slice's, reading it whole hands the network at most about 2 % of the noise power to copy.
SLICE_CORRELATION_THRESHOLD = 0.1


@dataclass(frozen=True)
class SliceContext:
    """How many neighbouring slices per side each stage reads, and whether their blind spot is masked."""

    half_width: int = 0
    blind: bool = False
    reason: str = "2D image"


def choose_context(requested: int | str, slice_count: int, slice_correlation: float | None,
                   spacing_ratio: float | None = None) -> SliceContext:
    """The through-plane context of a run: ``requested`` (``auto`` or a half-width) for a volume of
    ``slice_count`` slices whose noise correlation between adjacent slices is ``slice_correlation``
    (:func:`.noise.analysis.slice_correlation`) and whose slice spacing is ``spacing_ratio`` times the in-plane spacing.

    Where the noise is shared between slices (or cannot be measured) the neighbours are read with their
    blind spot masked, so the network cannot copy the shared noise."""
    if requested != "auto" and (isinstance(requested, bool) or not isinstance(requested, int)
                                or not 0 <= requested <= MAX_HALF_WIDTH):
        raise InputError(f"context must be auto or a number of neighbouring slices from 0 to {MAX_HALF_WIDTH}, "
                         f"got {requested!r}")
    if slice_count < MIN_CONTEXT_SLICES:
        if requested not in ("auto", 0):
            raise InputError(f"through-plane context needs a volume of at least {MIN_CONTEXT_SLICES} slices "
                             f"(this image has {slice_count}): use context 0")
        return SliceContext(0, False, "2D image" if slice_count == 1 else f"{slice_count} slices: 2D path")
    if requested == "auto":
        half_width, why = default_half_width(spacing_ratio)
        half_width = min(half_width, slice_count - 1)
    else:
        half_width, why = requested, f"context {requested} requested"
    if half_width >= slice_count:
        raise InputError(f"context {half_width} needs more than {half_width} slices (this volume has "
                         f"{slice_count}): use a smaller context")
    if half_width == 0:
        return SliceContext(0, False, why if requested == "auto" else "context 0 requested: 2D path")
    blind = slice_correlation is None or slice_correlation > SLICE_CORRELATION_THRESHOLD
    measured = "not measurable" if slice_correlation is None else f"{slice_correlation:+.2f}"
    reason = (f"{why}; noise correlation between slices {measured}: "
              + ("neighbours read with their blind spot masked" if blind else "neighbours read whole"))
    return SliceContext(half_width, blind, reason)


# Slice spacing (relative to the in-plane spacing) up to which the neighbours are read by default. Measured
# (BSN stage, quick networks, 300 steps, Gaussian 0.1): MNI 1 mm (ratio 1) 29.33 dB alone, 30.31 with 2
# neighbours per side; knee 4 mm (ratio 6.4) 28.73 alone, 28.42 with 2: thick slices share too little anatomy.
THIN_SLICE_RATIO = 3.0
THIN_SLICE_HALF_WIDTH = 2


def default_half_width(spacing_ratio: float | None) -> tuple[int, str]:
    """Neighbouring slices per side read by default for a slice spacing ``spacing_ratio`` times the in-plane
    spacing, and why."""
    if spacing_ratio is None:
        return 0, "slice spacing unknown (give the spacing to read the neighbouring slices): 2D path"
    if spacing_ratio > THIN_SLICE_RATIO:
        return 0, (f"slices {spacing_ratio:.1f}x thicker than the pixels (over {THIN_SLICE_RATIO:g}x the neighbours "
                   "share too little anatomy): 2D path")
    return THIN_SLICE_HALF_WIDTH, f"slices {spacing_ratio:.1f}x the pixel spacing"
