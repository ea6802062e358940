"""The library's main call: input checks, shape/dtype contract, determinism, and the input left untouched."""

import copy
from dataclasses import replace

import numpy as np
import pytest

from DiffDenoiseLib.denoise import apply_bundle, denoise
from DiffDenoiseLib.errors import Cancelled, InputError
from DiffDenoiseLib.noise.simulate import add_noise


def test_denoise_returns_float32_of_the_same_shape_and_leaves_the_input(knee_crop, tiny_settings):
    noisy = add_noise(knee_crop, "gaussian", 0.1, seed=0)
    before = noisy.copy()
    events = []
    result = denoise(noisy, preset=tiny_settings, device="cpu", progress=events.append)
    assert result.denoised.shape == noisy.shape and result.denoised.dtype == np.float32
    assert np.array_equal(noisy, before)
    assert result.noise.kind == "iid"
    assert {e.stage for e in events} == {"train bsn", "bsn inference", "train diffusion", "srds", "train nafnet",
                                         "denoise"}
    assert set(result.timings) >= {"train_bsn_s", "train_diffusion_s", "srds_s", "train_nafnet_s", "total_s"}
    assert result.outliers.shape == (len(noisy),) and result.summary().startswith("outlier slices")


def test_same_seed_same_result(knee_crop, tiny_settings):
    first = denoise(knee_crop, preset=tiny_settings, device="cpu", seed=1).denoised
    second = denoise(knee_crop, preset=tiny_settings, device="cpu", seed=1).denoised
    np.testing.assert_array_equal(first, second)


def test_2d_images_and_other_slice_axes(knee_crop, tiny_settings):
    assert denoise(knee_crop[0], preset=tiny_settings, device="cpu").denoised.shape == knee_crop[0].shape
    volume = knee_crop[:, :, :24]  # slicing along axis 2 gives 24 slices of 4x64: too small
    with pytest.raises(InputError, match="smaller than the network's minimum"):
        denoise(volume, preset=tiny_settings, slice_axis=2)


def test_unknown_options_are_refused(knee_crop):
    with pytest.raises(InputError, match="^method: 'magic' is not one of diffdenoise"):
        denoise(knee_crop, method="magic")
    with pytest.raises(InputError, match="^preset: 'huge' is not one of quick"):
        denoise(knee_crop, preset="huge")
    with pytest.raises(InputError, match="^noise: 'pink' is not one of auto"):
        denoise(knee_crop, noise="pink")


@pytest.mark.parametrize("option, message", [({"srds_pairs": 0}, "srds_pairs"), ({"ddim_steps": 0}, "ddim_steps"),
                                             ({"distill_slices": 0}, "distill_slices")])
def test_out_of_range_options_are_input_errors_before_any_training(knee_crop, tiny_settings, option, message):
    events = []
    with pytest.raises(InputError, match=message):
        denoise(knee_crop, preset=tiny_settings, device="cpu", progress=events.append, **option)
    assert events == []


def test_out_of_range_ddm2_options_are_input_errors_before_any_training(small_dwi):
    from DiffDenoiseLib.denoise_dwi import denoise_dwi

    series, bvals = small_dwi.volume.array, small_dwi.bvals
    for option, message in (({"neighbours": 0}, "neighbours"), ({"sampler": "fast"}, "^sampler: 'fast' is not one of"),
                            ({"sampler_steps": 0}, "sampler_steps")):
        events = []
        with pytest.raises(InputError, match=message):
            denoise_dwi(series, bvals, device="cpu", progress=events.append, **option)
        assert events == []


def test_cancel_stops_the_run(knee_crop, tiny_settings):
    with pytest.raises(Cancelled):
        denoise(knee_crop, preset=tiny_settings, cancel=lambda: True)


def test_killed_run_resumes_from_its_checkpoints_to_the_same_result(knee_crop, tiny_settings, tmp_path):
    noisy = add_noise(knee_crop, "gaussian", 0.1, seed=0)
    uninterrupted = denoise(noisy, preset=tiny_settings, device="cpu", steps=6)
    events = []

    def cancel_mid_diffusion_training() -> bool:
        return bool(events) and events[-1].stage == "train diffusion" and events[-1].step >= 3

    with pytest.raises(Cancelled):
        denoise(noisy, preset=tiny_settings, device="cpu", steps=6, checkpoint_dir=tmp_path,
                progress=events.append, cancel=cancel_mid_diffusion_training)
    assert {p.name for p in tmp_path.iterdir()} == {"bsn.pt", "diffusion.pt"}
    resumed = denoise(noisy, preset=tiny_settings, device="cpu", steps=6, checkpoint_dir=tmp_path)
    np.testing.assert_array_equal(resumed.denoised, uninterrupted.denoised)
    training = resumed.bundle.metadata["training"]
    assert [training[s]["summary"]["resumed_from_step"] for s in ("bsn", "diffusion", "nafnet")] == [6, 3, 0]
    assert "checkpoint_path" not in training["bsn"]["config"]  # where checkpoints were is not part of a bundle
    with pytest.raises(InputError, match="other settings or on other data"):
        denoise(noisy[::-1].copy(), preset=tiny_settings, device="cpu", steps=6, checkpoint_dir=tmp_path)


def test_noise_type_picks_the_blind_spot_network(knee_crop, tiny_settings):
    correlated = denoise(knee_crop, method="bsn", noise="correlated", preset=tiny_settings, device="cpu")
    assert correlated.bundle.networks["bsn"].architecture == "lgbpn"
    iid = denoise(knee_crop, method="bsn", noise="iid", preset=tiny_settings, device="cpu")
    assert iid.bundle.networks["bsn"].architecture == "puca"
    filtered = add_noise(knee_crop, "correlated", 0.1, seed=0, correlation_sigma=1.0)
    auto = denoise(filtered, method="bsn", noise="auto", preset=tiny_settings, device="cpu")
    assert auto.noise.kind == "correlated" and auto.bundle.networks["bsn"].architecture == "lgbpn"


@pytest.mark.parametrize("method,networks", [("bsn", {"bsn"}), ("diffusion", {"bsn", "diffusion"}),
                                             ("diffdenoise", {"bsn", "diffusion", "nafnet"})])
def test_methods_train_their_stages_and_give_extra_outputs(knee_crop, tiny_settings, method, networks):
    outputs = ("residual", "bsn") if method == "bsn" else ("residual", "uncertainty", "bsn", "srds")
    result = denoise(knee_crop, method=method, preset=tiny_settings, device="cpu", outputs=outputs)
    assert set(result.bundle.networks) == networks
    assert set(result.extras) == set(outputs)
    for image in result.extras.values():
        assert image.shape == knee_crop.shape and image.dtype == np.float32
    np.testing.assert_allclose(result.extras["residual"], knee_crop - result.denoised, atol=1e-3)
    if method != "bsn":  # the last stage's output blended with the BSN estimate, the weight fitted
        weight = result.bundle.metadata["output_blend"]["weight"]
        assert 0 <= weight <= 1
        np.testing.assert_allclose(apply_bundle(result.bundle, knee_crop, device="cpu").denoised, result.denoised,
                                   atol=1e-4)
    if method == "diffusion":
        blended = weight * result.extras["srds"] + (1 - weight) * result.extras["bsn"]
        np.testing.assert_allclose(result.denoised, blended, atol=1e-3)
        unblended = denoise(knee_crop, method=method, preset=replace(tiny_settings, blend_with_bsn=False),
                            device="cpu", outputs=outputs)
        assert "output_blend" not in unblended.bundle.metadata
        np.testing.assert_array_equal(unblended.extras["srds"], unblended.denoised)
    if "uncertainty" in outputs:
        assert (result.extras["uncertainty"] >= 0).all()


def test_srds_options_and_identity_conditioning(knee_crop, tiny_settings):
    result = denoise(knee_crop, method="diffusion", preset=tiny_settings, device="cpu", srds_pairs=2, ddim_steps=3)
    assert result.bundle.metadata["sampling"]["pairs"] == 2 and result.bundle.metadata["sampling"]["steps"] == 3
    # recorrupted (default): [x_t, BSN output, noisy slice]; the ablations: [x_t, BSN output] and [x_t, noisy]
    assert result.bundle.networks["diffusion"].config.in_channels == 3
    # a diffusion bundle from before the network generated deviations from the BSN output is refused
    assert apply_bundle(result.bundle, knee_crop, device="cpu").denoised.shape == knee_crop.shape
    older = copy.deepcopy(result.bundle.metadata)
    del older["diffusion"]["generates"]
    with pytest.raises(InputError, match="train the bundle again"):
        apply_bundle(replace(result.bundle, metadata=older), knee_crop, device="cpu")
    for conditioning, networks in (("identity", {"diffusion"}), ("bsn", {"bsn", "diffusion"})):
        variant = replace(tiny_settings, diffusion=replace(tiny_settings.diffusion, conditioning=conditioning))
        plain = denoise(knee_crop, method="diffusion", preset=variant, device="cpu")
        assert set(plain.bundle.networks) == networks
        assert plain.bundle.metadata["diffusion"]["conditioning"] == conditioning
        assert plain.bundle.networks["diffusion"].config.in_channels == 2
    distilled = denoise(knee_crop, preset=tiny_settings, device="cpu", distill_slices=2)
    assert distilled.timings["srds_s"] > 0


def test_uncertainty_needs_srds(knee_crop, tiny_settings):
    with pytest.raises(InputError, match="use method diffusion or diffdenoise"):
        denoise(knee_crop, method="bsn", preset=tiny_settings, outputs=("uncertainty",))
    with pytest.raises(InputError, match="^outputs: 'variance' is not one of residual"):
        denoise(knee_crop, preset=tiny_settings, outputs=("variance",))


def test_offered_presets_are_the_defined_ones():
    from DiffDenoiseLib.options import PRESETS
    from DiffDenoiseLib.presets import PRESETS as DEFINED

    assert tuple(DEFINED) == PRESETS


def test_demo_writes_its_files_and_report(tmp_path):
    from DiffDenoiseLib.demo import run_demo

    report = run_demo(tmp_path, steps=2, device="cpu")
    assert "PSNR gain" in report and "BSN:" in report and "ran on: CPU" in report
    assert {p.name for p in tmp_path.iterdir()} == {"noisy.nii.gz", "denoised.nii.gz", "demo.png", "report.txt"}
    assert (tmp_path / "report.txt").read_text(encoding="utf-8") == report + "\n"
