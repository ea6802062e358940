"""A pixel-wise variance-stabilising transform built from a fitted noise level function, and its inverse.

SRDS averages two DDIM trajectories started from +eps and -eps: the noise the model generates cancels to
first order only. Where the noise level depends on the signal (Poisson: std grows with brightness), the
second-order term does not cancel and biases the average (measured on knee MRI, Poisson peak 30: +0.04 of
the intensity range in dark tissue). In the stabilised domain T (T' proportional to 1 / noise std, the
generalised Anscombe transform) the noise has one level everywhere and the pair average is unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.polynomial.hermite_e import hermegauss

from .errors import InputError
from .noise_model import NoiseModel

GRID_POINTS = 1024
STD_FLOOR = 0.1  # fraction of the median noise std below which the level counts as that floor (keeps T' finite)
_NODES, _WEIGHTS = hermegauss(9)  # Gauss-Hermite quadrature of expectations over a standard normal
_WEIGHTS = _WEIGHTS / _WEIGHTS.sum()


def _interp(x: np.ndarray, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """Piecewise-linear interpolation, extended linearly (not clamped) beyond both ends of ``xp``."""
    y = np.interp(x, xp, fp)
    low_slope = (fp[1] - fp[0]) / (xp[1] - xp[0])
    high_slope = (fp[-1] - fp[-2]) / (xp[-1] - xp[-2])
    y = np.where(x < xp[0], fp[0] + (x - xp[0]) * low_slope, y)
    return np.where(x > xp[-1], fp[-1] + (x - xp[-1]) * high_slope, y)


@dataclass(frozen=True)
class VarianceStabiliser:
    """T on a grid of normalised intensities (T(0) = 0, T(1) = 1), the noise std it was built from, and the
    ratio of the diffusion target's noise variance to the image's (``1 + 1 / alpha^2`` for recorrupted
    targets, 1 for the plain noisy slices)."""

    grid: np.ndarray
    values: np.ndarray
    std: np.ndarray
    target_noise_factor: float

    @classmethod
    def from_noise_model(cls, noise: NoiseModel, low: float, high: float,
                         target_noise_factor: float) -> VarianceStabiliser:
        """T' = 1 / std over [low, high] (the slices' value range, widened by the target noise)."""
        widest = float(np.sqrt(target_noise_factor) * np.sqrt(noise.variances.max()))
        grid = np.linspace(min(low, 0.0) - 6 * widest, max(high, 1.0) + 6 * widest, GRID_POINTS)
        std = noise.std(grid).astype(np.float64)
        floor = STD_FLOOR * np.median(noise.std(np.linspace(0, 1, 101)))
        if floor <= 0:
            raise InputError("no noise was measured in the image (its flat regions are exactly flat): there is "
                             "nothing for the diffusion stage to remove; use the input as it is")
        std = np.maximum(std, floor)
        slope = 1 / std
        cumulative = np.concatenate([[0.0], np.cumsum((slope[1:] + slope[:-1]) / 2 * np.diff(grid))])
        at_zero, at_one = np.interp([0.0, 1.0], grid, cumulative)
        return cls(grid, (cumulative - at_zero) / (at_one - at_zero), std, float(target_noise_factor))

    def forward(self, x: np.ndarray) -> np.ndarray:
        """T(x), float32 of ``x``'s shape."""
        return _interp(np.asarray(x, dtype=np.float64), self.grid, self.values).astype(np.float32)

    def inverse(self, t: np.ndarray) -> np.ndarray:
        """The x whose expected stabilised target E[T(x + target noise)] is ``t`` (an estimate of that mean,
        such as the SRDS output); not T's plain inverse, which would keep the Jensen bias of a curved T."""
        spread = np.sqrt(self.target_noise_factor) * self.std
        expected = (_WEIGHTS[:, None] * _interp(self.grid[None] + _NODES[:, None] * spread[None], self.grid,
                                                self.values)).sum(axis=0)
        expected = np.maximum.accumulate(expected)  # monotone, so the inverse is a function
        return _interp(np.asarray(t, dtype=np.float64), expected, self.grid).astype(np.float32)

    def slope(self, x: np.ndarray) -> np.ndarray:
        """T'(x): converts a spread in the stabilised domain back to intensity units (divide by it)."""
        return np.interp(np.asarray(x, dtype=np.float64), self.grid, np.gradient(self.values, self.grid)
                         ).astype(np.float32)

    def describe(self) -> dict:
        """JSON metadata from which :meth:`from_metadata` rebuilds the same transform."""
        return {"grid": [float(self.grid[0]), float(self.grid[-1]), len(self.grid)],
                "values": self.values.tolist(), "std": self.std.tolist(),
                "target_noise_factor": self.target_noise_factor}

    @classmethod
    def from_metadata(cls, metadata: dict) -> VarianceStabiliser:
        """The transform :meth:`describe` wrote (a bundle's)."""
        start, stop, points = metadata["grid"]
        return cls(np.linspace(start, stop, int(points)), np.asarray(metadata["values"], dtype=np.float64),
                   np.asarray(metadata["std"], dtype=np.float64), float(metadata["target_noise_factor"]))
