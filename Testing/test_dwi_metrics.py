"""The diffusion-MRI metrics of the DDM2 benchmark on a synthetic tensor field with a known answer (they need the
``bench`` extra's dipy: skipped without it)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("dipy")

from benchmarks import dwi_metrics  # noqa: E402

FIBRES = (slice(17, 23), slice(18, 22))


def _tensor_series(noise: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, z, volumes) signals of a 40 x 40 x 2 field (2 b0s + 30 directions at b = 1000): a 12 x 12 object of
    isotropic tissue with left-right fibres in its centre, in a background wide enough for dipy's 10-voxel margin;
    Gaussian noise of ``noise``. Returns the data, b-values, b-vectors and the object's mask."""
    from dipy.core.sphere import HemiSphere, disperse_charges
    from dipy.sims.voxel import single_tensor

    rng = np.random.default_rng(seed)
    theta, phi = rng.uniform(0, np.pi, 30), rng.uniform(0, 2 * np.pi, 30)
    directions, _ = disperse_charges(HemiSphere(theta=theta, phi=phi), 500)
    bvecs = np.vstack([np.zeros((2, 3)), directions.vertices])
    bvals = np.r_[0.0, 0.0, np.full(30, 1000.0)]
    gtab = dwi_metrics.gradient_table(bvals, bvecs)
    fibre = single_tensor(gtab, 100.0, evals=np.array([1.7e-3, 0.3e-3, 0.3e-3]), evecs=np.eye(3))
    tissue = single_tensor(gtab, 100.0, evals=np.array([0.8e-3, 0.8e-3, 0.8e-3]), evecs=np.eye(3))
    data = np.zeros((40, 40, 2, 32))
    mask = np.zeros((40, 40, 2), dtype=bool)
    mask[14:26, 14:26] = True
    data[mask] = tissue
    data[FIBRES] = fibre
    return data + rng.normal(0, noise, data.shape), bvals, bvecs, mask


def test_cross_validated_dti_fits_clean_data_and_scores_noise_lower():
    clean, bvals, bvecs, mask = _tensor_series(0.0)
    noisy, *_ = _tensor_series(10.0)
    model, = (m for m in dwi_metrics.fit_models(bvals) if m.name == "dti")
    assert dwi_metrics.cv_folds(30) == 5 and dwi_metrics.cv_folds(7) == 1
    fibre = np.zeros_like(mask)
    fibre[FIBRES] = True  # isotropic tissue has nothing for R^2 to explain: score the fibres
    clean_r2 = dwi_metrics.cv_fit_r2(clean, bvals, bvecs, fibre, model)
    noisy_r2 = dwi_metrics.cv_fit_r2(noisy, bvals, bvecs, fibre, model, response_data=clean)
    assert clean_r2.shape == (fibre.sum(),) and np.all(clean_r2 > 0.999)
    assert 0 < np.median(noisy_r2) < 0.8  # a denoiser that removed this noise would raise it towards 1


def test_corpus_callosum_roi_finds_left_right_fibres_and_snr_falls_with_noise():
    clean, bvals, bvecs, mask = _tensor_series(0.5)
    noisy, *_ = _tensor_series(5.0)
    callosum = dwi_metrics.CorpusCallosum.of(noisy, bvals, bvecs, mask)
    assert callosum.roi.any() and not (callosum.roi & ~mask).any() and callosum.background.any()
    assert not (callosum.background & mask).any()
    clean_snr, clean_cnr = callosum.snr_cnr(clean)
    noisy_snr, noisy_cnr = callosum.snr_cnr(noisy)
    assert clean_snr.shape == (30,) and np.all(clean_snr > 2 * noisy_snr) and np.all(clean_cnr > 2 * noisy_cnr)


def test_layout_round_trip_and_tensor_maps():
    data, bvals, bvecs, mask = _tensor_series(0.0)
    series = dwi_metrics.from_dipy(data)
    assert series.shape == (32, 2, 40, 40)
    np.testing.assert_array_equal(dwi_metrics.to_dipy(series), data.astype(np.float32))
    fa, md = dwi_metrics.tensor_maps(data, bvals, bvecs, mask)
    assert fa[20, 20, 0] > 0.7 and fa[15, 15, 0] < 0.05 and abs(md[15, 15, 0] - 0.8e-3) < 1e-5 and fa[0, 0, 0] == 0
