"""The shared training loop: resume reproduces an uninterrupted run, cancel checkpoints, progress reports."""

import numpy as np
import pytest
import torch

from DiffDenoiseLib.errors import Cancelled, InputError
from DiffDenoiseLib.models import LGBPN, PUCA, LGBPNConfig, NAFNet, NAFNetConfig, PUCAConfig
from DiffDenoiseLib.pipelines.bsn import blind_spot_loss
from DiffDenoiseLib.runtime.devices import choose_precision, cpu_has_amx_bf16, has_dilated_depthwise_conv
from DiffDenoiseLib.runtime.training import TrainConfig, train

CONFIG = PUCAConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,))


def _slices() -> np.ndarray:
    return np.random.default_rng(0).random((3, 1, 40, 40)).astype(np.float32)


def _model() -> PUCA:
    torch.manual_seed(0)
    return PUCA(CONFIG)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_killed_and_resumed_run_equals_uninterrupted_run(tmp_path):
    settings = {"steps": 8, "batch_size": 2, "patch_size": 32, "device": "cpu", "seed": 5}
    reference = _model()
    train(reference, _slices(), blind_spot_loss, TrainConfig(**settings))

    checkpoint = tmp_path / "run.pt"
    calls = {"n": 0}

    def cancel_after_three():
        calls["n"] += 1
        return calls["n"] > 3

    interrupted = _model()
    with pytest.raises(Cancelled):
        train(interrupted, _slices(), blind_spot_loss,
              TrainConfig(**settings, checkpoint_every=2, checkpoint_path=str(checkpoint)), cancel=cancel_after_three)
    assert checkpoint.exists()
    resumed = _model()
    summary = train(resumed, _slices(), blind_spot_loss,
                    TrainConfig(**settings, checkpoint_every=2, checkpoint_path=str(checkpoint)))
    assert summary.resumed_from_step == 3
    for name, value in _weights(reference).items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_checkpoint_from_other_settings_is_refused(tmp_path):
    checkpoint = tmp_path / "run.pt"
    train(_model(), _slices(), blind_spot_loss,
          TrainConfig(steps=2, batch_size=2, patch_size=32, checkpoint_every=1, checkpoint_path=str(checkpoint)))
    with pytest.raises(InputError, match="other settings"):
        train(_model(), _slices(), blind_spot_loss,
              TrainConfig(steps=2, batch_size=4, patch_size=32, checkpoint_path=str(checkpoint)))


def test_progress_is_reported_every_step_and_loss_falls():
    events = []
    model = _model()
    summary = train(model, _slices(), blind_spot_loss,
                    TrainConfig(steps=30, batch_size=4, patch_size=32, learning_rate=3e-3), progress=events.append)
    assert [e.step for e in events] == list(range(1, 31))
    assert all(e.total == 30 and e.stage == "train" and e.loss is not None for e in events)
    assert summary.loss_curve[-1] < summary.loss_curve[0]
    assert not model.training


def test_bad_settings_are_refused():
    with pytest.raises(InputError):
        TrainConfig(steps=0)


def test_blind_spot_networks_run_in_float32_on_cpu():
    """bf16 weight gradients of dilated depthwise convs are wrong on PyTorch's CPU kernels: the BSNs (PUCA and
    LG-BPN) train and predict in float32 there, whatever the CPU; other networks keep the CPU's policy."""
    cpu = torch.device("cpu")
    for bsn in (_model(), LGBPN(LGBPNConfig(width=8, local_blocks=1, global_blocks=1))):
        assert has_dilated_depthwise_conv(bsn)
        assert choose_precision(cpu, bsn).autocast_dtype is None
    nafnet = NAFNet(NAFNetConfig(width=8, encoder_blocks=(1,), middle_blocks=1, decoder_blocks=(1,)))
    assert not has_dilated_depthwise_conv(nafnet)
    assert choose_precision(cpu, nafnet).autocast_dtype == (torch.bfloat16 if cpu_has_amx_bf16() else None)

    summary = train(_model(), _slices(), blind_spot_loss,
                    TrainConfig(steps=2, batch_size=2, patch_size=32, device="cpu", mixed_precision=True))
    assert summary.precision == "float32"
