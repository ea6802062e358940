"""The PUCA blind-spot network: the blind spot itself, shapes, and its reshaping helpers."""

from dataclasses import asdict

import pytest
import torch
from helpers import output_change

from DiffDenoiseLib.models import PUCA, PUCAConfig, build_network
from DiffDenoiseLib.models.blind_spot import pd_down, pd_up
from DiffDenoiseLib.models.blocks import dihedral_average
from DiffDenoiseLib.models.puca import patch_shuffle, patch_unshuffle


def _random_network(config: PUCAConfig) -> PUCA:
    torch.manual_seed(0)
    network = PUCA(config).eval()
    for name, parameter in network.named_parameters():
        if name.endswith(("beta", "gamma")):  # zero at init: randomise so every block really contributes
            parameter.data.normal_()
    return network


@pytest.mark.parametrize("pd, self_ensemble", [(1, 1), (2, 1), (1, 8), (2, 4)])
@pytest.mark.parametrize("pixel", [(0, 0), (5, 7), (18, 14), (36, 28), (35, 1), (1, 28)])
def test_output_pixel_ignores_its_own_input_pixel(pd, self_ensemble, pixel):
    network = _random_network(PUCAConfig(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1),
                                         pd_train=pd, pd_infer=pd, self_ensemble=self_ensemble))
    image = torch.randn(1, 1, 37, 29)  # not square: the ensemble's transposes change the shape
    difference = output_change(network, image, pixel)
    assert difference[pixel] == 0.0
    assert difference.sum() > 0  # the change does reach the neighbours: the test can fail


def test_a_network_without_mask_would_fail_the_blind_spot_check():
    network = _random_network(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)))
    network.net.head.mask.fill_(1.0)
    assert output_change(network, torch.randn(1, 1, 24, 24), (10, 10))[10, 10] > 0


@pytest.mark.parametrize("shape", [(16, 16), (17, 45), (64, 33)])
def test_any_size_comes_back_the_same_size(shape):
    network = PUCA(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)))
    network.train()
    assert network(torch.randn(2, 1, *shape)).shape == (2, 1, *shape)


def test_the_self_ensemble_averages_every_flip_and_turn_and_undoes_each():
    image = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert torch.equal(dihedral_average(lambda x: 2 * x, image, 8), 2 * image)  # each transform is undone
    seen = []
    dihedral_average(lambda x: seen.append(x) or x, image, 8)
    distinct = {tuple(x.flatten().tolist()) for x in seen}
    assert len(distinct) == 8 and {x.shape[-2:] for x in seen} == {(3, 4), (4, 3)}
    # a network that reads only the row above each pixel: averaged over the turns, it reads all four sides
    above = lambda x: torch.nn.functional.pad(x, (0, 0, 1, 0))[..., :-1, :]  # noqa: E731
    point = torch.zeros(1, 1, 5, 5)
    point[0, 0, 2, 2] = 1.0
    spread = dihedral_average(above, point, 8)[0, 0]
    assert spread[2, 2] == 0 and spread[3, 2] == spread[1, 2] == spread[2, 1] == spread[2, 3] == 0.25
    with pytest.raises(ValueError, match="self_ensemble"):
        PUCAConfig(self_ensemble=3)


def test_reshaping_helpers_are_inverse():
    x = torch.randn(2, 3, 16, 24)
    assert torch.equal(patch_shuffle(patch_unshuffle(x)), x)
    assert torch.equal(pd_up(pd_down(x, 2), 2), x)
    assert patch_unshuffle(x).shape == (2, 12, 8, 12)


def test_r3_refinement_is_deterministic():
    network = _random_network(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,),
                                         pd_train=4, pd_infer=2, r3_passes=3))
    image = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(network(image), network(image))


def test_a_stored_config_records_the_self_ensemble_and_one_without_it_runs_one_pass():
    config = asdict(PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,), self_ensemble=8))
    assert build_network("puca", config).config.self_ensemble == 8
    del config["self_ensemble"]  # a bundle written before the self-ensemble existed
    assert build_network("puca", config).config.self_ensemble == 1
    for bad in (0, 3, True):
        with pytest.raises(ValueError, match="self_ensemble"):
            build_network("puca", config | {"self_ensemble": bad})


def test_the_lgbpn_trains_its_share_of_the_pucas_steps():
    """Correlated noise turns the quick preset's PUCA into an LG-BPN trained for ``lgbpn_step_share`` of the
    steps; i.i.d. noise keeps the PUCA and its steps; an explicit LG-BPN keeps the steps it was given."""
    from DiffDenoiseLib.errors import InputError
    from DiffDenoiseLib.models import LGBPNConfig
    from DiffDenoiseLib.pipelines.bsn import BsnSettings, for_noise
    from DiffDenoiseLib.presets import PRESETS

    quick = PRESETS["quick"].bsn
    assert quick.training.steps == 900 and quick.lgbpn_steps() == 600
    correlated, iid = for_noise(quick, "correlated"), for_noise(quick, "iid")
    assert isinstance(correlated.network, LGBPNConfig) and correlated.training.steps == 600
    assert isinstance(iid.network, PUCAConfig) and iid.training.steps == 900
    assert for_noise(correlated, "correlated").training.steps == 600  # not shortened twice
    assert for_noise(PRESETS["standard"].bsn, "correlated").training.steps == PRESETS["standard"].bsn.training.steps
    with pytest.raises(InputError, match="share of the training steps"):
        BsnSettings(quick.network, quick.training, lgbpn_step_share=0)
