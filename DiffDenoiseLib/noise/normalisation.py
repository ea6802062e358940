"""Per-pixel noise normalisation around the BSN output, so the diffusion model sees noise of one level.

SRDS averages two DDIM trajectories started from +eps and -eps: the noise the model generates cancels to
first order only. Where the noise level depends on the signal (Poisson: std grows with brightness), the
second-order term survives the pair average and biases it (the measurement: docs/decisions.md, "Where the
code's choices were measured"). Scaling each pixel's deviation from the BSN output b by
``mean std / std(b)`` makes the noise one level everywhere. The map is affine per pixel (b is known when
training and when sampling), so unlike a variance-stabilising transform of the value (Anscombe) it has an
exact inverse for means, and no trouble with the negative values of recorrupted targets.

The normalised value is the deviation from b, not b plus it: the diffusion model generates what the BSN
output lacks (noise and detail, mean about zero everywhere) rather than the whole image: generating whole
images, DDIM's errors shifted the SRDS output by a tissue-dependent offset, which generating deviations
removed (docs/decisions.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError
from .model import NoiseModel

STD_FLOOR = 0.1  # fraction of the typical noise std below which a level counts as the floor (bounds the gain)


@dataclass(frozen=True)
class NoiseNormaliser:
    """``d = (y - b) * gain(b)`` with ``gain(b) = typical std / std(b)`` from a noise level function."""

    intensities: np.ndarray
    std: np.ndarray

    @classmethod
    def from_noise_model(cls, noise: NoiseModel) -> NoiseNormaliser:
        """The normaliser of a fitted noise model (its level function; the colouring does not matter here)."""
        std = np.sqrt(noise.variances)
        if not np.any(std > 0):
            raise InputError("no noise was measured in the image (its flat regions are exactly flat): there is "
                             "nothing for the diffusion stage to remove; use the input as it is")
        return cls(np.asarray(noise.intensities, dtype=np.float64), std)

    def gain(self, signal: np.ndarray) -> np.ndarray:
        """Per-pixel gain: 1 where the noise is at its typical level, larger where it is weaker."""
        # typical over the intensities that have noise: in images with exactly flat regions (masked, padded,
        # sparse) most levels can be 0, and a median of 0 would make every gain 0 / 0
        typical = float(np.median(self.std[self.std > 0]))
        level = np.maximum(np.interp(signal, self.intensities, self.std), STD_FLOOR * typical)
        return (typical / level).astype(np.float32)

    def forward(self, noisy: np.ndarray, signal: np.ndarray) -> np.ndarray:
        """The noise-normalised deviation of ``noisy`` from ``signal`` (the BSN output of the same pixels)."""
        return ((noisy - signal) * self.gain(signal)).astype(np.float32)

    def inverse(self, deviation: np.ndarray, signal: np.ndarray) -> np.ndarray:
        """Map normalised deviations (or their estimated means, such as the SRDS output) back to intensities."""
        return (signal + deviation / self.gain(signal)).astype(np.float32)

    def describe(self) -> dict:
        """JSON metadata from which :meth:`from_metadata` rebuilds the same normaliser."""
        return {"intensities": self.intensities.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_metadata(cls, metadata: dict) -> NoiseNormaliser:
        """The normaliser :meth:`describe` wrote (a bundle's)."""
        return cls(np.asarray(metadata["intensities"], dtype=np.float64),
                   np.asarray(metadata["std"], dtype=np.float64))
