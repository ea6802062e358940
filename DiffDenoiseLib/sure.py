"""The weight of a blend of two denoisers of one image, fitted on the image itself with Stein's unbiased risk
estimate (SURE), so that no clean image and no second noisy copy is needed.

The squared error of ``w a(y) + (1 - w) b(y)`` against the clean image x is, with d = a - b,
``|b - x|^2 + 2 w <d, b - x> + w^2 |d|^2``. The clean image enters through <d, x> = <d, y> - <d, n> only, and for
Gaussian noise n of covariance S, Stein's lemma gives E <d(y), n> = E tr(J S), J the Jacobian of d. Its Monte-Carlo
estimate (Ramani, Blu and Unser 2008) is ``p^T (d(y + eps p) - d(y)) / eps`` with the probe p drawn from the
noise model (coloured and scaled by the local level as the noise is): one more pass of both denoisers. The
noise is treated as Gaussian of the model's level at each pixel, which is close for Rician noise above its floor
and for Poisson noise of tens of counts.

Why not fit on the recorrupted copy against its twin, as the Wiener blend does: the copy carries more noise
than the image, which changes which stage is better. On the knee with Poisson noise the copy's fit gave the
distilled network 0.83 of the blend where the best share was 0 (docs/decisions.md, "The output blend's
weight"). Where SURE fails: two good denoisers differ little, so the weight divides a small difference of
large terms by |d|^2, and tr(J S) must be right to about 1 %. The level of i.i.d. noise is known that well;
the colouring of correlated noise is not (MNI, correlated 0.1: the model's colouring put tr(J S) 12 % above
the truth, and the weight at 0.97 where the best is 0.21), so the pipeline uses SURE for i.i.d. noise only.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .noise.model import NoiseModel

# The probe's scale relative to the noise: small enough that the networks are close to linear over it (0.01,
# 0.1 and 0.3 gave divergences within 0.4% and 4% of each other on the knee), large enough to stay above the
# rounding of half-precision inference on a GPU.
PROBE_SCALE = 0.1


def sure_blend_weight(noisy: np.ndarray, first: np.ndarray, second: np.ndarray,
                      run_both: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]], noise: NoiseModel,
                      rng: np.random.Generator) -> float:
    """The weight ``w`` in [0, 1] of ``w * first + (1 - w) * second`` that minimises SURE, for (N, 1, H, W)
    ``noisy`` slices, the two denoisers' outputs on them, and ``run_both`` mapping noisy slices to both
    outputs again (for the probe). ``noise`` is the slices' noise model, its level read at ``second``."""
    difference = (first - second).astype(np.float64)
    power = float(np.sum(difference * difference))
    if power == 0:
        return 1.0
    probe = noise.draw(second[:, 0], rng)[:, None]
    first_probed, second_probed = run_both((noisy + PROBE_SCALE * probe).astype(np.float32))
    change = (first_probed - second_probed).astype(np.float64) - difference
    divergence = float(np.sum(probe * change)) / PROBE_SCALE  # the Monte-Carlo tr(J S)
    return float(np.clip((np.sum(difference * (noisy - second)) - divergence) / power, 0.0, 1.0))
