"""What diffusion-MRI users judge a denoiser by, computed with dipy on one series and its denoised versions.

* **Held-out-b0 PSNR**: a denoised b0 against the mean of b0s no method saw (:func:`psnr_in_mask`).
* **Cross-validated fit quality** (the Patch2Self paper's protocol, Fadnavis et al. 2020; dipy's
  ``kfold_xval``): every diffusion-weighted measurement of a voxel is predicted by a DTI, DKI or CSD model fitted
  to the other folds, and R^2 = 1 - SSE / SST over the voxel's weighted measurements scores the prediction
  (:func:`cv_fit_r2`). Denoising that keeps the signal and removes noise raises it; denoising that invents
  structure the models cannot explain lowers it.
* **SNR and CNR in the corpus callosum** (dipy's recipe, the table of the DDM2 paper): the voxels of a central
  box whose colour-FA is red (left-right fibres), from a tensor fit of the *raw* series so every method is
  scored on the same voxels; per weighted volume, SNR = mean in the ROI / std of the background beyond 10
  voxels of the brain mask and CNR = (mean in the ROI - mean of the background) / that std, each slice of each
  volume first min-max normalised as DDM2's evaluation does (:class:`CorpusCallosum`).
* **FA and MD maps** of a tensor fit (:func:`tensor_maps`), for the figure.

Every function takes dipy's (x, y, z, volumes) layout; :func:`to_dipy` turns our (volumes, z, y, x) into it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_dilation

from DiffDenoiseLib.pipelines.ddm2 import shell_of

B0_THRESHOLD = 50.0
# dipy's corpus-callosum limits on the colour FA (red 0.6-1, green and blue 0-0.1: left-right fibres), then
# looser ones for series of a few slices that cut the callosum where its fibres bend (mdt_b1k_b2k holds the
# genu's edge: 1 voxel passes dipy's limits, 136 the loosest)
CC_CFA_THRESHOLDS = ((0.6, 1.0, 0.0, 0.1, 0.0, 0.1), (0.5, 1.0, 0.0, 0.2, 0.0, 0.2), (0.4, 1.0, 0.0, 0.25, 0.0, 0.25))
MIN_CC_VOXELS = 20
BACKGROUND_MARGIN = 10  # voxels between the brain mask and the background that measures the noise


def to_dipy(series: np.ndarray) -> np.ndarray:
    """(volumes, z, y, x) -> dipy's (x, y, z, volumes), as float64."""
    return np.ascontiguousarray(series.transpose(3, 2, 1, 0), dtype=np.float64)


def from_dipy(data: np.ndarray) -> np.ndarray:
    """dipy's (x, y, z, volumes) -> (volumes, z, y, x) float32."""
    return np.ascontiguousarray(data.transpose(3, 2, 1, 0), dtype=np.float32)


def psnr_in_mask(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """PSNR inside ``mask``; data range = the reference's 99.9th percentile there (robust to hot voxels)."""
    data_range = np.percentile(reference[mask], 99.9)
    mse = np.mean((image[mask].astype(np.float64) - reference[mask]) ** 2)
    return float(10 * np.log10(data_range ** 2 / mse))


def gradient_table(bvals: np.ndarray, bvecs: np.ndarray):
    """dipy's gradient table, b0s below :data:`B0_THRESHOLD`."""
    from dipy.core.gradients import gradient_table as dipy_table

    return dipy_table(np.asarray(bvals, dtype=np.float64), bvecs=np.asarray(bvecs, dtype=np.float64),
                      b0_threshold=B0_THRESHOLD)


def shells(bvals: np.ndarray) -> list[float]:
    """The non-zero shells (DDM2's :func:`shell_of`), ascending."""
    rounded = shell_of(bvals)
    return sorted(float(b) for b in np.unique(rounded[rounded >= B0_THRESHOLD]))


def select(bvals: np.ndarray, keep: list[float]) -> np.ndarray:
    """Indices of the b0s and of the volumes of the shells in ``keep``."""
    return np.flatnonzero((bvals < B0_THRESHOLD) | np.isin(shell_of(bvals), keep))


@dataclass(frozen=True)
class FitModel:
    """One cross-validated model: its name, the shells it is fitted to, and its CSD order where it is CSD."""

    name: str
    shells: tuple[float, ...]
    sh_order: int = 0

    @property
    def label(self) -> str:
        return f"{self.name.upper()} (b = {', '.join(f'{b:g}' for b in self.shells)})"


def fit_models(bvals: np.ndarray) -> list[FitModel]:
    """The models a series supports: DTI on its lowest shell; DKI on all shells where there are two or more;
    single-shell CSD on its highest shell, at the largest even order the shell's directions support in every
    fold (at least 6 directions per fold to spare)."""
    available = shells(bvals)
    if not available:
        return []
    models = [FitModel("dti", (available[0],))]
    if len(available) >= 2:
        models.append(FitModel("dki", tuple(available)))
    top = available[-1]
    directions = int(np.sum(shell_of(bvals) == top))
    in_fit = directions - directions // cv_folds(directions)
    order = max((o for o in (8, 6, 4) if (o + 1) * (o + 2) // 2 + 6 <= in_fit), default=0)
    if order:
        models.append(FitModel("csd", (top,), order))
    return models


def cv_folds(measurements: int) -> int:
    """The most folds from 5 down to 2 that divide the weighted measurements equally (dipy requires it)."""
    return next((k for k in (5, 4, 3, 2) if measurements % k == 0), 1)


def _dipy_model(model: FitModel, gtab, response_data: np.ndarray):
    """(model instance, extra model arguments) for ``kfold_xval``; CSD's response from ``response_data``."""
    if model.name == "dti":
        from dipy.reconst.dti import TensorModel

        return TensorModel(gtab), ()
    if model.name == "dki":
        from dipy.reconst.dki import DiffusionKurtosisModel

        return DiffusionKurtosisModel(gtab), ()
    from dipy.reconst.csdeconv import ConstrainedSphericalDeconvModel, auto_response_ssst

    (evals, _), _ = auto_response_ssst(gtab, response_data, roi_radii=10, fa_thr=0.7)
    response = (evals, 1.0)  # the data are divided by their b0s, so the response's S0 is 1
    return ConstrainedSphericalDeconvModel(gtab, response, sh_order_max=model.sh_order), (response,)


def relative_to_b0(data: np.ndarray, b0s: np.ndarray) -> np.ndarray:
    """Every voxel divided by the mean of its b0s (0 where that mean is not positive).

    ``kfold_xval`` predicts a voxel as its mean b0 times the fit's prediction for S0 = 1, which for CSD holds
    only when the response's S0 is the voxel's; in units of each voxel's own b0 it holds everywhere (and R^2 is
    unchanged by a per-voxel scale).
    """
    s0 = data[..., b0s].mean(axis=-1, keepdims=True)
    return np.where(s0 > 0, data / np.where(s0 > 0, s0, 1), 0.0)


def cv_fit_r2(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray, model: FitModel,
              response_data: np.ndarray | None = None, seed: int = 0) -> np.ndarray:
    """Per voxel of ``mask``: R^2 of the k-fold cross-validated prediction of its weighted measurements.

    ``data`` is (x, y, z, volumes); only the b0s and ``model.shells`` are used. CSD's response function comes
    from ``response_data`` (the raw series, so every method is fitted with the same response) or ``data``.
    """
    from dipy.reconst.cross_validation import kfold_xval

    keep = select(bvals, list(model.shells))
    gtab = gradient_table(bvals[keep], bvecs[keep])
    subset = relative_to_b0(data[..., keep], gtab.b0s_mask)
    reference = subset if response_data is None else relative_to_b0(response_data[..., keep], gtab.b0s_mask)
    dipy_model, model_args = _dipy_model(model, gtab, reference)
    weighted = ~gtab.b0s_mask
    kwargs = {"mask": mask, **({"sh_order_max": model.sh_order} if model.name == "csd" else {})}
    # kfold_xval draws its folds from NumPy's global generator: seeded, every method gets the same folds
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        prediction = kfold_xval(dipy_model, subset, cv_folds(int(weighted.sum())), *model_args, **kwargs)
    finally:
        np.random.set_state(state)
    measured, predicted = subset[mask][:, weighted], prediction[mask][:, weighted]
    total = ((measured - measured.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)
    error = ((measured - predicted) ** 2).sum(axis=1)
    return 1 - error / np.maximum(total, np.finfo(np.float64).tiny)


def tensor_fit(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray):
    """dipy's tensor fit on the b0s and the lowest shell (where the tensor model holds best)."""
    from dipy.reconst.dti import TensorModel

    keep = select(bvals, shells(bvals)[:1])
    return TensorModel(gradient_table(bvals[keep], bvecs[keep])).fit(data[..., keep], mask=mask)


WHITE_MATTER_FA = 0.2  # the usual white-matter threshold on FA


def white_matter(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` whose FA (:func:`tensor_fit`) exceeds :data:`WHITE_MATTER_FA`."""
    fa, _ = tensor_maps(data, bvals, bvecs, mask)
    return mask & (fa > WHITE_MATTER_FA)


def tensor_maps(data: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
    """(FA, MD in mm^2/s) of :func:`tensor_fit`, zero outside ``mask``."""
    fit = tensor_fit(data, bvals, bvecs, mask)
    return np.nan_to_num(fit.fa) * mask, np.nan_to_num(fit.md) * mask


@dataclass
class CorpusCallosum:
    """dipy's corpus-callosum ROI and background of one raw series, and the SNR/CNR they give."""

    roi: np.ndarray
    background: np.ndarray
    weighted: np.ndarray
    threshold: tuple[float, ...]

    @classmethod
    def of(cls, raw: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray, mask: np.ndarray) -> CorpusCallosum:
        """The ROI from the raw series' colour FA inside the central half of the mask's bounding box, with the
        first of :data:`CC_CFA_THRESHOLDS` that selects :data:`MIN_CC_VOXELS` voxels (else the loosest)."""
        from dipy.segment.mask import bounding_box, segment_from_cfa

        low, high = (np.array(bound) for bound in bounding_box(mask))
        margin = (high - low) // 4
        box = np.zeros(mask.shape, dtype=bool)
        box[tuple(slice(a, max(b, a + 1)) for a, b in zip(low + margin, high - margin, strict=True))] = True
        fit = tensor_fit(raw, bvals, bvecs, mask)
        for threshold in CC_CFA_THRESHOLDS:
            roi = segment_from_cfa(fit, box & mask, threshold).astype(bool)
            if roi.sum() >= MIN_CC_VOXELS:
                break
        background = ~binary_dilation(mask, iterations=BACKGROUND_MARGIN)
        return cls(roi, background, np.asarray(bvals) >= B0_THRESHOLD, threshold)

    def snr_cnr(self, data: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per weighted volume of ``data`` (x, y, z, volumes): SNR and CNR (see the module docstring)."""
        low = data.min(axis=(0, 1), keepdims=True)
        span = np.maximum(data.max(axis=(0, 1), keepdims=True) - low, np.finfo(np.float64).tiny)
        normalised = (data - low) / span
        signal = normalised[self.roi].mean(axis=0)
        noise = normalised[self.background]
        spread = np.maximum(noise.std(axis=0), np.finfo(np.float64).tiny)
        snr, cnr = signal / spread, (signal - noise.mean(axis=0)) / spread
        return snr[self.weighted], cnr[self.weighted]
