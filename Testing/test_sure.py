"""The output blend's weight fitted with SURE on the noisy image alone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from DiffDenoiseLib.noise.model import NoiseModel
from DiffDenoiseLib.sure import sure_blend_weight
from DiffDenoiseLib.wiener import blend_weight

WHITE = NoiseModel.white(0.1)
_CROSS = np.array([[0, 0.3, 0], [0.3, 1, 0.3], [0, 0.3, 0]])
COLOURED = NoiseModel(np.zeros(1), np.full(1, 0.01), _CROSS / np.sqrt(np.sum(_CROSS**2)))  # unit L2 norm
SIGNAL_DEPENDENT = NoiseModel(np.array([0.0, 1.0]), np.array([0.001, 0.02]), np.ones((1, 1)))


def _blurred(images: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(images, (0, 0, 1.0, 1.0)).astype(np.float32)


@pytest.mark.parametrize("model", [WHITE, COLOURED, SIGNAL_DEPENDENT], ids=["white", "coloured", "signal-dependent"])
def test_the_sure_weight_is_the_one_fitted_against_the_clean_image(model):
    rng = np.random.default_rng(3)
    smooth = ndimage.gaussian_filter(rng.standard_normal((4, 1, 96, 96)), (0, 0, 1.5, 1.5))
    clean = (0.5 + 0.2 * smooth / smooth.std()).astype(np.float32)
    noisy = (clean + model.draw(clean[:, 0], rng)[:, None]).astype(np.float32)

    def identity_and_blur(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return images, _blurred(images)

    first, second = identity_and_blur(noisy)
    best = blend_weight(first, second, clean)
    assert 0.05 < best < 0.5  # a mix, so a weight stuck at 0 or 1 fails
    weight = sure_blend_weight(noisy, first, second, identity_and_blur, model, np.random.default_rng(0))
    assert weight == pytest.approx(best, abs=0.03)
    # without the divergence the fit against the noisy image would keep all of the identity
    assert blend_weight(first, second, noisy) == 1.0


def test_two_equal_outputs_keep_the_first():
    noisy = np.random.default_rng(0).random((2, 1, 16, 16)).astype(np.float32)
    assert sure_blend_weight(noisy, noisy, noisy, lambda images: (images, images), WHITE,
                             np.random.default_rng(0)) == 1.0
