"""Collaborative Wiener filtering with the blind-spot estimate as its pilot, blended with that estimate.

The combination with the noisy pixel (:mod:`.posterior`) puts back each pixel's own measurement one pixel at a
time. A Wiener filter in a local transform puts back what whole patches measured: BM3D's second stage (Dabov
et al. 2007, "Image denoising by sparse 3-D transform-domain collaborative filtering") stacks each reference
patch with the patches most like it in the pilot (block matching), transforms the stack (the DCT of each
patch, then a DCT along the stack), and shrinks each coefficient of the noisy stack by ``P^2 / (P^2 + S)``,
with ``P`` the pilot stack's coefficient and ``S`` the noise variance of that coefficient. Here the pilot is
the BSN estimate; patches are 8 x 8 pixels, or 8 x 8 pixels across a few adjacent slices of a volume whose
slices share anatomy and not noise (what BM4D's 3D blocks gain from), matched within the same slices. Each
pixel is the average of the patch estimates that cover it, weighted as in BM3D by ``1 / sum(W^2 S)`` over the
stack, so stacks whose noise was kept weigh less. ``S`` is the noise model's variance at the pilot's mean over
each patch (signal-dependent noise), times the coefficient's variance under the noise's in-plane colouring
kernel (1 for white noise). Stacks of 16 found within 12 pixels gained 0.2 dB over each patch filtered alone
on the knee (docs/decisions.md, "Grouped Wiener filtering").

The patch mean (the DC coefficient) is the pilot's, not a shrunk noisy one: its gain ``P^2 / (P^2 + S)`` is
about 1 wherever the image is not near 0 in the normalised units, so the noisy patch mean would pass whole,
and the overlapping patch means add up to low-frequency noise, which SSIM punishes hardest in flat and empty
regions; the pilot's error averages out over the patch (docs/decisions.md, "Where the code's choices were
measured").

Neither estimate is better everywhere, and their errors are only partly shared, so a mix of the two beats
both. The pipeline fits the mixing weight with SURE on the image for i.i.d. noise (:mod:`.sure`), and for
correlated noise on the recorrupted copy that also trains the diffusion stage (Pang et al. 2021,
"Recorrupted-to-Recorrupted"): for estimates made from the first copy, the mean square difference from the
second copy, whose noise is independent, is their squared error against the clean image plus a constant, so
the least-squares weight against the second copy is the weight that minimises the error
(:func:`blend_weight`).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F
from scipy.signal import fftconvolve

from .noise.model import NoiseModel

PATCH = 8  # BM3D's Wiener-stage block size
STEP = 3  # BM3D's step between reference patches
GROUP = 16  # patches filtered together (docs/decisions.md, "Grouped Wiener filtering")
SEARCH_RADIUS = 12  # pixels around a reference patch searched for its group


@functools.cache
def dct_matrix(size: int) -> np.ndarray:
    """The (size, size) orthonormal DCT-II matrix: row ``k`` is the ``k``-th cosine (row 0 the mean)."""
    k = np.arange(size)
    matrix = np.sqrt(2 / size) * np.cos(np.pi * (2 * k[None, :] + 1) * k[:, None] / (2 * size))
    matrix[0] /= np.sqrt(2)
    return matrix


@functools.cache
def dct_basis(size: int, depth: int = 1) -> np.ndarray:
    """The (depth * size^2, depth, size, size) orthonormal DCT-II basis of depth x size x size patches (the 2D
    basis for ``depth`` 1); element ``t * size^2 + u * size + v`` is the product of the ``t``-th cosine through
    the slices and the ``u``-th and ``v``-th in the plane, element 0 the patch mean."""
    basis = np.einsum("ti,uj,vk->tuvijk", dct_matrix(depth), dct_matrix(size), dct_matrix(size))
    return basis.reshape(depth * size * size, depth, size, size)


def coefficient_variances(kernel: np.ndarray, size: int = PATCH, depth: int = 1) -> np.ndarray:
    """The variance of each DCT coefficient of unit-variance noise coloured in-plane by ``kernel`` (unit L2
    norm) and independent between slices: the squared norm of the basis patch convolved with the kernel (all 1
    for white noise)."""
    return np.array([np.sum(fftconvolve(kernel[None], patch, mode="full") ** 2)
                     for patch in dct_basis(size, depth)])


def wiener_filter(noisy: np.ndarray, pilot: np.ndarray, noise: NoiseModel, variance_factor: float = 1.0,
                  size: int = PATCH, depth: int = 1, group: int = GROUP, radius: int = SEARCH_RADIUS,
                  step: int = STEP) -> np.ndarray:
    """The collaborative Wiener estimate of (N, 1, H, W) noisy slices given a (N, 1, H, W) ``pilot`` estimate of
    the same slices, for the noise of ``noise`` times ``variance_factor`` in variance (for a recorrupted
    copy). Patches span ``depth`` adjacent slices (1: each slice alone; more only for noise independent between
    slices, at most N); every ``step``-th patch (and the last of each row and column) is filtered together with
    the ``group`` - 1 patches of the same slices most like it in the pilot, within ``radius`` pixels (module
    docstring); with coloured noise each patch alone, as neighbouring patches share its colouring. Slices smaller
    than ``size`` are returned as the pilot."""
    if min(noisy.shape[-2:]) < size:
        return pilot.astype(np.float32)
    if not 1 <= depth <= len(noisy):
        raise ValueError(f"patch depth {depth} needs 1 to {len(noisy)} slices")
    if noise.kernel.size > 1:  # coloured noise: each patch alone (docs/decisions.md, "Grouped Wiener filtering")
        group, step = 1, 1
    radius = radius if group > 1 else 0
    transform = PatchDct(size, depth)
    gains = torch.from_numpy(coefficient_variances(noise.kernel, size, depth)).float()
    ones = torch.ones(1, 1, depth, size, size)

    def volume(values: np.ndarray) -> torch.Tensor:  # (N, 1, H, W) -> (1, 1, N, H, W)
        return torch.from_numpy(np.ascontiguousarray(values[:, 0], np.float32))[None, None]

    y, p = volume(noisy), volume(pilot)
    level = volume(noise.std(pilot) ** 2 * np.float32(variance_factor))
    matcher = PatchMatcher(p[0, 0], size, radius, step)
    group = min(group, matcher.fewest_candidates)
    through_group = torch.from_numpy(dct_matrix(group)).float()
    total = torch.zeros_like(y, dtype=torch.float64)
    weights = torch.zeros_like(total)
    distances = [matcher.distances(index) for index in range(depth - 1)]
    for first in range(len(noisy) - depth + 1):  # one patch position along the slices at a time
        window = np.s_[:, :, first:first + depth]
        distances.append(matcher.distances(first + depth - 1))
        members = matcher.groups(sum(distances), group)  # (references, group) patch positions
        distances.pop(0)
        noisy_coefficients, pilot_coefficients = (transform.analyse(x[window])[0].flatten(1) for x in (y, p))
        patch_level = F.avg_pool3d(level[window], (depth, size, size), stride=1).flatten()
        summed = torch.zeros_like(noisy_coefficients)  # (coefficients, positions)
        summed_weight = torch.zeros(summed.shape[1])
        for chunk in torch.split(members, 4096):  # (references, group); the coefficients' axis stays first
            pilot_group, noisy_group = (_along_groups(c, chunk, through_group)
                                        for c in (pilot_coefficients, noisy_coefficients))
            variance = gains[:, None, None] * (patch_level[chunk] @ through_group.square().T)
            power = pilot_group.square()
            shrink = power.div_((power + variance).clamp_min_(torch.finfo(torch.float32).tiny))
            shrink[0] = 0
            estimate = noisy_group.mul_(shrink)
            estimate[0] = pilot_group[0]  # the patch means come from the pilot (module docstring)
            group_weight = 1 / (shrink.square_().mul_(variance).sum(dim=(0, 2)) + torch.finfo(torch.float32).eps)
            patches = (estimate @ through_group).mul_(group_weight[:, None])
            summed.index_add_(1, chunk.flatten(), patches.flatten(1))
            summed_weight.index_add_(0, chunk.flatten(), group_weight.repeat_interleave(group))
        shape = (1, -1, 1, *matcher.positions)
        total[window] += transform.synthesise(summed.reshape(shape))
        weights[window] += F.conv_transpose3d(summed_weight.reshape(shape), ones)
    return (total / weights)[0, 0, :, None].numpy().astype(np.float32)


def _along_groups(coefficients: torch.Tensor, members: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """(coefficients, positions) patch coefficients -> (coefficients, references, group): the patches of each
    group, transformed along the group."""
    return coefficients.index_select(1, members.flatten()).unflatten(1, members.shape) @ transform.T


class PatchMatcher:
    """Block matching in a (N, H, W) pilot: for reference patches on a grid of ``step`` (plus the last row and
    column, so that every pixel is covered), the squared distance to the patch at every in-plane offset within
    ``radius``, one slice at a time (a patch across slices sums its slices' distances)."""

    def __init__(self, pilot: torch.Tensor, size: int, radius: int, step: int) -> None:
        self.pilot, self.size, self.radius = pilot, size, radius
        height, width = (extent - size + 1 for extent in pilot.shape[1:])
        self.positions = (height, width)
        self.rows, self.columns = (torch.unique(torch.cat([torch.arange(0, n, step), torch.tensor([n - 1])]))
                                   for n in self.positions)
        span = torch.arange(-radius, radius + 1)
        self.dy, self.dx = (d.flatten() for d in torch.meshgrid(span, span, indexing="ij"))
        candidate_rows = self.rows[None, :] + self.dy[:, None]  # (offsets, reference rows)
        candidate_columns = self.columns[None, :] + self.dx[:, None]
        self.outside = (((candidate_rows < 0) | (candidate_rows >= height))[:, :, None]
                        | ((candidate_columns < 0) | (candidate_columns >= width))[:, None, :])  # never matched
        self.fewest_candidates = min(radius + 1, height) * min(radius + 1, width)  # a corner reference's

    def distances(self, index: int) -> torch.Tensor:
        """(offsets, reference rows, reference columns) squared distances in slice ``index``."""
        image, size, radius = self.pilot[index], self.size, self.radius
        height, width = image.shape
        padded = F.pad(image, (radius,) * 4)
        bands = []
        for dy in range(-radius, radius + 1):  # every horizontal offset at once, as views of one band
            shifted = padded[radius + dy:radius + dy + height].unfold(1, width, 1)  # (H, offsets, W)
            squared = (image[:, None] - shifted).square_()
            # box sums of size rows at the reference rows, then of size columns at the reference columns
            rows = F.pad(squared.cumsum(0), (0, 0, 0, 0, 1, 0))
            rows = rows[self.rows + size] - rows[self.rows]
            columns = F.pad(rows.cumsum(2), (1, 0))
            bands.append((columns[..., self.columns + size] - columns[..., self.columns]).transpose(0, 1))
        return torch.cat(bands).masked_fill_(self.outside, float("inf"))

    def groups(self, distances: torch.Tensor, group: int) -> torch.Tensor:
        """(references, group) flat positions of each reference's ``group`` nearest patches, itself first."""
        # the reference itself first, also among ties (a flat pilot): every pixel is then in some group
        itself = torch.tensor([len(self.dy) // 2])
        nearest = distances.index_fill(0, itself, -1).topk(group, dim=0, largest=False).indices  # (group, R, C)
        rows = self.rows[None, :, None] + self.dy[nearest]
        columns = self.columns[None, None, :] + self.dx[nearest]
        return (rows * self.positions[1] + columns).flatten(1).T.contiguous()


class PatchDct:
    """The DCT of every depth x size x size patch of a (1, 1, D, H, W) volume (stride 1) and its adjoint, one
    axis at a time: the same coefficients as a convolution with :func:`dct_basis` (in its order), at about
    ``3 * size`` instead of ``depth * size^2`` multiplications per coefficient."""

    def __init__(self, size: int, depth: int) -> None:
        self.size, self.depth = size, depth
        self.through = torch.from_numpy(dct_matrix(depth)).float()
        self.in_plane = torch.from_numpy(dct_matrix(size)).float()

    def analyse(self, x: torch.Tensor) -> torch.Tensor:
        """(1, 1, depth, H, W) -> (1, depth * size^2, 1, H - size + 1, W - size + 1) coefficients."""
        (depth, height, width), size = x.shape[2:], self.size
        x = (self.through @ x.reshape(depth, height * width)).reshape(depth, 1, height, width)
        # each row and column transform as a batch of one-channel 2D convolutions: faster than grouped 3D ones
        x = F.conv2d(x, self.in_plane.reshape(size, 1, size, 1))
        x = F.conv2d(x.reshape(depth * size, 1, height - size + 1, width), self.in_plane.reshape(size, 1, 1, size))
        return x.reshape(1, depth * size * size, 1, height - size + 1, width - size + 1)

    def synthesise(self, coefficients: torch.Tensor) -> torch.Tensor:
        """The adjoint of :meth:`analyse`: every patch's coefficients put back as pixels and summed, (1, 1,
        depth, H, W)."""
        size, depth = self.size, self.depth
        # grouped 3D transposed convolutions: here faster than batches of 2D ones
        x = F.conv_transpose3d(coefficients, self.in_plane.repeat(depth * size, 1).reshape(-1, 1, 1, 1, size),
                               groups=depth * size)
        x = F.conv_transpose3d(x, self.in_plane.repeat(depth, 1).reshape(-1, 1, 1, size, 1), groups=depth)
        return F.conv_transpose3d(x, self.through.reshape(depth, 1, depth, 1, 1))


def blend_weight(estimate: np.ndarray, filtered: np.ndarray, target: np.ndarray) -> float:
    """The weight ``w`` in [0, 1] of ``w * estimate + (1 - w) * filtered`` that best fits ``target`` in least
    squares: with both made from a recorrupted copy and ``target`` its independent twin, the weight that
    minimises the error against the clean image."""
    difference = (estimate - filtered).astype(np.float64).ravel()
    power = float(difference @ difference)
    if power == 0:
        return 1.0
    return float(np.clip(difference @ (target - filtered).astype(np.float64).ravel() / power, 0.0, 1.0))


def blend(estimate: np.ndarray, filtered: np.ndarray, weight: float) -> np.ndarray:
    """``weight * estimate + (1 - weight) * filtered`` (float32)."""
    return (weight * estimate + (1 - weight) * filtered).astype(np.float32)


def blend_with_filtering(noisy: np.ndarray, estimate: np.ndarray, noise: NoiseModel, weight: float,
                         depth: int = 1) -> np.ndarray:
    """``estimate`` of (N, 1, H, W) ``noisy`` slices blended by ``weight`` with its Wiener filtering
    (:func:`wiener_filter` with ``estimate`` as the pilot, patches ``depth`` slices deep)."""
    return blend(estimate, wiener_filter(noisy, estimate, noise, depth=depth), weight)
